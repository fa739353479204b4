#!/usr/bin/env bash
# Scoring benchmark, side by side in one run on this machine: lambdaml serve (capture on)
# vs a bare axum endpoint (the ceiling) vs FastAPI + uvicorn (1 worker) serving the same
# scikit-learn model; one row per request, the same Open Inference Protocol body, wrk with
# 32 connections on 127.0.0.1. Then cold start (process start to first correct prediction,
# model read from the file store) against a fresh Python loading the model with joblib.
# Results in bench/out/score.jsonl.
#
#   bench/score.sh     (BIN=path/to/lambdaml BARE=path/to/bare_axum to skip the build;
#                       DURATION=15s CONNECTIONS=32; PIN=1 runs every server on core 0 and
#                       wrk on core 1, so the load generator does not steal the server's CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-bench
OUT=bench/out
DURATION="${DURATION:-15s}"
CONNECTIONS="${CONNECTIONS:-32}"
SERVER_CPU=()
WRK_CPU=()
TAG=""
if [ "${PIN:-0}" = 1 ]; then
  SERVER_CPU=(taskset -c 0)
  WRK_CPU=(taskset -c 1)
  TAG=" (pinned)"
fi
mkdir -p "$OUT"
command -v wrk >/dev/null || infra/apt-install.sh "the load generator of bench/score.sh" wrk
if ! "$VENV/bin/python" -c "import sklearn, pandas, fastapi, uvicorn, joblib" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet numpy pandas scikit-learn fastapi "uvicorn[standard]" joblib
fi
if [ -z "${BIN:-}" ] || [ -z "${BARE:-}" ]; then
  cargo build --release -p lambdaml-cli -p lambdaml-score --bins --examples
  BIN=target/release/lambdaml
  BARE=target/release/examples/bare_axum
fi
STORE="$OUT/score-store"
rm -rf "$STORE"
"$BIN" --store "file://$STORE" train --spec examples/specs/breast_cancer.toml \
  --data data/sklearn_breast_cancer.csv >/dev/null
ROW='[17.99,10.38,122.8,1001.0,0.1184,0.2776,0.3001,0.1471,0.2419,0.07871,1.095,0.9053,8.589,153.4,0.006399,0.04904,0.05373,0.01587,0.03003,0.006193,25.38,17.33,184.6,2019.0,0.1622,0.6656,0.7119,0.2654,0.4601,0.1189]'
BODY="{\"inputs\":[{\"name\":\"input\",\"shape\":[1,30],\"datatype\":\"FP64\",\"data\":[$ROW]}]}"
cat > "$OUT/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
LUA
[ "${APPEND:-0}" = 1 ] || : > "$OUT/score.jsonl"

load() { # name url pid
  curl -sf -H 'Content-Type: application/json' -d "$BODY" "$2" >/dev/null
  "${WRK_CPU[@]}" wrk -t2 -c"$CONNECTIONS" -d2s -s "$OUT/post.lua" "$2" >/dev/null   # warm-up
  "${WRK_CPU[@]}" wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$OUT/post.lua" "$2" > "$OUT/wrk-$1.txt"
  local rss
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$3/status")
  "$VENV/bin/python" - "$1$TAG c=$CONNECTIONS" "$OUT/wrk-$1.txt" "$rss" <<'PY' | tee -a bench/out/score.jsonl
import json, re, sys
name, path, rss = sys.argv[1], sys.argv[2], int(sys.argv[3])
text = open(path).read()
def ms(label):
    m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(json.dumps({"peer": name, "requests_per_s": rps, "p50_ms": ms("50"), "p99_ms": ms("99"),
                  "non_2xx": int(errors.group(1)) if errors else 0, "peak_rss_mb": rss / 1024}))
PY
}

# lambdaml serve, capture on (every request captured to the file store).
"${SERVER_CPU[@]}" "$BIN" --store "file://$STORE" serve --addr 127.0.0.1:18080 --model breast-cancer 2>"$OUT/serve.log" &
PID=$!
until curl -sf 127.0.0.1:18080/v2/health/ready >/dev/null; do sleep 0.05; done
load lambdaml "http://127.0.0.1:18080/v2/models/breast-cancer/infer" "$PID"
kill -INT "$PID"; wait "$PID" || true
echo "captured: $(cat "$STORE"/captures/breast-cancer/*/*/*.jsonl | wc -l) requests" >&2

