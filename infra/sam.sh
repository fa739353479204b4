#!/usr/bin/env bash
# AWS SAM tooling for template.yaml, in its own venv (.venv-sam): SAM CLI, cfn-lint, and
# cargo-lambda + zig (what `sam build` uses to cross-compile the functions for arm64).
#
#   infra/sam.sh lint      sam validate --lint and cfn-lint on template.yaml
#   infra/sam.sh build     sam build (every function, release, aarch64) into .aws-sam/
#   infra/sam.sh env       prints the PATH export that puts sam/cargo-lambda first
set -euo pipefail
cd "$(dirname "$0")/.."
SAM_VERSION="${SAM_VERSION:-1.170.0}"
CFN_LINT_VERSION="${CFN_LINT_VERSION:-1.58.0}"
CARGO_LAMBDA_VERSION="${CARGO_LAMBDA_VERSION:-1.9.2}"
ZIG_VERSION="${ZIG_VERSION:-0.17.1}"
VENV="${LAMBDAML_SAM_VENV:-.venv-sam}"
export SAM_CLI_TELEMETRY=0

venv() {
  if [ "$("$VENV/bin/sam" --version 2>/dev/null)" != "SAM CLI, version $SAM_VERSION" ] \
     || ! "$VENV/bin/cfn-lint" --version 2>/dev/null | grep -q "$CFN_LINT_VERSION" \
     || [ ! -x "$VENV/bin/cargo-lambda" ]; then
    echo "installing aws-sam-cli==$SAM_VERSION cfn-lint==$CFN_LINT_VERSION cargo-lambda==$CARGO_LAMBDA_VERSION into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
      "aws-sam-cli==$SAM_VERSION" "cfn-lint==$CFN_LINT_VERSION" \
      "cargo-lambda==$CARGO_LAMBDA_VERSION" "ziglang==$ZIG_VERSION"
  fi
}

case "${1:-}" in
  lint)
    venv
    echo "== sam validate --lint"
    "$VENV/bin/sam" validate --lint --template template.yaml --region us-east-1
    echo "== cfn-lint template.yaml"
    "$VENV/bin/cfn-lint" template.yaml
    ;;
  build)
    venv
    rustup target add aarch64-unknown-linux-gnu >&2
    start=$(date +%s)
    # rust-cargolambda is a SAM beta feature.
    PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/sam" build --beta-features --template template.yaml
    echo "sam build took $(( $(date +%s) - start )) s" >&2
    ;;
  env)
    echo "export PATH=$PWD/$VENV/bin:\$PATH SAM_CLI_TELEMETRY=0"
    ;;
  *) echo "usage: $0 lint|build|env" >&2; exit 2 ;;
esac
