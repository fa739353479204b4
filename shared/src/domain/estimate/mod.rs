//! Performance without labels: confidence-based performance estimation (CBPE, NannyML's
//! method) for classifiers, fitted on a version's holdout at evaluate time and applied by the
//! monitor to every window's live probabilities.
//!
//! Fit: per class (the positive class of a binary model), an isotonic calibrator of the
//! holdout's probabilities when it makes them better calibrated ([`needs_calibration`]),
//! and the sampling-error components of each metric on the holdout. Estimate: with `p` the
//! calibrated probabilities and `ŷ` the model's predicted class, the expected confusion
//! matrix of class `k` is `TP = Σ[ŷ=k]·p_k`, `FP = Σ[ŷ=k]·(1−p_k)`, `FN = Σ[ŷ≠k]·p_k`,
//! `TN = Σ[ŷ≠k]·(1−p_k)`; accuracy is the mean calibrated probability of the predicted
//! class; ROC AUC is the area under the curve traced by the calibrated probabilities in the
//! order of the raw scores. Every sum streams, so a window of any size costs a few numbers;
//! ROC AUC uses the monitor's row sample (exact when the window fits it). Each estimate
//! has a sampling error from the holdout (`std / √(n · fraction)`) and a ±3 SE band, as
//! NannyML reports. The tests compare every estimate and sampling error with NannyML 0.13.1
//! on its synthetic datasets (`reference.py`).

pub mod dle;
pub mod isotonic;
pub mod pca;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use isotonic::{Isotonic, expected_calibration_error, needs_calibration};

use crate::baseline::argmax;
use crate::drift::std_pop;

/// NannyML's `SAMPLING_ERROR_RANGE`: the band is the estimate ± this many sampling errors.
pub const BAND: f64 = 3.0;

/// A metric's sampling-error component on the holdout: the spread of its per-row terms
/// (the standard deviation for a binary model's positive-class metrics, the variance per
/// class otherwise) and the share of rows the metric is about.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Component {
    /// Standard deviation (binary) or variance (per class).
    pub spread: f64,
    /// The share of rows the metric's terms come from.
    pub fraction: f64,
}

/// A classifier's confidence-based estimator, stored in the version's baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cbpe {
    /// Classes, in output order.
    pub classes: usize,
    /// Per class (binary: one, for the positive class), its calibrator, or `None` where
    /// calibration would not help.
    pub calibrators: Vec<Option<Isotonic>>,
    /// Holdout rows it was fitted on.
    pub reference_rows: u64,
    /// Standard deviation of "predicted class is right" on the holdout.
    pub accuracy: f64,
    /// Per metric (`roc_auc`, `f1`, `precision`, `recall`, `specificity` for the positive
    /// class of a binary model; the same names ending `_macro` per class), its components.
    pub components: BTreeMap<String, Vec<Component>>,
}

/// NannyML's AUROC component: the share of negatives ranked below each positive (the
/// minority class taken as positive), its spread and the positives' share.
fn auroc_component(truth: &[bool], scores: &[f64]) -> Option<(f64, f64)> {
    let n = truth.len();
    let pos = truth.iter().filter(|t| **t).count();
    let flip = pos * 2 > n;
    let (t, s): (Vec<bool>, Vec<f64>) = truth
        .iter()
        .zip(scores)
        .map(|(t, s)| if flip { (!t, 1.0 - s) } else { (*t, *s) })
        .unzip();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| s[*a].total_cmp(&s[*b]));
    let n_pos = t.iter().filter(|x| **x).count();
    let n_neg = n - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    // np.unique(y * rank)[1:]: the ranks of positives, without rank 0.
    let ranks: Vec<usize> = order
        .iter()
        .enumerate()
        .filter(|(rank, row)| t[**row] && *rank > 0)
        .map(|(rank, _)| rank)
        .collect();
    let ser: Vec<f64> = ranks
        .iter()
        .enumerate()
        .map(|(i, r)| (r - i) as f64 / n_neg as f64)
        .collect();
    Some((std_pop(&ser), n_pos as f64 / n as f64))
}

