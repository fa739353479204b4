//! The monitoring report: `monitoring/<model>/<run>/report.json`.
//!
//! The schema is stable and versioned by [`SCHEMA_VERSION`]; fields are only ever added.
//! Every count is over the window; rates are shares in [0, 1]; statistics are `null` where
//! they are undefined (an empty window, a category the baseline never had for chi-squared).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The report format's version.
pub const SCHEMA_VERSION: u32 = 1;

/// One monitoring run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The model.
    pub model: String,
    /// The production version compared with (its baseline).
    pub version: String,
    /// When the report was made (RFC 3339).
    pub generated_at: String,
    /// The evaluation time: retrain cooldowns and caps count from it.
    pub at: String,
    /// The window of capture times, `[from, to)`.
    pub window: Window,
    /// What was read.
    pub captures: CaptureSummary,
    /// Ground-truth labels.
    pub feedback: FeedbackSummary,
    /// Per-feature drift and the dataset verdict.
    pub data_drift: DataDrift,
    /// Drift of the model's outputs.
    pub prediction_drift: PredictionDrift,
    /// Missing values, out-of-range values, unseen categories, validation errors.
    pub data_quality: DataQuality,
    /// Live metrics from feedback labels against the holdout's.
    pub performance: Performance,
    /// Volume, latency and errors.
    pub processing: Processing,
    /// Breach or not, and why.
    pub verdict: Verdict,
    /// What was done about a breach.
    pub retrain: RetrainDecision,
    /// The concept-drift detector on the labelled error stream (`[monitor] trigger =
    /// "adwin" | "ddm"`); absent with the threshold trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concept_drift: Option<ConceptDrift>,
    /// Earlier windows this run re-judged with labels that arrived after them (their new
    /// realized performance is in `late-labels.json` beside their report).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub late_labels: Vec<LateLabels>,
    /// Multivariate drift: the PCA reconstruction error of the window's rows against the
    /// training rows'; absent for a version whose baseline has no reconstruction model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multivariate_drift: Option<MultivariateDrift>,
    /// The comparison of production with its shadow or canary version, and the decision
    /// taken on it; absent when no rollout is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutReport>,
    /// Stated outcomes for anything unusual in the input.
    pub notes: Vec<String>,
    /// Where this run's time went, in milliseconds (`baseline`, `feedback`, `captures`,
    /// `analysis`).
    #[serde(default)]
    pub timings_ms: BTreeMap<String, f64>,
}

/// A time window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Start, inclusive.
    pub from: String,
    /// End, exclusive.
    pub to: String,
}

/// What the monitor read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptureSummary {
    /// Capture files read.
    pub files: u64,
    /// Records read in those files (any time).
    pub records: u64,
    /// Records inside the window.
    pub records_in_window: u64,
    /// Records of a shadow version (compared in the rollout section, not counted as
    /// production's traffic).
    #[serde(default)]
    pub shadow_records: u64,
    /// Lines that were not capture records (truncated or corrupt), skipped.
    pub malformed_lines: u64,
    /// Records of versions the registry does not know, by version: counted, not tested.
    pub unknown_versions: BTreeMap<String, u64>,
    /// Records of other known versions (canary, rollback), mapped to the baseline by
    /// feature name and tested with the rest.
    pub other_versions: BTreeMap<String, u64>,
    /// Accepted rows.
    pub rows_scored: u64,
    /// Rows the drift tests used (all scored rows up to the sample size).
    pub rows_tested: u64,
    /// Whether `rows_tested < rows_scored`: then the rows tested are those with the smallest
    /// hash of where they were captured (file, line, row), a uniform sample that is the same
    /// rows however the window was read (in one invocation or in parts).
    pub sampled: bool,
}

/// Feedback labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedbackSummary {
    /// Feedback records read.
    pub records: u64,
    /// Labels joined to a captured row of the window.
    pub joined: u64,
    /// Second and later labels for the same row (the first wins).
    pub duplicates: u64,
    /// Labels whose request id and row match no captured row of the window.
    pub unmatched: u64,
    /// Labels the model cannot read (not one of its classes, not a number).
    pub invalid: u64,
    /// Feedback lines that were not records, skipped.
    pub malformed_lines: u64,
}

