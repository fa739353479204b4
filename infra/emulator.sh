#!/usr/bin/env bash
# The AWS emulator with template.yaml's resources on it — one source of truth.
#
#   infra/emulator.sh up     starts moto on a free loopback port (infra/moto.sh), or uses
#                            LocalStack when LAMBDAML_EMULATOR=localstack (it must already
#                            be installed; it listens on localhost:4566), then creates the
#                            template's bucket, notification, queues, DLQs and redrive with
#                            `lambdaml stack up`, and prints the exports to use them
#   infra/emulator.sh down   stops moto (LocalStack: `localstack stop` is yours to run)
#
# STACK_NAME (default lambdaml) names the resources, as `sam deploy --stack-name` would.
set -euo pipefail
cd "$(dirname "$0")/.."
STACK_NAME="${STACK_NAME:-lambdaml}"
CARGO="${CARGO:-cargo}"

up() {
  if [ "${LAMBDAML_EMULATOR:-moto}" = localstack ]; then
    command -v localstack >/dev/null || { echo "LAMBDAML_EMULATOR=localstack but the localstack command is not installed" >&2; exit 1; }
    localstack status >/dev/null 2>&1 || localstack start -d >&2
    localstack wait -t 120 >&2
    endpoint=http://localhost:4566
  else
    infra/moto.sh up
    endpoint=$(cat .moto/endpoint)
  fi
  export AWS_ENDPOINT_URL=$endpoint AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
         AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  $CARGO run --quiet --release -p lambdaml-cli -- stack up --template template.yaml --stack-name "$STACK_NAME" >/tmp/lambdaml-stack.$$
  echo "export AWS_ENDPOINT_URL=$endpoint AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1"
  cat /tmp/lambdaml-stack.$$
  rm -f /tmp/lambdaml-stack.$$
}

case "${1:-}" in
  up) up ;;
  down) infra/moto.sh down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
