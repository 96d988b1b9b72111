# syntax=docker/dockerfile:1
# The operator image: the spec model, the planner and the Job builders with kopf and the
# Kubernetes client; no torch or other stage dependencies (those live in the jobs images).
#
#   docker build -f docker/operator.Dockerfile -t ghcr.io/pnas-eval/operator:0.1.0 .
#
# Build from the repository root with BuildKit: docker/operator.Dockerfile.dockerignore keeps
# the build context to the package sources.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY . /tmp/src
RUN pip install "/tmp/src[operator]" \
    && rm -rf /tmp/src

# Non-root, numeric so that the kubelet can check runAsNonRoot; HOME on the /tmp emptyDir
# because the chart mounts the root file system read-only.
RUN groupadd --gid 1000 pnas \
    && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin pnas
USER 1000:1000
ENV HOME=/tmp
WORKDIR /tmp

ENTRYPOINT ["pnas-operator"]
