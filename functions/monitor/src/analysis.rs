//! From a window's accumulators and the version's baseline to the report's sections.

use std::collections::BTreeMap;

use lambdaml::baseline::{Baseline, FeatureBaseline, FeatureKind, PredictionBaseline};
use lambdaml::drift::{
    self, align_counts, bin_counts_sorted, binned_weights, chi_squared, jensen_shannon, ks_2samp,
    l_infinity, psi_edges, sort_values, std_pop, wasserstein,
};
use lambdaml::features::format_number;
use lambdaml::metrics::{self, Metrics};
use lambdaml::spec::{DriftMethod, ModelSpec};

use crate::report::{
    DataDrift, DataQuality, Distribution, FeatureDrift, FeatureQuality, MetricPoint, Performance,
    PredictionDrift, Processing,
};
use crate::window::{Labelled, WindowAcc};

/// Reference sizes at or below this get the small-sample tests (KS, chi-squared at
/// p < 0.05); above it, distances (Wasserstein, Jensen–Shannon at 0.1) — Evidently's rule.
pub const SMALL_REFERENCE: u64 = 1000;
/// Numeric features with at most this many distinct values are tested as categories.
pub const MAX_DISCRETE_VALUES: usize = 5;
/// Wasserstein distance is divided by the reference's standard deviation, at least this.
pub const MIN_SPREAD: f64 = 0.001;

/// The method's name as the spec and the report write it.
pub fn method_name(m: DriftMethod) -> &'static str {
    match m {
        DriftMethod::Ks => "ks",
        DriftMethod::Psi => "psi",
        DriftMethod::Wasserstein => "wasserstein",
        DriftMethod::JensenShannon => "jensen_shannon",
        DriftMethod::ChiSquared => "chi_squared",
        DriftMethod::LInfinity => "l_infinity",
    }
}

fn is_pvalue(m: DriftMethod) -> bool {
    matches!(m, DriftMethod::Ks | DriftMethod::ChiSquared)
}

fn default_method(categorical: bool, reference_rows: u64) -> (DriftMethod, f64) {
    match (categorical, reference_rows <= SMALL_REFERENCE) {
        (false, true) => (DriftMethod::Ks, 0.05),
        (false, false) => (DriftMethod::Wasserstein, 0.1),
        (true, true) => (DriftMethod::ChiSquared, 0.05),
        (true, false) => (DriftMethod::JensenShannon, 0.1),
    }
}

fn fits(m: DriftMethod, categorical: bool) -> bool {
    match m {
        DriftMethod::Ks | DriftMethod::Wasserstein | DriftMethod::Psi => !categorical,
        DriftMethod::ChiSquared | DriftMethod::LInfinity => categorical,
        DriftMethod::JensenShannon => true,
    }
}

fn distinct_sorted(values: &[f64], limit: usize) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for v in values {
        if out.last() != Some(v) {
            out.push(*v);
            if out.len() > limit {
                break;
            }
        }
    }
    out
}

