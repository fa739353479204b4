//! Direct loss estimation (DLE, NannyML's method for regression): an auxiliary model learns,
//! on the holdout, each row's loss from the model's inputs and its prediction — one model of
//! the absolute error, one of the squared error — and a window's MAE and RMSE are estimated
//! as the mean predicted loss (RMSE: the root of the mean predicted squared error). NannyML
//! fits LightGBM with its defaults; lambdaml fits its own gradient-boosted regression trees
//! ([`Boosted`]: histogram splits, least squares, shrinkage 0.1), so estimates agree with
//! NannyML's in kind, not to the digit (the tests state the difference on NannyML's
//! synthetic car-price data).

use serde::{Deserialize, Serialize};

use super::Estimate;
use crate::drift::std_pop;

/// Boosting rounds.
pub const TREES: usize = 100;
/// Shrinkage.
pub const LEARNING_RATE: f64 = 0.1;
/// Tree depth.
pub const DEPTH: usize = 4;
/// Fewest rows in a leaf (LightGBM's `min_child_samples` default).
pub const MIN_LEAF: usize = 20;
/// Candidate thresholds per feature (quantiles of the training values).
pub const BINS: usize = 64;

/// One node of a regression tree: a split, or a leaf when `feature` is `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// The feature split on; `None` for a leaf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<usize>,
    /// Rows with a value at or below go left (missing values go left too).
    #[serde(default)]
    pub threshold: f64,
    /// Index of the left child.
    #[serde(default)]
    pub left: usize,
    /// Index of the right child.
    #[serde(default)]
    pub right: usize,
    /// A leaf's output.
    #[serde(default)]
    pub value: f64,
}

/// Gradient-boosted regression trees (least squares).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Boosted {
    /// The training target's mean, where every prediction starts.
    pub base: f64,
    /// Shrinkage applied to each tree.
    pub rate: f64,
    /// The trees, each a node list rooted at 0.
    pub trees: Vec<Vec<Node>>,
}

fn quantile_thresholds(values: &mut Vec<f64>) -> Vec<f64> {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    values.dedup();
    if values.len() <= BINS {
        // Midpoints between distinct values.
        return values.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
    }
    let mut out: Vec<f64> = (1..BINS).map(|i| values[i * values.len() / BINS]).collect();
    out.dedup();
    out
}

impl Boosted {
    /// Fits `TREES` trees of depth `DEPTH` to `y` from the rows of `x` (row-major, `d`
    /// columns; NaN is missing).
    pub fn fit(x: &[f64], d: usize, y: &[f64]) -> Self {
        let n = y.len();
        let base = if n == 0 {
            0.0
        } else {
            y.iter().sum::<f64>() / n as f64
        };
        let thresholds: Vec<Vec<f64>> = (0..d)
            .map(|f| quantile_thresholds(&mut (0..n).map(|r| x[r * d + f]).collect()))
            .collect();
        // Each row's bin per feature: the number of thresholds below its value.
        let bins: Vec<Vec<u16>> = (0..d)
            .map(|f| {
                (0..n)
                    .map(|r| {
                        let v = x[r * d + f];
                        if v.is_nan() {
                            0
                        } else {
                            thresholds[f].partition_point(|t| *t < v) as u16
                        }
                    })
                    .collect()
            })
            .collect();
        let mut prediction = vec![base; n];
        let mut trees = Vec::with_capacity(TREES);
        if n < 2 * MIN_LEAF {
            return Boosted {
                base,
                rate: LEARNING_RATE,
                trees,
            };
        }
        for _ in 0..TREES {
            let residual: Vec<f64> = y.iter().zip(&prediction).map(|(a, p)| a - p).collect();
            let mut nodes = Vec::new();
            let rows: Vec<usize> = (0..n).collect();
            grow(&mut nodes, &rows, &residual, &bins, &thresholds, 0);
            for (r, p) in prediction.iter_mut().enumerate() {
                *p += LEARNING_RATE * predict_tree(&nodes, &|f| x[r * d + f]);
            }
            trees.push(nodes);
        }
        Boosted {
            base,
            rate: LEARNING_RATE,
            trees,
        }
    }

    /// The prediction for one row (`row[f]` is feature `f`; NaN is missing).
    pub fn predict(&self, row: &[f64]) -> f64 {
        let value = |f: usize| row.get(f).copied().unwrap_or(f64::NAN);
        self.base
            + self
                .trees
                .iter()
                .map(|t| self.rate * predict_tree(t, &value))
                .sum::<f64>()
    }
}

fn predict_tree(nodes: &[Node], value: &dyn Fn(usize) -> f64) -> f64 {
    let mut i = 0;
    loop {
        let Some(node) = nodes.get(i) else {
            return 0.0;
        };
        match node.feature {
            None => return node.value,
            Some(f) => {
                let v = value(f);
                i = if v.is_nan() || v <= node.threshold {
                    node.left
                } else {
                    node.right
                };
            }
        }
    }
}

