//! The evaluation document: `models/<model>/<version>/evaluation.json`, written by evaluate
//! and read by deploy (its promotion rule), the CLI and the dashboard.

use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;

/// A version's score on a holdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// The version.
    pub version: String,
    /// Its metrics.
    pub metrics: Metrics,
}

/// `models/<model>/<version>/evaluation.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The model.
    pub model: String,
    /// The challenger's version.
    pub version: String,
    /// The run whose holdout was used.
    pub run_id: String,
    /// Holdout rows.
    pub holdout_rows: usize,
    /// The challenger's metrics.
    pub metrics: Metrics,
    /// The champion's metrics on the same rows, when there is a champion.
    pub champion: Option<Scored>,
    /// Why the champion could not be scored, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion_note: Option<String>,
    /// Production when the evaluation ran. Deploy applies the rule only while production is
    /// still this version (absent in evaluations written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub against: Option<Against>,
    /// The challenger minus the champion on the same rows, with its paired bootstrap
    /// interval (`promotion.rule = "bootstrap"` decides on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<crate::compare::Comparison>,
    /// RFC 3339 time.
    pub created_at: String,
}

/// The production version an evaluation was made against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Against {
    /// `None`: there was no production version.
    pub production: Option<String>,
}