/// Tests one numeric sample pair (both sorted, no missing values).
#[allow(clippy::too_many_arguments)]
pub fn numeric_drift(
    name: &str,
    reference: &[f64],
    current: &[f64],
    reference_rows: u64,
    override_: Option<(DriftMethod, f64)>,
    current_distinct: &[f64],
) -> FeatureDrift {
    let mut distinct = distinct_sorted(reference, MAX_DISCRETE_VALUES);
    for v in current_distinct {
        if !distinct.contains(v) {
            distinct.push(*v);
        }
    }
    if distinct.len() <= MAX_DISCRETE_VALUES && !reference.is_empty() {
        // A flag or a small count: test it as categories of its values.
        let count = |values: &[f64]| {
            let mut m: BTreeMap<String, u64> = BTreeMap::new();
            for v in values {
                *m.entry(format_number(*v)).or_insert(0) += 1;
            }
            m
        };
        let mut d = categorical_drift(
            name,
            &count(reference),
            &count(current),
            reference_rows,
            override_,
        );
        d.kind = "numeric".into();
        d.note = Some(format!(
            "{} distinct values: tested as categories",
            distinct.len()
        ));
        return d;
    }
    let (default_m, default_t) = default_method(false, reference_rows);
    let (mut method, mut threshold, mut source) = (default_m, default_t, "default");
    let mut note = None;
    if let Some((m, t)) = override_ {
        if fits(m, false) {
            (method, threshold, source) = (m, t, "spec");
        } else {
            note = Some(format!(
                "{} does not apply to a numeric feature; used {}",
                method_name(m),
                method_name(default_m)
            ));
        }
    }
    let mut stats = BTreeMap::new();
    let ks = ks_2samp(reference, current);
    stats.insert("ks_statistic".into(), ks.map(|k| k.statistic));
    stats.insert("ks_pvalue".into(), ks.map(|k| k.pvalue));
    stats.insert("psi".into(), drift::psi(reference, current));
    let spread = std_pop(reference).max(MIN_SPREAD);
    let w = wasserstein(reference, current).map(|w| w / spread);
    stats.insert("wasserstein".into(), w);
    let (rw, cw) = binned_weights(reference, current);
    let js = jensen_shannon(&rw, &cw);
    stats.insert("jensen_shannon".into(), js);
    let score = match method {
        DriftMethod::Ks => ks.map(|k| k.pvalue),
        DriftMethod::Psi => stats.get("psi").copied().flatten(),
        DriftMethod::Wasserstein => w,
        _ => js,
    };
    let drifted = match score {
        Some(s) if is_pvalue(method) => s < threshold,
        Some(s) => s >= threshold,
        None => false,
    };
    let edges = psi_edges(reference);
    let labels = bin_labels(&edges);
    let shares = |c: Vec<u64>| {
        let n: u64 = c.iter().sum();
        c.iter()
            .map(|v| if n == 0 { 0.0 } else { *v as f64 / n as f64 })
            .collect()
    };
    let distribution = Distribution {
        labels,
        reference: shares(bin_counts_sorted(reference, &edges)),
        current: shares(bin_counts_sorted(current, &edges)),
    };
    FeatureDrift {
        name: name.to_string(),
        kind: "numeric".into(),
        method: method_name(method).into(),
        threshold,
        source: source.into(),
        score,
        drifted,
        current_values: current.len() as u64,
        reference_values: reference.len() as u64,
        statistics: stats,
        distribution,
        note: if current.is_empty() {
            Some("no values in the window".into())
        } else {
            note
        },
    }
}

fn bin_labels(edges: &[f64]) -> Vec<String> {
    let fmt = |x: f64| {
        if x.abs() >= 1000.0 || x.fract() == 0.0 {
            format!("{x:.0}")
        } else {
            format!("{x:.3}")
        }
    };
    let mut labels = Vec::with_capacity(edges.len() + 1);
    let mut prev: Option<f64> = None;
    for e in edges {
        labels.push(match prev {
            None => format!("< {}", fmt(*e)),
            Some(p) => format!("{}–{}", fmt(p), fmt(*e)),
        });
        prev = Some(*e);
    }
    labels.push(match prev {
        None => "all".to_string(),
        Some(p) => format!("≥ {}", fmt(p)),
    });
    labels
}