/// Per-row terms of the positive-class metrics, as NannyML's sampling-error components
/// build them: (f1, precision, recall, specificity) term vectors and their fractions.
fn binary_terms(truth: &[bool], predicted: &[bool]) -> [(Vec<f64>, f64); 4] {
    let n = truth.len() as f64;
    let (mut tp, mut fp, mut fneg, mut tn) = (0usize, 0usize, 0usize, 0usize);
    for (t, p) in truth.iter().zip(predicted) {
        match (t, p) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fneg += 1,
            (false, false) => tn += 1,
        }
    }
    let ones = |k: usize| std::iter::repeat_n(1.0, k);
    let zeros = |k: usize| std::iter::repeat_n(0.0, k);
    let f1: Vec<f64> = ones(tp).chain(zeros(fneg + fp)).collect();
    let precision: Vec<f64> = ones(tp).chain(zeros(fp)).collect();
    let recall: Vec<f64> = ones(tp).chain(zeros(fneg)).collect();
    let specificity: Vec<f64> = ones(tn).chain(zeros(fp)).collect();
    [
        (f1, (tp + fp + fneg) as f64 / n),
        (precision, (tp + fp) as f64 / n),
        (recall, (tp + fneg) as f64 / n),
        (specificity, (tn + fp) as f64 / n),
    ]
}

fn var_pop(v: &[f64]) -> f64 {
    let s = std_pop(v);
    s * s
}

impl Cbpe {
    /// Fits the estimator on holdout rows: each its true class, its probabilities (row-major,
    /// `classes` per row) and its predicted class.
    pub fn fit(truth: &[usize], proba: &[f64], predicted: &[usize], classes: usize) -> Self {
        let n = truth.len();
        let k = classes.max(2);
        let column = |c: usize| -> Vec<f64> { (0..n).map(|r| proba[r * k + c]).collect() };
        let target =
            |c: usize| -> Vec<f64> { truth.iter().map(|t| f64::from(u8::from(*t == c))).collect() };
        let calibrated_classes: Vec<usize> = if k == 2 { vec![1] } else { (0..k).collect() };
        let calibrators = calibrated_classes
            .iter()
            .map(|&c| {
                let (s, t) = (column(c), target(c));
                if needs_calibration(&s, &t) {
                    Isotonic::fit(&s, &t)
                } else {
                    None
                }
            })
            .collect();
        let correct: Vec<f64> = truth
            .iter()
            .zip(predicted)
            .map(|(t, p)| f64::from(u8::from(t == p)))
            .collect();
        let mut components: BTreeMap<String, Vec<Component>> = BTreeMap::new();
        let names = ["f1", "precision", "recall", "specificity"];
        // Per class, one-vs-rest: variances for the macro averages.
        for c in 0..k {
            let t: Vec<bool> = truth.iter().map(|x| *x == c).collect();
            let p: Vec<bool> = predicted.iter().map(|x| *x == c).collect();
            for (name, (terms, fraction)) in names.iter().zip(binary_terms(&t, &p)) {
                components
                    .entry(format!("{name}_macro"))
                    .or_default()
                    .push(Component {
                        spread: var_pop(&terms),
                        fraction,
                    });
            }
            if let Some((std, fraction)) = auroc_component(&t, &column(c)) {
                components
                    .entry("roc_auc_macro".into())
                    .or_default()
                    .push(Component {
                        spread: std * std,
                        fraction,
                    });
            }
        }
        if k == 2 {
            let t: Vec<bool> = truth.iter().map(|x| *x == 1).collect();
            let p: Vec<bool> = predicted.iter().map(|x| *x == 1).collect();
            let [f1, precision, recall, specificity] = binary_terms(&t, &p);
            // F1's terms are scaled so their mean is F1 (NannyML's binary component).
            let (tp, all) = (
                f1.0.iter().sum::<f64>(),
                f1.0.len() as f64, // tp + fp + fn
            );
            let scale = if tp + 0.5 * (all - tp) > 0.0 {
                all / (tp + 0.5 * (all - tp))
            } else {
                f64::NAN
            };
            let f1_terms: Vec<f64> = f1.0.iter().map(|v| v * scale).collect();
            for (name, terms, fraction) in [
                ("f1", f1_terms, f1.1),
                ("precision", precision.0, precision.1),
                ("recall", recall.0, recall.1),
                ("specificity", specificity.0, specificity.1),
            ] {
                components.insert(
                    name.into(),
                    vec![Component {
                        spread: std_pop(&terms),
                        fraction,
                    }],
                );
            }
            if let Some((std, fraction)) = auroc_component(&t, &column(1)) {
                components.insert(
                    "roc_auc".into(),
                    vec![Component {
                        spread: std,
                        fraction,
                    }],
                );
            }
        }
        // A metric a degenerate holdout leaves undefined (no positive prediction, a class
        // never seen) has no sampling error: its component is left out, never stored as NaN
        // (JSON has no NaN, and the baseline must read back).
        for comps in components.values_mut() {
            comps.retain(|c| c.spread.is_finite() && c.fraction.is_finite());
        }
        components.retain(|_, comps| !comps.is_empty());
        let accuracy = std_pop(&correct);
        Cbpe {
            classes: k,
            calibrators,
            reference_rows: n as u64,
            accuracy: if accuracy.is_finite() { accuracy } else { 0.0 },
            components,
        }
    }

