//! The retrain decision: the bookkeeping in `monitoring/<model>/retrain-state.json`, the
//! rules (overlapping window, cooldown, daily cap) checked inside the compare-and-swap that
//! reserves a retrain, and the message to the ingest queue.

use std::path::Path;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use lambdaml::layout;
use lambdaml::message::{Message, RetrainRequest, StageMessage};
use lambdaml::queue::Queue;
use lambdaml::spec::parse_duration_secs;
use lambdaml::stage::StageError;
use lambdaml::store::{ObjectKey, StoreError, to_json_bytes};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::found::Found;
use crate::interval::Interval;
use crate::report::{RetrainDecision, Verdict};
use crate::{MAX_WINDOW_SECS, Monitor, MonitorRequest, SCHEDULE_SLACK_SECS};

/// What a run found that a retrain decision needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Breach<'a> {
    pub request: &'a MonitorRequest,
    pub found: &'a Found,
    pub verdict: &'a Verdict,
    pub interval: Interval,
    /// The run's report (the retrain message points at it).
    pub report_key: &'a ObjectKey,
    /// The run's folder (`labelled.csv` goes there).
    pub run_prefix: &'a str,
    /// The window's labelled rows, as CSV, and how many.
    pub labelled_path: &'a Path,
    pub labelled_rows: u64,
    /// Why a rollout holds retraining back this run (one in progress, or one that just
    /// put a fresher version in production), if it does.
    pub rollout_hold: Option<&'a str>,
}

/// The retrain bookkeeping: `monitoring/<model>/retrain-state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrainState {
    /// Retrains sent, oldest first (the last 200).
    pub retrains: Vec<RetrainEntry>,
}

/// One retrain sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrainEntry {
    /// Evaluation time of the run that sent it.
    pub at: String,
    /// Its window.
    pub from: String,
    /// Its window's end.
    pub to: String,
    /// Why.
    pub reason: String,
    /// The production version then.
    pub version: String,
    /// The report.
    pub report: String,
    /// True while the run that reserved this entry has not yet confirmed sending the message
    /// (see [`RetrainEntry::in_force`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sending: bool,
    /// Wall-clock time of the reservation (the monitor's `at` may be a replayed clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_at: Option<String>,
}

/// How long a reservation whose run never confirmed the send holds: a monitor invocation's
/// timeout (template.yaml: 900 s). After it the run is taken to have died before sending,
/// and the rules ignore its entry so the retrain is not lost.
const RESERVATION_SECS: i64 = 900;

impl RetrainEntry {
    /// Whether the entry counts for the rules at wall-clock `now`: sent, or reserved by a run
    /// that may still be sending.
    pub fn in_force(&self, now: DateTime<Utc>) -> bool {
        if !self.sending {
            return true;
        }
        self.reserved_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| (now - t.with_timezone(&Utc)).num_seconds() < RESERVATION_SECS)
    }

    fn same(&self, other: &RetrainEntry) -> bool {
        self.at == other.at
            && self.from == other.from
            && self.to == other.to
            && self.reserved_at == other.reserved_at
    }
}

/// Why an edit of the retrain state was refused.
pub(crate) enum StateEdit {
    /// A rule says no.
    Refused(String),
    /// The state cannot be read.
    Failed(StageError),
}

/// The rules a retrain must pass, against every retrain already sent or being sent: no
/// overlapping window, the cooldown since the last one, at most `max_per_day` a day. Each
/// allows [`SCHEDULE_SLACK_SECS`] so a schedule that runs a little early still counts.
struct Rules<'a> {
    interval: Interval,
    /// Wall-clock time (reservations lapse by it).
    now: DateTime<Utc>,
    cooldown: Duration,
    cooldown_text: &'a str,
    max_per_day: u32,
}

impl Rules<'_> {
    /// Why `state` forbids this retrain, if it does.
    fn refusal(&self, state: &RetrainState) -> Option<String> {
        let Interval { from, to, at } = self.interval;
        let slack = Duration::seconds(SCHEDULE_SLACK_SECS);
        let time = |t: &str| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc))
                .ok()
        };
        let retrains = || state.retrains.iter().filter(|e| e.in_force(self.now));
        if let Some(e) = retrains().find(|e| {
            matches!((time(&e.from), time(&e.to)), (Some(f), Some(t)) if f + slack < to && from + slack < t)
        }) {
            return Some(format!(
                "a retrain was already {} for an overlapping window ({} to {}) at {}",
                if e.sending { "being sent (by a concurrent monitor run)" } else { "sent" },
                e.from, e.to, e.at
            ));
        }
        if let Some(last) = retrains()
            .filter_map(|e| time(&e.at))
            .find(|t| (at - *t).abs() + slack < self.cooldown)
        {
            return Some(format!(
                "cooldown: a retrain was sent at {}, within retrain.cooldown = {} of {}",
                last.to_rfc3339_opts(SecondsFormat::Secs, true),
                self.cooldown_text,
                at.to_rfc3339_opts(SecondsFormat::Secs, true)
            ));
        }
        let day = Duration::days(1) - slack;
        let today = retrains()
            .filter_map(|e| time(&e.at))
            .filter(|t| *t <= at && *t > at - day)
            .count();
        (today >= self.max_per_day as usize).then(|| {
            format!(
                "cap: {today} retrains in the 24 hours before {} (retrain.max_per_day = {})",
                at.to_rfc3339_opts(SecondsFormat::Secs, true),
                self.max_per_day
            )
        })
    }
}

