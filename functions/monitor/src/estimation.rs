//! Monitoring before the labels arrive: every production row of the window feeds the
//! version's performance estimator (CBPE, fitted on its holdout at evaluate time) and its
//! multivariate drift model (PCA reconstruction, fitted on the training rows), both from
//! [`lambdaml::estimate`]. Memory is a few sums per class plus the row sample ROC AUC is
//! estimated on, whatever the window's size.

use lambdaml::baseline::{Baseline, FeatureKind, argmax};
use lambdaml::dataset::ColumnType;
use lambdaml::estimate::dle::{Dle, DleAcc};
use lambdaml::estimate::pca::{Cell, ErrorAcc, Reconstruction};
use lambdaml::estimate::{Cbpe, CbpeAcc};
use lambdaml::features::parse_numeric_text;
use lambdaml::features::{FeaturePipeline, RawValue};
use lambdaml::spec::{EstimateUse, ModelSpec, Multivariate};

use crate::report::{EstimatedPerformance, MultivariateDrift, Performance};
use crate::window::{Slots, Val, permute};

/// The estimators' accumulators for one window.
#[derive(Debug)]
pub struct EstimationAcc {
    cbpe: Option<(Cbpe, CbpeAcc)>,
    /// Raw probabilities of a uniform sample of the rows (the smallest row keys), for ROC
    /// AUC.
    pub(crate) sample: Vec<Vec<f64>>,
    pub(crate) slots: Slots,
    pub(crate) seen: u64,
    cap: usize,
    reconstruction: Option<(Reconstruction, ErrorAcc)>,
    /// A regressor's loss estimator, with the pipeline that encodes its rows.
    dle: Option<(Dle, DleAcc, FeaturePipeline)>,
    /// Rows whose outputs did not fit the estimator (wrong width, not finite).
    pub skipped: u64,
    /// Per baseline feature: its column type when numeric (text such as `true` is read as
    /// the scorer reads it), `None` when categorical.
    numeric: Vec<Option<ColumnType>>,
}

impl EstimationAcc {
    /// Accumulators for `baseline`'s estimators; ROC AUC on at most `cap` sampled rows.
    pub fn new(baseline: &Baseline, column_types: &[ColumnType], cap: usize) -> Self {
        // At most about two million probabilities in memory, whatever the class count.
        let cap = cap
            .min(2_000_000 / baseline.estimator.as_ref().map_or(1, |c| c.classes.max(1)))
            .max(1);
        EstimationAcc {
            cbpe: baseline.estimator.clone().map(|c| {
                let acc = c.accumulator();
                (c, acc)
            }),
            sample: Vec::new(),
            slots: Slots::new(cap),
            seen: 0,
            cap,
            reconstruction: baseline
                .reconstruction
                .clone()
                .map(|r| (r, ErrorAcc::default())),
            dle: None,
            skipped: 0,
            numeric: baseline
                .features
                .iter()
                .zip(column_types)
                .map(|(f, t)| (f.kind == FeatureKind::Numeric).then_some(*t))
                .collect(),
        }
    }

    /// Gives the regressor's loss estimator the production version's pipeline (its inputs
    /// are the baseline's features, in order), which encodes each row as the model saw it.
    pub fn with_pipeline(&mut self, baseline: &Baseline, pipeline: &FeaturePipeline) {
        let aligned = pipeline.inputs.len() == baseline.features.len()
            && pipeline
                .inputs
                .iter()
                .zip(&baseline.features)
                .all(|(i, f)| i.name == f.name);
        if let (Some(dle), true) = (&baseline.loss_estimator, aligned) {
            self.dle = Some((dle.clone(), DleAcc::default(), pipeline.clone()));
        }
    }

    /// Puts the sample in key order (see [`crate::window::WindowAcc::seal`]).
    pub fn seal(&mut self) {
        let order = self.slots.sort();
        self.sample = permute(&self.sample, &order);
    }

    /// The CBPE sums, the reconstruction errors and the loss sums, for a part's summary.
    pub(crate) fn sums(&self) -> (Option<&CbpeAcc>, Option<&ErrorAcc>, Option<&DleAcc>) {
        (
            self.cbpe.as_ref().map(|(_, a)| a),
            self.reconstruction.as_ref().map(|(_, a)| a),
            self.dle.as_ref().map(|(_, a, _)| a),
        )
    }

