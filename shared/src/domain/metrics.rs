//! Evaluation metrics, each equal to scikit-learn's on the same predictions.
//!
//! Classification takes the true class indices and the predicted class probabilities
//! (rows × classes); regression takes true and predicted values. The references in the
//! tests were computed with scikit-learn 1.7 (the Python is in the comments).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Per-class precision, recall, F1 and support.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// The class name.
    pub class: String,
    /// TP / (TP + FP); 0 when nothing was predicted as this class (sklearn's zero_division).
    pub precision: f64,
    /// TP / (TP + FN).
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// True rows of this class.
    pub support: u64,
}

/// One reliability-diagram bin (sklearn's `calibration_curve`, uniform bins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    /// Lower edge of the bin.
    pub lower: f64,
    /// Upper edge of the bin.
    pub upper: f64,
    /// Mean predicted probability in the bin.
    pub mean_predicted: f64,
    /// Fraction of positives in the bin.
    pub fraction_positive: f64,
    /// Rows in the bin.
    pub count: u64,
}

/// Classification metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics {
    /// Rows evaluated.
    pub rows: u64,
    /// Share of correct predictions.
    pub accuracy: f64,
    /// Per class.
    pub per_class: Vec<ClassMetrics>,
    /// Unweighted mean precision.
    pub precision_macro: f64,
    /// Unweighted mean recall.
    pub recall_macro: f64,
    /// Unweighted mean F1.
    pub f1_macro: f64,
    /// ROC AUC (binary), or one-vs-rest macro AUC (multiclass); `None` when a class is
    /// absent from the truth.
    pub roc_auc: Option<f64>,
    /// Mean cross-entropy, probabilities clipped to [eps, 1 - eps].
    pub log_loss: f64,
    /// Mean squared error of the probabilities (binary: of the positive class; multiclass:
    /// summed over classes).
    pub brier: f64,
    /// Rows = true class, columns = predicted class.
    pub confusion_matrix: Vec<Vec<u64>>,
    /// Reliability of the positive class's probability (binary only), 10 uniform bins.
    pub calibration: Vec<CalibrationBin>,
}

/// Regression metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    /// Rows evaluated.
    pub rows: u64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Coefficient of determination.
    pub r2: f64,
}

/// Either kind, tagged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Metrics {
    /// Binary or multiclass.
    Classification(ClassificationMetrics),
    /// Regression.
    Regression(RegressionMetrics),
}

impl Metrics {
    /// A named scalar metric (`roc_auc`, `accuracy`, `f1_macro`, `log_loss`, `brier`,
    /// `precision_macro`, `recall_macro`, `rmse`, `mae`, `r2`).
    pub fn get(&self, name: &str) -> Option<f64> {
        match self {
            Metrics::Classification(m) => match name {
                "roc_auc" => m.roc_auc,
                "accuracy" => Some(m.accuracy),
                "f1_macro" => Some(m.f1_macro),
                "precision_macro" => Some(m.precision_macro),
                "recall_macro" => Some(m.recall_macro),
                "log_loss" => Some(m.log_loss),
                "brier" => Some(m.brier),
                _ => None,
            },
            Metrics::Regression(m) => match name {
                "rmse" => Some(m.rmse),
                "mae" => Some(m.mae),
                "r2" => Some(m.r2),
                _ => None,
            },
        }
    }

    /// Recall per class name (classification), for guardrails.
    pub fn recalls(&self) -> BTreeMap<String, f64> {
        match self {
            Metrics::Classification(m) => m
                .per_class
                .iter()
                .map(|c| (c.class.clone(), c.recall))
                .collect(),
            Metrics::Regression(_) => BTreeMap::new(),
        }
    }
}

/// Whether a larger value of the metric is better.
pub fn higher_is_better(metric: &str) -> bool {
    !matches!(metric, "log_loss" | "brier" | "rmse" | "mae")
}

