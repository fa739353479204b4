#!/usr/bin/env bash
# Monitor benchmarks, side by side on this machine (figures in BENCHMARKS.md):
#   1. KS + PSI, 1,000,000 vs 1,000,000 values x 20 features: lambdaml::drift vs
#      scipy.stats.ks_2samp + numpy PSI, both one thread, same samples.
#   2. A monitor run on 100,000 captured rows x 20 features vs Evidently's DataDriftPreset on
#      the same reference and current rows (verdicts compared).
#   3. Peak RSS of a monitor run on 10,000,000 captured rows (/usr/bin/time -v).
# Python peers: .venv-bench (scipy, numpy) and .venv-evidently (evidently 0.7.23, pandas 2),
# created when missing. SKIP_10M=1 skips part 3 (it writes ~2.5 GB of captures).
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_OUT="${BENCH_OUT:-bench/out}"
mkdir -p "$BENCH_OUT"
[ -x .venv-bench/bin/python ] || { python3 -m venv .venv-bench; .venv-bench/bin/pip install -q scipy==1.17.1 numpy; }
[ -x .venv-evidently/bin/python ] || { python3 -m venv .venv-evidently; .venv-evidently/bin/pip install -q "evidently==0.7.23" "pandas<3" "scipy==1.17.1"; }
cargo bench -p lambdaml-e2e --bench monitor --no-run
BIN=$(ls -t target/release/deps/monitor-* | grep -v '\.d$' | head -1)
BENCH_PART=drift "$BIN"
.venv-bench/bin/python bench/monitor_peers.py drift "$BENCH_OUT" | tee -a "$BENCH_OUT/monitor.jsonl"
BENCH_PART=run "$BIN"
.venv-evidently/bin/python bench/monitor_peers.py run "$BENCH_OUT" | tee -a "$BENCH_OUT/monitor.jsonl"
if [ "${SKIP_10M:-0}" != 1 ]; then
  BENCH_PART=gen10m "$BIN"
  /usr/bin/time -v env BENCH_PART=rss10m "$BIN" 2> "$BENCH_OUT/rss10m.txt"
  grep -E "Maximum resident|Elapsed" "$BENCH_OUT/rss10m.txt"
  rm -rf "$BENCH_OUT/store10m"
fi
