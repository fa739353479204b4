"""The peer for the training benchmark: scikit-learn on the same CSV, the same split
(train_test_split(test_size=0.2, random_state=42), which lambdaml reproduces exactly), mean
imputation and standard scaling fitted on the training rows. Times only .fit(); prints JSON.

    python bench/sklearn_train.py FILE LABEL logistic|mlp [MAX_ITER]
"""
import json
import resource
import sys
import time

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

path, label, kind = sys.argv[1], sys.argv[2], sys.argv[3]
max_iter = int(sys.argv[4]) if len(sys.argv) > 4 else 100
df = pd.read_csv(path)
y = df.pop(label).values
X = df.values.astype(np.float64)
Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=42)
imp = SimpleImputer().fit(Xtr)
sc = StandardScaler().fit(imp.transform(Xtr))
Xtr, Xte = sc.transform(imp.transform(Xtr)), sc.transform(imp.transform(Xte))
if kind == "logistic":
    model = LogisticRegression(max_iter=max_iter)
else:
    model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=max_iter, random_state=42)
t0 = time.perf_counter()
model.fit(Xtr, ytr)
seconds = time.perf_counter() - t0
p = model.predict_proba(Xte)[:, 1]
print(json.dumps({
    "peer": f"scikit-learn {kind}", "fit_seconds": seconds, "iterations": int(np.max(model.n_iter_)),
    "train_rows": len(ytr), "auc": roc_auc_score(yte, p), "accuracy": accuracy_score(yte, p > 0.5),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
