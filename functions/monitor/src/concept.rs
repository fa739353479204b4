//! The concept-drift trigger (`[monitor] trigger = "adwin" | "ddm"`): the window's labelled
//! rows, in capture-time order, become an error stream (0/1 for a classifier, the absolute
//! error for a regressor) fed to a detector whose state lives in
//! `monitoring/<model>/concept-state.json` from one run to the next. Rows an earlier run fed
//! (captured at or before the last row it fed) are not fed again, so overlapping windows do
//! not count an error twice; a new production version, or another detector, starts it over.
//! A change it finds is a breach with its position in the stream.

use chrono::{DateTime, SecondsFormat, Utc};
use lambdaml::drift::concept::{Adwin, Ddm};
use lambdaml::layout;
use lambdaml::monitoring::{ConceptChange, ConceptDrift};
use lambdaml::spec::Trigger;
use lambdaml::stage::StageError;
use lambdaml::store::{StoreError, to_json_bytes};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::Monitor;
use crate::window::Labelled;

/// A detector and its state: `{"detector": "adwin" | "ddm", "state": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "detector", content = "state", rename_all = "snake_case")]
pub enum Detector {
    /// ADWIN on 0/1 or absolute errors.
    Adwin(Adwin),
    /// DDM on 0/1 errors.
    Ddm(Ddm),
}

impl Detector {
    /// A fresh detector for `trigger` (none for the threshold trigger).
    fn fresh(trigger: Trigger) -> Option<Self> {
        match trigger {
            Trigger::Threshold => None,
            Trigger::Adwin => Some(Detector::Adwin(Adwin::default())),
            Trigger::Ddm => Some(Detector::Ddm(Ddm::default())),
        }
    }

    /// `adwin` or `ddm`.
    pub fn name(&self) -> &'static str {
        match self {
            Detector::Adwin(_) => "adwin",
            Detector::Ddm(_) => "ddm",
        }
    }

    /// Feeds one error; true when a change is detected at it.
    fn update(&mut self, error: f64) -> bool {
        match self {
            Detector::Adwin(a) => a.update(error),
            Detector::Ddm(d) => d.update(error != 0.0),
        }
    }
}

/// The detector's state between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptState {
    /// The detector and its state.
    #[serde(flatten)]
    pub detector: Detector,
    /// The production version whose errors it has seen.
    pub version: String,
    /// Rows fed since it started.
    pub fed: u64,
    /// The capture time (epoch milliseconds) of the newest row fed.
    pub last_at_ms: i64,
}

impl ConceptState {
    fn fresh(detector: Detector, version: &str) -> Self {
        ConceptState {
            detector,
            version: version.to_string(),
            fed: 0,
            last_at_ms: i64::MIN,
        }
    }
}

/// One row's error: 0/1 for a classifier (the predicted class is not the truth), the
/// absolute error for a regressor.
fn error(row: &Labelled, classification: bool) -> Option<f64> {
    if classification {
        let mut best = 0;
        for (i, v) in row.outputs.iter().enumerate() {
            if *v > row.outputs[best] {
                best = i;
            }
        }
        (!row.outputs.is_empty()).then_some(if best as f64 == row.truth { 0.0 } else { 1.0 })
    } else {
        row.outputs
            .first()
            .map(|p| (p - row.truth).abs())
            .filter(|e| e.is_finite())
    }
}

/// Feeds `rows` (any order) to `state`'s detector; the section of the report.
pub(crate) fn feed(
    state: &mut ConceptState,
    rows: &[Labelled],
    classification: bool,
) -> ConceptDrift {
    let mut order: Vec<&Labelled> = rows.iter().filter(|r| r.at_ms > state.last_at_ms).collect();
    order.sort_by_key(|r| r.at_ms);
    let (mut fed, mut sum) = (0u64, 0.0);
    let mut changes = Vec::new();
    for row in order {
        let Some(e) = error(row, classification) else {
            continue;
        };
        let detected = state.detector.update(e);
        if detected {
            changes.push(ConceptChange {
                position: state.fed,
                at: DateTime::<Utc>::from_timestamp_millis(row.at_ms)
                    .unwrap_or_default()
                    .to_rfc3339_opts(SecondsFormat::Millis, true),
            });
        }
        state.fed += 1;
        state.last_at_ms = state.last_at_ms.max(row.at_ms);
        fed += 1;
        sum += e;
    }
    ConceptDrift {
        detector: state.detector.name().to_string(),
        version: state.version.clone(),
        fed,
        fed_total: state.fed,
        mean_error: (fed > 0).then(|| sum / fed as f64),
        changes,
        warning: matches!(&state.detector, Detector::Ddm(d) if d.warning()),
        restarted: None,
    }
}

