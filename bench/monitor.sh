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
# The CLI whose whole `lambdaml monitor` command is timed (bench/all.sh exports BIN).
LAMBDAML="${BIN:-target/release/lambdaml}"
[ -x "$LAMBDAML" ] || cargo build --release -p lambdaml-cli
cargo bench -p lambdaml-e2e --bench monitor --no-run
BIN=$(ls -t target/release/deps/monitor-* | grep -v '\.d$' | head -1)
BENCH_PART=drift "$BIN"
.venv-bench/bin/python bench/monitor_peers.py drift "$BENCH_OUT" | tee -a "$BENCH_OUT/monitor.jsonl"
BENCH_PART=run "$BIN"
.venv-evidently/bin/python bench/monitor_peers.py run "$BENCH_OUT" | tee -a "$BENCH_OUT/monitor.jsonl"
# The whole command as a user runs it (process start, store reads, JSON captures, report
# written), on the same store and window as the in-process run; against Evidently's time.
read -r RUN_STORE RUN_FROM RUN_TO < <(.venv-bench/bin/python -c '
import json, sys; r = json.load(open(sys.argv[1])); print(r["store"], r["from"], r["to"])' "$BENCH_OUT/run_rust.json")
for i in 1 2 3 4 5; do
  .venv-bench/bin/python bench/measure.py "$LAMBDAML" --store "file://$RUN_STORE" --json \
    monitor --model bench --from "$RUN_FROM" --to "$RUN_TO" --no-retrain
done > "$BENCH_OUT/monitor_command.jsonl"
.venv-bench/bin/python - "$BENCH_OUT" <<'PY' | tee -a "$BENCH_OUT/monitor.jsonl"
import json, sys
out = sys.argv[1]
runs = sorted(json.loads(l)["seconds"] for l in open(f"{out}/monitor_command.jsonl") if l.strip())
peer = [json.loads(l) for l in open(f"{out}/monitor.jsonl") if '"part": "run"' in l][-1]
median = runs[len(runs) // 2]
print(json.dumps({"part": "command", "rows": 100000, "median_seconds": median, "best_seconds": runs[0],
                  "evidently_median_seconds": peer["evidently_median_seconds"],
                  "speedup": peer["evidently_median_seconds"] / median}))
PY
rm -rf "$(dirname "$RUN_STORE")"
if [ "${SKIP_10M:-0}" != 1 ]; then
  BENCH_PART=gen10m "$BIN"
  /usr/bin/time -v env BENCH_PART=rss10m "$BIN" 2> "$BENCH_OUT/rss10m.txt"
  grep -E "Maximum resident|Elapsed" "$BENCH_OUT/rss10m.txt"
  rm -rf "$BENCH_OUT/store10m"
fi
