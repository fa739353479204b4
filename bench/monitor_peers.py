"""The Python peers of the monitor benchmarks (bench/monitor.sh runs them after the Rust side).

drift: scipy.stats.ks_2samp + numpy PSI (the same definition as lambdaml::drift::psi) on the
       very samples the Rust bench used (bench/out/drift_{ref,cur}.f64), one feature at a
       time as a monitor would; checks the numbers agree to 1e-9.
run:   Evidently's DataDriftPreset on the same reference and current rows the Rust monitor
       run saw (bench/out/run_{ref,cur}.csv); compares the per-feature verdicts.
"""
import json
import sys
import time

import numpy as np

OUT = sys.argv[2] if len(sys.argv) > 2 else "bench/out"


def psi(ref, cur):
    edges = np.unique(np.quantile(ref, np.arange(1, 10) / 10))
    edges = np.concatenate([[-np.inf], edges, [np.inf]])
    r = np.histogram(ref, edges)[0] / len(ref)
    c = np.histogram(cur, edges)[0] / len(cur)
    r = np.where(r == 0, 1e-4, r)
    c = np.where(c == 0, 1e-4, c)
    return float(np.sum((c - r) * np.log(c / r)))


def drift():
    from scipy import stats
    rust = json.load(open(f"{OUT}/drift_rust.json"))
    n, k = rust["rows"], rust["features"]
    ref = np.fromfile(f"{OUT}/drift_ref.f64", dtype="<f8").reshape(k, n)
    cur = np.fromfile(f"{OUT}/drift_cur.f64", dtype="<f8").reshape(k, n)
    best, out = float("inf"), []
    for _ in range(3):
        t = time.perf_counter()
        out = []
        for f in range(k):
            ks = stats.ks_2samp(ref[f], cur[f])
            out.append((float(ks.statistic), float(ks.pvalue), psi(ref[f], cur[f])))
        best = min(best, time.perf_counter() - t)
    worst = 0.0
    for (d, p, s), r in zip(out, rust["results"]):
        worst = max(worst, abs(d - r["ks"]), abs(p - r["p"]), abs(s - r["psi"]))
    print(json.dumps({"part": "drift", "python_seconds": best, "rust_seconds": rust["seconds"],
                      "speedup": best / rust["seconds"], "max_abs_difference": worst}))


def run():
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset
    rust = json.load(open(f"{OUT}/run_rust.json"))
    ref = pd.read_csv(f"{OUT}/run_ref.csv")
    cur = pd.read_csv(f"{OUT}/run_cur.csv")
    times, snap = [], None
    for _ in range(3):
        t = time.perf_counter()
        snap = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
        times.append(time.perf_counter() - t)
    times.sort()
    verdicts = {}
    for m in snap.dict()["metrics"]:
        cfg = m.get("config", {})
        col = cfg.get("column")
        if cfg.get("type", "").endswith("ValueDrift") and col:
            method = cfg.get("method")
            threshold = cfg.get("threshold")
            value = m["value"]
            # Evidently: p-value methods drift below the threshold, distances at or above.
            pvalue = method is not None and ("p_value" in method or method in ("K-S p_value", "chi-square p_value"))
            drifted = value < threshold if pvalue else value >= threshold
            verdicts[col] = {"method": method, "threshold": threshold, "score": value, "drifted": bool(drifted)}
    ours = rust["features_verdicts"]
    same = [c for c in ours if c in verdicts and ours[c]["drifted"] == verdicts[c]["drifted"]]
    diff = {c: {"lambdaml": ours[c], "evidently": verdicts.get(c)} for c in ours if c not in same}
    max_score_diff = max(abs((ours[c]["score"] or 0) - verdicts[c]["score"]) for c in ours if c in verdicts)
    print(json.dumps({"part": "run", "evidently_median_seconds": times[1],
                      "rust_median_seconds": rust["median_seconds"],
                      "speedup": times[1] / rust["median_seconds"],
                      "same_verdicts": len(same), "features": len(ours),
                      "max_score_difference": max_score_diff, "differences": diff}))


{"drift": drift, "run": run}[sys.argv[1]]()
