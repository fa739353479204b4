//! The model spec: one TOML file that says everything about a model, stage by stage.
//!
//! A spec names the dataset and label, the task, which features to use and their declared
//! types, how to split, how to preprocess, which model family to train with which
//! hyper-parameters, when to promote, how to monitor and when to retrain. Parsing rejects
//! unknown keys (a typo is an error naming the key, not a silently ignored setting), and
//! [`ModelSpec::parse`] then validates every range before any stage does work — the
//! hyper-parameters are checked once, up front.
//!
//! See `examples/specs/*.toml` for complete specs with comments.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A spec that could not be read or is out of range.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// Not valid TOML, an unknown key, or a wrongly typed value. The message names the key
    /// and the line.
    #[error("invalid model spec: {0}")]
    Parse(String),
    /// A value out of its allowed range.
    #[error("invalid model spec: `{key}` {reason}")]
    Invalid {
        /// The dotted key, e.g. `split.holdout`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(key: &str, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// The whole spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Name and description of the model.
    pub model: ModelSection,
    /// The dataset it learns from.
    pub dataset: DatasetSection,
    /// Classification or regression.
    pub task: TaskSection,
    /// Feature selection.
    #[serde(default)]
    pub features: FeaturesSection,
    /// Train/holdout split.
    #[serde(default)]
    pub split: SplitSection,
    /// Feature pipeline settings.
    #[serde(default)]
    pub preprocess: PreprocessSection,
    /// Model family and hyper-parameters.
    #[serde(default)]
    pub train: TrainSection,
    /// Promotion rule.
    #[serde(default)]
    pub promotion: PromotionSection,
    /// Drift and performance monitoring.
    #[serde(default)]
    pub monitor: MonitorSection,
    /// Automatic retraining.
    #[serde(default)]
    pub retrain: RetrainSection,
    /// How a version that passes the promotion rule reaches live traffic.
    #[serde(default)]
    pub rollout: RolloutSection,
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// The model's name: lower-case letters, digits and `-`, as it appears in keys and URLs.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// A declared column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclaredType {
    /// Whole numbers.
    Integer,
    /// Real numbers.
    Float,
    /// true/false.
    Boolean,
    /// Strings from a domain.
    Categorical,
}

/// A column's declared type and constraints, in `[dataset.columns]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnDecl {
    /// The type.
    #[serde(rename = "type")]
    pub kind: DeclaredType,
    /// Whether missing values are allowed (default true; never for the label).
    #[serde(default = "yes")]
    pub nullable: bool,
    /// Smallest allowed value (numeric columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest allowed value (numeric columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The allowed values (categorical columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

fn yes() -> bool {
    true
}

/// `[dataset]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSection {
    /// The dataset name; raw files arrive under `raw/<name>/`.
    pub name: String,
    /// The label column.
    pub label: String,
    /// Field delimiter for CSV (one ASCII character).
    #[serde(default = "comma")]
    pub delimiter: String,
    /// Strings read as missing values, besides the empty string.
    #[serde(default = "default_nulls")]
    pub null_values: Vec<String>,
    /// Declared columns; undeclared columns have their types inferred.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnDecl>,
}

fn comma() -> String {
    ",".to_string()
}

fn default_nulls() -> Vec<String> {
    ["NA", "N/A", "NaN", "nan", "null", "NULL", "None", "?"]
        .into_iter()
        .map(String::from)
        .collect()
}

/// The learning task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Two classes.
    Binary,
    /// Three or more classes.
    Multiclass,
    /// A real-valued target.
    Regression,
}

/// `[task]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSection {
    /// The task.
    pub kind: TaskKind,
    /// The positive class of a binary task (default: the larger of the two, sorted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive_class: Option<String>,
}

/// What scoring does with a feature the model does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownFeature {
    /// A 400 naming the field.
    #[default]
    Reject,
    /// Drop it silently.
    Ignore,
}

/// `[features]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturesSection {
    /// Only these columns (default: every column but the label).
    #[serde(default)]
    pub include: Vec<String>,
    /// Never these columns.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// What scoring does with unknown features.
    #[serde(default)]
    pub unknown: UnknownFeature,
}

/// How to split train from holdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitMethod {
    /// A seeded random permutation.
    #[default]
    Random,
    /// The last rows (in file order, or by `order_by`) are the holdout.
    Time,
}

/// `[split]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSection {
    /// Random or time-ordered.
    #[serde(default)]
    pub method: SplitMethod,
    /// Fraction of rows held out, in (0, 1).
    #[serde(default = "default_holdout")]
    pub holdout: f64,
    /// Seed of the random split: the split equals scikit-learn's
    /// `train_test_split(test_size=holdout, random_state=seed)`.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// For time splits: the column that orders rows (default: file order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_by: Option<String>,
}

