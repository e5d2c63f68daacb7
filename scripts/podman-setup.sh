#!/usr/bin/env bash
# Containers on this kind of machine (Debian 12, root, no Docker engine, no image registry):
# installs podman, buildah, runc and mmdebstrap, makes podman use runc without default ulimits
# (crun fails here: "cgroups in hybrid mode not supported"; setrlimit is refused), and builds the
# local Debian base image the Dockerfile takes when python:3.x-slim cannot be pulled.
# Idempotent: each step is skipped when its result is already there. Exits non-zero, saying which
# step failed, when containers cannot run here.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${USINA_BASE_IMAGE:-localhost/usina-base:bookworm}
# Where the production base is already here (pulled: a machine that reaches a registry), the
# local one is not needed, nor is mmdebstrap (scripts/build-images.sh builds on it).
PRODUCTION_BASE=docker.io/library/python:${PYTHON_VERSION:-3.12.11}-slim-bookworm
SUITE=${USINA_BASE_SUITE:-bookworm}
CACHE=${USINA_IMAGE_CACHE:-.cache/images}
# What the local base holds: Python with venv (pip comes from ensurepip), the user tools the
# Dockerfile's useradd needs, CA certificates, and LightGBM's OpenMP runtime.
BASE_PACKAGES=python3,python3-venv,passwd,ca-certificates,libgomp1

step() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'podman-setup: %s\n' "$*" >&2; exit 1; }

have_base() { podman image exists "$PRODUCTION_BASE" || podman image exists "$BASE_IMAGE"; }

# 1. Packages (only the missing ones; mmdebstrap only when no base image is here).
missing=()
for tool in podman buildah runc; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ! command -v mmdebstrap >/dev/null && { ((${#missing[@]})) || ! have_base; }; then
  missing+=(mmdebstrap)
fi
if ((${#missing[@]})); then
  [ "$(id -u)" = 0 ] || fail "installing ${missing[*]} needs root (apt-get); run as root or install them"
  step "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || fail "apt-get update failed: is Debian's mirror reachable?"
  extra=()
  [[ " ${missing[*]} " == *" podman "* ]] && extra=(containernetworking-plugins fuse-overlayfs uidmap)
  apt-get install -y -qq --no-install-recommends "${missing[@]}" "${extra[@]}" >/dev/null \
    || fail "apt-get install ${missing[*]} failed"
fi

# 2. containers.conf: runc, and no default ulimits (setting them is refused here).
CONF_DIR=/etc/containers/containers.conf.d
CONF=$CONF_DIR/50-usina-runc.conf
if [ ! -f "$CONF" ]; then
  step "writing $CONF (runtime runc, no default ulimits)"
  mkdir -p "$CONF_DIR"
  cat >"$CONF" <<'CONF'
# Written by usina's scripts/podman-setup.sh. crun fails on this kind of machine (cgroups in
# hybrid mode; setrlimit refused), runc works once podman stops setting default ulimits.
[containers]
default_ulimits = []

[engine]
runtime = "runc"
CONF
fi
runtime=$(podman info --format '{{.Host.OCIRuntime.Name}}' 2>/dev/null) \
  || fail "podman info failed: $(podman info 2>&1 | tail -n 3)"
[ "$runtime" = runc ] || fail "podman's runtime is $runtime, not runc: $CONF was not read"

# 3. The local base image (a Debian root file system from Debian's mirror), unless the
# production base is here.
mkdir -p "$CACHE"
if podman image exists "$PRODUCTION_BASE"; then
  BASE_IMAGE=$PRODUCTION_BASE
elif ! podman image exists "$BASE_IMAGE"; then
  tarball=$CACHE/base-$SUITE.tar
  if [ ! -s "$tarball" ]; then
    step "building the $SUITE root file system with mmdebstrap ($BASE_PACKAGES)"
    mmdebstrap --quiet --format=tar --variant=minbase --include="$BASE_PACKAGES" \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
      "$SUITE" "$tarball.partial" || fail "mmdebstrap could not build the $SUITE root file system"
    mv "$tarball.partial" "$tarball"
  fi
  step "importing $tarball as $BASE_IMAGE"
  podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/usr/bin/python3"]' \
    "$tarball" "$BASE_IMAGE" >/dev/null || fail "podman import $tarball failed"
fi

# 4. Containers run, and memory limits are cgroup limits.
podman run --rm --network none "$BASE_IMAGE" python3 -c 'print("ok")' >/dev/null \
  || fail "a container does not start from $BASE_IMAGE (podman run failed)"
echo "podman ready (runtime runc), base image $BASE_IMAGE" >&2
