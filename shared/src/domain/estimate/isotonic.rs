//! Isotonic calibration, as scikit-learn's `IsotonicRegression(out_of_bounds="clip")` fits
//! and applies it, and the expected calibration error NannyML decides calibration with.

use serde::{Deserialize, Serialize};

use crate::dataset::SplitMix64;

/// A fitted isotonic map: increasing thresholds, linear between them, clipped outside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Isotonic {
    /// Scores, strictly increasing.
    pub x: Vec<f64>,
    /// Calibrated values at `x`, non-decreasing.
    pub y: Vec<f64>,
}

/// `np.finfo(np.float64).resolution`: scikit-learn merges scores closer than this.
const RESOLUTION: f64 = 1e-15;

impl Isotonic {
    /// Fits the map from `scores` to `targets` (0/1); `None` when there are no finite pairs.
    pub fn fit(scores: &[f64], targets: &[f64]) -> Option<Self> {
        let mut pairs: Vec<(f64, f64)> = scores
            .iter()
            .zip(targets)
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| (*x, *y))
            .collect();
        if pairs.is_empty() {
            return None;
        }
        // np.lexsort((y, X)): by score, then by target.
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        // _make_unique: duplicates become one point, their mean target, their count as weight.
        let mut xs: Vec<f64> = Vec::new();
        let mut ys: Vec<f64> = Vec::new();
        let mut ws: Vec<f64> = Vec::new();
        let (mut cx, mut sy, mut sw) = (pairs[0].0, 0.0, 0.0);
        for (x, y) in &pairs {
            if x - cx >= RESOLUTION {
                xs.push(cx);
                ys.push(sy / sw);
                ws.push(sw);
                (cx, sy, sw) = (*x, *y, 1.0);
            } else {
                sy += y;
                sw += 1.0;
            }
        }
        xs.push(cx);
        ys.push(sy / sw);
        ws.push(sw);
        let fitted = pava(&ys, &ws);
        // Keep the first and last points and every point where the fit changes.
        let n = fitted.len();
        let keep: Vec<usize> = (0..n)
            .filter(|&i| {
                i == 0 || i + 1 == n || fitted[i] != fitted[i - 1] || fitted[i] != fitted[i + 1]
            })
            .collect();
        Some(Isotonic {
            x: keep.iter().map(|&i| xs[i]).collect(),
            y: keep.iter().map(|&i| fitted[i]).collect(),
        })
    }

    /// The calibrated value of `score` (NaN stays NaN).
    pub fn apply(&self, score: f64) -> f64 {
        if score.is_nan() || self.x.is_empty() {
            return score;
        }
        let last = self.x.len() - 1;
        if score <= self.x[0] {
            return self.y[0];
        }
        if score >= self.x[last] {
            return self.y[last];
        }
        // The first threshold above the score.
        let hi = self.x.partition_point(|x| *x <= score);
        let lo = hi - 1;
        let (x0, x1, y0, y1) = (self.x[lo], self.x[hi], self.y[lo], self.y[hi]);
        y0 + (score - x0) * (y1 - y0) / (x1 - x0)
    }
}

/// Pool-adjacent-violators: the weighted least-squares non-decreasing fit of `y`.
pub fn pava(y: &[f64], w: &[f64]) -> Vec<f64> {
    // Blocks of (mean, weight, length).
    let mut blocks: Vec<(f64, f64, usize)> = Vec::with_capacity(y.len());
    for (v, wt) in y.iter().zip(w) {
        blocks.push((*v, *wt, 1));
        while blocks.len() > 1 {
            let (m1, w1, l1) = blocks[blocks.len() - 1];
            let (m0, w0, l0) = blocks[blocks.len() - 2];
            if m0 < m1 {
                break;
            }
            blocks.pop();
            let sw = w0 + w1;
            *blocks.last_mut().expect("two blocks") = ((m0 * w0 + m1 * w1) / sw, sw, l0 + l1);
        }
    }
    blocks
        .into_iter()
        .flat_map(|(m, _, l)| std::iter::repeat_n(m, l))
        .collect()
}

/// NannyML's expected calibration error: rows sorted by score in ten equal-count bins (the
/// last takes the remainder), each weighing `|mean score − mean target|` by its share.
pub fn expected_calibration_error(scores: &[f64], targets: &[f64]) -> f64 {
    let n = scores.len();
    let bins = if n <= 20 { n / 2 } else { 10 };
    if bins < 2 {
        return 0.0;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let width = n / bins;
    let mut ece = 0.0;
    for b in 0..bins {
        let lo = b * width;
        let hi = if b + 1 == bins { n } else { lo + width };
        let rows = &order[lo..hi];
        let k = rows.len() as f64;
        let mp: f64 = rows.iter().map(|r| scores[*r]).sum::<f64>() / k;
        let mt: f64 = rows.iter().map(|r| targets[*r]).sum::<f64>() / k;
        ece += k / n as f64 * (mp - mt).abs();
    }
    ece
}

/// Whether isotonic calibration makes `scores` better calibrated for `targets` (0/1), as
/// NannyML decides it: not for a single class or an AUC above 0.999; otherwise ten
/// stratified 90/10 splits, the calibrator fitted on each 90 % and applied to its 10 %, and
/// the pooled test rows' ECE compared before and after. The splits are lambdaml's own
/// (seeded), not scikit-learn's `StratifiedShuffleSplit(random_state=42)`, so a borderline
/// case may be decided the other way.
pub fn needs_calibration(scores: &[f64], targets: &[f64]) -> bool {
    let n = scores.len();
    let positive: Vec<bool> = targets.iter().map(|t| *t > 0.5).collect();
    let n_pos = positive.iter().filter(|p| **p).count();
    if n_pos == 0 || n_pos == n || n < 20 {
        return false;
    }
    if crate::metrics::roc_auc(&positive, scores).is_some_and(|a| a > 0.999) {
        return false;
    }
    let mut rng = SplitMix64::new(42);
    let (mut raw, mut calibrated, mut truth) = (Vec::new(), Vec::new(), Vec::new());
    let classes: [Vec<usize>; 2] = [
        (0..n).filter(|i| !positive[*i]).collect(),
        (0..n).filter(|i| positive[*i]).collect(),
    ];
    for _ in 0..10 {
        let mut test = Vec::new();
        let mut train = Vec::new();
        for rows in &classes {
            let mut rows = rows.clone();
            // Fisher–Yates, then the first tenth (at least one row) is the test part.
            for i in (1..rows.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                rows.swap(i, j);
            }
            let k = (rows.len() / 10).max(1).min(rows.len() - 1);
            test.extend_from_slice(&rows[..k]);
            train.extend_from_slice(&rows[k..]);
        }
        let fx: Vec<f64> = train.iter().map(|r| scores[*r]).collect();
        let fy: Vec<f64> = train.iter().map(|r| targets[*r]).collect();
        let Some(iso) = Isotonic::fit(&fx, &fy) else {
            return false;
        };
        for r in test {
            raw.push(scores[r]);
            calibrated.push(iso.apply(scores[r]));
            truth.push(targets[r]);
        }
    }
    expected_calibration_error(&raw, &truth) > expected_calibration_error(&calibrated, &truth)
}
