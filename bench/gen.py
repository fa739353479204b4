"""Generate a synthetic CSV for the ingest benchmark: N rows x 20 columns (19 float
features with a few missing values, one 0/1 label), deterministic for a seed."""
import sys

import numpy as np

rows, path = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(42)
chunk = 200_000
with open(path, "w") as f:
    f.write(",".join([f"x{i}" for i in range(19)] + ["y"]) + "\n")
    done = 0
    while done < rows:
        n = min(chunk, rows - done)
        x = rng.normal(size=(n, 19)) * np.arange(1, 20) + np.arange(19)
        y = (x[:, 0] + rng.normal(size=n) > 0).astype(int)
        text = np.char.mod("%.6g", x)
        text[rng.random(size=(n, 19)) < 0.001] = ""
        lines = [",".join(r) + f",{l}" for r, l in zip(text, y)]
        f.write("\n".join(lines) + "\n")
        done += n
