//! Baselines: what a model version looked like when it was trained, for the monitor to
//! compare live traffic with.
//!
//! Each model version carries `models/<model>/<version>/baseline.json`, written once by
//! evaluate from two parts: the training profile of every pipeline input (built by
//! preprocess from the training split, `runs/<run>/reference.json`) and the version's own
//! predictions and metrics on the holdout. Numeric features keep their training values,
//! sorted (all of them up to [`REFERENCE_SAMPLE`] rows, a seeded uniform sample beyond), so
//! the monitor's tests run on the same reference every time and nothing is recomputed from
//! raw data at monitor time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dataset::{Column, SplitMix64, Table};
use crate::drift::sort_values;
use crate::features::{Encoder, FeaturePipeline, format_number};

/// Training rows kept per numeric feature.
pub const REFERENCE_SAMPLE: usize = 50_000;

/// Whether the monitor tests a feature as numbers or as categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// Integers, floats and booleans (0/1).
    Numeric,
    /// Strings from a domain.
    Categorical,
}

/// One input feature's training profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureBaseline {
    /// The feature.
    pub name: String,
    /// How it is tested.
    pub kind: FeatureKind,
    /// Training rows.
    pub rows: u64,
    /// Training rows where it was missing.
    pub missing: u64,
    /// Smallest training value (numeric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest training value (numeric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Sorted non-missing training values (numeric).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample: Vec<f64>,
    /// Whether `sample` is a sample (more than [`REFERENCE_SAMPLE`] training rows).
    #[serde(default)]
    pub sampled: bool,
    /// In `baseline.json`: how many values of `baseline.samples` are this feature's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_len: Option<usize>,
    /// Category counts (categorical).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub frequencies: BTreeMap<String, u64>,
}

impl FeatureBaseline {
    /// The share of training rows where the feature was missing.
    pub fn missing_rate(&self) -> f64 {
        if self.rows == 0 {
            0.0
        } else {
            self.missing as f64 / self.rows as f64
        }
    }
}

/// The version's predictions on its holdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum PredictionBaseline {
    /// Classes: how often each was predicted, and the sorted scores (the positive class's
    /// probability for a binary model, the top probability otherwise).
    Classification {
        /// The classes, in model output order.
        classes: Vec<String>,
        /// Predicted-class counts, per class.
        counts: Vec<u64>,
        /// Sorted scores.
        scores: Vec<f64>,
    },
    /// Sorted predicted values.
    Regression {
        /// Sorted predictions.
        values: Vec<f64>,
    },
}

impl PredictionBaseline {
    /// From the model's holdout outputs (row-major probabilities, or one value per row).
    pub fn from_outputs(classes: Option<&[String]>, outputs: &[f64]) -> Self {
        match classes {
            Some(classes) if !classes.is_empty() => {
                let k = classes.len();
                let mut counts = vec![0u64; k];
                let mut scores = Vec::with_capacity(outputs.len() / k);
                for row in outputs.chunks_exact(k) {
                    let (arg, top) = argmax(row);
                    counts[arg] += 1;
                    let score = if k == 2 { row[1] } else { top };
                    if score.is_finite() {
                        scores.push(score);
                    }
                }
                sort_values(&mut scores);
                PredictionBaseline::Classification {
                    classes: classes.to_vec(),
                    counts,
                    scores,
                }
            }
            _ => {
                let mut values: Vec<f64> =
                    outputs.iter().copied().filter(|v| v.is_finite()).collect();
                sort_values(&mut values);
                PredictionBaseline::Regression { values }
            }
        }
    }
}

/// The index and value of a row's largest entry (the first on ties, as `np.argmax`).
pub fn argmax(row: &[f64]) -> (usize, f64) {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, v) in row.iter().enumerate() {
        if *v > best.1 {
            best = (i, *v);
        }
    }
    best
}

/// `runs/<run>/reference.json`: the training profile of every pipeline input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureReference {
    /// Training rows.
    pub rows: u64,
    /// Per input, in pipeline order.
    pub features: Vec<FeatureBaseline>,
    /// The PCA reconstruction model of the inputs, fitted on the (sampled) training rows;
    /// absent in runs made before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconstruction: Option<crate::estimate::pca::Reconstruction>,
}

