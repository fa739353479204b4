"""The Python peer for the scoring benchmark: FastAPI + uvicorn serving scikit-learn's
StandardScaler + LogisticRegression on breast cancer (fitted on the same split lambdaml uses),
behind the same Open Inference Protocol route and body shape the benchmark sends lambdaml.

    .venv-bench/bin/uvicorn --app-dir bench fastapi_score:app --host 127.0.0.1 --port 18082 \
        --workers 1 --no-access-log --log-level warning
"""
import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

df = pd.read_csv("data/sklearn_breast_cancer.csv")
X, y = df.drop(columns="target").to_numpy(), df["target"].to_numpy()
X_train, _, y_train, _ = train_test_split(X, y, test_size=0.2, random_state=42)
model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X_train, y_train)
app = FastAPI()


@app.post("/v2/models/{name}/infer")
async def infer(name: str, request: Request):
    body = await request.json()
    t = body["inputs"][0]
    x = np.asarray(t["data"], dtype=np.float64).reshape(t["shape"])
    p = model.predict_proba(x)
    labels = [str(c) for c in model.classes_[p.argmax(axis=1)]]
    return {
        "model_name": name,
        "model_version": "sklearn",
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [len(labels)], "data": labels},
            {"name": "probabilities", "datatype": "FP64", "shape": list(p.shape), "data": p.ravel().tolist()},
        ],
    }
