"""lambdaml's CBPE against NannyML 0.13.1 on the weather stream (see cbpe_weather.sh).

prepare OUT: writes OUT/holdout.csv (the first version's holdout days, from its run's
split.json) and OUT/stream.csv (every day after the first five years).
compare OUT: fits NannyML's CBPE on the holdout's probabilities and labels, estimates
accuracy and ROC AUC per 365-day chunk of the stream, and prints them beside lambdaml's
estimates (from the backtest's monitor reports) and the realized values.
"""
import glob
import json
import os
import sys

import pandas as pd

mode, out = sys.argv[1], sys.argv[2]
store = os.path.join(out, "store")
data = pd.read_csv("data/weather_noaa.csv")


def first_run():
    version = json.load(open(glob.glob(f"{store}/registry/weather-rain.json")[0]))["production"]
    manifest = json.load(open(f"{store}/models/weather-rain/{version}/manifest.json"))
    return manifest["run_id"]


if mode == "prepare":
    run = first_run()
    split = json.load(open(f"{store}/runs/{run}/split.json"))
    # The dataset is the first five years without the quarantined reading.
    first = data.iloc[:1825]
    kept = first[(first.sea_level_pressure <= 1100) | first.sea_level_pressure.isna()]
    kept = kept.reset_index(drop=True)
    kept.iloc[split["holdout"]].to_csv(f"{out}/holdout.csv", index=False)
    data.iloc[1825:].to_csv(f"{out}/stream.csv", index=False)
    sys.exit(0)

import nannyml as nml  # noqa: E402


def frame(name, truth):
    answer = json.load(open(f"{out}/{name}.json"))
    while "predictions" not in answer:  # the command's summary wraps the MLflow answer
        answer = next(v for v in answer.values() if isinstance(v, dict))
    preds = answer["predictions"]
    p1 = [p["probabilities"]["1"] for p in preds]
    y_pred = [int(p["label"]) for p in preds]
    return pd.DataFrame({"y_pred_proba": p1, "y_pred": y_pred, "y_true": truth.values})


holdout = pd.read_csv(f"{out}/holdout.csv")
stream = pd.read_csv(f"{out}/stream.csv")
ref = frame("holdout", holdout.rain)
ana = frame("stream", stream.rain)
est = nml.CBPE(y_pred_proba="y_pred_proba", y_pred="y_pred", y_true="y_true",
               problem_type="classification_binary", metrics=["accuracy", "roc_auc"],
               chunk_size=365)
est.fit(ref)
res = est.estimate(ana).to_df()
res = res[res[("chunk", "period")] == "analysis"]
reports = []
for f in glob.glob(f"{store}/monitoring/weather-rain/*/report.json"):
    r = json.load(open(f))
    reports.append((r["window"]["from"], r["performance"].get("estimated")))
reports.sort()
print(f"NannyML calibrates: {est.needs_calibration}; lambdaml calibrates: "
      f"{reports[0][1]['calibrated']}")
rows, diffs = [], {"accuracy": [], "roc_auc": []}
for i, ((_, ours), (_, r)) in enumerate(zip(reports, res.iterrows())):
    line = [i + 1]
    for m in ["accuracy", "roc_auc"]:
        theirs, realized = r[(m, "value")], r[(m, "realized")]
        mine = ours["metrics"][m]["value"]
        diffs[m].append(abs(mine - theirs))
        line += [mine, theirs, realized]
    rows.append(line)
print("year  acc: lambdaml  NannyML  realized   auc: lambdaml  NannyML  realized")
for line in rows:
    print("{:>4}  {:.4f}  {:.4f}  {:.4f}   {:.4f}  {:.4f}  {:.4f}".format(*line))
n = len(rows)
for k, m in enumerate(diffs):
    d = diffs[m]
    ours = sum(abs(r[1 + 3 * k] - r[3 + 3 * k]) for r in rows) / n
    theirs = sum(abs(r[2 + 3 * k] - r[3 + 3 * k]) for r in rows) / n
    print(f"{m}: {n} chunks, mean |lambdaml - NannyML| {sum(d)/n:.5f}, max {max(d):.5f}; "
          f"mean |estimate - realized| lambdaml {ours:.4f}, NannyML {theirs:.4f}")