impl Monitor {
    /// Whether this run sends a retrain (see the crate docs): not on no breach, not when the
    /// spec or the request says no, and not when an earlier retrain's window overlaps, the
    /// cooldown has not passed or the daily cap is reached — the rules checked inside the
    /// compare-and-swap that reserves the retrain, so of two concurrent runs one sends.
    pub(crate) async fn decide(&self, breach: &Breach<'_>) -> Result<RetrainDecision, StageError> {
        let Breach {
            request,
            found,
            verdict,
            interval,
            report_key,
            labelled_rows,
            ..
        } = *breach;
        let Interval { from, to, at } = interval;
        let model = found.manifest.model.as_str();
        let mode = if found.spec_changed {
            "new_features"
        } else {
            "same_features"
        };
        let decision = |d: &str, detail: String| RetrainDecision {
            decision: d.to_string(),
            detail,
            mode: Some(mode.to_string()),
            labelled: None,
            labelled_rows: 0,
        };
        if !verdict.breach {
            return Ok(RetrainDecision {
                decision: "not_needed".into(),
                detail: "no breach".into(),
                ..RetrainDecision::default()
            });
        }
        let r = &found.spec.retrain;
        if !r.enabled {
            return Ok(decision(
                "disabled",
                "retrain.enabled = false in the spec".into(),
            ));
        }
        if !request.retrain {
            return Ok(decision(
                "dry_run",
                "the request asked for a report only".into(),
            ));
        }
        if let Some(hold) = breach.rollout_hold {
            return Ok(decision("suppressed", hold.to_string()));
        }
        let Some(queue) = &self.ingest else {
            return Ok(decision("dry_run", "no ingest queue configured".into()));
        };
        let state_key = layout::retrain_state(model)?;
        let rules = Rules {
            interval,
            now: Utc::now(),
            cooldown: Duration::seconds(
                parse_duration_secs(&r.cooldown)
                    .unwrap_or(86_400)
                    .min(MAX_WINDOW_SECS) as i64,
            ),
            cooldown_text: &r.cooldown,
            max_per_day: r.max_per_day,
        };
        let reason = verdict.reasons.join("; ");
        let now = rules.now;
        let check = |state: &RetrainState| rules.refusal(state);
        let entry = RetrainEntry {
            at: at.to_rfc3339_opts(SecondsFormat::Millis, true),
            from: from.to_rfc3339_opts(SecondsFormat::Millis, true),
            to: to.to_rfc3339_opts(SecondsFormat::Millis, true),
            reason: reason.clone(),
            version: found.manifest.version.clone(),
            report: report_key.to_string(),
            sending: true,
            reserved_at: Some(now.to_rfc3339_opts(SecondsFormat::Millis, true)),
        };
        // Reserve: the rules are checked inside the compare-and-swap that records the
        // reservation, so of two concurrent runs only one can pass them.
        let reserved = self
            .edit_retrain_state(&state_key, |state| {
                if let Some(why) = check(state) {
                    return Err(why);
                }
                state.retrains.push(entry.clone());
                Ok(())
            })
            .await;
        match reserved {
            Ok(()) => {}
            Err(StateEdit::Refused(why)) => return Ok(decision("suppressed", why)),
            Err(StateEdit::Failed(StageError::Permanent { reason, .. })) => {
                return Ok(decision("suppressed", reason));
            }
            Err(StateEdit::Failed(e)) => return Err(e),
        }
        let labelled = self
            .send_reserved(queue.as_ref(), breach, &entry, &state_key)
            .await?;
        Ok(RetrainDecision {
            decision: "sent".into(),
            detail: reason,
            mode: Some(mode.to_string()),
            labelled: labelled.map(|k| k.to_string()),
            labelled_rows,
        })
    }

