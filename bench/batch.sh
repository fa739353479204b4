#!/usr/bin/env bash
# Batch scoring benchmark (issue 17): `lambdaml batch score` on ROWS (default 10,000,000)
# rows × 30 breast-cancer features against scikit-learn's predict_proba on the same file read
# by pandas in chunks (bench/sklearn_batch.py), in the same run; then the same job scored by
# two worker processes of one worker each (as two Lambda invocations would: the peak RSS of
# each), and what N Lambda workers would take (the plan's partitions × the measured
# per-partition time / N, plus the per-invocation overhead measured with `lambdaml invoke`).
# Results in bench/out/batch*.json and the summary on stdout.
#
#   bench/batch.sh            ROWS=1000000 for a quicker run; BIN=path skips the build
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-10000000}"
VENV=.venv-bench
OUT=bench/out
mkdir -p "$OUT"
if ! "$VENV/bin/python" -c "import pandas, numpy, sklearn, pyarrow" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet numpy pandas scikit-learn pyarrow
fi
if [ -z "${BIN:-}" ]; then
  cargo build --release -p lambdaml-cli
  BIN=target/release/lambdaml
fi
FILE="$OUT/batch_$ROWS.csv"
[ -f "$FILE" ] || "$VENV/bin/python" bench/batch_gen.py "$ROWS" "$FILE"
echo "file: $FILE ($(du -h "$FILE" | cut -f1), $ROWS rows)"
STORE="$OUT/batch-store"
rm -rf "$STORE" "$OUT/sklearn-batch"
L() { "$BIN" --store "file://$STORE" "$@"; }
L --json train --spec examples/specs/breast_cancer.toml --data data/sklearn_breast_cancer.csv >/dev/null

# Every measured run starts with the file in the page cache, the peer's too: the figures
# are the work, not the disk.
warm() { cat "$FILE" >/dev/null; }

echo "== lambdaml batch score --workers 2 (one process, as a user runs it)"
warm
"$VENV/bin/python" bench/measure.py "$BIN" --store "file://$STORE" --json \
  batch score --model breast-cancer --input "$FILE" --job one --workers 2 | tee "$OUT/batch_one.json"

echo "== the same job, two worker processes of one worker each"
warm
# The submission (the input put into the store, the job message sent) counts too.
"$VENV/bin/python" bench/measure.py "$BIN" --store "file://$STORE" --json \
  batch score --model breast-cancer --input "$FILE" --job two --no-wait >"$OUT/batch_submit.json"
"$VENV/bin/python" bench/measure.py "$BIN" --store "file://$STORE" --json run --workers 1 >"$OUT/batch_w1.json" &
w1=$!
"$VENV/bin/python" bench/measure.py "$BIN" --store "file://$STORE" --json run --workers 1 >"$OUT/batch_w2.json" &
w2=$!
wait $w1 $w2
cat "$OUT/batch_w1.json" "$OUT/batch_w2.json"

echo "== per-invocation overhead: lambdaml invoke batch on an already scored partition"
EVENT="$OUT/batch_event.json"
python3 - "$EVENT" <<'PY'
import json, sys
body = {"version": 1, "run_id": "batch-two", "stage": "batch_partition",
        "model_name": "breast-cancer", "job": "two", "partition": 0}
json.dump({"Records": [{"messageId": "m1", "receiptHandle": "r1", "body": json.dumps(body),
    "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
    "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:lambdaml-batch",
    "awsRegion": "us-east-1"}]}, open(sys.argv[1], "w"))
PY
for i in 1 2 3; do
  LAMBDAML_STORE="file://$STORE" "$VENV/bin/python" bench/measure.py "$BIN" invoke batch --event "$EVENT"
done | tee "$OUT/batch_invoke.jsonl"

echo "== peer: pandas read_csv(chunksize) + scikit-learn predict_proba + pyarrow"
warm
"$VENV/bin/python" bench/sklearn_batch.py "$FILE" "$OUT/sklearn-batch" | tee "$OUT/batch_sklearn.json"

"$VENV/bin/python" - "$OUT" "$STORE" "$ROWS" <<'PY'
import glob, json, math, sys
out, store, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
one = json.load(open(f"{out}/batch_one.json"))
w = [json.load(open(f"{out}/batch_w{i}.json")) for i in (1, 2)]
peer = json.load(open(f"{out}/batch_sklearn.json"))
inv = [json.loads(l) for l in open(f"{out}/batch_invoke.jsonl")]
m = json.load(open(f"{store}/batch/breast-cancer/two/manifest.json"))
parts = [json.load(open(p)) for p in sorted(glob.glob(f"{store}/batch/breast-cancer/two/output/part-*.json"))]
per = [p["read_seconds"] + p["score_seconds"] + p["write_seconds"] for p in parts]
mean = sum(per) / len(per)
overhead = min(i["seconds"] for i in inv)
submit = json.load(open(f"{out}/batch_submit.json"))
two_s = submit["seconds"] + max(x["seconds"] for x in w)
summary = {
    "rows": rows,
    "one_process_seconds": one["seconds"], "one_process_rows_per_s": rows / one["seconds"],
    "one_process_peak_rss_mb": one["peak_rss_mb"],
    "submit_seconds": submit["seconds"],
    "two_workers_seconds": two_s, "two_workers_rows_per_s": rows / two_s,
    "worker_peak_rss_mb": [x["peak_rss_mb"] for x in w],
    "sklearn_seconds": peer["seconds"], "sklearn_rows_per_s": peer["rows_per_s"],
    "sklearn_peak_rss_mb": peer["peak_rss_mb"],
    "speedup_vs_sklearn": (rows / two_s) / peer["rows_per_s"],
    "speedup_one_process_vs_sklearn": (rows / one["seconds"]) / peer["rows_per_s"],
    "partitions": m["partitions"], "plan_seconds": m["plan_seconds"],
    "partition_seconds_mean": mean, "partition_seconds_max": max(per),
    "read_score_write_means": [sum(p[k] for p in parts) / len(parts)
                               for k in ("read_seconds", "score_seconds", "write_seconds")],
    "invoke_overhead_seconds": overhead,
    "lambda_projection_seconds": {str(n): m["plan_seconds"] + math.ceil(m["partitions"] / n) * (mean + overhead)
                                  for n in (2, 10, 100, 1000)},
}
json.dump(summary, open(f"{out}/batch.json", "w"), indent=1)
print(json.dumps(summary, indent=1))
PY
