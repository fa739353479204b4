#!/usr/bin/env bash
# Partitioned ingest against one pass on the same file, same run: the generated 1,000,000 x 20
# CSV of bench/ingest.sh, `lambdaml ingest` with LAMBDAML_INGEST_PARTITION_MIB=0 (one pass)
# and =MIB (partitions checked by as many workers as cores), RUNS runs each; wall time, peak RSS.
#
#   bench/ingest_parts.sh        (ROWS=1000000 MIB=40 RUNS=2; BIN= a built binary)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-1000000}"
MIB="${MIB:-40}"
RUNS="${RUNS:-2}"
VENV=.venv-bench
OUT=bench/out
mkdir -p "$OUT"
if [ -z "${BIN:-}" ]; then
  cargo build --release -p lambdaml-cli
  BIN=target/release/lambdaml
fi
[ -f "$OUT/gen_$ROWS.csv" ] || "$VENV/bin/python" bench/gen.py "$ROWS" "$OUT/gen_$ROWS.csv"
echo "file: $OUT/gen_$ROWS.csv ($(du -h "$OUT/gen_$ROWS.csv" | cut -f1))"
for mode in 0 "$MIB"; do
  for i in $(seq "$RUNS"); do
    rm -rf "$OUT/store"
    LAMBDAML_INGEST_PARTITION_MIB="$mode" "$VENV/bin/python" bench/measure.py "$BIN" \
      --store "file://$OUT/store" --json \
      ingest "$OUT/gen_$ROWS.csv" --spec bench/gen.toml --no-run \
      | sed "s/^/{\"partition_mib\": $mode, \"run\": /; s/\$/}/"
  done
done | tee "$OUT/ingest_parts.jsonl"
