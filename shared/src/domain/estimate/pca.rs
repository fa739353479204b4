//! Multivariate drift by data reconstruction, as NannyML's `DataReconstructionDriftCalculator`
//! computes it: the reference's features imputed (numeric: mean, categorical: most frequent),
//! categories replaced by their reference frequency, everything standardised, and a PCA kept
//! to the fewest components that explain more than 65 % of the variance. A row's error is
//! the Euclidean distance between its standardised values and their reconstruction from
//! those components; a window's value is the mean error. Thresholds are the reference
//! chunks' mean ± 3 standard deviations (a lower one at or below zero is none). A change in
//! how features move together raises the error even when every feature alone looks the
//! same, which per-feature tests cannot see.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::drift::std_pop;

/// The share of variance the kept components explain more than (NannyML's default).
pub const EXPLAINED: f64 = 0.65;

/// A reference column for [`Reconstruction::fit`].
#[derive(Debug, Clone, PartialEq)]
pub enum FitColumn {
    /// Numbers; NaN is missing.
    Numeric(Vec<f64>),
    /// Categories; `None` is missing.
    Categorical(Vec<Option<String>>),
}

/// One value of a row to score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    /// Missing.
    Missing,
    /// A number.
    Number(f64),
    /// A category.
    Text(&'a str),
}

/// How one feature is imputed, encoded and standardised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconFeature {
    /// The feature.
    pub name: String,
    /// What a missing value becomes (the numeric mean, or the most frequent category's
    /// frequency).
    pub impute: f64,
    /// The encoded reference mean.
    pub mean: f64,
    /// The encoded reference standard deviation (1 where it is 0).
    pub scale: f64,
    /// Categorical: each category's share of the reference rows (unseen ones encode as 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequencies: Option<BTreeMap<String, f64>>,
}

/// A fitted reconstruction model with its reference thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reconstruction {
    /// Per feature, in the order rows are given.
    pub features: Vec<ReconFeature>,
    /// The standardised reference's mean (the PCA's centre).
    pub centre: Vec<f64>,
    /// The kept principal axes, unit length, by decreasing variance.
    pub components: Vec<Vec<f64>>,
    /// The variance share they explain.
    pub explained: f64,
    /// Reference rows.
    pub rows: u64,
    /// Rows per reference chunk.
    pub chunk_size: usize,
    /// The reference chunks' mean errors.
    pub reference_chunks: Vec<f64>,
    /// Lower threshold (none when mean − 3 std ≤ 0).
    pub lower: Option<f64>,
    /// Upper threshold.
    pub upper: f64,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Eigenvalues and unit eigenvectors (as rows) of a symmetric matrix, by decreasing value