fn default_holdout() -> f64 {
    0.2
}
fn default_seed() -> u64 {
    42
}

impl Default for SplitSection {
    fn default() -> Self {
        SplitSection {
            method: SplitMethod::Random,
            holdout: default_holdout(),
            seed: default_seed(),
            order_by: None,
        }
    }
}

/// How numeric gaps are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumericImpute {
    /// The training mean.
    #[default]
    Mean,
    /// The training median.
    Median,
    /// Zero.
    Zero,
}

/// What the pipeline does with a category it did not see in training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnseenCategory {
    /// Encode as all zeros (scikit-learn's `handle_unknown="ignore"`).
    #[default]
    Ignore,
    /// Refuse the row.
    Error,
}

/// `[preprocess]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessSection {
    /// Numeric imputation.
    #[serde(default)]
    pub numeric_impute: NumericImpute,
    /// Standardize numeric features (mean 0, unit variance on the training split).
    #[serde(default = "yes")]
    pub standardize: bool,
    /// Unseen categories at transform time.
    #[serde(default)]
    pub unseen_category: UnseenCategory,
    /// At most this many one-hot columns per categorical feature; rarer categories are
    /// treated as unseen.
    #[serde(default = "default_max_categories")]
    pub max_categories: usize,
}

fn default_max_categories() -> usize {
    64
}

impl Default for PreprocessSection {
    fn default() -> Self {
        PreprocessSection {
            numeric_impute: NumericImpute::Mean,
            standardize: true,
            unseen_category: UnseenCategory::Ignore,
            max_categories: default_max_categories(),
        }
    }
}

/// Model families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Logistic regression (binary).
    #[default]
    Logistic,
    /// Softmax regression (multiclass).
    Softmax,
    /// Linear regression.
    Linear,
    /// Multi-layer perceptron (any task).
    Mlp,
}

/// Optimizers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// Full-batch L-BFGS.
    Lbfgs,
    /// Mini-batch AdamW.
    Adamw,
    /// Mini-batch SGD with momentum.
    Sgd,
}

/// Activations of MLP hidden layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// max(0, x).
    #[default]
    Relu,
    /// tanh.
    Tanh,
    /// GELU.
    Gelu,
}

/// Class weighting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassWeight {
    /// All classes weigh the same.
    #[default]
    None,
    /// Inversely proportional to class frequency (scikit-learn's "balanced").
    Balanced,
}

/// `[train]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// The model family (default: the task's linear family, see `ModelSpec::parse`).
    #[serde(default)]
    pub family: Family,
    /// The optimizer (default: L-BFGS for linear families, AdamW for the MLP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<Optimizer>,
    /// Maximum epochs (mini-batch) or iterations (L-BFGS); > 0.
    #[serde(default = "default_epochs")]
    pub epochs: u32,
    /// Learning rate of AdamW/SGD; > 0.
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    /// L2 penalty; >= 0. For linear families it is scikit-learn's `1/C` scaled by rows.
    #[serde(default = "default_l2")]
    pub l2: f64,
    /// Mini-batch size; > 0.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// MLP hidden layer sizes; non-empty, each > 0.
    #[serde(default = "default_hidden")]
    pub hidden: Vec<usize>,
    /// MLP activation.
    #[serde(default)]
    pub activation: Activation,
    /// MLP dropout, in [0, 1).
    #[serde(default)]
    pub dropout: f64,
    /// Class weighting.
    #[serde(default)]
    pub class_weight: ClassWeight,
    /// Stop after this many epochs without improvement on the validation slice; > 0.
    #[serde(default = "default_patience")]
    pub patience: u32,
    /// Fraction of the training split held for early stopping, in [0, 0.5].
    #[serde(default = "default_validation")]
    pub validation_fraction: f64,
    /// Seed of initialization and shuffling.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Convergence tolerance of L-BFGS; > 0.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// What the served weights are fitted on: `split` (the training split, the weights the
    /// holdout evaluated) or `all` (after that fit, the whole window — training split and
    /// holdout — fitted again with the same settings; the version carries the split fit's
    /// evaluation, its served weights saw the latest rows too).
    #[serde(default, skip_serializing_if = "Refit::is_split")]
    pub refit: Refit,
}

/// See [`TrainSection::refit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refit {
    /// Serve the weights the holdout evaluated.
    #[default]
    Split,
    /// Serve weights fitted again on the training split and the holdout.
    All,
}

impl Refit {
    /// Whether it is the default (left out of the hashed section, so a spec that does not
    /// say keeps its version ids).
    pub fn is_split(&self) -> bool {
        *self == Refit::Split
    }
}