# The same server with a shadow version scoring a copy of every request, off the response
# path (issue 15: goal ≥ 90 % of the throughput above, p50 unchanged within noise). A second
# version from another split seed; whichever the rule kept, the other one is the shadow.
sed -e 's/^seed = .*/seed = 7/' examples/specs/breast_cancer.toml > "$OUT/breast_shadow.toml"
"$BIN" --store "file://$STORE" train --spec "$OUT/breast_shadow.toml" \
  --data data/sklearn_breast_cancer.csv >/dev/null
read -r PROD OTHER < <("$BIN" --store "file://$STORE" --json models show breast-cancer | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(r["production"], next(v for v in r["versions"] if v != r["production"]))')
if [ "$("$BIN" --store "file://$STORE" --json models show breast-cancer | python3 -c '
import json, sys; r = json.load(sys.stdin); print(r["versions"][sys.argv[1]]["status"])' "$OTHER")" = rejected ]; then
  "$BIN" --store "file://$STORE" models promote breast-cancer "$OTHER" --reason "bench: swap" >/dev/null
  read -r PROD OTHER <<<"$OTHER $PROD"
fi
"$BIN" --store "file://$STORE" models shadow breast-cancer "$OTHER" >/dev/null
rm -rf "$STORE/captures"
"${SERVER_CPU[@]}" "$BIN" --store "file://$STORE" serve --addr 127.0.0.1:18083 --model breast-cancer 2>"$OUT/serve-shadow.log" &
PID=$!
until curl -sf 127.0.0.1:18083/v2/health/ready >/dev/null; do sleep 0.05; done
load lambdaml-shadow-100pct "http://127.0.0.1:18083/v2/models/breast-cancer/infer" "$PID"
kill -INT "$PID"; wait "$PID" || true
echo "captured with a shadow: $(cat "$STORE"/captures/breast-cancer/*/*/*.jsonl | grep -vc '"role":"shadow"') production and $(cat "$STORE"/captures/breast-cancer/*/*/*.jsonl | grep -c '"role":"shadow"') shadow records" >&2
"$BIN" --store "file://$STORE" models end-rollout breast-cancer >/dev/null

"${SERVER_CPU[@]}" "$BARE" 127.0.0.1:18081 2>/dev/null &
PID=$!
until curl -sf -d x 127.0.0.1:18081/v2/models/m/infer >/dev/null; do sleep 0.05; done
load bare-axum "http://127.0.0.1:18081/v2/models/m/infer" "$PID"
kill "$PID"; wait "$PID" 2>/dev/null || true

"${SERVER_CPU[@]}" "$VENV/bin/uvicorn" --app-dir bench fastapi_score:app --host 127.0.0.1 --port 18082 --workers 1 \
  --no-access-log --log-level warning &
PID=$!
until curl -sf -H 'Content-Type: application/json' -d "$BODY" 127.0.0.1:18082/v2/models/m/infer >/dev/null 2>&1; do sleep 0.2; done
load fastapi-sklearn "http://127.0.0.1:18082/v2/models/m/infer" "$PID"
kill "$PID"; wait "$PID" 2>/dev/null || true

[ "${SKIP_COLD:-0}" = 1 ] && exit 0
# Cold start: a new process that reads the model from the file store and predicts one row.
echo "{\"instances\": [$ROW]}" > "$OUT/row.json"
"$VENV/bin/python" - "$BIN" "$STORE" "$OUT/row.json" <<'PY' | tee -a "$OUT/score.jsonl"
import json, subprocess, sys, time
bin_, store, row = sys.argv[1:]
times, out = [], ""
for _ in range(30):
    t = time.perf_counter()
    out = subprocess.run([bin_, "--store", f"file://{store}", "--json", "predict", "--model", "breast-cancer",
                          "--input", row, "--no-capture"], check=True, capture_output=True, text=True).stdout
    times.append(time.perf_counter() - t)
times.sort()
p = json.loads(out)["predictions"][0]["probabilities"]["1"]
print(json.dumps({"peer": "lambdaml predict (process start to prediction)", "median_ms": 1000 * times[15],
                  "min_ms": 1000 * times[0], "p_class1": p}))
PY
"$VENV/bin/python" bench/sklearn_cold.py fit "$OUT/sklearn.joblib"
"$VENV/bin/python" bench/sklearn_cold.py time "$OUT/sklearn.joblib" 10 | tee -a "$OUT/score.jsonl"
ls -l "$(dirname "$BIN")/score" 2>/dev/null | awk '{print "{\"peer\": \"score bootstrap binary\", \"bytes\": " $5 "}"}' | tee -a "$OUT/score.jsonl"
