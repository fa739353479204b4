"""Reference values from NannyML 0.13.1 for the estimators of lambdaml::estimate.

Run (NannyML from PyPI; 0.13.1 needs statsmodels and a pandas/numpy it was released with):
    python3 -m venv /tmp/nml && /tmp/nml/bin/pip install nannyml==0.13.1 statsmodels \
        'pandas<2.3' 'numpy<2.1'
    /tmp/nml/bin/python shared/src/domain/estimate/reference.py
Writes testdata/*.csv.gz (the rows the Rust tests read, cut from NannyML's bundled synthetic
datasets, exactly the values NannyML was given here) and testdata/expected.json (NannyML's
per-chunk estimates, sampling errors, realized values and thresholds), which the tests of
estimate/mod.rs and estimate/pca.rs embed.
"""
from __future__ import annotations

import gzip
import json
import os

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # no network here
import nannyml as nml  # noqa: E402
import numpy as np
import pandas as pd

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")


def write_csv_gz(name: str, frame: pd.DataFrame) -> None:
    # repr() of every float: the Rust side parses exactly the values NannyML saw.
    with gzip.GzipFile(os.path.join(OUT, name), "wb", mtime=0) as f:
        f.write(frame.to_csv(index=False, float_format=None).encode())


def chunk_rows(result: pd.DataFrame, metrics: list[str], period: str) -> list[dict]:
    rows = result[result[("chunk", "period")] == period]
    out = []
    for _, r in rows.iterrows():
        chunk = {"start": int(r[("chunk", "start_index")]), "end": int(r[("chunk", "end_index")])}
        for m in metrics:
            def val(col):
                v = r[(m, col)]
                return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)
            chunk[m] = {c: val(c) for c in ["value", "sampling_error", "realized",
                                             "upper_confidence_boundary",
                                             "lower_confidence_boundary",
                                             "upper_threshold", "lower_threshold"]}
        out.append(chunk)
    return out


def binary() -> dict:
    ref, ana, gt = nml.load_synthetic_binary_classification_dataset()
    ana = ana.merge(gt, on="id")
    cols = ["work_home_actual", "y_pred_proba", "y_pred"]
    ref = ref[cols].iloc[:20_000].reset_index(drop=True)
    ana = ana[cols].iloc[:20_000].reset_index(drop=True)
    write_csv_gz("binary_reference.csv.gz", ref)
    write_csv_gz("binary_analysis.csv.gz", ana)
    metrics = ["roc_auc", "f1", "precision", "recall", "specificity", "accuracy"]
    est = nml.CBPE(y_pred_proba="y_pred_proba", y_pred="y_pred", y_true="work_home_actual",
                   problem_type="classification_binary", metrics=metrics, chunk_size=5000)
    est.fit(ref)
    res = est.estimate(ana).to_df()
    return {"needs_calibration": bool(est.needs_calibration), "chunk_size": 5000,
            "reference_chunks": chunk_rows(res, metrics, "reference"),
            "chunks": chunk_rows(res, metrics, "analysis")}


def multiclass() -> dict:
    ref, ana, gt = nml.load_synthetic_multiclass_classification_dataset()
    ana = ana.merge(gt, on="id")
    classes = sorted(["prepaid_card", "highstreet_card", "upmarket_card"])
    proba = {c: f"y_pred_proba_{c}" for c in classes}
    cols = ["y_true", *proba.values(), "y_pred"]

    def cut(frame):
        f = frame[cols].iloc[:10_000].reset_index(drop=True).copy()
        # class indices in sorted order, as lambdaml encodes labels
        f["y_true"] = f["y_true"].map(classes.index)
        f["y_pred"] = f["y_pred"].map(classes.index)
        return f

    ref_i, ana_i = cut(ref), cut(ana)
    write_csv_gz("multiclass_reference.csv.gz", ref_i)
    write_csv_gz("multiclass_analysis.csv.gz", ana_i)
    metrics = ["roc_auc", "f1", "precision", "recall", "accuracy"]
    est = nml.CBPE(y_pred_proba=proba, y_pred="y_pred", y_true="y_true",
                   problem_type="classification_multiclass", metrics=metrics, chunk_size=2500)
    names = lambda f: f.assign(y_true=f["y_true"].map(lambda i: classes[i]),  # noqa: E731
                               y_pred=f["y_pred"].map(lambda i: classes[i]))
    est.fit(names(ref_i))
    res = est.estimate(names(ana_i)).to_df()
    needs = [not isinstance(est._calibrators[c], nml.calibration.NoopCalibrator)
             for c in classes]
    return {"classes": classes, "needs_calibration": needs, "chunk_size": 2500,
            "reference_chunks": chunk_rows(res, metrics, "reference"),
            "chunks": chunk_rows(res, metrics, "analysis")}


def reconstruction() -> dict:
    ref, ana, _ = nml.load_synthetic_binary_classification_dataset()
    features = ["distance_from_office", "gas_price_per_litre", "public_transportation_cost",
                "tenure"]
    ref = ref[features].iloc[:5_000].round(6).reset_index(drop=True)
    ana = ana[features].iloc[:5_000].round(6).reset_index(drop=True)
    write_csv_gz("pca_reference.csv.gz", ref)
    write_csv_gz("pca_analysis.csv.gz", ana)
    calc = nml.DataReconstructionDriftCalculator(column_names=features, chunk_size=1000)
    calc.fit(ref)
    res = calc.calculate(ana).to_df()
    out = {"components": int(calc._pca.n_components_), "chunk_size": 1000}
    for period in ["reference", "analysis"]:
        rows = res[res[("chunk", "period")] == period]
        out[period] = [
            {"value": float(r[("reconstruction_error", "value")]),
             "sampling_error": float(r[("reconstruction_error", "sampling_error")]),
             "upper_threshold": float(r[("reconstruction_error", "upper_threshold")]),
             "lower_threshold": (None if pd.isna(r[("reconstruction_error", "lower_threshold")])
                                 else float(r[("reconstruction_error", "lower_threshold")])),
             "alert": bool(r[("reconstruction_error", "alert")])}
            for _, r in rows.iterrows()
        ]
    return out


def regression() -> dict:
    ref, ana, gt = nml.load_synthetic_car_price_dataset()
    ana = ana.merge(gt, on="id")
    features = ["car_age", "km_driven", "price_new", "accident_count", "door_count", "fuel",
                "transmission"]
    cols = [*features, "y_pred", "y_true"]
    ref = ref[cols].iloc[:10_000].reset_index(drop=True)
    ana = ana[cols].iloc[:10_000].reset_index(drop=True)

    def coded(f):
        # categories as codes so the Rust side reads plain numbers
        f = f.copy()
        f["fuel"] = f["fuel"].map({"diesel": 0, "electric": 1, "gas": 2})
        f["transmission"] = f["transmission"].map({"manual": 0, "automatic": 1})
        assert not f.isna().any().any()
        return f

    write_csv_gz("regression_reference.csv.gz", coded(ref))
    write_csv_gz("regression_analysis.csv.gz", coded(ana))
    metrics = ["mae", "rmse"]
    est = nml.DLE(feature_column_names=features, y_pred="y_pred", y_true="y_true",
                  metrics=metrics, chunk_size=2500)
    est.fit(ref)
    res = est.estimate(ana).to_df()
    return {"chunk_size": 2500, "chunks": chunk_rows(res, metrics, "analysis")}


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    expected = {"nannyml": nml.__version__, "binary": binary(), "multiclass": multiclass(),
                "reconstruction": reconstruction(), "regression": regression()}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
