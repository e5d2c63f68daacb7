# syntax=docker/dockerfile:1.7
# usina's images, one multi-stage build:
#
#   docker build --target server  -t usina-server:0.1.0  .   # usina server (API, UI, reconciler)
#   docker build --target runtime -t usina-runtime:0.1.0 .   # what a step's Kubernetes Job runs
#   docker build --target serving -t usina-serving:0.1.0 .   # usina serve MODEL_URI
#
# The builder stage has the compilers and builds every wheel; the final stages install those
# wheels from a bind mount (so no wheel, cache or compiler lands in a layer) into /opt/venv,
# drop pip and the packages' own test folders, and run as a non-root user.
#
# GPU runtime: the runtime stage's base is a build argument. Any image with Python 3.12 works
# (the wheels are built for CPython 3.12); for CUDA use an Ubuntu 24.04 CUDA runtime image and
# install PyTorch's CUDA wheels (PyPI's default ones bundle CUDA) instead of the CPU ones:
#
#   docker build --target runtime -t usina-runtime:0.1.0-cuda \
#     --build-arg RUNTIME_BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://pypi.org/simple .
#
# The NVIDIA container toolkit on the node provides the driver; nothing else changes.
#
# Without a registry (no python image to pull), BASE takes any Debian/Ubuntu image with python3
# and python3-venv: `make images` builds one with mmdebstrap (scripts/podman-setup.sh) and runs
#
#   buildah bud --target runtime --build-arg BASE=localhost/usina-base:bookworm \
#     --build-arg BUILD_PACKAGES= --build-arg TORCH_INDEX_URL= ...
#
# (scripts/build-images.sh; the machine's pip configuration is mounted into the build).

ARG PYTHON_VERSION=3.12.11
ARG BASE=python:${PYTHON_VERSION}-slim-bookworm
ARG RUNTIME_BASE=${BASE}
# usina's version: pyproject.toml's (the final stages install exactly it) and the images' label.
ARG VERSION=0.1.0
ARG SOURCE=https://github.com/usina-ml/usina
ARG REVISION=unknown