    /// Sends the reserved retrain, then confirms the reservation. A run that dies in
    /// between leaves a reservation that lapses after RESERVATION_SECS, so the next run
    /// sends again rather than losing the retrain; a retrain is idempotent (the same window
    /// makes the same dataset version). A failed send gives the reservation back.
    async fn send_reserved(
        &self,
        queue: &dyn Queue,
        breach: &Breach<'_>,
        entry: &RetrainEntry,
        state_key: &ObjectKey,
    ) -> Result<Option<ObjectKey>, StageError> {
        let labelled = match self.send_retrain(queue, breach, &entry.reason).await {
            Ok(labelled) => labelled,
            Err(e) => {
                // If even giving it back fails, the reservation lapses by itself.
                let _ = self
                    .edit_retrain_state(state_key, |state| {
                        state.retrains.retain(|x| !x.same(entry));
                        Ok(())
                    })
                    .await;
                return Err(e);
            }
        };
        let confirmed = self
            .edit_retrain_state(state_key, |state| {
                match state.retrains.iter_mut().find(|x| x.same(entry)) {
                    Some(x) => x.sending = false,
                    None => state.retrains.push(RetrainEntry {
                        sending: false,
                        ..entry.clone()
                    }),
                }
                Ok(())
            })
            .await;
        match confirmed {
            Ok(()) => Ok(labelled),
            Err(StateEdit::Refused(why)) => Err(StageError::retryable(why)),
            Err(StateEdit::Failed(e)) => Err(e),
        }
    }

    /// Uploads the labelled rows and sends the retrain message; returns the labelled key.
    async fn send_retrain(
        &self,
        queue: &dyn Queue,
        breach: &Breach<'_>,
        reason: &str,
    ) -> Result<Option<ObjectKey>, StageError> {
        let found = breach.found;
        let (model, r) = (found.manifest.model.as_str(), &found.spec.retrain);
        let labelled = if breach.labelled_rows > 0 {
            let key = layout::in_folder(breach.run_prefix, "labelled.csv")?;
            self.store.put_file(&key, breach.labelled_path).await?;
            Some(key)
        } else {
            None
        };
        let at = breach.interval.at;
        let message = Message::new(
            format!("retrain-{model}-{}", at.format("%Y%m%dT%H%M%S%.3fZ")),
            Some(model.to_string()),
            StageMessage::Retrain(RetrainRequest {
                model: model.to_string(),
                dataset: found.manifest.dataset.clone(),
                reason: reason.to_string(),
                labelled: labelled.clone(),
                base_dataset_version: found.manifest.dataset_version.clone(),
                data: r.data,
                window_rows: r.window_rows,
                report: Some(breach.report_key.clone()),
            }),
        );
        lambdaml::recorder::send(self.store.as_ref(), queue, &message).await?;
        Ok(labelled)
    }

    /// One compare-and-swap edit of `monitoring/<model>/retrain-state.json` (the last 200
    /// entries kept), retried when another run wrote in between; `edit` sees the current
    /// state on every try and may refuse.
    pub(crate) async fn edit_retrain_state(
        &self,
        state_key: &ObjectKey,
        mut edit: impl FnMut(&mut RetrainState) -> Result<(), String>,
    ) -> Result<(), StateEdit> {
        for _attempt in 0..20 {
            let (mut state, etag) = match self.store.get(state_key).await {
                Ok(o) => match serde_json::from_slice::<RetrainState>(&o.bytes) {
                    Ok(s) => (s, Some(o.etag)),
                    Err(e) => {
                        return Err(StateEdit::Failed(StageError::permanent(format!(
                            "{state_key} is corrupt ({e}); fix or delete it — until then no retrain is sent"
                        ))));
                    }
                },
                Err(StoreError::NotFound(_)) => (RetrainState::default(), None),
                Err(e) => return Err(StateEdit::Failed(e.into())),
            };
            edit(&mut state).map_err(StateEdit::Refused)?;
            let excess = state.retrains.len().saturating_sub(200);
            state.retrains.drain(..excess);
            let bytes = to_json_bytes(&state);
            let written = match &etag {
                Some(etag) => self.store.put_if_match(state_key, bytes, etag).await,
                None => self.store.put_if_absent(state_key, bytes).await,
            };
            match written {
                Ok(_) => return Ok(()),
                // Another monitor run wrote in between: read again and edit again.
                Err(StoreError::PreconditionFailed { .. } | StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(StateEdit::Failed(e.into())),
            }
        }
        warn!(%state_key, "retrain state kept changing under concurrent monitor runs");
        Err(StateEdit::Failed(StageError::retryable(
            "retrain state kept changing under concurrent monitor runs",
        )))
    }
}
