#!/usr/bin/env bash
# Builds usina's server, runtime and serving images from the one Dockerfile with buildah, without
# a Docker engine or a registry: on python:X-slim when that image is on this machine, else on
# the local Debian base scripts/podman-setup.sh makes with mmdebstrap. The machine's pip
# configuration is mounted into the build (scripts/pip_build_config.py). Prints each image's
# size and fails when one is over its budget (README, "Container images").
#
#   scripts/build-images.sh [TARGET...]        # default: server runtime serving
#   IMAGE_PREFIX=ghcr.io/usina-ml/ VERSION=0.1.0 BASE=python:3.12.11-slim-bookworm ...
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/podman-setup.sh

PYTHON_VERSION=${PYTHON_VERSION:-3.12.11}
PRODUCTION_BASE=docker.io/library/python:${PYTHON_VERSION}-slim-bookworm
LOCAL_BASE=${USINA_BASE_IMAGE:-localhost/usina-base:bookworm}
IMAGE_PREFIX=${IMAGE_PREFIX-ghcr.io/usina-ml/}
VERSION=${VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)}
REVISION=${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
CACHE=${USINA_IMAGE_CACHE:-.cache/images}
# Budgets in MB (podman's size of the image, all layers): README, "Container images".
declare -A BUDGET_MB=([server]=${BUDGET_SERVER_MB:-1200} [runtime]=${BUDGET_RUNTIME_MB:-2100}
  [serving]=${BUDGET_SERVING_MB:-1100})

# What the build copies (.dockerignore's allow-list), hashed: the final stages re-install usina
# when it changes, even where the layer cache would not notice.
# (README.md is in the context only for the wheel's metadata: it does not count.)
source_digest() {
  find pyproject.toml src deploy/helm/usina -type f -not -path '*/__pycache__/*' \
    -not -name '*.py[cod]' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
}
SOURCE_DIGEST=$(source_digest)
args=(--build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION"
      --build-arg "TORCH_VERSION=$TORCH_VERSION" --build-arg "SOURCE_DIGEST=$SOURCE_DIGEST")
if [ -n "${BASE:-}" ]; then
  args+=(--build-arg "BASE=$BASE")
elif podman image exists "$PRODUCTION_BASE"; then
  args+=(--build-arg "BASE=$PRODUCTION_BASE")
else
  # No registry: the local base, no compilers (every dependency has a wheel), and torch from the
  # machine's own index (its CPU wheel) rather than download.pytorch.org.
  echo "==> $PRODUCTION_BASE is not here: building on $LOCAL_BASE" >&2
  args+=(--build-arg "BASE=$LOCAL_BASE" --build-arg "BUILD_PACKAGES="
         --build-arg "TORCH_INDEX_URL=")
fi
volumes=()
while IFS= read -r volume; do
  volumes+=(-v "$volume")
done < <(python3 scripts/pip_build_config.py "$CACHE")

bud() {
  buildah bud --runtime runc --network host --layers --quiet --format docker "$@" -f Dockerfile . \
    >/dev/null
}

# The builder stage alone gets the pip configuration's volumes: buildah leaves an empty mount
# point in a layer for each one, which belongs in no final image. The final stages install
# from the builder's wheels (--no-index) and reuse its cached layers, so the build context must
# not change while this script runs (else the builder re-runs without the pip configuration).
echo "==> building the wheels (target builder)" >&2
start=$SECONDS
bud --target builder "${args[@]}" "${volumes[@]}" -t "localhost/usina-builder:$VERSION"
echo "wheels built in $((SECONDS - start))s" >&2

targets=("$@")
((${#targets[@]})) || targets=(server runtime serving)
status=0
for target in "${targets[@]}"; do
  image=${IMAGE_PREFIX}usina-$target:$VERSION
  echo "==> building $image (target $target)" >&2
  start=$SECONDS
  bud --target "$target" "${args[@]}" -t "$image"
  bytes=$(podman image inspect --format '{{.Size}}' "$image")
  mb=$((bytes / 1000000))
  printf '%-45s %6s MB (budget %s MB), built in %ss\n' "$image" "$mb" "${BUDGET_MB[$target]}" \
    "$((SECONDS - start))"
  if ((mb > BUDGET_MB[$target])); then
    echo "build-images: $image is $mb MB, over its budget of ${BUDGET_MB[$target]} MB" >&2
    status=1
  fi
done
if [ "$(source_digest)" != "$SOURCE_DIGEST" ]; then
  echo "build-images: the sources changed during the build; run it again" >&2
  status=1
fi
exit $status
