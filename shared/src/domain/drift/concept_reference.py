"""Reference detections from River's ADWIN and DDM (default parameters).

Run (river 0.26.1 from PyPI):
    python3 -m venv /tmp/river && /tmp/river/bin/pip install river==0.26.1
    /tmp/river/bin/python shared/src/domain/drift/concept_reference.py
Writes testdata/seq_<name>.txt (one value per line, repr() = full precision) and
testdata/concept_detections.json, which the Rust tests of concept.rs embed.
"""
from __future__ import annotations

import json
import os
import random

import river
from river import drift

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")


# ---------------------------------------------------------------- sequences
# Exact generation code. One random.Random(seed) per sequence; segments are drawn
# consecutively from the same generator.
def bernoulli(rng: random.Random, p: float, k: int) -> list[int]:
    # one rng.random() call per element; 1 == error
    return [1 if rng.random() < p else 0 for _ in range(k)]


def gaussian(rng: random.Random, mu: float, sigma: float, k: int) -> list[float]:
    # CPython random.gauss (Box-Muller with a cached second value)
    return [rng.gauss(mu, sigma) for _ in range(k)]


def make_sequences() -> dict[str, list]:
    seqs = {}
    r = random.Random(1)
    seqs["a"] = bernoulli(r, 0.1, 1000) + bernoulli(r, 0.4, 1000)
    r = random.Random(2)
    seqs["b"] = bernoulli(r, 0.2, 2000)
    r = random.Random(3)
    seqs["c"] = bernoulli(r, 0.05, 500) + bernoulli(r, 0.3, 500) + bernoulli(r, 0.05, 500)
    r = random.Random(4)
    seqs["d"] = gaussian(r, 0.0, 1.0, 1000) + gaussian(r, 1.0, 1.0, 1000)
    return seqs


# ---------------------------------------------------------------- runners
def run_adwin(seq, **kw):
    det = drift.ADWIN(**kw)
    hits = []
    width_after = []  # ADWIN.width right after the detecting update (window already shrunk)
    for i, x in enumerate(seq):
        det.update(x)
        if det.drift_detected:
            hits.append(i)
            width_after.append(det.width)
    final = {"width": det.width, "total": det.total, "variance": det.variance,
             "n_detections": det.n_detections}
    return hits, width_after, final


def run_ddm(seq, **kw):
    det = drift.binary.DDM(**kw)
    d, w = [], []
    for i, x in enumerate(seq):
        det.update(x)
        if det.drift_detected:
            d.append(i)
        if det.warning_detected:
            w.append(i)
    return d, w


def onsets(idx: list[int]) -> list[int]:
    """Indices where the flag turns on (previous index not flagged)."""
    s = set(idx)
    return [i for i in idx if i - 1 not in s]


def main():
    seqs = make_sequences()
    for name, seq in seqs.items():
        with open(os.path.join(OUT, f"seq_{name}.txt"), "w") as f:
            for v in seq:
                f.write(repr(v) + "\n")

    res = {"river_version": river.__version__, "adwin": {}, "ddm": {}, "extra": {}}
    extra_adwin = {}
    for name, seq in seqs.items():
        hits, wa, final = run_adwin(seq)
        res["adwin"][name] = hits
        extra_adwin[name] = {"width_after_detection": wa, "final": final}
    res["extra"]["adwin_default_details"] = extra_adwin
    # Extra: clock=1 exercises the cut search at every step (no clock alignment).
    res["extra"]["adwin_clock1"] = {n: run_adwin(s, clock=1)[0] for n, s in seqs.items()}

    for name in ("a", "b", "c"):
        d, w = run_ddm(seqs[name])
        res["ddm"][name] = {"drift": d, "warning": w}
    res["extra"]["ddm_warning_onsets"] = {n: onsets(res["ddm"][n]["warning"]) for n in ("a", "b", "c")}

    with open(os.path.join(OUT, "concept_detections.json"), "w") as f:
        json.dump(res, f, indent=1)

    print("river", river.__version__)
    for n in seqs:
        print(f"ADWIN {n}: {res['adwin'][n]}   (clock=1: {res['extra']['adwin_clock1'][n]})")
    for n in ("a", "b", "c"):
        r = res["ddm"][n]
        print(f"DDM {n}: drift={r['drift']} warning_onsets={res['extra']['ddm_warning_onsets'][n]} "
              f"(#warning idx={len(r['warning'])})")


if __name__ == "__main__":
    main()
