#!/usr/bin/env bash
# `make bench`: every side-by-side benchmark of issue 14's table in one run on this machine,
# each peer on the same generated files in the same run, then the ratio table
# (bench/table.py). Builds the release CLI, the score binary and the bare axum example once.
#
#   bench/all.sh     ONLY="ingest train monitor score" to run a subset;
#                    ROWS (ingest, train; default 1,000,000), MLP_EPOCHS (default 5),
#                    SKIP_BIG=1 skips ingest's 1 GB memory check, SKIP_10M=1 the monitor's
#                    10-million-row memory check, SKIP_COLD=1 the cold-start timing.
set -euo pipefail
cd "$(dirname "$0")/.."
ONLY="${ONLY:-ingest train monitor score}"
# candle hands each matrix product to rayon when more than one thread is allowed; on the MLP's
# small products that is 2.5x slower (5.4 s vs 2.2 s for 5 epochs here). One thread, as the
# template sets for the Lambda functions and .cargo/config.toml for cargo runs.
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-1}"
export ROWS="${ROWS:-1000000}" MLP_EPOCHS="${MLP_EPOCHS:-5}"
cargo build --release -p lambdaml-cli -p lambdaml-score --bins --examples
export BIN=target/release/lambdaml BARE=target/release/examples/bare_axum
mkdir -p bench/out
for part in $ONLY; do
  case "$part" in
    ingest) rm -f bench/out/lambdaml_runs.jsonl bench/out/pandas_runs.jsonl; bench/ingest.sh ;;
    train) COVTYPE=/nonexistent bench/train.sh ;;
    monitor) rm -f bench/out/monitor.jsonl; bench/monitor.sh ;;
    score) bench/score.sh ;;
    *) echo "unknown part $part (ingest, train, monitor, score)" >&2; exit 2 ;;
  esac
done
echo
.venv-bench/bin/python bench/table.py bench/out
