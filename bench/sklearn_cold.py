"""Cold start of the Python peer: fit and dump the scikit-learn model once (`fit PATH`), or
time a fresh interpreter that loads it with joblib and predicts one row (`time PATH N`)."""
import json
import subprocess
import sys
import time

if sys.argv[1] == "fit":
    import joblib
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    df = pd.read_csv("data/sklearn_breast_cancer.csv")
    X, y = df.drop(columns="target").to_numpy(), df["target"].to_numpy()
    X_train, _, y_train, _ = train_test_split(X, y, test_size=0.2, random_state=42)
    joblib.dump(make_pipeline(StandardScaler(), LogisticRegression()).fit(X_train, y_train), sys.argv[2])
else:
    path, n = sys.argv[2], int(sys.argv[3])
    row = [17.99, 10.38, 122.8, 1001.0, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419, 0.07871, 1.095, 0.9053,
           8.589, 153.4, 0.006399, 0.04904, 0.05373, 0.01587, 0.03003, 0.006193, 25.38, 17.33, 184.6,
           2019.0, 0.1622, 0.6656, 0.7119, 0.2654, 0.4601, 0.1189]
    code = (f"import joblib, numpy as np; m = joblib.load({path!r}); "
            f"print(m.predict_proba(np.array([{row!r}]))[0, 1])")
    times = []
    for _ in range(n):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
        times.append(time.perf_counter() - t)
    times.sort()
    print(json.dumps({"peer": "python joblib.load + predict_proba", "median_ms": 1000 * times[n // 2],
                      "min_ms": 1000 * times[0], "p_class1": float(out)}))
