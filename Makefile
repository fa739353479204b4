# lambdaml — the two commands people run are `cargo run --release -- demo` and `make test`.

SHELL := /bin/bash
.DEFAULT_GOAL := test
CARGO ?= cargo

.PHONY: test check fmt lint audit package emulator-up emulator-down bench bench-ingest bench-score bench-monitor bench-soak fuzz demo

## Everything: format check, unused dependencies (cargo machete), clippy -D warnings, unit + integration + emulator tests (the
## whole template.yaml system run by `lambdaml local` on moto), the monitoring report
## rendered in headless Chromium, and the template lint (sam validate --lint, cfn-lint).
## The tools that need no compiler (Debian's chromium, the SAM tools in .venv-sam, moto and
## the protocol clients in .venv, all installed when missing; the template lint; moto
## started on a free loopback port) are set up in the background while cargo builds, their
## log shown when they are done; moto is stopped afterwards, even when a step fails.
test:
	@set -euo pipefail; mkdir -p target; log=target/make-test-setup.log; \
	  ( infra/chromium.sh && infra/sam.sh lint && infra/moto.sh up ) >"$$log" 2>&1 & setup=$$!; \
	  trap 'kill $$setup 2>/dev/null || true; wait $$setup 2>/dev/null || true; infra/moto.sh down' EXIT; \
	  echo "== in the background: chromium, template lint, moto (log: $$log)"; \
	  echo "== cargo fmt --all --check"; $(CARGO) fmt --all --check; \
	  infra/deps.sh unused; \
	  echo "== cargo clippy --workspace --all-targets -- -D warnings"; \
	  $(CARGO) clippy --workspace --all-targets -- -D warnings; \
	  echo "== cargo test --workspace --no-run"; $(CARGO) test --workspace --no-run; \
	  if ! wait $$setup; then cat "$$log"; echo "make test: setting up chromium, the template lint or moto failed (above)" >&2; exit 1; fi; \
	  echo "== background setup:"; cat "$$log"; \
	  eval "$$(infra/moto.sh env)"; export LAMBDAML_REQUIRE_EMULATOR=1 LAMBDAML_REQUIRE_CHROMIUM=1; \
	  echo "== cargo test --workspace (emulator at $$AWS_ENDPOINT_URL)"; \
	  $(CARGO) test --workspace

## The fast inner loop: no emulator (its suites skip, loudly).
check:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace

fmt:
	$(CARGO) fmt --all

## cargo deny: licences, banned crates, sources and duplicates offline against Cargo.lock;
## advisories when the RustSec database can be fetched (it cannot from the build machines).
audit:
	@infra/deps.sh audit

## template.yaml's static checks alone.
lint:
	@infra/sam.sh lint

## sam build: every function for arm64 (cargo-lambda + zig) into .aws-sam/, ready for
## `sam deploy --guided`.
package:
	@infra/sam.sh build

## moto (or LocalStack with LAMBDAML_EMULATOR=localstack) with template.yaml's bucket,
## queues, DLQs and notification on it; prints the exports: eval "$$(make -s emulator-up)".
emulator-up:
	@infra/emulator.sh up

emulator-down:
	@infra/emulator.sh down

demo:
	$(CARGO) run --release -- demo

## Coverage-guided fuzzing (cargo-fuzz + libFuzzer) of every parser that reads client, event
## or file bytes, and of the template resolver: FUZZ_SECONDS (default 60) per target, seeded
## from the test inputs; summary in fuzz/out/summary.txt, crashes in fuzz/artifacts/.
fuzz:
	@fuzz/run.sh

## Every side-by-side benchmark (ingest vs pandas, training vs scikit-learn, a monitor run vs
## Evidently, serving vs bare axum and FastAPI) in one run, then the ratio table (BENCHMARKS.md).
## ONLY="train score" runs a subset; the scripts' own knobs pass through (ROWS, SKIP_BIG, ...).
bench:
	bench/all.sh

## Ingest benchmark against pandas (see BENCHMARKS.md).
bench-ingest:
	bench/ingest.sh

## Monitor benchmarks: drift statistics vs scipy/numpy, a monitor run vs Evidently, peak
## memory on 10 million captured rows (BENCHMARKS.md).
bench-monitor:
	bench/monitor.sh

## Soak (10 minutes at 80 % of the measured maximum) and kill -9 figures for lambdaml serve.
bench-soak:
	bench/soak.sh

## Scoring benchmark against FastAPI + scikit-learn and a bare axum endpoint (BENCHMARKS.md).
bench-score:
	bench/score.sh
	$(CARGO) bench -p lambdaml-e2e --bench score