/// Tests one categorical count pair.
pub fn categorical_drift(
    name: &str,
    reference: &BTreeMap<String, u64>,
    current: &BTreeMap<String, u64>,
    reference_rows: u64,
    override_: Option<(DriftMethod, f64)>,
) -> FeatureDrift {
    let (default_m, default_t) = default_method(true, reference_rows);
    let (mut method, mut threshold, mut source) = (default_m, default_t, "default");
    let mut note = None;
    if let Some((m, t)) = override_ {
        if fits(m, true) {
            (method, threshold, source) = (m, t, "spec");
        } else {
            note = Some(format!(
                "{} does not apply to a categorical feature; used {}",
                method_name(m),
                method_name(default_m)
            ));
        }
    }
    let (keys, r, c) = align_counts(reference, current);
    let f = |v: &[u64]| v.iter().map(|x| *x as f64).collect::<Vec<f64>>();
    let (rf, cf) = (f(&r), f(&c));
    let mut stats = BTreeMap::new();
    let chi = chi_squared(&r, &c);
    stats.insert(
        "chi_squared_statistic".into(),
        chi.and_then(|c| c.statistic),
    );
    stats.insert("chi_squared_pvalue".into(), chi.map(|c| c.pvalue));
    let js = jensen_shannon(&rf, &cf);
    stats.insert("jensen_shannon".into(), js);
    let linf = l_infinity(&rf, &cf);
    stats.insert("l_infinity".into(), linf);
    let score = match method {
        DriftMethod::ChiSquared => chi.map(|c| c.pvalue),
        DriftMethod::LInfinity => linf,
        _ => js,
    };
    let drifted = match score {
        Some(s) if is_pvalue(method) => s < threshold,
        Some(s) => s >= threshold,
        None => false,
    };
    let (nr, nc): (u64, u64) = (r.iter().sum(), c.iter().sum());
    // The 20 most frequent categories either side, for the plot.
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|a, b| (r[*b] + c[*b]).cmp(&(r[*a] + c[*a])));
    order.truncate(20);
    let share = |v: u64, n: u64| if n == 0 { 0.0 } else { v as f64 / n as f64 };
    let distribution = Distribution {
        labels: order.iter().map(|i| keys[*i].clone()).collect(),
        reference: order.iter().map(|i| share(r[*i], nr)).collect(),
        current: order.iter().map(|i| share(c[*i], nc)).collect(),
    };
    FeatureDrift {
        name: name.to_string(),
        kind: "categorical".into(),
        method: method_name(method).into(),
        threshold,
        source: source.into(),
        score,
        drifted,
        current_values: nc,
        reference_values: nr,
        statistics: stats,
        distribution,
        note: if nc == 0 {
            Some("no values in the window".into())
        } else {
            note
        },
    }
}

/// Withholds the verdict of a test on fewer than `min` values (the statistics stay in the
/// report): one odd request is not drift.
fn gate(mut d: FeatureDrift, min: u64) -> FeatureDrift {
    if d.current_values > 0 && d.current_values < min {
        d.note = Some(format!(
            "{} values, fewer than monitor.min_samples = {min}: no verdict",
            d.current_values
        ));
        d.score = None;
        d.drifted = false;
    }
    d
}

/// Data drift over every baseline feature.
pub fn data_drift(baseline: &Baseline, acc: &mut WindowAcc, spec: &ModelSpec) -> DataDrift {
    let samples: Vec<Vec<f64>> = acc.sample.iter_mut().map(std::mem::take).collect();
    let test = |i: usize, sample: Vec<f64>| -> FeatureDrift {
        let fb = &baseline.features[i];
        let override_ = spec
            .monitor
            .features
            .get(&fb.name)
            .map(|o| (o.method, o.threshold));
        match fb.kind {
            FeatureKind::Numeric => {
                let mut current: Vec<f64> = sample.into_iter().filter(|v| !v.is_nan()).collect();
                sort_values(&mut current);
                numeric_drift(
                    &fb.name,
                    &fb.sample,
                    &current,
                    baseline.train_rows,
                    override_,
                    &acc.features[i].distinct,
                )
            }
            FeatureKind::Categorical => categorical_drift(
                &fb.name,
                &fb.frequencies,
                &acc.features[i].counts,
                baseline.train_rows,
                override_,
            ),
        }
    };
    // Features are independent: test them on every core.
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 8);
    let mut slots: Vec<Option<FeatureDrift>> = vec![None; samples.len()];
    let mut work: Vec<(usize, Vec<f64>)> = samples.into_iter().enumerate().collect();
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        let per = work.len().div_ceil(threads).max(1);
        while !work.is_empty() {
            let chunk: Vec<(usize, Vec<f64>)> = work.drain(..per.min(work.len())).collect();
            let test = &test;
            handles.push(scope.spawn(move || {
                chunk
                    .into_iter()
                    .map(|(i, sample)| (i, test(i, sample)))
                    .collect::<Vec<_>>()
            }));
        }
        for h in handles {
            if let Ok(done) = h.join() {
                for (i, d) in done {
                    slots[i] = Some(d);
                }
            }
        }
    });
    let min = spec.monitor.min_samples as u64;
    let features: Vec<FeatureDrift> = slots
        .into_iter()
        .enumerate()
        .map(|(i, d)| gate(d.unwrap_or_else(|| test(i, Vec::new())), min))
        .collect();
    let tested = features.iter().filter(|f| f.score.is_some()).count() as u64;
    let drifted = features.iter().filter(|f| f.drifted).count() as u64;
    let share = if tested == 0 {
        0.0
    } else {
        drifted as f64 / tested as f64
    };
    DataDrift {
        dataset_drift: tested > 0 && share >= spec.monitor.drift_share,
        drift_share: share,
        drift_share_threshold: spec.monitor.drift_share,
        drifted,
        tested,
        features,
    }
}