impl Monitor {
    /// Runs the configured detector over the window's labelled rows and saves its state
    /// (compare-and-swap: a concurrent run's rows are not lost; on a conflict the run
    /// feeds again from the state the other wrote). `None` with the threshold trigger.
    pub(crate) async fn concept_drift(
        &self,
        model: &str,
        version: &str,
        trigger: Trigger,
        rows: &[Labelled],
        classification: bool,
    ) -> Result<Option<ConceptDrift>, StageError> {
        let Some(fresh) = Detector::fresh(trigger) else {
            return Ok(None);
        };
        let detector = fresh.name();
        let key = layout::concept_state(model)?;
        for _attempt in 0..20 {
            let (loaded, etag) = match self.store.get(&key).await {
                Ok(o) => match serde_json::from_slice::<ConceptState>(&o.bytes) {
                    Ok(s) => (Some(s), Some(o.etag)),
                    Err(e) => {
                        warn!(%key, error = %e, "the concept-drift state is corrupt; starting over");
                        (None, Some(o.etag))
                    }
                },
                Err(StoreError::NotFound(_)) => (None, None),
                Err(e) => return Err(e.into()),
            };
            let start = || ConceptState::fresh(fresh.clone(), version);
            let (mut state, restarted) = match loaded {
                Some(s) if s.version == version && s.detector.name() == detector => (s, None),
                Some(s) if s.version != version => (
                    start(),
                    Some(format!(
                        "production changed from {} to {version}: the detector starts over",
                        s.version
                    )),
                ),
                Some(s) => (
                    start(),
                    Some(format!(
                        "the trigger changed from {} to {detector}: the detector starts over",
                        s.detector.name()
                    )),
                ),
                None if etag.is_some() => (
                    start(),
                    Some(format!("{key} did not parse: the detector starts over")),
                ),
                None => (start(), None),
            };
            let mut section = feed(&mut state, rows, classification);
            // Nothing new and nothing restarted: the stored state stands, no write.
            if section.fed == 0 && restarted.is_none() && etag.is_some() {
                return Ok(Some(section));
            }
            section.restarted = restarted;
            let bytes = to_json_bytes(&state);
            let written = match &etag {
                Some(etag) => self.store.put_if_match(&key, bytes, etag).await,
                None => self.store.put_if_absent(&key, bytes).await,
            };
            match written {
                Ok(_) => return Ok(Some(section)),
                Err(StoreError::PreconditionFailed { .. } | StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(StageError::retryable(
            "the concept-drift state kept changing under concurrent monitor runs",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(truth: f64, p1: f64, at_ms: i64) -> Labelled {
        Labelled {
            truth,
            outputs: vec![1.0 - p1, p1],
            at_ms,
        }
    }

    #[test]
    fn rows_fed_once_in_time_order_and_changes_found_across_runs() {
        // 900 rows right 90 % of the time, then 900 rows right 50 % of the time, in two
        // runs whose windows overlap by 100 rows.
        let rows: Vec<Labelled> = (0..1800)
            .map(|i| {
                let wrong = if i < 900 { i % 10 == 0 } else { i % 2 == 0 };
                let truth = (i % 3 == 0) as i64 as f64;
                let p1 = if (truth == 1.0) != wrong { 0.9 } else { 0.1 };
                row(truth, p1, 1_000 + i as i64)
            })
            .collect();
        let mut state = ConceptState::fresh(Detector::Adwin(Adwin::default()), "v1");
        let first = feed(&mut state, &rows[..1000], true);
        assert_eq!(first.fed, 1000);
        let mut reversed: Vec<Labelled> = rows[900..].to_vec();
        reversed.reverse();
        let second = feed(&mut state, &reversed, true);
        assert_eq!(
            second.fed, 800,
            "the 100 rows fed already are not fed again"
        );
        assert_eq!(state.fed, 1800);
        let all: Vec<u64> = first
            .changes
            .iter()
            .chain(&second.changes)
            .map(|c| c.position)
            .collect();
        assert!(!all.is_empty(), "the error rate jumped from 0.1 to 0.5");
        assert!(
            all.iter().all(|p| *p > 900),
            "no change before the jump: {all:?}"
        );
        // The same rows in one run find the same changes at the same positions.
        let mut once = ConceptState::fresh(Detector::Adwin(Adwin::default()), "v1");
        let single = feed(&mut once, &rows, true);
        let positions: Vec<u64> = single.changes.iter().map(|c| c.position).collect();
        assert_eq!(positions, all);
        // 900 rows at 10 % and 100 at 50 %.
        assert!((first.mean_error.unwrap() - 0.14).abs() < 1e-9);
        // DDM on the same stream.
        let mut ddm = ConceptState::fresh(Detector::Ddm(Ddm::default()), "v1");
        let d = feed(&mut ddm, &rows, true);
        assert!(d.changes.iter().any(|c| c.position > 900), "{d:?}");
    }
}