    /// A row's calibrated probabilities (NannyML's: per class, then renormalised to sum to
    /// one; a binary model's from its positive class).
    pub fn calibrate(&self, row: &[f64]) -> Vec<f64> {
        if self.classes == 2 && row.len() == 2 {
            let p = match &self.calibrators[..] {
                [Some(c)] => c.apply(row[1]),
                _ => row[1],
            };
            return vec![1.0 - p, p];
        }
        let mut out: Vec<f64> = row
            .iter()
            .enumerate()
            .map(|(c, v)| match self.calibrators.get(c) {
                Some(Some(cal)) => cal.apply(*v),
                _ => *v,
            })
            .collect();
        let sum: f64 = out.iter().sum();
        if sum > 0.0 {
            out.iter_mut().for_each(|v| *v /= sum);
        } else {
            let u = 1.0 / out.len().max(1) as f64;
            out.iter_mut().for_each(|v| *v = u);
        }
        out
    }

    /// Whether any class is calibrated.
    pub fn calibrated(&self) -> bool {
        self.calibrators.iter().any(Option::is_some)
    }

    /// An empty accumulator for a window.
    pub fn accumulator(&self) -> CbpeAcc {
        CbpeAcc {
            rows: 0,
            correct: 0.0,
            tp: vec![0.0; self.classes],
            fp: vec![0.0; self.classes],
            fneg: vec![0.0; self.classes],
            tn: vec![0.0; self.classes],
        }
    }

    /// Adds one scored row (raw probabilities and the class the model predicted) to `acc`;
    /// a row of the wrong width or with a non-finite value is skipped.
    pub fn add(&self, acc: &mut CbpeAcc, row: &[f64], predicted: usize) -> bool {
        if row.len() != self.classes || predicted >= self.classes {
            return false;
        }
        if row.iter().any(|v| !v.is_finite()) {
            return false;
        }
        let p = self.calibrate(row);
        acc.rows += 1;
        acc.correct += p[predicted];
        for (c, pc) in p.iter().enumerate() {
            if c == predicted {
                acc.tp[c] += pc;
                acc.fp[c] += 1.0 - pc;
            } else {
                acc.fneg[c] += pc;
                acc.tn[c] += 1.0 - pc;
            }
        }
        true
    }

