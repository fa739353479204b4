//! The sections that act after a version is deployed: `[monitor]` (drift tests, thresholds,
//! the trigger), `[retrain]` and `[rollout]`. They are read live by the monitor, so a
//! change to them never retrains (see the cache module).

use serde::{Deserialize, Serialize};

use super::{BTreeMap, yes};

/// Drift tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftMethod {
    /// Kolmogorov–Smirnov p-value.
    Ks,
    /// Population stability index.
    Psi,
    /// Wasserstein distance normed by the baseline's spread.
    Wasserstein,
    /// Jensen–Shannon distance.
    JensenShannon,
    /// Chi-squared p-value.
    ChiSquared,
    /// L-infinity distance of category frequencies.
    LInfinity,
}

/// A per-feature override in `[monitor.features.<name>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureDrift {
    /// The test.
    pub method: DriftMethod,
    /// Its threshold; > 0.
    pub threshold: f64,
}

/// `[monitor]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorSection {
    /// The schedule expression (`rate(1 day)` or `cron(...)`, as EventBridge reads it).
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// Dataset drift when at least this share of features drift; in (0, 1].
    #[serde(default = "default_drift_share")]
    pub drift_share: f64,
    /// Rows needed before a drift verdict on a feature, and labelled rows before a
    /// performance verdict; > 0.
    #[serde(default = "default_min_samples")]
    pub min_samples: usize,
    /// A drop of the promotion metric by more than this is a breach; in (0, 1].
    #[serde(default = "default_performance_drop")]
    pub performance_drop: f64,
    /// Per-feature test overrides.
    #[serde(default)]
    pub features: BTreeMap<String, FeatureDrift>,
    /// What turns the labels into a breach: `threshold` (the window's metric dropped by more
    /// than `performance_drop`), or a concept-drift detector on the labelled error stream,
    /// its state kept from run to run: `adwin` (any task) or `ddm` (classification).
    #[serde(default)]
    pub trigger: Trigger,
    /// When performance estimated without labels (CBPE) may breach: `unlabelled` (when the
    /// window's labels cannot judge it), `always`, or `report` (never).
    #[serde(default, skip_serializing_if = "is_default")]
    pub estimate: EstimateUse,
    /// Whether multivariate drift (PCA reconstruction error outside its thresholds) is a
    /// breach (`breach`) or only reported (`report`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub multivariate: Multivariate,
    /// How many earlier windows a run re-judges when it reads labels that match none of its
    /// own rows (labels that arrived late); 0: none, at most 12 (each scans its window's
    /// captures again).
    #[serde(
        default = "default_late_labels",
        skip_serializing_if = "is_default_late_labels"
    )]
    pub late_labels: usize,
}

fn default_late_labels() -> usize {
    3
}

fn is_default_late_labels(v: &usize) -> bool {
    *v == default_late_labels()
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// `[monitor] estimate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EstimateUse {
    /// An estimated drop breaches when the labels cannot judge the window (none, or fewer
    /// than `min_samples`).
    #[default]
    Unlabelled,
    /// An estimated drop always breaches.
    Always,
    /// Estimates are reported only.
    Report,
}

/// `[monitor] multivariate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Multivariate {
    /// Reported only.
    #[default]
    Report,
    /// Outside its thresholds is a breach.
    Breach,
}

/// `[monitor] trigger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The window's metric against the holdout's, by `performance_drop`.
    #[default]
    Threshold,
    /// ADWIN (River's defaults) on the errors: 0/1 for classification, absolute for
    /// regression.
    Adwin,
    /// DDM (River's defaults) on the 0/1 errors of a classifier.
    Ddm,
}

fn default_schedule() -> String {
    "rate(1 day)".to_string()
}
fn default_drift_share() -> f64 {
    0.5
}
fn default_min_samples() -> usize {
    200
}
fn default_performance_drop() -> f64 {
    0.05
}

impl Default for MonitorSection {
    fn default() -> Self {
        MonitorSection {
            schedule: default_schedule(),
            drift_share: default_drift_share(),
            min_samples: default_min_samples(),
            performance_drop: default_performance_drop(),
            features: BTreeMap::new(),
            trigger: Trigger::Threshold,
            estimate: EstimateUse::Unlabelled,
            multivariate: Multivariate::Report,
            late_labels: default_late_labels(),
        }
    }
}

/// Which data a retrain uses besides the new captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetrainData {
    /// The most recent `window_rows` rows.
    #[default]
    Sliding,
    /// Everything.
    All,
}

