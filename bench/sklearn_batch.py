"""The peer of the batch scoring benchmark: scikit-learn's LogisticRegression(C=1.0) behind a
StandardScaler, fitted on data/sklearn_breast_cancer.csv with lambdaml's split
(train_test_split(test_size=0.2, random_state=42)), then predict_proba over FILE read by
pandas in chunks, each chunk's row ids, prediction and probabilities written as Parquet
(pyarrow) as lambdaml writes its partitions. Times the scoring only; prints JSON.

    python bench/sklearn_batch.py FILE OUTDIR [CHUNK_ROWS]
"""
import json
import os
import resource
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

path, outdir = sys.argv[1], sys.argv[2]
chunk_rows = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
df = pd.read_csv("data/sklearn_breast_cancer.csv")
y = df.pop("target").values
Xtr, _, ytr, _ = train_test_split(df.values, y, test_size=0.2, random_state=42)
model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)).fit(Xtr, ytr)
columns = list(df.columns)
os.makedirs(outdir, exist_ok=True)
t0 = time.perf_counter()
rows = 0
for i, chunk in enumerate(pd.read_csv(path, chunksize=chunk_rows)):
    p = model.predict_proba(chunk[columns].values)
    table = pa.table({
        "row": np.arange(rows, rows + len(chunk), dtype=np.uint64),
        "prediction": np.where(p[:, 1] >= 0.5, "1", "0"),
        "p_0": p[:, 0],
        "p_1": p[:, 1],
    })
    pq.write_table(table, f"{outdir}/part-{i:05d}.parquet", compression="snappy")
    rows += len(chunk)
seconds = time.perf_counter() - t0
print(json.dumps({
    "peer": "pandas read_csv(chunksize) + scikit-learn predict_proba + pyarrow Parquet",
    "rows": rows, "seconds": seconds, "rows_per_s": rows / seconds,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