    /// Adds another part's sums; `false` when they do not fit this window's estimators.
    pub(crate) fn merge_sums(
        &mut self,
        cbpe: Option<&CbpeAcc>,
        reconstruction: Option<&ErrorAcc>,
        dle: Option<&DleAcc>,
    ) -> bool {
        let mut fits = true;
        match (&mut self.cbpe, cbpe) {
            (Some((_, acc)), Some(other)) => fits &= acc.merge(other),
            (None, None) => {}
            _ => fits = false,
        }
        match (&mut self.reconstruction, reconstruction) {
            (Some((_, acc)), Some(other)) => acc.merge(other),
            (None, None) => {}
            _ => fits = false,
        }
        match (&mut self.dle, dle) {
            (Some((_, acc, _)), Some(other)) => acc.merge(other),
            (None, None) => {}
            _ => fits = false,
        }
        fits
    }

    /// Adds one production row keyed `key` ([`crate::window::row_key`]): its values in
    /// baseline feature order, its outputs.
    pub fn row(&mut self, key: u64, values: &[Option<&Val<'_>>], outputs: &[f64]) {
        if let Some((dle, acc, pipeline)) = &mut self.dle {
            let raw: Vec<RawValue<'_>> = values
                .iter()
                .map(|v| match v {
                    None | Some(Val::Null) => RawValue::Missing,
                    Some(Val::Number(x)) => RawValue::Number(*x),
                    Some(Val::Text(t)) => RawValue::Text(t),
                })
                .collect();
            let mut encoded = vec![0f32; pipeline.output_dim];
            let added = pipeline.transform_into(&raw, &mut encoded).is_ok() && {
                let mut row: Vec<f64> = encoded.iter().map(|v| f64::from(*v)).collect();
                row.push(outputs.first().copied().unwrap_or(f64::NAN));
                dle.add(acc, &row)
            };
            if !added {
                self.skipped += 1;
            }
        }
        if let Some((cbpe, acc)) = &mut self.cbpe {
            if cbpe.add(acc, outputs, argmax(outputs).0) {
                match self.slots.offer(key) {
                    Some(None) => self.sample.push(outputs.to_vec()),
                    Some(Some(j)) => self.sample[j] = outputs.to_vec(),
                    None => {}
                }
                self.seen += 1;
            } else {
                self.skipped += 1;
            }
        }
        if let Some((model, acc)) = &mut self.reconstruction {
            let numeric = &self.numeric;
            let cells: Vec<Cell<'_>> = values
                .iter()
                .enumerate()
                .map(|(f, v)| match v {
                    None | Some(Val::Null) => Cell::Missing,
                    Some(Val::Number(x)) => Cell::Number(*x),
                    Some(Val::Text(t)) => match numeric.get(f).copied().flatten() {
                        Some(kind) => {
                            parse_numeric_text(t, kind).map_or(Cell::Missing, Cell::Number)
                        }
                        None => Cell::Text(t),
                    },
                })
                .collect();
            acc.add(model.error(&cells));
        }
    }

    /// The estimated-performance section, next to the realized one (`performance`).
    pub fn estimated(
        &self,
        baseline: &Baseline,
        spec: &ModelSpec,
        performance: &Performance,
    ) -> Option<EstimatedPerformance> {
        let (method, rows, calibrated, metrics, fallback) = match (&self.cbpe, &self.dle) {
            (Some((cbpe, acc)), _) => {
                let sample: Vec<&[f64]> = self.sample.iter().map(Vec::as_slice).collect();
                let m = cbpe.estimate(acc, &sample);
                ("cbpe", acc.rows, cbpe.calibrated(), m, "accuracy")
            }
            (None, Some((dle, acc, _))) => ("dle", acc.rows, false, dle.estimate(acc), "rmse"),
            (None, None) => return None,
        };
        let mut notes = Vec::new();
        let wanted = spec.promotion.metric.as_str();
        let metric = if metrics.contains_key(wanted) {
            wanted.to_string()
        } else {
            notes.push(format!(
                "{wanted} cannot be estimated without labels; judged on {fallback}"
            ));
            fallback.to_string()
        };
        let estimate = metrics.get(&metric).copied();
        let base = baseline.metrics.get(&metric).copied();
        // Scores: the absolute drop; errors (MAE, RMSE): the relative rise, as the labelled
        // section judges them.
        let error_metric = method == "dle";
        let drop = match (base, estimate) {
            (Some(b), Some(e)) if error_metric => Some(if b > 0.0 {
                (e.value - b) / b
            } else {
                e.value - b
            }),
            (Some(b), Some(e)) => Some(b - e.value),
            _ => None,
        };
        let min = spec.monitor.min_samples as u64;
        let breach = rows >= min && drop.is_some_and(|d| d > spec.monitor.performance_drop);
        let decides = match spec.monitor.estimate {
            EstimateUse::Always => true,
            EstimateUse::Report => false,
            EstimateUse::Unlabelled => performance.status != "assessed",
        };
        notes.push(match (estimate, base, drop) {
            _ if rows == 0 => "no production rows in the window: nothing to estimate".into(),
            _ if rows < min => format!(
                "{} rows, fewer than monitor.min_samples = {min}: reported, no verdict",
                rows
            ),
            (Some(e), Some(b), Some(d)) => format!(
                "estimated {metric} {:.4} (±{:.4}) vs holdout {b:.4}: {} {:.4}{} ({} the {:.4} allowed){}",
                e.value,
                3.0 * e.sampling_error.unwrap_or(f64::NAN),
                if d > 0.0 { "worse by" } else { "better by" },
                d.abs(),
                if error_metric { " of the holdout's" } else { "" },
                if breach { "more than" } else { "within" },
                spec.monitor.performance_drop,
                match (breach, decides) {
                    (true, true) => "; a breach",
                    (true, false) if spec.monitor.estimate == EstimateUse::Report => {
                        "; reported only (monitor.estimate = \"report\")"
                    }
                    (true, false) => "; the labels judged this window, so they decide",
                    _ => "",
                }
            ),
            _ => format!("the holdout has no {metric} to compare with"),
        });
        if self.skipped > 0 {
            notes.push(format!(
                "{} rows could not be estimated (outputs of the wrong width or not finite, or a value the pipeline refuses) and were left out",
                self.skipped
            ));
        }
        if self.seen > self.cap as u64 {
            notes.push(format!(
                "ROC AUC estimated on a uniform sample of {} of {} rows",
                self.cap, self.seen
            ));
        }
        let realized = metrics
            .keys()
            .filter_map(|k| performance.metrics.get(k).map(|v| (k.clone(), *v)))
            .collect();
        Some(EstimatedPerformance {
            method: method.into(),
            rows,
            calibrated,
            metric,
            baseline: base,
            estimate,
            drop,
            breach,
            decides: decides && breach,
            metrics,
            realized,
            note: notes.join("; "),
        })
    }

    /// The multivariate drift section.
    pub fn multivariate(&self, spec: &ModelSpec) -> Option<MultivariateDrift> {
        let (model, acc) = self.reconstruction.as_ref()?;
        let value = acc.mean();
        let (lower, upper) = model.thresholds(acc.rows);
        let min = spec.monitor.min_samples as u64;
        let outside =
            value.is_some_and(|v| v > upper || lower.is_some_and(|l| v < l)) && acc.rows >= min;
        let breach = outside && spec.monitor.multivariate == Multivariate::Breach;
        let note = match value {
            None => "no production rows in the window".to_string(),
            Some(_) if acc.rows < min => format!(
                "{} rows, fewer than monitor.min_samples = {min}: reported, no verdict",
                acc.rows
            ),
            Some(v) => format!(
                "mean reconstruction error {v:.4} {} the band {}–{upper:.4} the training rows give a window of {} rows{}",
                if outside { "outside" } else { "within" },
                lower.map_or("0".to_string(), |l| format!("{l:.4}")),
                acc.rows,
                if outside && !breach {
                    "; reported only (monitor.multivariate = \"report\")"
                } else {
                    ""
                }
            ),
        };
        Some(MultivariateDrift {
            method: "pca_reconstruction".into(),
            features: model.features.len() as u64,
            components: model.components.len() as u64,
            explained: model.explained,
            rows: acc.rows,
            value,
            sampling_error: acc.sampling_error(),
            lower,
            upper: Some(upper),
            reference_chunks: model.reference_chunks.clone(),
            chunk_size: model.chunk_size as u64,
            drifted: outside,
            breach,
            note,
        })
    }
}