/// ROC AUC of scores for a binary truth (`positive[i]`), by the Mann–Whitney statistic with
/// average ranks for ties — the same number as sklearn's trapezoidal `roc_auc_score`.
/// `None` when one class is absent.
pub fn roc_auc(positive: &[bool], scores: &[f64]) -> Option<f64> {
    let n_pos = positive.iter().filter(|p| **p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their average.
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if positive[k] {
                rank_sum_pos += avg;
            }
        }
        i = j + 1;
    }
    let (p, n) = (n_pos as f64, n_neg as f64);
    Some((rank_sum_pos - p * (p + 1.0) / 2.0) / (p * n))
}

/// Classification metrics of `proba` (row-major, `classes.len()` columns) against the
/// true class indices `truth`. The prediction is the most probable class (the first on a
/// tie, as numpy's argmax).
pub fn classification(truth: &[usize], proba: &[f64], classes: &[String]) -> ClassificationMetrics {
    let k = classes.len();
    let n = truth.len();
    let predicted: Vec<usize> = (0..n)
        .map(|i| {
            let row = &proba[i * k..(i + 1) * k];
            let mut best = 0;
            for c in 1..k {
                if row[c] > row[best] {
                    best = c;
                }
            }
            best
        })
        .collect();
    let mut confusion = vec![vec![0u64; k]; k];
    for (t, p) in truth.iter().zip(&predicted) {
        confusion[*t][*p] += 1;
    }
    let correct: u64 = (0..k).map(|c| confusion[c][c]).sum();
    let per_class: Vec<ClassMetrics> = (0..k)
        .map(|c| {
            let tp = confusion[c][c] as f64;
            let predicted_c: u64 = (0..k).map(|t| confusion[t][c]).sum();
            let support: u64 = confusion[c].iter().sum();
            let precision = if predicted_c == 0 {
                0.0
            } else {
                tp / predicted_c as f64
            };
            let recall = if support == 0 {
                0.0
            } else {
                tp / support as f64
            };
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            ClassMetrics {
                class: classes[c].clone(),
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    let mean = |f: fn(&ClassMetrics) -> f64| per_class.iter().map(f).sum::<f64>() / k as f64;
    let eps = f64::EPSILON;
    let log_loss = (0..n)
        .map(|i| {
            let row = &proba[i * k..(i + 1) * k];
            let sum: f64 = row.iter().sum();
            // sklearn renormalizes rows, then clips.
            let p = (row[truth[i]] / sum).clamp(eps, 1.0 - eps);
            -p.ln()
        })
        .sum::<f64>()
        / n as f64;
    let (roc_auc, brier, calibration) = if k == 2 {
        let positive: Vec<bool> = truth.iter().map(|t| *t == 1).collect();
        let scores: Vec<f64> = (0..n).map(|i| proba[i * 2 + 1]).collect();
        let brier = positive
            .iter()
            .zip(&scores)
            .map(|(y, p)| (p - if *y { 1.0 } else { 0.0 }).powi(2))
            .sum::<f64>()
            / n as f64;
        (
            roc_auc(&positive, &scores),
            brier,
            calibration_bins(&positive, &scores, 10),
        )
    } else {
        let aucs: Option<Vec<f64>> = (0..k)
            .map(|c| {
                let positive: Vec<bool> = truth.iter().map(|t| *t == c).collect();
                let scores: Vec<f64> = (0..n).map(|i| proba[i * k + c]).collect();
                roc_auc(&positive, &scores)
            })
            .collect();
        let brier = (0..n)
            .map(|i| {
                (0..k)
                    .map(|c| (proba[i * k + c] - if truth[i] == c { 1.0 } else { 0.0 }).powi(2))
                    .sum::<f64>()
            })
            .sum::<f64>()
            / n as f64;
        (
            aucs.map(|a| a.iter().sum::<f64>() / k as f64),
            brier,
            Vec::new(),
        )
    };
    ClassificationMetrics {
        rows: n as u64,
        accuracy: correct as f64 / n.max(1) as f64,
        precision_macro: mean(|c| c.precision),
        recall_macro: mean(|c| c.recall),
        f1_macro: mean(|c| c.f1),
        per_class,
        roc_auc,
        log_loss,
        brier,
        confusion_matrix: confusion,
        calibration,
    }
}

/// sklearn's `calibration_curve(y, p, n_bins, strategy="uniform")`, keeping the bin edges
/// and counts; empty bins are left out, as sklearn does.
pub fn calibration_bins(positive: &[bool], scores: &[f64], bins: usize) -> Vec<CalibrationBin> {
    let mut sums = vec![(0.0f64, 0u64, 0u64); bins];
    // np.linspace(0, 1, bins + 1): edge k is k * (1 / bins), computed as numpy does.
    let step = 1.0 / bins as f64;
    let edges: Vec<f64> = (1..bins).map(|k| k as f64 * step).collect();
    for (y, p) in positive.iter().zip(scores) {
        // np.searchsorted(edges[1:-1], p) (side="left"): interior edges below p.
        let b = edges.iter().filter(|e| **e < *p).count();
        sums[b].0 += p;
        sums[b].1 += u64::from(*y);
        sums[b].2 += 1;
    }
    sums.iter()
        .enumerate()
        .filter(|(_, s)| s.2 > 0)
        .map(|(b, (sum_p, pos, count))| CalibrationBin {
            lower: b as f64 * step,
            upper: (b + 1) as f64 * step,
            mean_predicted: sum_p / *count as f64,
            fraction_positive: *pos as f64 / *count as f64,
            count: *count,
        })
        .collect()
}

/// Regression metrics.
pub fn regression(truth: &[f64], predicted: &[f64]) -> RegressionMetrics {
    let n = truth.len().max(1) as f64;
    let mse = truth
        .iter()
        .zip(predicted)
        .map(|(t, p)| (t - p).powi(2))
        .sum::<f64>()
        / n;
    let mae = truth
        .iter()
        .zip(predicted)
        .map(|(t, p)| (t - p).abs())
        .sum::<f64>()
        / n;
    let mean = truth.iter().sum::<f64>() / n;
    let total = truth.iter().map(|t| (t - mean).powi(2)).sum::<f64>();
    let residual = mse * n;
    RegressionMetrics {
        rows: truth.len() as u64,
        rmse: mse.sqrt(),
        mae,
        r2: if total == 0.0 {
            0.0
        } else {
            1.0 - residual / total
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    fn binary_proba(p: &[f64]) -> Vec<f64> {
        p.iter().flat_map(|p| [1.0 - p, *p]).collect()
    }

    #[test]
    fn binary_metrics_equal_sklearn() {
        // y = np.array([0,0,1,1,0,1,1,0,1,0,1,1])
        // p = np.array([.1,.4,.35,.8,.2,.9,.6,.6,.55,.05,.35,.99]); pred = (p > .5)
        // accuracy_score -> 0.75; precision/recall/f1 (average=None) ->
        //   [0.6667, 0.8333], [0.8, 0.7143], [0.7273, 0.7692]; f1 macro 0.7482517482517483
        // roc_auc_score -> 0.8428571428571429; log_loss -> 0.44614791611201965
        // brier_score_loss -> 0.15250833333333333; confusion_matrix -> [[4,1],[2,5]]
        // calibration_curve(y, p, n_bins=10) -> prob_true [0,0,.667,.667,1,1,1],
        //   prob_pred [.075,.2,.3667,.5833,.8,.9,.99]    (scikit-learn 1.9.1)
        let y = [0, 0, 1, 1, 0, 1, 1, 0, 1, 0, 1, 1];
        let p = [
            0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.6, 0.6, 0.55, 0.05, 0.35, 0.99,
        ];
        let classes = vec!["0".to_string(), "1".to_string()];
        let m = classification(&y, &binary_proba(&p), &classes);
        close(m.accuracy, 0.75);
        close(m.per_class[0].precision, 0.666_666_666_666_666_6);
        close(m.per_class[1].recall, 0.714_285_714_285_714_3);
        close(m.f1_macro, 0.748_251_748_251_748_3);
        close(m.roc_auc.unwrap(), 0.842_857_142_857_142_9);
        close(m.log_loss, 0.446_147_916_112_019_65);
        close(m.brier, 0.152_508_333_333_333_33);
        assert_eq!(m.confusion_matrix, vec![vec![4, 1], vec![2, 5]]);
        let truth: Vec<f64> = m.calibration.iter().map(|b| b.fraction_positive).collect();
        let pred: Vec<f64> = m.calibration.iter().map(|b| b.mean_predicted).collect();
        assert_eq!(truth.len(), 7);
        close(truth[2], 0.666_666_666_666_666_6);
        close(pred[0], 0.075_000_000_000_000_01);
        close(pred[3], 0.583_333_333_333_333_4);
        let metrics = Metrics::Classification(m);
        assert_eq!(metrics.get("accuracy"), Some(0.75));
        assert!(!higher_is_better("log_loss") && higher_is_better("roc_auc"));
    }

    #[test]
    fn multiclass_metrics_equal_sklearn() {
        // y3 = [0,1,2,2,1,0,2,1,0,2]; P = the rows below; pred = P.argmax(1)
        // accuracy 0.8; f1 macro 0.7936507936507936
        // roc_auc_score(y3, P, multi_class="ovr", average="macro") -> 0.9315476190476191
        // log_loss -> 0.7163752655167425; confusion [[3,0,0],[1,2,0],[0,1,3]]
        // np.mean(np.sum((P - np.eye(3)[y3])**2, axis=1)) -> 0.404   (scikit-learn 1.9.1)
        let y = [0, 1, 2, 2, 1, 0, 2, 1, 0, 2];
        let p = [
            0.7, 0.2, 0.1, 0.2, 0.5, 0.3, 0.1, 0.3, 0.6, 0.3, 0.3, 0.4, 0.5, 0.4, 0.1, 0.6, 0.3,
            0.1, 0.2, 0.2, 0.6, 0.1, 0.8, 0.1, 0.4, 0.4, 0.2, 0.3, 0.5, 0.2,
        ];
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let m = classification(&y, &p, &classes);
        close(m.accuracy, 0.8);
        close(m.f1_macro, 0.793_650_793_650_793_6);
        close(m.roc_auc.unwrap(), 0.931_547_619_047_619_1);
        close(m.log_loss, 0.716_375_265_516_742_5);
        close(m.brier, 0.404);
        assert_eq!(
            m.confusion_matrix,
            vec![vec![3, 0, 0], vec![1, 2, 0], vec![0, 1, 3]]
        );
    }

    #[test]
    fn regression_metrics_equal_sklearn() {
        // t = [3.0,-0.5,2.0,7.0,4.2]; q = [2.5,0.0,2.1,7.8,3.9]
        // root_mean_squared_error -> 0.49799598391954925; mean_absolute_error ->
        // 0.44000000000000006; r2_score -> 0.9594665271966527   (scikit-learn 1.9.1)
        let m = regression(&[3.0, -0.5, 2.0, 7.0, 4.2], &[2.5, 0.0, 2.1, 7.8, 3.9]);
        close(m.rmse, 0.497_995_983_919_549_25);
        close(m.mae, 0.440_000_000_000_000_06);
        close(m.r2, 0.959_466_527_196_652_7);
    }

    #[test]
    fn auc_handles_ties_and_missing_classes() {
        // roc_auc_score([0,1,0,1], [0.5,0.5,0.2,0.8]) -> 0.875
        close(
            roc_auc(&[false, true, false, true], &[0.5, 0.5, 0.2, 0.8]).unwrap(),
            0.875,
        );
        assert_eq!(roc_auc(&[true, true], &[0.1, 0.2]), None);
    }
}
