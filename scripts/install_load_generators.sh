#!/usr/bin/env bash
# The load generators of benchmarks/serving.py, both written in C so that they are not what limits
# the figures: wrk drives REST, h2load (Debian's nghttp2-client) drives gRPC with pre-encoded
# frames. The tests never need them.
set -euo pipefail
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}"