/// Prediction drift: predicted classes (or values) and scores against the holdout's.
pub fn prediction_drift(baseline: &Baseline, acc: &mut WindowAcc, min: u64) -> PredictionDrift {
    let mut scores: Vec<f64> = std::mem::take(&mut acc.score_sample)
        .into_iter()
        .filter(|v| !v.is_nan())
        .collect();
    sort_values(&mut scores);
    // The live scores' own distinct values count too: a tiny holdout with few distinct
    // scores must not turn continuous live scores into categories.
    let live_distinct = distinct_sorted(&scores, MAX_DISCRETE_VALUES);
    let rows = baseline.holdout_rows;
    match &baseline.prediction {
        PredictionBaseline::Classification {
            classes,
            counts,
            scores: reference,
        } => {
            let to_map = |c: &[u64]| {
                classes
                    .iter()
                    .cloned()
                    .zip(c.iter().copied())
                    .collect::<BTreeMap<String, u64>>()
            };
            let output = categorical_drift(
                "predicted class",
                &to_map(counts),
                &to_map(&acc.predicted),
                rows,
                None,
            );
            let output = gate(output, min);
            let score = gate(
                numeric_drift("score", reference, &scores, rows, None, &live_distinct),
                min,
            );
            PredictionDrift {
                drifted: output.drifted || score.drifted,
                output: Some(output),
                scores: Some(score),
            }
        }
        PredictionBaseline::Regression { values } => {
            let output = gate(
                numeric_drift("prediction", values, &scores, rows, None, &live_distinct),
                min,
            );
            PredictionDrift {
                drifted: output.drifted,
                output: Some(output),
                scores: None,
            }
        }
    }
}