/// One feature's drift test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDrift {
    /// The feature.
    pub name: String,
    /// `numeric` or `categorical` (numeric features with at most 5 distinct values are
    /// tested as categories).
    pub kind: String,
    /// The test that decides.
    pub method: String,
    /// Its threshold (a p-value for `ks` and `chi_squared`, a distance otherwise).
    pub threshold: f64,
    /// Where the method and threshold came from: `default` or `spec`.
    pub source: String,
    /// The deciding score (`null`: no data).
    pub score: Option<f64>,
    /// The verdict.
    pub drifted: bool,
    /// Non-missing values compared, current side.
    pub current_values: u64,
    /// Reference values compared.
    pub reference_values: u64,
    /// Every statistic computed (for the report; only `method` decides).
    pub statistics: BTreeMap<String, Option<f64>>,
    /// Distribution shown in the report: bin or category labels and the two shares.
    pub distribution: Distribution,
    /// Anything worth saying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Two distributions over the same bins.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Bin or category labels.
    pub labels: Vec<String>,
    /// Reference shares.
    pub reference: Vec<f64>,
    /// Current shares.
    pub current: Vec<f64>,
}

/// Data drift.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataDrift {
    /// Whether the share of drifted features reached `drift_share_threshold`.
    pub dataset_drift: bool,
    /// Drifted features / tested features.
    pub drift_share: f64,
    /// The spec's `monitor.drift_share`.
    pub drift_share_threshold: f64,
    /// Drifted features.
    pub drifted: u64,
    /// Features tested (with data).
    pub tested: u64,
    /// Per feature, in pipeline order.
    pub features: Vec<FeatureDrift>,
}

/// Prediction drift.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PredictionDrift {
    /// Whether either test below drifted.
    pub drifted: bool,
    /// The predicted classes' (or values') test.
    pub output: Option<FeatureDrift>,
    /// The scores' test (binary: the positive probability; multiclass: the top probability).
    pub scores: Option<FeatureDrift>,
}

/// One feature's data quality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureQuality {
    /// The feature.
    pub name: String,
    /// Share of scored rows where it was missing.
    pub missing_rate: f64,
    /// The same share in training.
    pub baseline_missing_rate: f64,
    /// Values below the training minimum or above the maximum.
    pub out_of_range: u64,
    /// Values that are not numbers where a number is expected.
    pub invalid: u64,
    /// Values of categories training never saw.
    pub unseen: u64,
    /// Up to 10 unseen categories with their counts.
    pub unseen_examples: BTreeMap<String, u64>,
}

/// Data quality.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataQuality {
    /// Requests refused with a 4xx / all requests.
    pub validation_error_rate: f64,
    /// Field errors in refused requests.
    pub validation_errors: u64,
    /// Per feature.
    pub features: Vec<FeatureQuality>,
    /// Plain-language warnings (missing rate up 10 points, new categories, …).
    pub warnings: Vec<String>,
}

/// A live metric over one slice of the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    /// Slice start (RFC 3339).
    pub from: String,
    /// Labelled rows in the slice.
    pub rows: u64,
    /// Accuracy (classification) or RMSE (regression).
    pub value: f64,
}

/// Predictive performance (concept drift).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Performance {
    /// `assessed`, `insufficient_labels` or `no_labels`.
    pub status: String,
    /// Labelled rows.
    pub labelled_rows: u64,
    /// The spec's `monitor.min_samples`.
    pub min_samples: u64,
    /// The metric judged (the promotion metric, or accuracy when it is undefined here).
    pub metric: String,
    /// Its holdout value.
    pub baseline: Option<f64>,
    /// Its live value.
    pub current: Option<f64>,
    /// How much worse live is (absolute for scores, relative for errors).
    pub drop: Option<f64>,
    /// The spec's `monitor.performance_drop`.
    pub drop_threshold: f64,
    /// Whether the drop passed the threshold.
    pub breach: bool,
    /// All live scalar metrics.
    pub metrics: BTreeMap<String, f64>,
    /// The holdout's.
    pub baseline_metrics: BTreeMap<String, f64>,
    /// Accuracy or RMSE per slice of the window.
    pub over_time: Vec<MetricPoint>,
    /// What to make of it.
    pub note: String,
    /// Performance estimated without labels from every production row of the window;
    /// absent for a version whose baseline has no estimator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated: Option<EstimatedPerformance>,
}

