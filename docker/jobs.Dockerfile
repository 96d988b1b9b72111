# syntax=docker/dockerfile:1
# The jobs image for CPU and NVIDIA GPU nodes: every stage (convert, shard, infer, aggregate,
# cleanup) with torch, timm, onnx, onnxsim and onnxruntime-gpu (its CPU provider serves CPU nodes).
#
#   docker build -f docker/jobs.Dockerfile -t ghcr.io/pnas-eval/jobs:0.1.0 .
#
# Build arguments:
#   ONNXRUNTIME  the onnxruntime distribution: onnxruntime-gpu (default; CUDA and TensorRT
#                providers) or onnxruntime (a smaller CPU-only image)
#   EXTRA_PIP    more packages, e.g. "tensorrt-cu12" for spec.inference.device tensorrt
FROM python:3.11-slim

ARG ONNXRUNTIME=onnxruntime-gpu
ARG EXTRA_PIP=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# The project's `jobs` extra names the CPU onnxruntime; both distributions provide the same
# `onnxruntime` module, so the CPU one is swapped for $ONNXRUNTIME.
COPY . /tmp/src
RUN pip install "/tmp/src[jobs]" \
    && if [ "$ONNXRUNTIME" != "onnxruntime" ]; then \
         pip uninstall -y onnxruntime && pip install "$ONNXRUNTIME"; \
       fi \
    && if [ -n "$EXTRA_PIP" ]; then pip install $EXTRA_PIP; fi \
    && rm -rf /tmp/src

# CUDA, cuDNN (and TensorRT) come as pip packages (torch's nvidia-* dependencies): let the
# dynamic loader find them for onnxruntime's CUDA and TensorRT providers. The NVIDIA container
# runtime adds the driver (libcuda) on GPU nodes.
RUN python -c "import glob, site; d = site.getsitepackages()[0]; print('\n'.join(sorted(glob.glob(d + '/nvidia/*/lib') + glob.glob(d + '/tensorrt_libs'))))" \
        > /etc/ld.so.conf.d/pip-cuda.conf \
    && ldconfig

# Non-root and numeric (the operator's Jobs run as 1000:1000); HOME and the working directory on
# the /tmp scratch volume, because the Jobs mount the root file system read-only.
RUN groupadd --gid 1000 pnas \
    && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin pnas
USER 1000:1000
ENV HOME=/tmp
WORKDIR /tmp

ENTRYPOINT ["pnas-eval"]
