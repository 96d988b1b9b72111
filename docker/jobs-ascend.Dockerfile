# syntax=docker/dockerfile:1
# The jobs image for Ascend NPU nodes: CANN (ATC for `convert` to .om, ACL for inference),
# ais_bench and the project's stages.
#
#   docker build -f docker/jobs-ascend.Dockerfile -t ghcr.io/pnas-eval/jobs-ascend:0.1.0 \
#     --build-arg AIS_BENCH_WHEEL=<URL or path of ais_bench-*.whl> \
#     --build-arg ACLRUNTIME_WHEEL=<URL or path of aclruntime-*.whl> .
#
# Build arguments:
#   CANN_BASE_IMAGE   a CANN toolkit image for your chip and CPU architecture with Python >= 3.11
#                     (pnas-eval's minimum), e.g. from AscendHub:
#                       swr.cn-south-1.myhuaweicloud.com/ascendhub/cann:8.1.rc1-310p-ubuntu22.04-py3.11
#                     or quay.io/ascend/cann:<version>-310p-ubuntu22.04-py3.11. Its CANN version
#                     must suit the driver on the nodes.
#   AIS_BENCH_WHEEL,  the ais_bench tool's two wheels (not on PyPI: build them from the Ascend
#   ACLRUNTIME_WHEEL  tools repository, ais-bench_workload/tool/ais_bench, for this image's Python and
#                     architecture). An https URL, or a file put in docker/wheels/ and named as
#                     /tmp/src/docker/wheels/<file>.whl.
#   TORCH_INDEX_URL   where torch comes from: the CPU-only builds by default (the NPU does the
#                     inference; torch only exports the model).
ARG CANN_BASE_IMAGE=swr.cn-south-1.myhuaweicloud.com/ascendhub/cann:8.1.rc1-310p-ubuntu22.04-py3.11
FROM ${CANN_BASE_IMAGE}

ARG AIS_BENCH_WHEEL
ARG ACLRUNTIME_WHEEL
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

USER root
COPY . /tmp/src
RUN if [ -z "$AIS_BENCH_WHEEL" ] || [ -z "$ACLRUNTIME_WHEEL" ]; then \
         echo "set --build-arg AIS_BENCH_WHEEL=... and --build-arg ACLRUNTIME_WHEEL=... (the ais_bench wheels)" >&2; \
         exit 1; \
       fi \
    && python3 -m pip install "$ACLRUNTIME_WHEEL" "$AIS_BENCH_WHEEL" \
    && python3 -m pip install --index-url "$TORCH_INDEX_URL" torch torchvision \
    && python3 -m pip install "/tmp/src[jobs,ascend]" \
    && install -D -m 0755 /tmp/src/docker/ascend-env.sh /opt/pnas-eval/bin/pnas-eval \
    && rm -rf /tmp/src

# The Jobs run `pnas-eval ...` as their command, which replaces any ENTRYPOINT: so `pnas-eval`
# itself is the script that sources CANN's set_env.sh before running the stage.
ENV PATH=/opt/pnas-eval/bin:${PATH}

# Non-root and numeric (the operator's Jobs run as 1000:1000). CANN images often have their
# HwHiAiUser at uid 1000 already, the owner of the NPU devices on the hosts.
RUN getent passwd 1000 >/dev/null \
    || { groupadd --gid 1000 pnas && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home pnas; }
USER 1000:1000
# ATC writes into the working directory and $HOME/ascend/log: both on the /tmp scratch volume
ENV HOME=/tmp
WORKDIR /tmp

ENTRYPOINT ["pnas-eval"]
