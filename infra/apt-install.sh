#!/usr/bin/env bash
# Installs Debian packages with apt-get (as root, or through sudo when there is one), for the
# tools the tests and benchmarks need and install when missing (chromium, wrk).
#   infra/apt-install.sh WHY PACKAGE...
set -euo pipefail
why=$1; shift
echo "installing $* ($why)" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "$* missing and this user cannot install it: apt-get install $*" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null || true
$SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
