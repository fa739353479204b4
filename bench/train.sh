#!/usr/bin/env bash
# Training benchmark: lambdaml (candle; L-BFGS for logistic regression, AdamW for the MLP)
# against scikit-learn on the same generated 1,000,000 x 20 CSV with the same split, in the
# same run; then the MLP on covtype (class 2 vs rest). Results in bench/out/train.jsonl.
#
#   bench/train.sh          (BIN=path/to/lambdaml to skip the build; MLP_EPOCHS=20)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-1000000}"
MLP_EPOCHS="${MLP_EPOCHS:-20}"
# candle hands each matrix product to rayon when more than one thread is allowed; on the MLP's
# small products that is 2.5x slower (5.4 s vs 2.2 s for 5 epochs here). One thread, as the
# template sets for the Lambda functions and .cargo/config.toml for cargo runs.
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-1}"
VENV=.venv-bench
OUT=bench/out
mkdir -p "$OUT"
if ! "$VENV/bin/python" -c "import sklearn, pandas" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet numpy pandas scikit-learn
fi
if [ -z "${BIN:-}" ]; then
  cargo build --release -p lambdaml-cli
  BIN=target/release/lambdaml
fi
[ -f "$OUT/gen_$ROWS.csv" ] || "$VENV/bin/python" bench/gen.py "$ROWS" "$OUT/gen_$ROWS.csv"
: > "$OUT/train.jsonl"

lambdaml_fit() { # spec data model
  rm -rf "$OUT/train-store"
  "$VENV/bin/python" bench/measure.py "$BIN" --store "file://$OUT/train-store" --json train --spec "$1" --data "$2" >/dev/null
  local version
  version=$("$BIN" --store "file://$OUT/train-store" --json models show "$3" | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["production"])')
  "$BIN" --store "file://$OUT/train-store" --json models show "$3" --version "$version" | "$VENV/bin/python" -c '
import json, sys
v = json.load(sys.stdin)
t, m = v["manifest"]["training"], v["evaluation"]["metrics"]
print(json.dumps({"peer": "lambdaml " + sys.argv[1], "fit_seconds": t["seconds"], "iterations": t["steps"],
                  "train_rows": t["rows"], "auc": m["roc_auc"], "accuracy": m["accuracy"]}))' "$3"
}

lambdaml_fit bench/gen-logistic.toml "$OUT/gen_$ROWS.csv" gen-logistic | tee -a "$OUT/train.jsonl"
"$VENV/bin/python" bench/sklearn_train.py "$OUT/gen_$ROWS.csv" y logistic 100 | tee -a "$OUT/train.jsonl"

sed "s/^epochs = .*/epochs = $MLP_EPOCHS/" bench/gen-mlp.toml > "$OUT/gen-mlp.toml"
lambdaml_fit "$OUT/gen-mlp.toml" "$OUT/gen_$ROWS.csv" gen-mlp | tee -a "$OUT/train.jsonl"
"$VENV/bin/python" bench/sklearn_train.py "$OUT/gen_$ROWS.csv" y mlp "$MLP_EPOCHS" | tee -a "$OUT/train.jsonl"

# covtype, class 2 vs rest (the bundled sample is in ../shared at benchmark time only).
COV="${COVTYPE:-../shared/data/covtype_sample100k.csv.gz}"
if [ -f "$COV" ]; then
  "$VENV/bin/python" -c "
import pandas as pd, sys
df = pd.read_csv('$COV'); df['cover2'] = (df.pop('Cover_Type') == 2).astype(int); df.to_csv('$OUT/covtype2.csv', index=False)"
  rm -rf "$OUT/train-store"
  "$VENV/bin/python" bench/measure.py "$BIN" --store "file://$OUT/train-store" --json train --spec bench/covtype-mlp.toml --data "$OUT/covtype2.csv" \
    | "$VENV/bin/python" -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({"peer": "lambdaml mlp covtype (whole command)", "seconds": d["seconds"], "peak_rss_mb": d["peak_rss_mb"]}))' | tee -a "$OUT/train.jsonl"
  lambdaml_fit bench/covtype-mlp.toml "$OUT/covtype2.csv" covtype-mlp | tee -a "$OUT/train.jsonl"
fi
