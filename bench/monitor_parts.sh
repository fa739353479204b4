#!/usr/bin/env bash
# The monitor's fan-out, measured (figures in BENCHMARKS.md, "The monitor in parts"):
#   1. BENCH_ROWS captured rows x 20 features (default 10,000,000) over BENCH_HOURS hours
#      (default 10) are written by the monitor bench's `genparts` part.
#   2. One invocation monitors the whole window (LAMBDAML_MONITOR_PARTITION_MIB=0): wall time
#      and peak RSS, from /usr/bin/time -v.
#   3. The same window planned in parts of MIB MiB (default 256): the plan, then every part
#      as its own process (`lambdaml invoke monitor` with the part's direct event, as the
#      Lambda would get it), one after another, each one's wall time and peak RSS; the last
#      part merges and writes the report.
#   4. The merge of 100 parts: the first part's summary and sample rows copied to 100 parts
#      of a new run, whose last part then merges (what a window of about 100 x the rows of a
#      part costs the merging invocation).
# The report's sections from 2 and 3 are compared (they must be equal). KEEP=1 keeps the
# captures in $BENCH_OUT/store-parts; SKIP_GEN=1 reuses them.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_OUT="${BENCH_OUT:-bench/out}"
mkdir -p "$BENCH_OUT"
MIB="${MIB:-256}"
# The CLI that runs the parts (BIN= a built binary; else the current sources, built).
LAMBDAML="${BIN:-target/release/lambdaml}"
[ -n "${BIN:-}" ] || cargo build --release -p lambdaml-cli
cargo bench -p lambdaml-e2e --bench monitor --no-run
GEN=$(ls -t target/release/deps/monitor-* | grep -v '\.d$' | head -1)
[ "${SKIP_GEN:-0}" = 1 ] || BENCH_PART=genparts "$GEN"
ROOT="$BENCH_OUT/store-parts"
STORE="file://$ROOT/store"
HOURS="${BENCH_HOURS:-10}"
FROM=2030-01-01T00:00:00Z
TO=$(date -u -d "2030-01-01 +$HOURS hours" +%Y-%m-%dT%H:%M:%SZ)
OUT="$BENCH_OUT/monitor_parts.jsonl"
: > "$OUT"
du -sb "$ROOT/store/captures" | awk '{printf "captures: %.0f MB\n", $1/1e6}'

# measure LABEL CMD…: runs CMD under /usr/bin/time -v, prints its stdout, appends
# {"label", "seconds", "max_rss_mb"} to $OUT.
measure() {
  local label=$1; shift
  local t="$BENCH_OUT/time.txt"
  /usr/bin/time -v "$@" 2> "$t" > "$BENCH_OUT/stdout.json"
  python3 - "$label" "$t" >> "$OUT" <<'PY'
import json, re, sys
text = open(sys.argv[2]).read()
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (.*)", text).group(1)
parts = [float(p) for p in wall.split(":")]
seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) / 1024
print(json.dumps({"label": sys.argv[1], "seconds": seconds, "max_rss_mb": round(rss, 1)}))
PY
  tail -1 "$OUT"
  cat "$BENCH_OUT/stdout.json"
}

export RAYON_NUM_THREADS=1

echo '{"model": "bench", "from": "'$FROM'", "to": "'$TO'", "retrain": false}' > "$BENCH_OUT/direct.json"
LAMBDAML_MONITOR_PARTITION_MIB=0 measure one_invocation \
  "$LAMBDAML" --store "$STORE" --json invoke monitor --event "$BENCH_OUT/direct.json" > /dev/null
ONE=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["runs"][0]["report"])' "$BENCH_OUT/stdout.json")

export LAMBDAML_MONITOR_PARTITION_MIB="$MIB"
measure plan "$LAMBDAML" --store "$STORE" --json invoke monitor --event "$BENCH_OUT/direct.json" > /dev/null
read -r RUN PARTS REPORT < <(python3 -c '
import json, sys; r = json.load(open(sys.argv[1]))["runs"][0]; print(r["planned"], r["parts"], r["report"])' "$BENCH_OUT/stdout.json")
echo "planned $RUN in $PARTS parts"
for ((i = 0; i < PARTS; i++)); do
  echo '{"model_name": "bench", "run": "'$RUN'", "part": '$i'}' > "$BENCH_OUT/part.json"
  measure "part_$i" "$LAMBDAML" --store "$STORE" --json invoke monitor --event "$BENCH_OUT/part.json" > /dev/null
done

# The merge of 100 parts: part 0's files (hard links) as every part of a new run.
BENCH_PART=merge100 BENCH_RUN="$RUN" BENCH_PARTS_STORE="$ROOT/store" measure merge_100_parts "$GEN" > /dev/null

python3 - "$ROOT/store" "$ONE" "$REPORT" "$OUT" "$PARTS" <<'PY'
import json, sys
root, one, parted, out, parts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
a, b = json.load(open(f"{root}/{one}")), json.load(open(f"{root}/{parted}"))
for section in ["captures", "data_drift", "prediction_drift", "data_quality", "processing", "verdict"]:
    assert a[section] == b[section], f"{section} differs between one invocation and the parts"
rows = a["captures"]["rows_scored"]
lines = [json.loads(l) for l in open(out) if l.strip()]
by = {l["label"]: l for l in lines}
part_lines = [l for l in lines if l["label"].startswith("part_")]
aggregate = [l["seconds"] for l in part_lines[:-1]] or [part_lines[-1]["seconds"]]
per_part = sum(aggregate) / len(aggregate)
merge = part_lines[-1]["seconds"] - per_part
summary = {
    "part": "summary", "rows": rows, "parts": parts,
    "one_invocation_seconds": by["one_invocation"]["seconds"],
    "one_invocation_rss_mb": by["one_invocation"]["max_rss_mb"],
    "plan_seconds": by["plan"]["seconds"],
    "part_seconds_mean": round(per_part, 2),
    "part_rss_mb_max": max(l["max_rss_mb"] for l in part_lines),
    "merge_seconds_in_last_part": round(merge, 2),
    "merge_100_parts_seconds": by["merge_100_parts"]["seconds"],
    "merge_100_parts_rss_mb": by["merge_100_parts"]["max_rss_mb"],
    "parts_one_after_another_seconds": round(sum(l["seconds"] for l in part_lines), 2),
    "report_sections_equal": True,
}
# 100,000,000 rows: 100 x 1,000,000-row parts on N workers, then the 100-part merge.
rows_per_part = rows / parts
p100 = 100_000_000 / rows_per_part
for n in (2, 10, 100):
    waves = -(-p100 // n)
    summary[f"projected_100m_{n}_workers_seconds"] = round(
        by["plan"]["seconds"] * p100 / parts + waves * per_part + by["merge_100_parts"]["seconds"], 1)
print(json.dumps(summary))
with open(out, "a") as f:
    f.write(json.dumps(summary) + "\n")
PY
[ "${KEEP:-0}" = 1 ] || rm -rf "$ROOT"
