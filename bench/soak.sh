#!/usr/bin/env bash
# Soak and crash figures for `lambdaml serve` (capture on), on 127.0.0.1 only:
#  1. the maximum throughput (wrk, 32 connections, 15 s, one-row V2 requests);
#  2. 10 minutes at 80 % of it (wrk with a per-request delay that paces each connection):
#     errors, requests served vs captured, RSS sampled every 10 s (flat or not);
#  3. kill -9 under load, with the default capture flushing and with --capture-sync: what
#     was answered vs what was captured.
# Results in bench/out/soak.jsonl. SOAK=600 (seconds) sets the soak's length; MAX=<rps>
# reuses a measured maximum, KILL=0 skips the kill -9 phase.
#
#   bench/soak.sh     (BIN=path/to/lambdaml to skip the build)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/out
SOAK="${SOAK:-600}"
CONNECTIONS=32
mkdir -p "$OUT"
command -v wrk >/dev/null || infra/apt-install.sh "the load generator of bench/soak.sh" wrk
if [ -z "${BIN:-}" ]; then
  cargo build --release -p lambdaml-cli
  BIN=target/release/lambdaml
fi
STORE="$OUT/soak-store"
rm -rf "$STORE"
"$BIN" --store "file://$STORE" train --spec examples/specs/breast_cancer.toml \
  --data data/sklearn_breast_cancer.csv >/dev/null
ROW='[17.99,10.38,122.8,1001.0,0.1184,0.2776,0.3001,0.1471,0.2419,0.07871,1.095,0.9053,8.589,153.4,0.006399,0.04904,0.05373,0.01587,0.03003,0.006193,25.38,17.33,184.6,2019.0,0.1622,0.6656,0.7119,0.2654,0.4601,0.1189]'
BODY="{\"inputs\":[{\"name\":\"input\",\"shape\":[1,30],\"datatype\":\"FP64\",\"data\":[$ROW]}]}"
URL=http://127.0.0.1:18090/v2/models/breast-cancer/infer
: > "$OUT/soak.jsonl"
PID=""
trap '[ -n "$PID" ] && kill -9 "$PID" 2>/dev/null || true' EXIT

lua() { # delay-ms
  cat > "$OUT/soak.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
function delay() return $1 end
LUA
}
# find, not a glob: --capture-sync writes tens of thousands of objects, past ARG_MAX.
captured() { { find "$STORE/captures" -type f -name '*.jsonl' -exec cat {} + 2>/dev/null || true; } | wc -l; }
start() { # extra flags...
  "$BIN" --store "file://$STORE" serve --addr 127.0.0.1:18090 --model breast-cancer "$@" 2>>"$OUT/soak-serve.log" &
  PID=$!
  until curl -sf 127.0.0.1:18090/v2/health/ready >/dev/null; do sleep 0.05; done
}
requests() { awk '/requests in/ {print $1}' "$1"; }
non2xx() { awk '/Non-2xx/ {print $NF}' "$1" | grep . || echo 0; }
errors() { awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$1" | grep . || echo 0; }

# 1. Maximum throughput (MAX=requests/s skips it, reusing an earlier measurement).
if [ -z "${MAX:-}" ]; then
  start
  lua 0
  wrk -t2 -c"$CONNECTIONS" -d15s -s "$OUT/soak.lua" "$URL" > "$OUT/soak-max.txt"
  MAX=$(awk '/Requests\/sec/ {print $2}' "$OUT/soak-max.txt")
  kill -INT "$PID"; wait "$PID" || true
fi
echo "{\"phase\": \"max\", \"requests_per_s\": $MAX}" | tee -a "$OUT/soak.jsonl"

# 2. The soak at 80 %: each connection waits DELAY ms (wrk's granularity: whole ms) before
# each request, so the rate is set by the number of connections: one request per
# DELAY + the cycle time at this load (0.72 ms measured on the 2-core machine) each.
TARGET=$(python3 -c "print(0.8 * $MAX)")
DELAY=1
PACED=$(python3 -c "import math; print(math.ceil($TARGET * (1 + 0.72) / 1000))")
rm -rf "$STORE/captures"
start
BEFORE=$(captured)
lua "$DELAY"
( for _ in $(seq 1 $((SOAK / 10))); do
    sleep 10; awk '/VmRSS/ {print $2}' "/proc/$PID/status"
  done ) > "$OUT/soak-rss.txt" &
SAMPLER=$!
wrk -t2 -c"$PACED" -d"${SOAK}s" --latency -s "$OUT/soak.lua" "$URL" > "$OUT/soak-run.txt"
wait "$SAMPLER" || true
kill -INT "$PID"; wait "$PID" || true
SERVED=$(requests "$OUT/soak-run.txt")
python3 - "$OUT/soak-run.txt" "$OUT/soak-rss.txt" "$SERVED" "$(( $(captured) - BEFORE ))" "$TARGET" "$(non2xx "$OUT/soak-run.txt")" "$(errors "$OUT/soak-run.txt")" <<'PY' | tee -a "$OUT/soak.jsonl"
import json, re, sys
run, rss_path, served, captured, target, non2xx, errors = sys.argv[1:]
text = open(run).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
rss = [int(x) / 1024 for x in open(rss_path).read().split()]
third = max(1, len(rss) // 3)
print(json.dumps({"phase": "soak", "seconds": len(rss) * 10, "target_rps": float(target), "requests_per_s": rps,
                  "served": int(served), "captured": int(captured), "non_2xx": int(non2xx), "socket_errors": int(errors),
                  "rss_mb_first_third_mean": sum(rss[:third]) / third, "rss_mb_last_third_mean": sum(rss[-third:]) / third,
                  "rss_mb_max": max(rss) if rss else None}))
PY

# 3. kill -9 under load: answered (wrk's count) vs captured (KILL=0 skips it).
[ "${KILL:-1}" = 0 ] && exit 0
for mode in default sync; do
  rm -rf "$STORE/captures"
  if [ "$mode" = sync ]; then start --capture-sync; else start; fi
  lua 0
  wrk -t2 -c"$CONNECTIONS" -d5s -s "$OUT/soak.lua" "$URL" > "$OUT/soak-kill-$mode.txt" &
  WRK=$!
  sleep 4
  kill -9 "$PID"
  wait "$WRK" || true
  wait "$PID" 2>/dev/null || true
  echo "{\"phase\": \"kill -9 ($mode)\", \"answered\": $(requests "$OUT/soak-kill-$mode.txt"), \"captured\": $(captured)}" | tee -a "$OUT/soak.jsonl"
done