/// An earlier window re-judged with labels that arrived after its run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LateLabels {
    /// The earlier run's report.
    pub report: String,
    /// Its window.
    pub window: Window,
    /// When it was judged.
    pub judged_at: String,
    /// Labels that joined its rows now and had not then.
    pub late_rows: u64,
    /// Labelled rows when it was judged, and now.
    pub labelled_then: u64,
    /// Labelled rows now.
    pub labelled_now: u64,
    /// The metric judged.
    pub metric: String,
    /// Its value when judged (none without enough labels then).
    pub then: Option<f64>,
    /// Its value now.
    pub now: Option<f64>,
    /// The performance status then (`assessed`, `insufficient_labels`, `no_labels`).
    pub status_then: String,
    /// And now.
    pub status_now: String,
    /// Whether the labels now show a drop beyond `performance_drop`.
    pub breach_now: bool,
}

/// `late-labels.json` beside an earlier report: its realized performance with every label
/// received so far, rewritten by each run that finds more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LateUpdate {
    /// The report it updates.
    pub report: String,
    /// The run that found the labels (its report).
    pub by_report: String,
    /// That run's evaluation time.
    pub updated_at: String,
    /// The summary.
    pub summary: LateLabels,
    /// The performance section as judged.
    pub then: Performance,
    /// The performance section with every label so far.
    pub now: Performance,
}

/// Performance estimated from the model's own probabilities (CBPE), no labels needed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EstimatedPerformance {
    /// `cbpe`.
    pub method: String,
    /// Production rows estimated over.
    pub rows: u64,
    /// Whether the holdout's probabilities were recalibrated (isotonic) before estimating.
    pub calibrated: bool,
    /// The metric judged (as the realized section's).
    pub metric: String,
    /// Its holdout (realized) value.
    pub baseline: Option<f64>,
    /// Its estimate, sampling error and ±3 SE band.
    pub estimate: Option<crate::estimate::Estimate>,
    /// How much worse the estimate is than the holdout (absolute).
    pub drop: Option<f64>,
    /// Whether the estimated drop passed `monitor.performance_drop` (with at least
    /// `monitor.min_samples` rows).
    pub breach: bool,
    /// Whether this breach counts in the verdict: `monitor.estimate = "always"`, or
    /// `"unlabelled"` (the default) and the labels could not judge the window.
    pub decides: bool,
    /// Every estimated metric.
    pub metrics: BTreeMap<String, crate::estimate::Estimate>,
    /// The realized value of each, where this window's labels give one.
    pub realized: BTreeMap<String, f64>,
    /// What to make of it.
    pub note: String,
}

/// Multivariate drift by PCA reconstruction error (NannyML's data reconstruction).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MultivariateDrift {
    /// `pca_reconstruction`.
    pub method: String,
    /// Features in the model.
    pub features: u64,
    /// Principal components kept.
    pub components: u64,
    /// The variance share they explain on the training rows.
    pub explained: f64,
    /// Rows scored.
    pub rows: u64,
    /// The window's mean reconstruction error.
    pub value: Option<f64>,
    /// Its sampling error (`std / √n`).
    pub sampling_error: Option<f64>,
    /// The lower threshold for a window of this many rows (none when it would be ≤ 0).
    pub lower: Option<f64>,
    /// The upper threshold for a window of this many rows.
    pub upper: Option<f64>,
    /// The training reference's mean error per chunk.
    pub reference_chunks: Vec<f64>,
    /// Rows per reference chunk.
    pub chunk_size: u64,
    /// Whether the value is outside the thresholds.
    pub drifted: bool,
    /// Whether it counts in the verdict (`monitor.multivariate = "breach"`).
    pub breach: bool,
    /// What to make of it.
    pub note: String,
}

/// Processing performance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Processing {
    /// Requests.
    pub requests: u64,
    /// Rows scored.
    pub rows: u64,
    /// Requests by HTTP status.
    pub status: BTreeMap<String, u64>,
    /// Requests answered 4xx or 5xx / all.
    pub error_rate: f64,
    /// Requests answered 5xx / all.
    pub server_error_rate: f64,
    /// Latency percentiles in milliseconds (`p50`, `p95`, `p99`, `max`), within 0.2 %.
    pub latency_ms: BTreeMap<String, f64>,
}

/// The verdict.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether anything calls for retraining.
    pub breach: bool,
    /// Each reason, in words.
    pub reasons: Vec<String>,
    /// What kind of reason each is, once each: `data_drift`, `performance`,
    /// `concept_drift`, `estimated_performance`, `multivariate_drift`, `spec_changed`.
    #[serde(default)]
    pub kinds: Vec<String>,
}