impl FeatureReference {
    /// Profiles the pipeline's inputs over the training rows of `table`.
    pub fn build(pipeline: &FeaturePipeline, table: &Table, train_rows: &[usize]) -> Self {
        // One row sample shared by every feature keeps rows whole.
        let rows: Vec<usize> = if train_rows.len() <= REFERENCE_SAMPLE {
            train_rows.to_vec()
        } else {
            let mut g = SplitMix64::new(0x5eed_ba5e);
            let mut reservoir: Vec<usize> = train_rows[..REFERENCE_SAMPLE].to_vec();
            for (t, row) in train_rows.iter().enumerate().skip(REFERENCE_SAMPLE) {
                let j = g.below(t as u64 + 1) as usize;
                if j < REFERENCE_SAMPLE {
                    reservoir[j] = *row;
                }
            }
            reservoir
        };
        let sampled = rows.len() < train_rows.len();
        let features: Vec<FeatureBaseline> = pipeline
            .inputs
            .iter()
            .map(|input| {
                let column = table.column(&input.name).ok();
                let kind = match input.encoder {
                    Encoder::Numeric { .. } => FeatureKind::Numeric,
                    Encoder::OneHot { .. } => FeatureKind::Categorical,
                };
                let mut f = FeatureBaseline {
                    name: input.name.clone(),
                    kind,
                    rows: train_rows.len() as u64,
                    missing: 0,
                    min: None,
                    max: None,
                    sample: Vec::new(),
                    sampled: false,
                    sample_len: None,
                    frequencies: BTreeMap::new(),
                };
                let Some(column) = column else {
                    f.missing = f.rows;
                    return f;
                };
                match kind {
                    FeatureKind::Numeric => {
                        if let Column::Numeric(values) = column {
                            f.missing =
                                train_rows.iter().filter(|r| values[**r].is_nan()).count() as u64;
                            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
                            for r in train_rows {
                                let v = values[*r];
                                if !v.is_nan() {
                                    lo = lo.min(v);
                                    hi = hi.max(v);
                                }
                            }
                            if lo <= hi {
                                f.min = Some(lo);
                                f.max = Some(hi);
                            }
                            f.sample = rows
                                .iter()
                                .map(|r| values[*r])
                                .filter(|v| !v.is_nan())
                                .collect();
                            sort_values(&mut f.sample);
                            f.sampled = sampled;
                        } else {
                            f.missing = f.rows;
                        }
                    }
                    FeatureKind::Categorical => {
                        for r in train_rows {
                            let text = match column {
                                Column::Numeric(v) => {
                                    (!v[*r].is_nan()).then(|| format_number(v[*r]))
                                }
                                Column::Categorical { .. } => column.text(*r),
                            };
                            match text {
                                Some(t) => *f.frequencies.entry(t).or_insert(0) += 1,
                                None => f.missing += 1,
                            }
                        }
                    }
                }
                f
            })
            .collect();
        let reconstruction = reconstruction_of(&features, table, &rows);
        FeatureReference {
            rows: train_rows.len() as u64,
            features,
            reconstruction,
        }
    }
}

