#!/usr/bin/env bash
# make fuzz: every fuzz target for FUZZ_SECONDS (default 60) each, seeded from the project's
# own test inputs, with libFuzzer's memory limits (an allocation by a declared size fails the
# run). Prints the executions, coverage and crashes per target to fuzz/out/summary.txt.
#
# On this stable toolchain cargo-fuzz runs with RUSTC_BOOTSTRAP=1 (its -Z flags) and
# --sanitizer none (AddressSanitizer needs a nightly std); libFuzzer's coverage
# instrumentation (-Cpasses=sancov-module) works as on nightly.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
TARGETS="${FUZZ_TARGETS:-score_request json_budget ingest_file lambda_event template}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
# Start from the workspace's versions; cargo adds libfuzzer-sys.
[ -f Cargo.lock ] || cp ../Cargo.lock Cargo.lock
python3 seed.py
mkdir -p out
: > out/summary.txt
status=0
for t in $TARGETS; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "== $t (${SECONDS_EACH}s)" >&2
  if ! RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none "$t" "corpus/$t" -- \
      -max_total_time="$SECONDS_EACH" -rss_limit_mb=1024 -malloc_limit_mb=512 \
      -artifact_prefix="artifacts/$t/" -print_final_stats=1 2> "out/$t.log"; then
    status=1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "out/$t.log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "out/$t.log" | tail -1 | grep -o '[0-9]*' || echo "?")
  ft=$(grep -o 'ft: [0-9]*' "out/$t.log" | tail -1 | grep -o '[0-9]*' || echo "?")
  crashes=$(find "artifacts/$t" -type f | wc -l)
  printf '%-14s %8ss  executions %-10s coverage %-6s features %-6s crashes %s\n' \
    "$t" "$SECONDS_EACH" "$execs" "$cov" "$ft" "$crashes" | tee -a out/summary.txt
done
exit $status
