#!/usr/bin/env bash
# Start or stop moto (the AWS emulator) on a free loopback port.
#
#   infra/moto.sh up     installs pinned moto[server] into .venv if missing, starts it on
#                        127.0.0.1, waits until it answers, and writes its endpoint to
#                        .moto/endpoint (its pid to .moto/pid)
#   infra/moto.sh down   stops it
#   infra/moto.sh env    prints the exports that point the AWS SDK at it
#
# LocalStack users: skip this and export AWS_ENDPOINT_URL=http://localhost:4566 instead.
set -euo pipefail
cd "$(dirname "$0")/.."
MOTO_VERSION="${MOTO_VERSION:-5.2.1}"
# The stock Open Inference Protocol client the score tests talk to the server with.
TRITON_VERSION="${TRITON_VERSION:-2.73.0}"
# The kserve Python SDK, whose InferenceRESTClient the score tests also talk to the server with.
KSERVE_VERSION="${KSERVE_VERSION:-0.15.2}"
VENV="${LAMBDAML_VENV:-.venv}"
STATE=.moto

venv() {
  if ! "$VENV/bin/python" -c "import moto, flask, tritonclient.http, kserve" 2>/dev/null \
     || [ "$("$VENV/bin/python" -c 'import moto; print(moto.__version__)')" != "$MOTO_VERSION" ]; then
    echo "installing moto[server]==$MOTO_VERSION, tritonclient[http]==$TRITON_VERSION and kserve==$KSERVE_VERSION into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
      "moto[server]==$MOTO_VERSION" "tritonclient[http]==$TRITON_VERSION" "kserve==$KSERVE_VERSION"
  fi
}

up() {
  venv
  mkdir -p "$STATE"
  if [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
    echo "moto already running at $(cat "$STATE/endpoint")" >&2
    return 0
  fi
  local port
  port=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$STATE/moto.log" 2>&1 &
  echo $! >"$STATE/pid"
  echo "http://127.0.0.1:$port" >"$STATE/endpoint"
  for _ in $(seq 1 100); do
    if "$VENV/bin/python" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null; then
      echo "moto listening on http://127.0.0.1:$port" >&2
      return 0
    fi
    sleep 0.1
  done
  echo "moto did not start; see $STATE/moto.log" >&2
  cat "$STATE/moto.log" >&2 || true
  down
  return 1
}

down() {
  if [ -f "$STATE/pid" ]; then
    kill "$(cat "$STATE/pid")" 2>/dev/null || true
    rm -f "$STATE/pid" "$STATE/endpoint"
  fi
}

env_lines() {
  echo "export AWS_ENDPOINT_URL=$(cat "$STATE/endpoint")"
  echo "export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) env_lines ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