/// `[retrain]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrainSection {
    /// Retrain automatically on a breach.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Minimum time between automatic retrains, e.g. `"24h"`, `"30m"`, `"7d"`.
    #[serde(default = "default_cooldown")]
    pub cooldown: String,
    /// At most this many automatic retrains per day; > 0.
    #[serde(default = "default_max_per_day")]
    pub max_per_day: u32,
    /// Sliding window or all data.
    #[serde(default)]
    pub data: RetrainData,
    /// Rows kept by a sliding window; > 0.
    #[serde(default = "default_window_rows")]
    pub window_rows: usize,
}

fn default_cooldown() -> String {
    "24h".to_string()
}
fn default_max_per_day() -> u32 {
    1
}
fn default_window_rows() -> usize {
    100_000
}

impl Default for RetrainSection {
    fn default() -> Self {
        RetrainSection {
            enabled: true,
            cooldown: default_cooldown(),
            max_per_day: default_max_per_day(),
            data: RetrainData::Sliding,
            window_rows: default_window_rows(),
        }
    }
}

/// How a version that passes the promotion rule reaches live traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutMode {
    /// Straight to production (the holdout decides alone).
    #[default]
    Direct,
    /// First as the shadow: scores a copy of the traffic; the monitor promotes or retires it.
    Shadow,
    /// First as a canary on `steps[0]` of the traffic; the monitor steps, promotes or
    /// retires it.
    Canary,
}

/// `[rollout]`: how versions reach traffic, and how the monitor decides a shadow or canary
/// from live evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSection {
    /// Where a retrained version that passes the holdout rule goes.
    #[serde(default)]
    pub mode: RolloutMode,
    /// The share of requests a shadow scores; in (0, 1].
    #[serde(default = "one")]
    pub shadow_share: f64,
    /// A canary's weights, increasing, each in (0, 1]: it starts on the first; each monitor
    /// run that finds it good moves it to the next; past the last below 1 it is promoted.
    #[serde(default = "default_steps")]
    pub steps: Vec<f64>,
    /// Rows each side must have scored in the window before a decision; > 0.
    #[serde(default = "default_rollout_rows")]
    pub min_rows: usize,
    /// Labelled rows each side needs before the metric decides; > 0.
    #[serde(default = "default_rollout_labelled")]
    pub min_labelled: usize,
    /// The metric compared (default: the promotion metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The candidate is promoted (or stepped) when it is, with `confidence`, worse than
    /// production by less than this; ended when it is worse by more; >= 0.
    #[serde(default = "default_margin")]
    pub margin: f64,
    /// The confidence of the metric difference's interval; in (0.5, 1).
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    /// Ended when more than this share of its requests fail (5xx, or an error scoring a
    /// row production scored); in [0, 1].
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: f64,
    /// Ended when its median latency is more than this many times production's; >= 1.
    #[serde(default = "default_max_latency_ratio")]
    pub max_latency_ratio: f64,
}

fn one() -> f64 {
    1.0
}
fn default_steps() -> Vec<f64> {
    vec![0.05, 0.25, 0.5, 1.0]
}
fn default_rollout_rows() -> usize {
    200
}
fn default_rollout_labelled() -> usize {
    100
}
fn default_margin() -> f64 {
    0.01
}
fn default_confidence() -> f64 {
    0.95
}
fn default_max_error_rate() -> f64 {
    0.01
}
fn default_max_latency_ratio() -> f64 {
    3.0
}

impl Default for RolloutSection {
    fn default() -> Self {
        RolloutSection {
            mode: RolloutMode::Direct,
            shadow_share: one(),
            steps: default_steps(),
            min_rows: default_rollout_rows(),
            min_labelled: default_rollout_labelled(),
            metric: None,
            margin: default_margin(),
            confidence: default_confidence(),
            max_error_rate: default_max_error_rate(),
            max_latency_ratio: default_max_latency_ratio(),
        }
    }
}

impl RolloutSection {
    /// The weight after `current` (None: promote).
    pub fn next_step(&self, current: f64) -> Option<f64> {
        self.steps
            .iter()
            .copied()
            .find(|s| *s > current + 1e-9)
            .filter(|s| *s < 1.0)
    }

    /// The first canary weight.
    pub fn first_step(&self) -> f64 {
        self.steps.first().copied().unwrap_or(0.05).min(0.5)
    }
}
