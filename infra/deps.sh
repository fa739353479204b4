#!/usr/bin/env bash
# Dependency hygiene, with pinned tools installed into .tools/ on first use.
#
#   infra/deps.sh unused   cargo machete: every declared dependency is used (make test)
#   infra/deps.sh audit    cargo deny: licences, bans (serde_yaml), sources, duplicates,
#                          and advisories when the RustSec database can be fetched (make audit)
set -euo pipefail
cd "$(dirname "$0")/.."
MACHETE_VERSION="${MACHETE_VERSION:-0.9.2}"
DENY_VERSION="${DENY_VERSION:-0.20.2}"
TOOLS="$PWD/.tools"
export PATH="$TOOLS/bin:$PATH"

tool() { # name version
  if ! "$1" --version 2>/dev/null | grep -q "$2"; then
    echo "== installing $1 $2 into .tools/ (once)"
    cargo install --quiet --locked --root "$TOOLS" "$1" --version "$2"
  fi
}

case "${1:-}" in
  unused)
    tool cargo-machete "$MACHETE_VERSION"
    echo "== cargo machete (unused dependencies)"
    # --with-metadata reads the real crate names (lambdaml-shared's library is `lambdaml`).
    cargo machete --with-metadata
    ;;
  audit)
    tool cargo-deny "$DENY_VERSION"
    echo "== cargo deny check licenses bans sources (offline, against Cargo.lock)"
    cargo deny --offline check licenses bans sources
    echo "== cargo deny check advisories (needs the RustSec database from GitHub)"
    if ! cargo deny check advisories; then
      echo "advisories could not be checked (no access to the RustSec database?); the rest passed" >&2
      exit 2
    fi
    ;;
  *)
    sed -n '2,6p' "$0"
    exit 64
    ;;
esac
