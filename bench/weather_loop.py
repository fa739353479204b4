"""scikit-learn reference for the demo's loop (BENCHMARKS.md, "The retraining loop").

The weather stream year by year (365 days) after the first five years: a logistic model
(StandardScaler + LogisticRegression()) trained once on the first five years, and one
retrained every year on the five years before it. Prints both mean accuracies.
The row with the impossible sea-level pressure is dropped, as ingest quarantines it.
Run: .venv-bench/bin/python bench/weather_loop.py
"""
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

df = pd.read_csv("data/weather_noaa.csv")
df = df[(df.sea_level_pressure <= 1100) | df.sea_level_pressure.isna()]
X, y = df.drop(columns="rain").values, df.rain.values
Y, n = 365, len(df)
years = [(s, min(s + Y, n)) for s in range(5 * Y, n, Y)]


def fit(a, b):
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(X[a:b], y[a:b])


first = fit(0, 5 * Y)
never = [(first.predict(X[s:e]) == y[s:e]).mean() for s, e in years]
every = [(fit(s - 5 * Y, s).predict(X[s:e]) == y[s:e]).mean() for s, e in years]
print(f"{len(years)} years: never retrained {np.mean(never):.4f}, "
      f"retrained every year on the last 5 years {np.mean(every):.4f} ({len(years)} retrains)")