/// Grows a node over `rows` and returns its index.
fn grow(
    nodes: &mut Vec<Node>,
    rows: &[usize],
    target: &[f64],
    bins: &[Vec<u16>],
    thresholds: &[Vec<f64>],
    depth: usize,
) -> usize {
    let at = nodes.len();
    let n = rows.len() as f64;
    let sum: f64 = rows.iter().map(|r| target[*r]).sum();
    nodes.push(Node {
        feature: None,
        threshold: 0.0,
        left: 0,
        right: 0,
        value: sum / n,
    });
    if depth >= DEPTH || rows.len() < 2 * MIN_LEAF {
        return at;
    }
    // The split with the largest drop in squared error: maximise sL²/nL + sR²/nR.
    let mut best: Option<(f64, usize, usize)> = None;
    let parent = sum * sum / n;
    for (f, edges) in thresholds.iter().enumerate() {
        if edges.is_empty() {
            continue;
        }
        let mut count = vec![0usize; edges.len() + 1];
        let mut total = vec![0.0f64; edges.len() + 1];
        for r in rows {
            let b = bins[f][*r] as usize;
            count[b] += 1;
            total[b] += target[*r];
        }
        let (mut nl, mut sl) = (0usize, 0.0);
        for b in 0..edges.len() {
            nl += count[b];
            sl += total[b];
            let nr = rows.len() - nl;
            if nl < MIN_LEAF || nr < MIN_LEAF {
                continue;
            }
            let sr = sum - sl;
            let gain = sl * sl / nl as f64 + sr * sr / nr as f64 - parent;
            if gain > 1e-12 && best.is_none_or(|(g, _, _)| gain > g) {
                best = Some((gain, f, b));
            }
        }
    }
    let Some((_, f, b)) = best else {
        return at;
    };
    let (left, right): (Vec<usize>, Vec<usize>) =
        rows.iter().partition(|r| bins[f][**r] as usize <= b);
    let l = grow(nodes, &left, target, bins, thresholds, depth + 1);
    let r = grow(nodes, &right, target, bins, thresholds, depth + 1);
    nodes[at] = Node {
        feature: Some(f),
        threshold: thresholds[f][b],
        left: l,
        right: r,
        value: nodes[at].value,
    };
    at
}

/// A regressor's loss estimator, stored in the version's baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dle {
    /// Columns each row gives: the model's encoded inputs, then its prediction.
    pub columns: usize,
    /// The model of `|y − ŷ|`.
    pub absolute: Boosted,
    /// The model of `(y − ŷ)²`.
    pub squared: Boosted,
    /// Holdout rows.
    pub reference_rows: u64,
    /// `std(|e|)` on the holdout.
    pub std_absolute: f64,
    /// `std(e²)` on the holdout.
    pub std_squared: f64,
    /// `mean(e²)` on the holdout.
    pub mean_squared: f64,
}

/// A window's sums for [`Dle::estimate`].
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DleAcc {
    /// Rows.
    pub rows: u64,
    absolute: f64,
    squared: f64,
}

impl DleAcc {
    /// Adds another window part's losses (the monitor's fan-out).
    pub fn merge(&mut self, other: &DleAcc) {
        self.rows += other.rows;
        self.absolute += other.absolute;
        self.squared += other.squared;
    }
}

impl Dle {
    /// Fits on holdout rows: `x` row-major with `d` input columns, the predictions and the
    /// truths. `None` with fewer than two rows.
    pub fn fit(x: &[f64], d: usize, predicted: &[f64], truth: &[f64]) -> Option<Self> {
        let n = truth.len();
        if predicted.len() != n || x.len() != n * d {
            return None;
        }
        // Rows whose truth or prediction is not a number teach nothing (and JSON has no NaN).
        let keep: Vec<usize> = (0..n)
            .filter(|r| truth[*r].is_finite() && predicted[*r].is_finite())
            .collect();
        if keep.len() < 2 {
            return None;
        }
        let columns = d + 1;
        let mut rows = Vec::with_capacity(keep.len() * columns);
        for r in &keep {
            rows.extend_from_slice(&x[r * d..(r + 1) * d]);
            rows.push(predicted[*r]);
        }
        let n = keep.len();
        let abs: Vec<f64> = keep
            .iter()
            .map(|r| (truth[*r] - predicted[*r]).abs())
            .collect();
        let sq: Vec<f64> = abs.iter().map(|a| a * a).collect();
        Some(Dle {
            columns,
            absolute: Boosted::fit(&rows, columns, &abs),
            squared: Boosted::fit(&rows, columns, &sq),
            reference_rows: n as u64,
            std_absolute: std_pop(&abs),
            std_squared: std_pop(&sq),
            mean_squared: sq.iter().sum::<f64>() / n as f64,
        })
    }

    /// Adds one row: its encoded inputs followed by the prediction (`columns` values).
    pub fn add(&self, acc: &mut DleAcc, row: &[f64]) -> bool {
        if row.len() != self.columns || row.last().is_none_or(|p| !p.is_finite()) {
            return false;
        }
        acc.rows += 1;
        acc.absolute += self.absolute.predict(row).max(0.0);
        acc.squared += self.squared.predict(row).max(0.0);
        true
    }

    /// The window's estimated `mae` and `rmse`, with NannyML's sampling errors (RMSE's by
    /// the delta method).
    pub fn estimate(&self, acc: &DleAcc) -> std::collections::BTreeMap<String, Estimate> {
        let mut out = std::collections::BTreeMap::new();
        if acc.rows == 0 {
            return out;
        }
        let n = acc.rows as f64;
        let band = |value: f64, se: f64| {
            let se = se.is_finite().then_some(se);
            Estimate {
                value,
                sampling_error: se,
                lower: se.map(|e| (value - super::BAND * e).max(0.0)),
                upper: se.map(|e| value + super::BAND * e),
            }
        };
        out.insert(
            "mae".into(),
            band(acc.absolute / n, self.std_absolute / n.sqrt()),
        );
        let rmse_se = if self.mean_squared > 0.0 {
            (self.std_squared * self.std_squared / (4.0 * n * self.mean_squared)).sqrt()
        } else {
            f64::NAN
        };
        out.insert("rmse".into(), band((acc.squared / n).sqrt(), rmse_se));
        out
    }
}
