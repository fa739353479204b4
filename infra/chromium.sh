#!/usr/bin/env bash
# Make sure a headless Chromium is installed: the monitor's HTML report is rendered in it by
# `make test` (tests/e2e/monitor.rs checks every plot is drawn). Installs Debian's `chromium`
# with apt-get when it is missing (infra/apt-install.sh: as root, or through sudo).
set -euo pipefail
for c in chromium chromium-browser google-chrome; do
  if command -v "$c" >/dev/null 2>&1; then exit 0; fi
done
"$(dirname "$0")/apt-install.sh" "headless rendering of the monitoring report" chromium
command -v chromium >/dev/null
