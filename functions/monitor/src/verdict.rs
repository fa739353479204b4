//! What a run concludes: the notes a reader needs to trust the numbers, and the verdict —
//! a breach when the dataset drifted, live performance dropped, or the spec changed.

use chrono::SecondsFormat;

use crate::found::Found;
use crate::interval::Interval;
use crate::report::{
    CaptureSummary, ConceptDrift, DataDrift, FeedbackSummary, MultivariateDrift, Performance,
    Verdict,
};

/// The notes on what was read: an empty window, skipped lines, unknown versions, feedback
/// that joined nothing, features the baseline cannot test.
pub(crate) fn notes(
    interval: &Interval,
    captures: &CaptureSummary,
    feedback: &FeedbackSummary,
    data_drift: &DataDrift,
) -> Vec<String> {
    let mut notes = Vec::new();
    if captures.records_in_window == 0 {
        notes.push(format!(
            "no capture records between {} and {}: nothing to compare, no verdict on drift",
            interval.from.to_rfc3339_opts(SecondsFormat::Secs, true),
            interval.to.to_rfc3339_opts(SecondsFormat::Secs, true)
        ));
    }
    if captures.malformed_lines > 0 {
        notes.push(format!(
            "{} capture lines were not records (truncated or corrupt) and were skipped",
            captures.malformed_lines
        ));
    }
    for (v, n) in &captures.unknown_versions {
        notes.push(format!(
            "{n} rows from version {v}, which the registry does not know: counted, not tested"
        ));
    }
    if feedback.unmatched > 0 {
        notes.push(format!(
            "{} feedback labels match no captured row of this window (another window, or an unknown request id)",
            feedback.unmatched
        ));
    }
    if feedback.duplicates > 0 {
        notes.push(format!(
            "{} duplicate feedback labels: the first label for a row wins",
            feedback.duplicates
        ));
    }
    if feedback.invalid > 0 {
        notes.push(format!(
            "{} feedback labels are not values the model predicts and were ignored",
            feedback.invalid
        ));
    }
    if feedback.malformed_lines > 0 {
        notes.push(format!(
            "{} feedback lines were not records and were skipped",
            feedback.malformed_lines
        ));
    }
    for f in &data_drift.features {
        if f.current_values > 0 && f.reference_values == 0 {
            notes.push(format!(
                "{}: the baseline has no values for this feature; not tested",
                f.name
            ));
        }
    }
    notes
}

/// The verdict: every reason for a breach.
pub(crate) fn verdict(
    found: &Found,
    data_drift: &DataDrift,
    performance: &Performance,
    (concept, multivariate): (Option<&ConceptDrift>, Option<&MultivariateDrift>),
) -> Verdict {
    let mut reasons = Vec::new();
    let mut kinds: Vec<String> = Vec::new();
    if data_drift.dataset_drift {
        kinds.push("data_drift".into());
        reasons.push(format!(
            "dataset drift: {} of {} features drifted (share {:.2} ≥ {:.2})",
            data_drift.drifted,
            data_drift.tested,
            data_drift.drift_share,
            data_drift.drift_share_threshold
        ));
    }
    // With a concept-drift trigger the detector, not the window's threshold, decides.
    if let Some(c) = concept {
        for change in &c.changes {
            kinds.push("concept_drift".into());
            reasons.push(format!(
                "concept drift: {} found a change in the error stream at row {} (captured {}); mean error of the rows fed this run {:.4}",
                c.detector,
                change.position,
                change.at,
                c.mean_error.unwrap_or(f64::NAN)
            ));
        }
    } else if performance.breach {
        kinds.push("performance".into());
        reasons.push(format!(
            "performance drop: live {} {:.4} vs holdout {:.4}",
            performance.metric,
            performance.current.unwrap_or(f64::NAN),
            performance.baseline.unwrap_or(f64::NAN)
        ));
    }
    if let Some(e) = performance.estimated.as_ref().filter(|e| e.decides) {
        kinds.push("estimated_performance".into());
        reasons.push(format!(
            "estimated performance drop (no labels needed): estimated {} {:.4} vs holdout {:.4} on {} rows",
            e.metric,
            e.estimate.map_or(f64::NAN, |x| x.value),
            e.baseline.unwrap_or(f64::NAN),
            e.rows
        ));
    }
    if let Some(m) = multivariate.filter(|m| m.breach) {
        kinds.push("multivariate_drift".into());
        reasons.push(format!(
            "multivariate drift: mean PCA reconstruction error {:.4} outside {}–{:.4}",
            m.value.unwrap_or(f64::NAN),
            m.lower.map_or("0".to_string(), |l| format!("{l:.4}")),
            m.upper.unwrap_or(f64::NAN)
        ));
    }
    if found.spec_changed {
        kinds.push("spec_changed".into());
        reasons.push(format!(
            "the spec specs/{}.toml changed since version {} was trained: rebuild with the new features",
            found.manifest.model, found.manifest.version
        ));
    }
    kinds.dedup();
    Verdict {
        breach: !reasons.is_empty(),
        reasons,
        kinds,
    }
}
