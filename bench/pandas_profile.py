"""The peer: pandas read_csv + describe() (count, mean, std, min, quartiles, max) and the
extra quantiles lambdaml's profile has, on the same file. Prints seconds and peak RSS."""
import json
import resource
import sys
import time

import pandas as pd

t0 = time.perf_counter()
df = pd.read_csv(sys.argv[1])
desc = df.describe(percentiles=[0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
counts = df["y"].value_counts()
seconds = time.perf_counter() - t0
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": len(df), "seconds": seconds, "peak_rss_mb": rss_mb,
                  "mean_x0": float(desc.loc["mean", "x0"])}))
