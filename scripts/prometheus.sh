#!/usr/bin/env bash
# Make sure Prometheus and promtool (Debian's prometheus package) are installed: the monitoring
# tests start a real Prometheus and run `promtool test rules`. Quick when they are present.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
echo "prometheus/promtool not found; installing Debian's prometheus package" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y --no-install-recommends prometheus >/dev/null \
  || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y --no-install-recommends prometheus >/dev/null; }
command -v prometheus >/dev/null && command -v promtool >/dev/null
