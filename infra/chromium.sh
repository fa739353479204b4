#!/usr/bin/env bash
# Make sure a headless Chromium is installed: the monitor's HTML report is rendered in it by
# `make test` (tests/e2e/monitor.rs checks every plot is drawn). Installs Debian's `chromium`
# with apt-get when it is missing (as root, or through sudo when there is one).
set -euo pipefail
for c in chromium chromium-browser google-chrome; do
  if command -v "$c" >/dev/null 2>&1; then exit 0; fi
done
echo "installing chromium (headless rendering of the monitoring report)" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "chromium is missing and this user cannot install it: apt-get install chromium" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null || true
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null
