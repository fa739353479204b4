#!/usr/bin/env bash
# CBPE on the weather stream, lambdaml against NannyML 0.13.1 (BENCHMARKS.md, "Backtests"):
# the bundled spec's first version (retraining off) scores the 45 years after the first
# five with labels withheld, so every yearly monitor report carries lambdaml's CBPE
# estimate; NannyML's CBPE is fitted on the same holdout days' probabilities and estimates
# the same years (chunks of 365 rows) from the same probabilities.
# Needs a release build and .venv-nannyml (created when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-nannyml/bin/python ] || { python3 -m venv .venv-nannyml; .venv-nannyml/bin/pip install -q nannyml==0.13.1 statsmodels 'pandas<2.3' 'numpy<2.1'; }
LAMBDAML="${BIN:-target/release/lambdaml}"
OUT="${BENCH_OUT:-bench/out}/cbpe_weather"
rm -rf "$OUT"; mkdir -p "$OUT"
sed -e 's/^enabled = true$/enabled = false/' -e 's/^mode = "shadow"$/mode = "direct"/' \
  examples/specs/weather.toml > "$OUT/spec.toml"
"$LAMBDAML" --store "file://$OUT/store" --json backtest data/weather_noaa.csv \
  --spec "$OUT/spec.toml" --initial 1825 --period 365 --period-time 365d --labels-delay 1000 \
  > "$OUT/backtest.json"
# The holdout days and every later day, scored by the first (only) version, no capture.
.venv-nannyml/bin/python bench/cbpe_weather.py prepare "$OUT"
"$LAMBDAML" --store "file://$OUT/store" --json predict --model weather-rain --no-capture \
  --input "$OUT/holdout.csv" > "$OUT/holdout.json"
"$LAMBDAML" --store "file://$OUT/store" --json predict --model weather-rain --no-capture \
  --input "$OUT/stream.csv" > "$OUT/stream.json"
NML_DISABLE_USAGE_LOGGING=1 .venv-nannyml/bin/python bench/cbpe_weather.py compare "$OUT" 2>/dev/null