/// Data quality against the baseline.
pub fn data_quality(baseline: &Baseline, acc: &WindowAcc) -> DataQuality {
    let requests: u64 = acc.status.values().sum();
    let refused: u64 = acc
        .status
        .iter()
        .filter(|(s, _)| (400..500).contains(*s))
        .map(|(_, c)| c)
        .sum();
    let rows = acc.rows_seen;
    let mut warnings = Vec::new();
    let features: Vec<FeatureQuality> = baseline
        .features
        .iter()
        .zip(&acc.features)
        .map(|(fb, f): (&FeatureBaseline, _)| {
            let missing_rate = if rows == 0 {
                0.0
            } else {
                f.missing as f64 / rows as f64
            };
            if rows > 0 && missing_rate > fb.missing_rate() + 0.1 {
                warnings.push(format!(
                    "{}: {:.1} % missing, {:.1} % in training",
                    fb.name,
                    100.0 * missing_rate,
                    100.0 * fb.missing_rate()
                ));
            }
            if f.unseen > 0 {
                warnings.push(format!(
                    "{}: {} values of categories training never saw ({})",
                    fb.name,
                    f.unseen,
                    f.unseen_examples
                        .keys()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if rows > 0 && f.out_of_range as f64 > 0.01 * rows as f64 {
                warnings.push(format!(
                    "{}: {} values outside the training range [{}, {}]",
                    fb.name,
                    f.out_of_range,
                    fb.min.map_or("?".into(), |v| v.to_string()),
                    fb.max.map_or("?".into(), |v| v.to_string())
                ));
            }
            FeatureQuality {
                name: fb.name.clone(),
                missing_rate,
                baseline_missing_rate: fb.missing_rate(),
                out_of_range: f.out_of_range,
                invalid: f.invalid,
                unseen: f.unseen,
                unseen_examples: f.unseen_examples.clone(),
            }
        })
        .collect();
    let rate = if requests == 0 {
        0.0
    } else {
        refused as f64 / requests as f64
    };
    if rate > 0.05 {
        warnings.push(format!(
            "{:.1} % of requests were refused as invalid",
            100.0 * rate
        ));
    }
    DataQuality {
        validation_error_rate: rate,
        validation_errors: acc.validation_errors,
        features,
        warnings,
    }
}

/// Processing performance.
pub fn processing(acc: &WindowAcc) -> Processing {
    let requests: u64 = acc.status.values().sum();
    let errors: u64 = acc
        .status
        .iter()
        .filter(|(s, _)| **s >= 400)
        .map(|(_, c)| c)
        .sum();
    let server: u64 = acc
        .status
        .iter()
        .filter(|(s, _)| **s >= 500)
        .map(|(_, c)| c)
        .sum();
    let rate = |n: u64| {
        if requests == 0 {
            0.0
        } else {
            n as f64 / requests as f64
        }
    };
    let mut latency_ms = BTreeMap::new();
    for (name, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)] {
        if let Some(v) = acc.latency.quantile(q) {
            latency_ms.insert(name.to_string(), v / 1000.0);
        }
    }
    if requests > 0 {
        latency_ms.insert("max".into(), acc.latency.max() as f64 / 1000.0);
    }
    Processing {
        requests,
        rows: acc.rows_seen,
        status: acc
            .status
            .iter()
            .map(|(s, c)| (s.to_string(), *c))
            .collect(),
        error_rate: rate(errors),
        server_error_rate: rate(server),
        latency_ms,
    }
}

fn lower_is_better(metric: &str) -> bool {
    matches!(metric, "rmse" | "mae" | "log_loss" | "brier")
}

/// Live performance from the labelled rows.
pub fn performance(
    baseline: &Baseline,
    labelled: &[Labelled],
    classes: Option<&[String]>,
    spec: &ModelSpec,
    window: (i64, i64),
) -> Performance {
    let min_samples = spec.monitor.min_samples as u64;
    let n = labelled.len() as u64;
    let mut p = Performance {
        labelled_rows: n,
        min_samples,
        drop_threshold: spec.monitor.performance_drop,
        baseline_metrics: baseline.metrics.clone(),
        metric: spec.promotion.metric.clone(),
        ..Performance::default()
    };
    if n == 0 {
        p.status = "no_labels".into();
        p.note = "no feedback labels were joined to this window's predictions: predictive \
                  performance is not assessed (post labels to /v2/models/<model>/feedback)"
            .into();
        return p;
    }
    let live = metrics_of(
        classes,
        labelled.iter().map(|l| (l.truth, l.outputs.as_slice())),
    );
    for name in [
        "roc_auc", "accuracy", "f1_macro", "log_loss", "brier", "rmse", "mae", "r2",
    ] {
        if let Some(v) = live.get(name).filter(|v| v.is_finite()) {
            p.metrics.insert(name.to_string(), v);
        }
    }
    p.over_time = over_time(labelled, classes.is_some(), window);
    let mut notes = Vec::new();
    if !p.metrics.contains_key(&p.metric) {
        let fallback = if classes.is_some() {
            "accuracy"
        } else {
            "rmse"
        };
        notes.push(format!(
            "{} is undefined on this window (e.g. only one class among the labels); judged on {}",
            p.metric, fallback
        ));
        p.metric = fallback.to_string();
    }
    p.current = p.metrics.get(&p.metric).copied();
    p.baseline = baseline.metrics.get(&p.metric).copied();
    p.drop = match (p.baseline, p.current) {
        (Some(b), Some(c)) if lower_is_better(&p.metric) => {
            Some(if b > 0.0 { (c - b) / b } else { c - b })
        }
        (Some(b), Some(c)) => Some(b - c),
        _ => None,
    };
    if n < min_samples {
        p.status = "insufficient_labels".into();
        notes.push(format!(
            "{n} labelled rows, fewer than monitor.min_samples = {min_samples}: no verdict yet"
        ));
    } else {
        p.status = "assessed".into();
        p.breach = p.drop.is_some_and(|d| d > spec.monitor.performance_drop);
        notes.push(match (p.current, p.baseline, p.drop) {
            (Some(c), Some(b), Some(d)) => format!(
                "live {} {:.4} vs holdout {:.4}: {} {:.4} ({} the {:.4} allowed)",
                p.metric,
                c,
                b,
                if d > 0.0 { "worse by" } else { "better by" },
                d.abs(),
                if p.breach { "more than" } else { "within" },
                spec.monitor.performance_drop
            ),
            _ => format!("the holdout has no {} to compare with", p.metric),
        });
    }
    p.note = notes.join("; ");
    p
}

fn over_time(
    labelled: &[Labelled],
    classification: bool,
    (from, to): (i64, i64),
) -> Vec<MetricPoint> {
    const SLICES: i64 = 40;
    const HOUR: i64 = 3_600_000;
    let width = (((to - from) / SLICES).max(HOUR) / HOUR) * HOUR;
    let mut slices: BTreeMap<i64, (u64, f64)> = BTreeMap::new();
    for l in labelled {
        let slot = from + ((l.at_ms - from).max(0) / width) * width;
        let e = slices.entry(slot).or_insert((0, 0.0));
        e.0 += 1;
        if classification {
            let (arg, _) = lambdaml::baseline::argmax(&l.outputs);
            if arg as f64 == l.truth {
                e.1 += 1.0;
            }
        } else {
            let d = l.outputs.first().copied().unwrap_or(f64::NAN) - l.truth;
            e.1 += d * d;
        }
    }
    slices
        .into_iter()
        .map(|(at, (n, s))| MetricPoint {
            from: chrono::DateTime::<chrono::Utc>::from_timestamp_millis(at)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default(),
            rows: n,
            value: if classification {
                s / n as f64
            } else {
                (s / n as f64).sqrt()
            },
        })
        .collect()
}

/// The metrics of labelled rows, each its truth (class index or value) and outputs
/// (probabilities, or the predicted value first).
pub(crate) fn metrics_of<'r>(
    classes: Option<&[String]>,
    rows: impl Iterator<Item = (f64, &'r [f64])> + Clone,
) -> Metrics {
    match classes {
        Some(classes) => {
            let truth: Vec<usize> = rows.clone().map(|(t, _)| t as usize).collect();
            let proba: Vec<f64> = rows.flat_map(|(_, o)| o.iter().copied()).collect();
            Metrics::Classification(metrics::classification(&truth, &proba, classes))
        }
        None => {
            let truth: Vec<f64> = rows.clone().map(|(t, _)| t).collect();
            let pred: Vec<f64> = rows
                .map(|(_, o)| o.first().copied().unwrap_or(f64::NAN))
                .collect();
            Metrics::Regression(metrics::regression(&truth, &pred))
        }
    }
}

/// Every section a window's accumulators give.
pub(crate) struct Sections {
    pub labelled: Vec<Labelled>,
    pub data_drift: DataDrift,
    pub prediction_drift: PredictionDrift,
    pub data_quality: DataQuality,
    pub processing: Processing,
    pub performance: Performance,
    pub multivariate_drift: Option<crate::report::MultivariateDrift>,
}

/// The report's sections from a scanned window (its labelled rows taken out of `acc`).
pub(crate) fn sections(
    found: &crate::found::Found,
    acc: &mut WindowAcc,
    classes: Option<&[String]>,
    interval: &crate::interval::Interval,
) -> Sections {
    let baseline = &found.baseline;
    let labelled = std::mem::take(&mut acc.labelled);
    let data_drift = data_drift(baseline, acc, &found.spec);
    let min_samples = found.spec.monitor.min_samples as u64;
    let prediction_drift = prediction_drift(baseline, acc, min_samples);
    let data_quality = data_quality(baseline, acc);
    let processing = processing(acc);
    let window_ms = (
        interval.from.timestamp_millis(),
        interval.to.timestamp_millis(),
    );
    let mut performance = performance(baseline, &labelled, classes, &found.spec, window_ms);
    performance.estimated = acc
        .estimation
        .estimated(baseline, &found.spec, &performance);
    let multivariate_drift = acc.estimation.multivariate(&found.spec);
    Sections {
        labelled,
        data_drift,
        prediction_drift,
        data_quality,
        processing,
        performance,
        multivariate_drift,
    }
}
