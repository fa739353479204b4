//! A challenger against the champion on the same holdout rows, with its noise: the paired
//! percentile bootstrap of the metric difference. On a few hundred rows a difference of a
//! point or two is within the noise; `promotion.rule = "bootstrap"` decides on the interval,
//! not on the point estimate (see `lambdaml_deploy::apply_rule`).

use serde::{Deserialize, Serialize};

use crate::dataset::SplitMix64;
use crate::metrics::{self, Metrics, higher_is_better};

/// Resamples drawn (the rollout comparison's count).
pub const RESAMPLES: usize = 400;

/// The confidence of the interval.
pub const CONFIDENCE: f64 = 0.95;

/// The challenger's metric minus the champion's, signed so that positive is better, with its
/// paired bootstrap interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The metric.
    pub metric: String,
    /// Challenger minus champion on the holdout (positive: the challenger is better).
    pub difference: f64,
    /// The interval's lower bound.
    pub lower: f64,
    /// The interval's upper bound.
    pub upper: f64,
    /// Its confidence.
    pub confidence: f64,
    /// Resamples that gave both metrics.
    pub resamples: usize,
    /// Holdout rows.
    pub rows: usize,
}

/// The labels both sides are scored against.
#[derive(Debug, Clone, Copy)]
pub enum Truth<'a> {
    /// Class indices and the class names.
    Classes(&'a [usize], &'a [String]),
    /// Values.
    Values(&'a [f64]),
}

impl Truth<'_> {
    fn rows(&self) -> usize {
        match self {
            Truth::Classes(t, _) => t.len(),
            Truth::Values(t) => t.len(),
        }
    }

    fn width(&self) -> usize {
        match self {
            Truth::Classes(_, classes) => classes.len(),
            Truth::Values(_) => 1,
        }
    }

    /// `metric` of `outputs` (row-major, `width` per row) on the rows `idx`.
    fn metric(&self, outputs: &[f64], idx: &[usize], metric: &str) -> Option<f64> {
        let w = self.width();
        let picked: Vec<f64> = idx
            .iter()
            .flat_map(|&i| outputs[i * w..(i + 1) * w].iter().copied())
            .collect();
        let m = match self {
            Truth::Classes(t, classes) => {
                let truth: Vec<usize> = idx.iter().map(|&i| t[i]).collect();
                Metrics::Classification(metrics::classification(&truth, &picked, classes))
            }
            Truth::Values(t) => {
                let truth: Vec<f64> = idx.iter().map(|&i| t[i]).collect();
                Metrics::Regression(metrics::regression(&truth, &picked))
            }
        };
        m.get(metric).filter(|v| v.is_finite())
    }
}

/// The paired bootstrap of `metric`'s difference between `challenger` and `champion`
/// outputs on the same rows (the same resampled rows on both sides), seeded: the same inputs
/// give the same interval. `None` when the outputs do not fit the rows or the metric is not
/// defined on them.
pub fn paired_bootstrap(
    truth: Truth<'_>,
    challenger: &[f64],
    champion: &[f64],
    metric: &str,
) -> Option<Comparison> {
    let n = truth.rows();
    let w = truth.width();
    if n == 0 || challenger.len() != n * w || champion.len() != n * w {
        return None;
    }
    let sign = if higher_is_better(metric) { 1.0 } else { -1.0 };
    let all: Vec<usize> = (0..n).collect();
    let difference =
        sign * (truth.metric(challenger, &all, metric)? - truth.metric(champion, &all, metric)?);
    let mut rng = SplitMix64::new(0x00c0_ffee_b007_5eed);
    let mut diffs = Vec::with_capacity(RESAMPLES);
    let mut idx = vec![0usize; n];
    for _ in 0..RESAMPLES {
        for slot in idx.iter_mut() {
            *slot = rng.below(n as u64) as usize;
        }
        if let (Some(c), Some(p)) = (
            truth.metric(challenger, &idx, metric),
            truth.metric(champion, &idx, metric),
        ) {
            diffs.push(sign * (c - p));
        }
    }
    if diffs.len() < RESAMPLES / 2 {
        return None;
    }
    diffs.sort_by(f64::total_cmp);
    let alpha = (1.0 - CONFIDENCE) / 2.0;
    let at = |q: f64| diffs[((diffs.len() - 1) as f64 * q).round() as usize];
    Some(Comparison {
        metric: metric.to_string(),
        difference,
        lower: at(alpha),
        upper: at(1.0 - alpha),
        confidence: CONFIDENCE,
        resamples: diffs.len(),
        rows: n,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn binary(n: usize, seed: u64, noise: f64) -> (Vec<usize>, Vec<f64>) {
        let mut rng = SplitMix64::new(seed);
        let mut truth = Vec::new();
        let mut out = Vec::new();
        for _ in 0..n {
            let y = usize::from(rng.next_f64() < 0.5);
            let p1 =
                (if y == 1 { 0.7 } else { 0.3 } + noise * (rng.next_f64() - 0.5)).clamp(0.0, 1.0);
            truth.push(y);
            out.extend([1.0 - p1, p1]);
        }
        (truth, out)
    }

    #[test]
    fn identical_outputs_differ_by_nothing_and_a_better_model_is_clearly_better() {
        let classes = vec!["0".to_string(), "1".to_string()];
        let (truth, good) = binary(300, 7, 0.4);
        let same =
            paired_bootstrap(Truth::Classes(&truth, &classes), &good, &good, "roc_auc").unwrap();
        assert_eq!((same.difference, same.lower, same.upper), (0.0, 0.0, 0.0));
        // A champion that guesses: the challenger is better beyond the noise.
        let guess: Vec<f64> = (0..truth.len()).flat_map(|_| [0.5, 0.5]).collect();
        let c =
            paired_bootstrap(Truth::Classes(&truth, &classes), &good, &guess, "accuracy").unwrap();
        assert!(c.difference > 0.2 && c.lower > 0.1, "{c:?}");
        assert!(c.lower <= c.difference && c.difference <= c.upper, "{c:?}");
        assert_eq!(c.resamples, RESAMPLES);
        // Lower is better for log loss: the sign makes positive "better" still.
        let l =
            paired_bootstrap(Truth::Classes(&truth, &classes), &good, &guess, "log_loss").unwrap();
        assert!(l.difference > 0.0, "{l:?}");
        // Deterministic.
        let again =
            paired_bootstrap(Truth::Classes(&truth, &classes), &good, &guess, "accuracy").unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn regression_and_misfits() {
        let truth: Vec<f64> = (0..200).map(f64::from).collect();
        let near: Vec<f64> = truth.iter().map(|v| v + 1.0).collect();
        let far: Vec<f64> = truth.iter().map(|v| v + 5.0).collect();
        let c = paired_bootstrap(Truth::Values(&truth), &near, &far, "rmse").unwrap();
        assert!((c.difference - 4.0).abs() < 1e-9, "{c:?}");
        assert!(paired_bootstrap(Truth::Values(&truth), &near[..10], &far, "rmse").is_none());
        assert!(paired_bootstrap(Truth::Values(&[]), &[], &[], "rmse").is_none());
    }
}
