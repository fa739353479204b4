"""The batch scoring benchmark's input: N rows of the breast-cancer features (30 columns, no
label), each a real row of data/sklearn_breast_cancer.csv with 2 % multiplicative noise,
written with four significant digits as the original is. Deterministic for a seed.

    python bench/batch_gen.py N OUT.csv
"""
import sys

import numpy as np
import pandas as pd

rows, path = int(sys.argv[1]), sys.argv[2]
base = pd.read_csv("data/sklearn_breast_cancer.csv").drop(columns=["target"])
rng = np.random.default_rng(42)
chunk = 250_000
with open(path, "w") as f:
    f.write(",".join(base.columns) + "\n")
    done = 0
    while done < rows:
        n = min(chunk, rows - done)
        picks = base.values[rng.integers(0, len(base), size=n)]
        x = picks * rng.normal(1.0, 0.02, size=picks.shape)
        text = np.char.mod("%.4g", x)
        f.write("\n".join(",".join(r) for r in text) + "\n")
        done += n