    fn error(&self, name: &str, n: f64) -> Option<f64> {
        let comps = self.components.get(name)?;
        if n <= 0.0 {
            return None;
        }
        if comps.len() == 1 && !name.ends_with("_macro") {
            let c = comps[0];
            return (c.fraction > 0.0).then(|| c.spread / (n * c.fraction).sqrt());
        }
        let k = comps.len() as f64;
        let sum: f64 = comps
            .iter()
            .map(|c| {
                if c.fraction > 0.0 {
                    c.spread / (n * c.fraction)
                } else {
                    0.0
                }
            })
            .sum();
        let scale = if name == "roc_auc_macro" { 1.2 } else { 1.0 };
        Some(sum.sqrt() / k * scale)
    }

    /// The window's estimates from its accumulator and the rows for ROC AUC (each its raw
    /// probabilities; the window's sample).
    pub fn estimate(&self, acc: &CbpeAcc, auc_rows: &[&[f64]]) -> BTreeMap<String, Estimate> {
        let mut out = BTreeMap::new();
        if acc.rows == 0 {
            return out;
        }
        let n = acc.rows as f64;
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let per_class = |c: usize| {
            let (tp, fp, fneg, tn) = (acc.tp[c], acc.fp[c], acc.fneg[c], acc.tn[c]);
            [
                ratio(tp, tp + 0.5 * (fp + fneg)),
                ratio(tp, tp + fp),
                ratio(tp, tp + fneg),
                ratio(tn, tn + fp),
            ]
        };
        let mut put = |name: &str, value: f64, error: Option<f64>| {
            out.insert(name.to_string(), Estimate::new(value, error));
        };
        put(
            "accuracy",
            acc.correct / n,
            (self.accuracy.is_finite()).then(|| self.accuracy / n.sqrt()),
        );
        let k = self.classes;
        let names = ["f1", "precision", "recall", "specificity"];
        for (i, name) in names.iter().enumerate() {
            let macro_ = (0..k).map(|c| per_class(c)[i]).sum::<f64>() / k as f64;
            let key = format!("{name}_macro");
            put(&key, macro_, self.error(&key, n));
            if k == 2 {
                put(name, per_class(1)[i], self.error(name, n));
            }
        }
        // Each sampled row calibrated once (k calibrators), then one curve per class.
        let usable: Vec<&[f64]> = auc_rows
            .iter()
            .copied()
            .filter(|row| row.len() == k && row.iter().all(|v| v.is_finite()))
            .collect();
        let calibrated: Vec<Vec<f64>> = usable.iter().map(|row| self.calibrate(row)).collect();
        let mut aucs = Vec::new();
        for c in (0..k).filter(|c| k > 2 || *c == 1) {
            let raw: Vec<f64> = usable.iter().map(|row| row[c]).collect();
            let cal: Vec<f64> = calibrated.iter().map(|row| row[c]).collect();
            aucs.push(estimate_roc_auc(&cal, &raw));
        }
        let auc = aucs.iter().sum::<f64>() / aucs.len().max(1) as f64;
        if auc.is_finite() && !auc_rows.is_empty() {
            let error = if k == 2 {
                self.error("roc_auc", n)
            } else {
                self.error("roc_auc_macro", n)
            };
            put("roc_auc", auc, error);
        }
        out
    }
}

/// A window's running sums for [`Cbpe::estimate`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CbpeAcc {
    /// Rows added.
    pub rows: u64,
    /// Σ calibrated probability of the predicted class.
    pub correct: f64,
    /// Per class: expected true positives.
    pub tp: Vec<f64>,
    /// Expected false positives.
    pub fp: Vec<f64>,
    /// Expected false negatives.
    pub fneg: Vec<f64>,
    /// Expected true negatives.
    pub tn: Vec<f64>,
}

