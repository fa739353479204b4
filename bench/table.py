"""Prints the side-by-side table of `make bench` from the results the bench scripts wrote
under bench/out/ in this run: each row lambdaml, its peer, the ratio and the goal of issue 14.
A row whose results are missing (its script was skipped or failed) says so.

    python bench/table.py [OUT_DIR]
"""
import json
import os
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else "bench/out"


def lines(name):
    path = os.path.join(OUT, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip().startswith("{")]


rows = []


def row(work, ours, peer, ratio, goal, met):
    rows.append((work, ours, peer, ratio, goal, "yes" if met else "no" if met is not None else "-"))


# Ingest: best of three each.
ours, pandas = lines("lambdaml_runs.jsonl"), lines("pandas_runs.jsonl")
if ours and pandas:
    a = min(ours, key=lambda r: r["seconds"])
    b = min(pandas, key=lambda r: r["seconds"])
    speed = b["seconds"] / a["seconds"]
    row("ingest 1M x 20 CSV (infer, validate, Parquet, profile)",
        f"{a['seconds']:.2f} s, {a['peak_rss_mb']:.0f} MB",
        f"pandas read_csv+describe {b['seconds']:.2f} s, {b['peak_rss_mb']:.0f} MB",
        f"{speed:.2f}x as fast", ">= 2x as fast", speed >= 2)
else:
    row("ingest", "not run", "", "", ">= 2x as fast", None)

# Training: fit seconds of the same split.
train = {r["peer"]: r for r in lines("train.jsonl")}
for ours_name, peer_name, label in [
    ("lambdaml gen-logistic", "scikit-learn logistic", "logistic regression, L-BFGS, 800k x 20"),
    ("lambdaml gen-mlp", "scikit-learn mlp", "MLP 64 hidden, 800k x 20"),
]:
    a, b = train.get(ours_name), train.get(peer_name)
    if a and b:
        ratio = a["fit_seconds"] / b["fit_seconds"]
        row(label,
            f"{a['fit_seconds']:.3f} s, AUC {a['auc']:.4f}, {a['iterations']} steps",
            f"{b['fit_seconds']:.3f} s, AUC {b['auc']:.4f}, {b['iterations']} steps",
            f"{ratio:.2f}x the time", "<= 0.5x the time", ratio <= 0.5)
    else:
        row(label, "not run", "", "", "<= 0.5x the time", None)

# Monitor: the whole `lambdaml monitor` command (and the in-process run) against Evidently's
# DataDriftPreset on the same rows.
monitor = lines("monitor.jsonl")
runs = [r for r in monitor if r.get("part") == "run"]
commands = [r for r in monitor if r.get("part") == "command"]
if commands:
    c = commands[-1]
    inproc = f" ({runs[-1]['rust_median_seconds']:.3f} s in-process)" if runs else ""
    row("monitor run, 100k captured rows x 19, whole `lambdaml monitor` command",
        f"{c['median_seconds']:.3f} s{inproc}",
        f"Evidently DataDriftPreset {c['evidently_median_seconds']:.2f} s",
        f"{c['speedup']:.0f}x as fast", ">= 100x (whole command)", c["speedup"] >= 100)
elif runs:
    r = runs[-1]
    row("monitor run, 100k captured rows x 19 (in-process only)",
        f"{r['rust_median_seconds']:.3f} s",
        f"Evidently DataDriftPreset {r['evidently_median_seconds']:.2f} s",
        f"{r['speedup']:.0f}x as fast", ">= 100x (whole command)", None)
else:
    row("monitor run", "not run", "", "", ">= 100x", None)

# Serving: lambdaml serve with capture on against a bare axum endpoint, same wrk run.
score = {r["peer"].split(" c=")[0]: r for r in lines("score.jsonl") if "requests_per_s" in r}
a, b, c = score.get("lambdaml"), score.get("bare-axum"), score.get("fastapi-sklearn")
if a and b:
    share = a["requests_per_s"] / b["requests_per_s"]
    peer = f"bare axum {b['requests_per_s']:.0f} req/s"
    if c:
        peer += f"; FastAPI+sklearn {c['requests_per_s']:.0f} req/s"
    row("serving, capture on, 32 connections",
        f"{a['requests_per_s']:.0f} req/s, p50 {a['p50_ms']:.2f} ms", peer,
        f"{100 * share:.0f} % of bare axum", ">= 60 % of bare axum", share >= 0.6)
else:
    row("serving", "not run", "", "", ">= 60 % of bare axum", None)

widths = [max(len(str(r[i])) for r in rows + [("work", "lambdaml", "peer (same run)", "ratio", "goal", "met")])
          for i in range(6)]
header = ("work", "lambdaml", "peer (same run)", "ratio", "goal", "met")
for r in [header, tuple("-" * w for w in widths)] + rows:
    print(" | ".join(str(v).ljust(w) for v, w in zip(r, widths)))