/// The reconstruction model of the profiled inputs over `rows` of `table` (their order kept,
/// so reference chunks are runs of training rows); `None` without two rows or any input.
fn reconstruction_of(
    features: &[FeatureBaseline],
    table: &Table,
    rows: &[usize],
) -> Option<crate::estimate::pca::Reconstruction> {
    use crate::estimate::pca::{FitColumn, Reconstruction};
    let mut rows = rows.to_vec();
    rows.sort_unstable();
    let columns: Vec<(String, FitColumn)> = features
        .iter()
        .map(|f| {
            let column = table.column(&f.name).ok();
            let fit = match (f.kind, column) {
                (FeatureKind::Numeric, Some(Column::Numeric(v))) => {
                    FitColumn::Numeric(rows.iter().map(|r| v[*r]).collect())
                }
                (FeatureKind::Numeric, _) => FitColumn::Numeric(vec![f64::NAN; rows.len()]),
                (FeatureKind::Categorical, Some(c @ Column::Categorical { .. })) => {
                    FitColumn::Categorical(rows.iter().map(|r| c.text(*r)).collect())
                }
                (FeatureKind::Categorical, Some(Column::Numeric(v))) => FitColumn::Categorical(
                    rows.iter()
                        .map(|r| (!v[*r].is_nan()).then(|| format_number(v[*r])))
                        .collect(),
                ),
                (FeatureKind::Categorical, None) => FitColumn::Categorical(vec![None; rows.len()]),
            };
            (f.name.clone(), fit)
        })
        .collect();
    Reconstruction::fit(&columns, None)
}

/// `models/<model>/<version>/baseline.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// The model.
    pub model: String,
    /// The version.
    pub version: String,
    /// The run it was trained in.
    pub run_id: String,
    /// Training rows.
    pub train_rows: u64,
    /// Holdout rows.
    pub holdout_rows: u64,
    /// Per input, in pipeline order.
    pub features: Vec<FeatureBaseline>,
    /// Predictions on the holdout.
    pub prediction: PredictionBaseline,
    /// Holdout metrics (`accuracy`, `roc_auc`, `rmse`, …).
    pub metrics: BTreeMap<String, f64>,
    /// RFC 3339 time.
    pub created_at: String,
    /// A classifier's performance estimator (CBPE), fitted on the holdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimator: Option<crate::estimate::Cbpe>,
    /// A regressor's loss estimator (DLE), fitted on the holdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_estimator: Option<crate::estimate::dle::Dle>,
    /// The multivariate drift model (PCA reconstruction), fitted on the training rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconstruction: Option<crate::estimate::pca::Reconstruction>,
}

impl Baseline {
    /// The baseline of a feature, by name.
    pub fn feature(&self, name: &str) -> Option<&FeatureBaseline> {
        self.features.iter().find(|f| f.name == name)
    }
}

/// A baseline could not be read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BaselineError {
    /// `baseline.json` is not a baseline.
    #[error("baseline.json: {0}")]
    Json(#[source] serde_json::Error),
    /// `baseline.samples` does not hold what the JSON says.
    #[error("baseline.samples holds {found} bytes, baseline.json describes {expected}")]
    Samples {
        /// Bytes the JSON describes.
        expected: usize,
        /// Bytes found.
        found: usize,
    },
}

impl Baseline {
    /// Splits the baseline into `baseline.json` (no samples: each numeric feature says how
    /// many values it has in `sample_len`) and `baseline.samples` (every feature's sorted
    /// values, little-endian f64, in feature order). Parsing millions of numbers from JSON
    /// would dominate a monitor run; the binary file loads at memory speed.
    pub fn encode(&self) -> (Vec<u8>, Vec<u8>) {
        let mut light = self.clone();
        let mut samples = Vec::new();
        for f in &mut light.features {
            f.sample.retain(|v| v.is_finite());
            f.sample_len = Some(f.sample.len());
            for v in f.sample.drain(..) {
                samples.extend_from_slice(&v.to_le_bytes());
            }
        }
        (serde_json::to_vec(&light).unwrap_or_default(), samples)
    }

    /// Reads back what [`Baseline::encode`] wrote.
    pub fn decode(json: &[u8], samples: &[u8]) -> Result<Self, BaselineError> {
        let mut b: Baseline = serde_json::from_slice(json).map_err(BaselineError::Json)?;
        let expected: usize = b
            .features
            .iter()
            .map(|f| f.sample_len.unwrap_or(0) * 8)
            .sum();
        if expected != samples.len() {
            return Err(BaselineError::Samples {
                expected,
                found: samples.len(),
            });
        }
        let mut at = 0;
        for f in &mut b.features {
            let n = f.sample_len.take().unwrap_or(0);
            f.sample = samples[at..at + n * 8]
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect();
            at += n * 8;
        }
        Ok(b)
    }
}