impl CbpeAcc {
    /// Adds another window part's sums (the monitor's fan-out); per-class sums of another
    /// width are refused.
    pub fn merge(&mut self, other: &CbpeAcc) -> bool {
        if self.tp.len() != other.tp.len() {
            return false;
        }
        self.rows += other.rows;
        self.correct += other.correct;
        let add = |a: &mut Vec<f64>, b: &[f64]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        add(&mut self.tp, &other.tp);
        add(&mut self.fp, &other.fp);
        add(&mut self.fneg, &other.fneg);
        add(&mut self.tn, &other.tn);
        true
    }
}

/// One estimated metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The estimate.
    pub value: f64,
    /// Its sampling error (from the holdout), when defined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_error: Option<f64>,
    /// `max(0, value − 3 SE)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<f64>,
    /// `min(1, value + 3 SE)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<f64>,
}

impl Estimate {
    fn new(value: f64, error: Option<f64>) -> Self {
        let error = error.filter(|e| e.is_finite());
        Estimate {
            value,
            sampling_error: error,
            lower: error.map(|e| (value - BAND * e).max(0.0)),
            upper: error.map(|e| (value + BAND * e).min(1.0)),
        }
    }
}

/// `np.round(x, 5)`: half to even on `x · 10⁵`.
fn round5(x: f64) -> f64 {
    (x * 1e5).round_ties_even() / 1e5
}

/// NannyML's `estimate_roc_auc`: rows in descending order of the raw score, the calibrated
/// probabilities' running sum as expected true positives (rounded to five decimals, as
/// NannyML does), the trapezoidal area under the resulting curve.
pub fn estimate_roc_auc(calibrated: &[f64], raw: &[f64]) -> f64 {
    let n = raw.len();
    if n == 0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..n).collect();
    // np.argsort(raw)[::-1]: ascending, then reversed (tied rows last-first). A binary
    // model's tied rows have equal calibrated probabilities, so their order does not change
    // the sums; a multiclass model's may differ after renormalising, and NumPy's default
    // (unstable) sort orders them its own way (the tests allow 5e-6 there).
    order.sort_by(|a, b| raw[*a].total_cmp(&raw[*b]));
    order.reverse();
    let mut tps = Vec::with_capacity(n + 1);
    let mut fps = Vec::with_capacity(n + 1);
    tps.push(0.0);
    fps.push(0.0);
    let mut sum = 0.0;
    for (i, r) in order.iter().enumerate() {
        sum += calibrated[*r];
        tps.push(round5(sum));
        fps.push(round5(1.0 + i as f64 - sum));
    }
    let (tt, ft) = (tps[n], fps[n]);
    if tt <= 0.0 || ft <= 0.0 {
        return f64::NAN;
    }
    let mut area = 0.0;
    for i in 1..=n {
        let dx = (fps[i] - fps[i - 1]) / ft;
        area += dx * (tps[i] + tps[i - 1]) / tt / 2.0;
    }
    area
}

/// Holdout rows estimators are fitted on at most: a seeded uniform sample beyond (as the
/// training profile keeps [`crate::baseline::REFERENCE_SAMPLE`] rows), so evaluate's time and
/// memory stay bounded whatever the holdout's size.
pub const FIT_ROWS: usize = 50_000;

/// The rows of `0..n` an estimator is fitted on: all of them up to [`FIT_ROWS`], a seeded
/// uniform sample (in order) beyond.
pub fn fit_rows(n: usize) -> Vec<usize> {
    if n <= FIT_ROWS {
        return (0..n).collect();
    }
    let mut g = crate::dataset::SplitMix64::new(0x00e5_7a7e);
    let mut reservoir: Vec<usize> = (0..FIT_ROWS).collect();
    for t in FIT_ROWS..n {
        let j = g.below(t as u64 + 1) as usize;
        if j < FIT_ROWS {
            reservoir[j] = t;
        }
    }
    reservoir.sort_unstable();
    reservoir
}

/// The class each row predicts (`argmax`, the first on ties).
pub fn predicted_classes(proba: &[f64], classes: usize) -> Vec<usize> {
    proba
        .chunks_exact(classes.max(1))
        .map(|r| argmax(r).0)
        .collect()
}

#[cfg(test)]
mod tests;
