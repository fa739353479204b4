#!/usr/bin/env bash
# Ingest benchmark: lambdaml ingest (schema inference, validation, Parquet, profile) against
# pandas read_csv + describe() on the same generated 1,000,000 x 20 CSV, in the same run;
# then peak RSS of lambdaml on a ~1 GB CSV. Results go to bench/out/ingest.json.
#
#   bench/ingest.sh            (ROWS=1000000 BIG_ROWS=5500000 to change sizes)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-1000000}"
BIG_ROWS="${BIG_ROWS:-5500000}"
VENV=.venv-bench
OUT=bench/out
mkdir -p "$OUT"
if ! "$VENV/bin/python" -c "import pandas, numpy" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet numpy pandas
fi
# BIN=path/to/lambdaml skips the build (to benchmark a binary built earlier).
if [ -z "${BIN:-}" ]; then
  cargo build --release -p lambdaml-cli
  BIN=target/release/lambdaml
fi
[ -f "$OUT/gen_$ROWS.csv" ] || "$VENV/bin/python" bench/gen.py "$ROWS" "$OUT/gen_$ROWS.csv"
echo "file: $OUT/gen_$ROWS.csv ($(du -h "$OUT/gen_$ROWS.csv" | cut -f1))"

best() { sort -t: -k2 -n | head -1; }
for i in 1 2 3; do
  rm -rf "$OUT/store"
  "$VENV/bin/python" bench/measure.py "$BIN" --store "file://$OUT/store" --json \
    ingest "$OUT/gen_$ROWS.csv" --spec bench/gen.toml --no-run
done | tee "$OUT/lambdaml_runs.jsonl"
for i in 1 2 3; do
  "$VENV/bin/python" bench/pandas_profile.py "$OUT/gen_$ROWS.csv"
done | tee "$OUT/pandas_runs.jsonl"

[ "${SKIP_BIG:-0}" = 1 ] && exit 0
[ -f "$OUT/gen_$BIG_ROWS.csv" ] || "$VENV/bin/python" bench/gen.py "$BIG_ROWS" "$OUT/gen_$BIG_ROWS.csv"
echo "big file: $(du -h "$OUT/gen_$BIG_ROWS.csv" | cut -f1)"
rm -rf "$OUT/store"
"$VENV/bin/python" bench/measure.py "$BIN" --store "file://$OUT/store" --json \
  ingest "$OUT/gen_$BIG_ROWS.csv" --spec bench/gen.toml --no-run | tee "$OUT/lambdaml_big.json"
rm -rf "$OUT/store"