fn default_epochs() -> u32 {
    100
}
fn default_lr() -> f64 {
    1e-3
}
fn default_l2() -> f64 {
    1e-4
}
fn default_batch() -> usize {
    256
}
fn default_hidden() -> Vec<usize> {
    vec![64]
}
fn default_patience() -> u32 {
    10
}
fn default_validation() -> f64 {
    0.1
}
fn default_tolerance() -> f64 {
    1e-6
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            family: Family::Logistic,
            optimizer: None,
            epochs: default_epochs(),
            learning_rate: default_lr(),
            l2: default_l2(),
            batch_size: default_batch(),
            hidden: default_hidden(),
            activation: Activation::Relu,
            dropout: 0.0,
            class_weight: ClassWeight::None,
            patience: default_patience(),
            validation_fraction: default_validation(),
            seed: default_seed(),
            tolerance: default_tolerance(),
            refit: Refit::Split,
        }
    }
}

/// `[promotion]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotionSection {
    /// The metric compared (e.g. `roc_auc`, `accuracy`, `f1_macro`, `rmse`).
    #[serde(default = "default_metric")]
    pub metric: String,
    /// The challenger must beat the champion by at least this much; >= 0.
    #[serde(default)]
    pub min_improvement: f64,
    /// Guardrail: no class's recall may drop by more than this; in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_recall_drop: Option<f64>,
    /// Leave versions pending for a person to approve.
    #[serde(default)]
    pub manual_approval: bool,
    /// `threshold`: the challenger's metric must beat the champion's by `min_improvement`.
    /// `bootstrap`: promote when, with 95 % confidence (the paired bootstrap of the
    /// difference on the holdout rows), the challenger is not worse than the champion by
    /// more than `margin` — so on a small holdout noise neither promotes nor refuses.
    #[serde(default)]
    pub rule: PromotionRule,
    /// The worst the interval's lower bound may be, with `rule = "bootstrap"`; >= 0.
    #[serde(default = "default_promotion_margin")]
    pub margin: f64,
}

/// How the promotion rule compares a challenger with the champion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromotionRule {
    /// The point estimate against `min_improvement`.
    #[default]
    Threshold,
    /// The paired bootstrap interval's lower bound against `-margin`.
    Bootstrap,
}

fn default_promotion_margin() -> f64 {
    0.01
}

fn default_metric() -> String {
    "roc_auc".to_string()
}

impl Default for PromotionSection {
    fn default() -> Self {
        PromotionSection {
            metric: default_metric(),
            min_improvement: 0.0,
            max_recall_drop: None,
            manual_approval: false,
            rule: PromotionRule::Threshold,
            margin: default_promotion_margin(),
        }
    }
}

/// Parses `"90s"`, `"30m"`, `"24h"` or `"7d"` into seconds.
pub fn parse_duration_secs(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// Names usable in keys and URLs: 1–64 of `a-z`, `0-9`, `-`, `_`, starting alphanumeric.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl ModelSpec {
    /// Parses and validates a spec.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let mut spec: ModelSpec =
            toml::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
        let written: toml::Table =
            toml::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
        spec.task_defaults(&written);
        spec.validate()?;
        Ok(spec)
    }

    /// The family and promotion metric a spec leaves out follow its task: a regression spec
    /// trains `linear` and promotes on `rmse`, a multiclass one trains `softmax` (`logistic`
    /// fits binary tasks only, `roc_auc` no regression).
    fn task_defaults(&mut self, written: &toml::Table) {
        let given = |section: &str, key: &str| {
            written
                .get(section)
                .and_then(|s| s.as_table())
                .is_some_and(|s| s.contains_key(key))
        };
        if !given("train", "family") {
            self.train.family = match self.task.kind {
                TaskKind::Binary => Family::Logistic,
                TaskKind::Multiclass => Family::Softmax,
                TaskKind::Regression => Family::Linear,
            };
        }
        if !given("promotion", "metric") && self.task.kind == TaskKind::Regression {
            self.promotion.metric = "rmse".to_string();
        }
    }

    /// The optimizer in force: the spec's, or the family's default.
    pub fn optimizer(&self) -> Optimizer {
        self.train.optimizer.unwrap_or(match self.train.family {
            Family::Mlp => Optimizer::Adamw,
            _ => Optimizer::Lbfgs,
        })
    }

    /// The metric a rollout is decided on: `[rollout] metric`, or the promotion metric.
    pub fn rollout_metric(&self) -> &str {
        self.rollout
            .metric
            .as_deref()
            .unwrap_or(self.promotion.metric.as_str())
    }

    /// Whether `column` is a feature of this model (the label never is).
    pub fn is_feature(&self, column: &str) -> bool {
        column != self.dataset.label
            && (self.features.include.is_empty()
                || self.features.include.iter().any(|c| c == column))
            && !self.features.exclude.iter().any(|c| c == column)
    }
}

mod cache;
mod operate;
mod validate;

pub use operate::*;

#[cfg(test)]
mod tests;