/// (cyclic Jacobi rotations).
#[allow(clippy::needless_range_loop)] // rotations read best by their indices
pub fn symmetric_eigen(a: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let d = a.len();
    let mut m: Vec<Vec<f64>> = a.to_vec();
    let mut v: Vec<Vec<f64>> = (0..d)
        .map(|i| (0..d).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |j| *j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i][j] * m[i][j])
            .sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                if m[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (m[q][q] - m[p][p]) / (2.0 * m[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (mkp, mkq) = (m[k][p], m[k][q]);
                    m[k][p] = c * mkp - s * mkq;
                    m[k][q] = s * mkp + c * mkq;
                }
                for k in 0..d {
                    let (mpk, mqk) = (m[p][k], m[q][k]);
                    m[p][k] = c * mpk - s * mqk;
                    m[q][k] = s * mpk + c * mqk;
                }
                for row in v.iter_mut() {
                    let (vp, vq) = (row[p], row[q]);
                    row[p] = c * vp - s * vq;
                    row[q] = s * vp + c * vq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|a, b| m[*b][*b].total_cmp(&m[*a][*a]));
    let values = order.iter().map(|i| m[*i][*i]).collect();
    let vectors = order
        .iter()
        .map(|i| (0..d).map(|k| v[k][*i]).collect())
        .collect();
    (values, vectors)
}

/// An encoded column: values, the missing value's encoding, the categories' frequencies.
type Encoded = (Vec<f64>, f64, Option<BTreeMap<String, f64>>);

/// A reference column imputed and encoded (categories as their frequency): its values,
/// what a missing value becomes, and the categories' frequencies; `None` when its length is
/// not `n`.
fn encode_column(column: &FitColumn, n: usize) -> Option<Encoded> {
    let encoded: Encoded = match column {
        FitColumn::Numeric(v) => {
            if v.len() != n {
                return None;
            }
            let present: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
            let fill = if present.is_empty() {
                0.0
            } else {
                mean(&present)
            };
            let values = v
                .iter()
                .map(|x| if x.is_finite() { *x } else { fill })
                .collect();
            (values, fill, None)
        }
        FitColumn::Categorical(v) => {
            if v.len() != n {
                return None;
            }
            let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
            for c in v.iter().flatten() {
                *counts.entry(c.as_str()).or_insert(0) += 1;
            }
            // SimpleImputer(most_frequent): the smallest of the most frequent.
            let top = counts
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                .map(|(k, _)| k.to_string());
            let missing = v.iter().filter(|c| c.is_none()).count() as u64;
            if let Some(t) = &top {
                *counts.entry(t.as_str()).or_insert(0) += missing;
            }
            let freq: BTreeMap<String, f64> = counts
                .iter()
                .map(|(k, c)| (k.to_string(), *c as f64 / n as f64))
                .collect();
            let fill = top
                .as_ref()
                .and_then(|t| freq.get(t))
                .copied()
                .unwrap_or(0.0);
            let values = v
                .iter()
                .map(|c| match c {
                    Some(c) => freq.get(c).copied().unwrap_or(0.0),
                    None => fill,
                })
                .collect();
            (values, fill, Some(freq))
        }
    };
    Some(encoded)
}

/// The sample covariance (n − 1) of `rows` around `centre`.
#[allow(clippy::needless_range_loop)] // a symmetric matrix reads best by its indices
fn covariance(rows: &[Vec<f64>], centre: &[f64]) -> Vec<Vec<f64>> {
    let d = centre.len();
    let mut cov = vec![vec![0.0; d]; d];
    for row in rows {
        for i in 0..d {
            let a = row[i] - centre[i];
            for j in i..d {
                cov[i][j] += a * (row[j] - centre[j]);
            }
        }
    }
    let denom = (rows.len().max(2) - 1) as f64;
    for i in 0..d {
        for j in i..d {
            cov[i][j] /= denom;
            cov[j][i] = cov[i][j];
        }
    }
    cov
}

impl Reconstruction {
    /// Fits on reference columns (equal lengths, at least two rows); reference chunks of
    /// `chunk_size` rows (default a tenth of the rows; a smaller last chunk is kept).
    pub fn fit(columns: &[(String, FitColumn)], chunk_size: Option<usize>) -> Option<Self> {
        let n = columns.first().map(|(_, c)| match c {
            FitColumn::Numeric(v) => v.len(),
            FitColumn::Categorical(v) => v.len(),
        })?;
        if n < 2 || columns.is_empty() {
            return None;
        }
        let mut features = Vec::with_capacity(columns.len());
        let mut encoded: Vec<Vec<f64>> = Vec::with_capacity(columns.len());
        for (name, column) in columns {
            let (values, impute, frequencies) = encode_column(column, n)?;
            let m = mean(&values);
            let s = std_pop(&values);
            features.push(ReconFeature {
                name: name.clone(),
                impute,
                mean: m,
                scale: if s > 0.0 { s } else { 1.0 },
                frequencies,
            });
            encoded.push(values);
        }
        let d = features.len();
        let z: Vec<Vec<f64>> = (0..n)
            .map(|r| {
                (0..d)
                    .map(|f| (encoded[f][r] - features[f].mean) / features[f].scale)
                    .collect()
            })
            .collect();
        let centre: Vec<f64> = (0..d)
            .map(|f| z.iter().map(|row| row[f]).sum::<f64>() / n as f64)
            .collect();
        let cov = covariance(&z, &centre);
        let (values, vectors) = symmetric_eigen(&cov);
        let total: f64 = values.iter().map(|v| v.max(0.0)).sum();
        // Constant inputs have nothing to reconstruct.
        if !(total > 0.0 && total.is_finite()) {
            return None;
        }
        // sklearn: searchsorted(cumulative ratio, 0.65, side="right") + 1.
        let mut cumulative = 0.0;
        let mut k = 0;
        for v in &values {
            cumulative += v.max(0.0) / total;
            if cumulative <= EXPLAINED {
                k += 1;
            } else {
                break;
            }
        }
        let k = (k + 1).min(d);
        // Keeping every axis reconstructs every row exactly: the error would be rounding
        // noise, and its "drift" meaningless.
        if k == d {
            return None;
        }
        let explained = values[..k].iter().map(|v| v.max(0.0)).sum::<f64>() / total;
        let mut model = Reconstruction {
            features,
            centre,
            components: vectors[..k].to_vec(),
            explained,
            rows: n as u64,
            chunk_size: 0,
            reference_chunks: Vec::new(),
            lower: None,
            upper: f64::INFINITY,
        };
        let errors: Vec<f64> = z.iter().map(|row| model.error_standardised(row)).collect();
        let size = chunk_size.unwrap_or(n / 10).max(1);
        model.chunk_size = size;
        model.reference_chunks = errors.chunks(size).map(mean).collect();
        let (m, s) = (
            mean(&model.reference_chunks),
            std_pop(&model.reference_chunks),
        );
        model.upper = m + 3.0 * s;
        let lower = m - 3.0 * s;
        model.lower = (lower > 0.0).then_some(lower);
        Some(model)
    }

    fn error_standardised(&self, z: &[f64]) -> f64 {
        let centred: Vec<f64> = z.iter().zip(&self.centre).map(|(a, c)| a - c).collect();
        let mut rebuilt = vec![0.0; z.len()];
        for axis in &self.components {
            let t: f64 = axis.iter().zip(&centred).map(|(a, b)| a * b).sum();
            for (r, a) in rebuilt.iter_mut().zip(axis) {
                *r += t * a;
            }
        }
        centred
            .iter()
            .zip(&rebuilt)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt()
    }

    /// A row's reconstruction error; `row[f]` is feature `f`'s value.
    pub fn error(&self, row: &[Cell<'_>]) -> f64 {
        let z: Vec<f64> = self
            .features
            .iter()
            .enumerate()
            .map(|(f, feat)| {
                let x = match (
                    row.get(f).copied().unwrap_or(Cell::Missing),
                    &feat.frequencies,
                ) {
                    (Cell::Number(x), None) if x.is_finite() => x,
                    (Cell::Text(t), Some(freq)) => freq.get(t).copied().unwrap_or(0.0),
                    (Cell::Number(x), Some(freq)) if x.is_finite() => freq
                        .get(&crate::features::format_number(x))
                        .copied()
                        .unwrap_or(0.0),
                    _ => feat.impute,
                };
                (x - feat.mean) / feat.scale
            })
            .collect();
        self.error_standardised(&z)
    }

    /// Whether a window's mean error is outside the thresholds (NannyML's rule, for a
    /// window of `chunk_size` rows).
    pub fn alert(&self, value: f64) -> bool {
        value > self.upper || self.lower.is_some_and(|l| value < l)
    }

    /// The thresholds for a window of `rows` rows: the reference chunks' spread scaled by
    /// `√(chunk_size / rows)`, as the standard error of a mean scales, so a window larger
    /// than a reference chunk is held to a narrower band and a smaller one to a wider band;
    /// at `chunk_size` rows they are NannyML's exactly.
    pub fn thresholds(&self, rows: u64) -> (Option<f64>, f64) {
        let m = mean(&self.reference_chunks);
        let s = std_pop(&self.reference_chunks);
        let scale = if rows == 0 {
            1.0
        } else {
            (self.chunk_size as f64 / rows as f64).sqrt()
        };
        let lower = m - 3.0 * s * scale;
        ((lower > 0.0).then_some(lower), m + 3.0 * s * scale)
    }
}

/// A window's running sums of reconstruction errors.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ErrorAcc {
    /// Rows.
    pub rows: u64,
    sum: f64,
    sum_sq: f64,
}

impl ErrorAcc {
    /// Adds another window part's errors (the monitor's fan-out).
    pub fn merge(&mut self, other: &ErrorAcc) {
        self.rows += other.rows;
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
    }

    /// Adds one row's error.
    pub fn add(&mut self, e: f64) {
        if e.is_finite() {
            self.rows += 1;
            self.sum += e;
            self.sum_sq += e * e;
        }
    }

    /// The mean error.
    pub fn mean(&self) -> Option<f64> {
        (self.rows > 0).then(|| self.sum / self.rows as f64)
    }

    /// `std(e, ddof=1) / √n`, NannyML's sampling error of the mean.
    pub fn sampling_error(&self) -> Option<f64> {
        if self.rows < 2 {
            return None;
        }
        let n = self.rows as f64;
        let m = self.sum / n;
        let var = ((self.sum_sq - n * m * m) / (n - 1.0)).max(0.0);
        Some(var.sqrt() / n.sqrt())
    }
}