# ---- builder: wheels for usina and every dependency of every image ---------------------------
FROM ${BASE} AS builder
# Empty TORCH_INDEX_URL: torch comes from the configured index (a local CPU wheel, say).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=
# The compilers for dependencies without a wheel; empty skips them (every dependency has one).
ARG BUILD_PACKAGES=build-essential
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# hadolint ignore=DL3008,SC2086
RUN if [ -n "${BUILD_PACKAGES}" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends ${BUILD_PACKAGES} \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && python3 -m venv /opt/build
WORKDIR /src
# The dependencies' wheels first, from pyproject.toml alone (with a stub usina): this layer is
# reused until pyproject.toml changes. One wheelhouse per image: each final stage installs from
# its own with --no-index. The s3 extra (s3fs) comes with aiobotocore, which needs
# python-dateutil<3 while the newest kubernetes client needs >=3: saying so up front spares
# pip a long backtrack (into sdists) to the kubernetes release that fits.
COPY pyproject.toml ./
# hadolint ignore=SC2086
RUN mkdir -p src/usina deploy/helm/usina && touch README.md src/usina/__init__.py \
 && /opt/build/bin/pip wheel --prefer-binary --wheel-dir /wheels/server \
      '.[server,postgres,mlflow,k8s,monitoring,s3]' 'python-dateutil<3' \
 && /opt/build/bin/pip wheel --prefer-binary --wheel-dir /wheels/serving '.[serving,grpc,mlflow]' \
 && /opt/build/bin/pip wheel --prefer-binary --wheel-dir /wheels/runtime \
      ${TORCH_INDEX_URL:+--extra-index-url "${TORCH_INDEX_URL}"} \
      '.[tables,mlflow,torch,fraud,gpu,s3]' 'python-dateutil<3' \
      ${TORCH_VERSION:+"torch==${TORCH_VERSION}"} \
 && rm -rf src deploy README.md /wheels/*/usina-*.whl
# Then usina's own wheel, from its sources (and the Helm chart it ships).
COPY pyproject.toml README.md ./
COPY src ./src
COPY deploy/helm/usina ./deploy/helm/usina
RUN /opt/build/bin/pip wheel --no-deps --wheel-dir /wheels/server . \
 && cp /wheels/server/usina-*.whl /wheels/serving/ \
 && cp /wheels/server/usina-*.whl /wheels/runtime/
# The stage ends on a step that changes no file: buildah 1.28 (Debian 12) bind-mounts a stage
# built wholly from its layer cache one step short of its end (RUN --mount=...,from=builder).
WORKDIR /wheels

# ---- base: Python, the non-root user, and an empty virtual environment -----------------------
FROM ${BASE} AS base
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    USINA_HOME=/var/lib/usina
RUN groupadd --system --gid 10001 usina \
 && useradd --system --uid 10001 --gid usina --home-dir /home/usina --create-home \
      --shell /usr/sbin/nologin usina \
 && python3 -m venv /opt/venv \
 && install -d -m 0755 -o usina -g usina /var/lib/usina
WORKDIR /home/usina

# ---- server: usina server ----------------------------------------------------------------------
FROM base AS server
ARG VERSION
# A digest of the build context (scripts/build-images.sh): builders whose layer cache does not
# follow a bind mount's source re-install when the sources change.
ARG SOURCE_DIGEST=
RUN --mount=type=bind,from=builder,source=/wheels/server,target=/wheels \
    pip install --no-index --find-links=/wheels "usina[server,postgres,mlflow,k8s,monitoring,s3]==${VERSION}" \
 && python -c 'import usina' \
 && pip uninstall -y pip \
 && find /opt/venv -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} +
# The labels last: a new revision changes metadata only, never the layers above.
ARG SOURCE
ARG REVISION
LABEL org.opencontainers.image.title="usina-server" \
      org.opencontainers.image.description="usina server: REST API, web UI and run reconciler" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["usina"]
CMD ["server", "--host=0.0.0.0", "--port=8000"]

# ---- serving: usina serve MODEL_URI -------------------------------------------------------------
FROM base AS serving
ARG VERSION
ARG SOURCE_DIGEST=
RUN --mount=type=bind,from=builder,source=/wheels/serving,target=/wheels \
    pip install --no-index --find-links=/wheels "usina[serving,grpc,mlflow]==${VERSION}" \
 && python -c 'import usina' \
 && pip uninstall -y pip \
 && find /opt/venv -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} +
# The labels last: a new revision changes metadata only, never the layers above.
ARG SOURCE
ARG REVISION
LABEL org.opencontainers.image.title="usina-serving" \
      org.opencontainers.image.description="usina serve: a model over the Open Inference Protocol" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
EXPOSE 8080 8081
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=2)"]
ENTRYPOINT ["usina"]
CMD ["serve", "--help"]

# ---- runtime: the image a step's Job runs (python -m usina.runtime ...) ------------------------
# Its base is RUNTIME_BASE (a CUDA image for GPU steps, see the top). The Kubernetes backend
# runs the pod as UID 1000 (KubernetesSettings.run_as_user), so the image's user is 1000 too.
# It has the fraud extra (LightGBM) so the reference example runs in it as it is; build your
# pipeline's image FROM this one and copy its code in.
FROM ${RUNTIME_BASE} AS runtime
ARG VERSION
ARG SOURCE_DIGEST=
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A CUDA base has no Python: install the distribution's 3.12 (Ubuntu 24.04) without caches;
# LightGBM needs the OpenMP runtime (libgomp1), which python:X-slim lacks.
# hadolint ignore=DL3008,SC2086
RUN missing=""; \
    command -v python3 >/dev/null || missing="python3 python3-venv"; \
    ls /usr/lib/*/libgomp.so.1 >/dev/null 2>&1 || missing="$missing libgomp1"; \
    if [ -n "$missing" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends $missing \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && (getent group 1000 >/dev/null || groupadd --gid 1000 usina) \
 && (getent passwd 1000 >/dev/null \
     || useradd --uid 1000 --gid 1000 --home-dir /home/usina --create-home \
          --shell /usr/sbin/nologin usina) \
 && python3 -m venv --clear /opt/venv
RUN --mount=type=bind,from=builder,source=/wheels/runtime,target=/wheels \
    pip install --no-index --find-links=/wheels "usina[tables,mlflow,torch,fraud,gpu,s3]==${VERSION}" \
 && python -c 'import usina' \
 && pip uninstall -y pip \
 && find /opt/venv -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} +
WORKDIR /home/usina
# The labels last: a new revision changes metadata only, never the layers above.
ARG SOURCE
ARG REVISION
LABEL org.opencontainers.image.title="usina-runtime" \
      org.opencontainers.image.description="usina step runtime (the image of a step's Job)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 1000:1000
# A step's Job has no long-running process to probe: it runs and exits.
HEALTHCHECK NONE
CMD ["python", "-m", "usina.runtime", "--help"]