/// What happened about a breach.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrainDecision {
    /// `sent`, `suppressed`, `disabled`, `dry_run` or `not_needed`.
    pub decision: String,
    /// Why.
    pub detail: String,
    /// `same_features` or `new_features` (the spec changed since the version was trained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The labelled rows handed to the retrain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labelled: Option<String>,
    /// Labelled rows in it.
    #[serde(default)]
    pub labelled_rows: u64,
}

/// One side of a rollout comparison: production, or the shadow/canary version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutSide {
    /// The version.
    pub version: String,
    /// Requests it scored (a shadow: the copies it received).
    pub requests: u64,
    /// Rows it scored.
    pub rows: u64,
    /// Requests it failed (5xx; for a shadow, any refusal of a request production took,
    /// skipped ones aside).
    pub errors: u64,
    /// `errors / requests`.
    pub error_rate: f64,
    /// Its rows with a feedback label.
    pub labelled: u64,
    /// The rollout metric on its labelled rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<f64>,
    /// The metric's bootstrap interval at the rollout's confidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<[f64; 2]>,
    /// Median latency in milliseconds (a shadow's: its scoring alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p50_ms: Option<f64>,
    /// 95th percentile latency in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p95_ms: Option<f64>,
}

/// The metric difference of a rollout, candidate minus production, signed so that a
/// positive value means the candidate is better.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutComparison {
    /// The metric.
    pub metric: String,
    /// Candidate better by this much (negative: worse).
    pub improvement: f64,
    /// Its bootstrap interval (paired for a shadow, on the same rows).
    pub interval: [f64; 2],
    /// The interval's confidence.
    pub confidence: f64,
    /// Rows the difference was computed on (a shadow: labelled rows both scored).
    pub rows: u64,
    /// Bootstrap resamples.
    pub resamples: u32,
}

/// How production's and the candidate's outputs differ.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutAgreement {
    /// Rows both scored (a shadow only: the same request's rows).
    pub paired_rows: u64,
    /// Share of paired rows with the same predicted label (classification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_agreement: Option<f64>,
    /// Mean of candidate − production predictions (regression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_difference: Option<f64>,
    /// Median and 95th percentile of |candidate − production| (regression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abs_difference_p50_p95: Option<[f64; 2]>,
    /// Drift of the candidate's predictions from production's: `jensen_shannon` of the
    /// predicted-label frequencies (classification, drifted above 0.1) or the `ks` p-value
    /// of the predictions (regression, drifted below 0.05).
    pub drift_method: String,
    /// The drift score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_score: Option<f64>,
    /// Whether the predictions drifted.
    pub drifted: bool,
}

/// The rollout section of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutReport {
    /// `shadow` or `canary`.
    pub role: String,
    /// The candidate's share of the traffic during the window.
    pub weight: f64,
    /// Production's side.
    pub production: RolloutSide,
    /// The candidate's side.
    pub candidate: RolloutSide,
    /// Requests the shadow skipped because they lack features it takes (a spec change).
    pub skipped_requests: u64,
    /// How the outputs differ.
    pub agreement: RolloutAgreement,
    /// The metric difference, once both sides have enough labelled rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<RolloutComparison>,
    /// `wait`, `promote`, `step` or `end`.
    pub decision: String,
    /// Why, in words.
    pub detail: String,
    /// The canary's weight after a step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_weight: Option<f64>,
    /// Whether the decision was applied to the registry (false for a report-only run, or
    /// when the registry changed since the run began).
    pub applied: bool,
}

/// A change the concept-drift detector found in the error stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptChange {
    /// Its position in the error stream the detector has seen since it started (0-based,
    /// across runs).
    pub position: u64,
    /// The capture time of the labelled row it was found at.
    pub at: String,
}

/// The concept-drift detector's part of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptDrift {
    /// `adwin` or `ddm`.
    pub detector: String,
    /// The production version whose errors it watches (it starts over with a new one).
    pub version: String,
    /// Labelled rows fed this run (rows an earlier run fed are not fed again).
    pub fed: u64,
    /// Labelled rows fed since the detector started.
    pub fed_total: u64,
    /// The error rate (classification) or mean absolute error (regression) of the rows fed
    /// this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_error: Option<f64>,
    /// Changes detected this run.
    pub changes: Vec<ConceptChange>,
    /// DDM only: the last row was in the warning zone.
    #[serde(default)]
    pub warning: bool,
    /// Why the detector started over this run, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted: Option<String>,
}
