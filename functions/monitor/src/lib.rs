//! The monitor function: how is the production model doing, and does it need retraining?
//!
//! For one model and a window of time, the monitor streams the window's capture records
//! (memory bounded by a row sample, never by the window), joins the feedback labels by
//! request id and row, and compares it all with the production version's baseline
//! (`models/<model>/<version>/baseline.json`): data drift per feature and for the dataset,
//! prediction drift, data quality, live predictive performance and processing performance.
//! It writes `monitoring/<model>/<run>/report.json` (schema in [`report`]) and a
//! self-contained `report.html`, returns CloudWatch EMF lines for the drift scores and
//! verdicts, and on a breach (dataset drift, a performance drop, or a changed spec) sends
//! the ingest queue a retrain message — unless the spec's cooldown, the daily cap or an
//! earlier retrain for an overlapping window says no, which the report states.
//!
//! Invoked directly with `{"model", "window"?, "from"?, "to"?, "at"?, "retrain"?}`, or by a
//! schedule (every model in the registry, the window since the previous run's length).

pub mod analysis;
mod concept;
mod estimation;
mod found;
pub mod html;
mod interval;
mod late;
pub mod parts;
mod retrain;
mod rollout;
mod scan;
mod verdict;
pub mod window;

pub use concept::{ConceptState, Detector};
pub use interval::{Interval, schedule_period};
/// The report's types live in `shared` ([`lambdaml::monitoring`]) so readers of reports
/// (the CLI, dashboards) need not link the monitor.
pub use lambdaml::monitoring as report;
pub use retrain::{RetrainEntry, RetrainState};

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use lambdaml::events::Announcer;
use lambdaml::layout;
use lambdaml::pipeline::Wired;
use lambdaml::queue::Queue;
use lambdaml::registry::RegistryStore;
use lambdaml::stage::StageError;
use lambdaml::store::{ObjectKey, ObjectStore, ObjectStoreExt, to_json_bytes};
use serde::{Deserialize, Serialize};
use tracing::{info, instrument, warn};

use crate::report::{Report, Window};
use crate::retrain::Breach;
use crate::scan::Scanned;

/// Rows kept for the drift tests per window (all rows of smaller windows).
pub const DEFAULT_SAMPLE_ROWS: usize = 1_000_000;
/// Values kept for the drift tests across all numeric features (160 MB): a model with many
/// features keeps fewer rows.
pub const DEFAULT_SAMPLE_VALUES: usize = 20_000_000;
/// The longest window a request may ask for: ten years.
pub const MAX_WINDOW_SECS: u64 = 3650 * 86_400;
/// Scheduled runs start a little early or late; cooldowns, daily caps and window overlaps
/// allow this much so a daily schedule with a 24 h cooldown retrains daily, not every other
/// day.
pub const SCHEDULE_SLACK_SECS: i64 = 15 * 60;

/// A monitoring request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorRequest {
    /// The model.
    pub model: String,
    /// The window's length before `at` (`"24h"`, `"7d"`); default: the spec's schedule rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Explicit window start (RFC 3339); with `to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Explicit window end (RFC 3339), exclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The evaluation time (default: now, or `to`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Whether a breach may send a retrain message (false: report only).
    #[serde(default = "yes")]
    pub retrain: bool,
}

fn yes() -> bool {
    true
}

impl MonitorRequest {
    /// A request for `model` over the default window ending now.
    pub fn new(model: impl Into<String>) -> Self {
        MonitorRequest {
            model: model.into(),
            window: None,
            from: None,
            to: None,
            at: None,
            retrain: true,
        }
    }
}

/// Limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MonitorConfig {
    /// Rows kept for the drift tests.
    pub sample_rows: usize,
    /// Values kept across all numeric features (fewer rows for wide models).
    pub sample_values: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            sample_rows: DEFAULT_SAMPLE_ROWS,
            sample_values: DEFAULT_SAMPLE_VALUES,
        }
    }
}

/// What [`Monitor::start`] did.
#[derive(Debug)]
pub enum Started {
    /// The report was written.
    Done(Box<MonitorOutcome>),
    /// The window was planned in parts: the last part writes the report.
    Planned(parts::PlannedRun),
}

/// What one run produced.
#[derive(Debug, Clone)]
pub struct MonitorOutcome {
    /// The report.
    pub report: Report,
    /// Its JSON key.
    pub report_key: String,
    /// Its HTML key.
    pub html_key: String,
    /// CloudWatch EMF lines (one per run, one per feature).
    pub emf: Vec<String>,
}

/// The monitor handler. It needs the store and, to retrain, the ingest queue; to aggregate
/// a large window in parts, its own queue.
#[derive(Clone)]
pub struct Monitor {
    store: Arc<dyn ObjectStore>,
    ingest: Option<Arc<dyn Queue>>,
    config: MonitorConfig,
    announcer: Announcer,
    /// The monitor queue its parts go to, and the capture bytes a part holds at most.
    parts: Option<(Arc<dyn Queue>, u64)>,
    /// Whether a merged run prints its EMF lines to stdout (in Lambda).
    emf_stdout: bool,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("store", &self.store.url())
            .field("ingest", &self.ingest.as_ref().map(|q| q.name()))
            .finish()
    }
}

impl Monitor {
    /// A handler over `store`; retrain messages go to `ingest` when given.
    pub fn new(store: Arc<dyn ObjectStore>, ingest: Option<Arc<dyn Queue>>) -> Self {
        Monitor {
            store,
            ingest,
            config: MonitorConfig::default(),
            announcer: Announcer::default(),
            parts: None,
            emf_stdout: false,
        }
    }

    /// The same handler printing the EMF lines of runs merged from parts to stdout, where
    /// Lambda turns them into CloudWatch metrics (a direct run returns them instead).
    pub fn with_emf_stdout(mut self) -> Self {
        self.emf_stdout = true;
        self
    }

    /// The handler over its function's wiring: retrains go to the queue the pipeline table
    /// names ([`lambdaml::pipeline`]); rollout decisions are announced as registry events;
    /// a window over [`parts::PARTITION_MIB_VAR`] of captures (default 256 MiB) is
    /// aggregated in parts through its own queue.
    pub fn from_wiring(wired: &Wired) -> Self {
        let mut monitor = Self::new(wired.store.clone(), wired.next_queue());
        monitor.announcer = wired.announcer();
        let setting = std::env::var(parts::PARTITION_MIB_VAR).ok();
        let bytes = parts::part_bytes(setting.as_deref()).unwrap_or_else(|e| {
            warn!(error = %e, "ignoring {}", parts::PARTITION_MIB_VAR);
            parts::part_bytes(None).unwrap_or(0)
        });
        monitor.with_parts(wired.own_queue(), bytes)
    }

    /// The same handler aggregating windows over `bytes` of captures in parts sent to
    /// `queue` (`None` or 0: always in one invocation).
    pub fn with_parts(mut self, queue: Option<Arc<dyn Queue>>, bytes: u64) -> Self {
        self.parts = queue.filter(|_| bytes > 0).map(|q| (q, bytes));
        self
    }

    /// The same handler with other limits.
    pub fn with_config(mut self, config: MonitorConfig) -> Self {
        self.config = config;
        self
    }

    /// Runs the monitor in this invocation, whatever the window's size. See the crate docs.
    #[instrument(skip(self), fields(model = %request.model))]
    pub async fn run(&self, request: &MonitorRequest) -> Result<MonitorOutcome, StageError> {
        match self.start_with(request, false).await? {
            Started::Done(outcome) => Ok(*outcome),
            Started::Planned(p) => Err(StageError::permanent(format!(
                "the window of {} was planned in {} parts",
                p.model, p.parts
            ))),
        }
    }

    /// Runs the monitor, or, when the window's captures are over the part size and span
    /// more than one part, plans it in parts ([`parts`]): the last part to finish writes
    /// the report.
    #[instrument(skip(self), fields(model = %request.model))]
    pub async fn start(&self, request: &MonitorRequest) -> Result<Started, StageError> {
        self.start_with(request, true).await
    }

    async fn start_with(
        &self,
        request: &MonitorRequest,
        fan_out: bool,
    ) -> Result<Started, StageError> {
        let model = request.model.as_str();
        if !lambdaml::spec::is_valid_name(model) {
            return Err(StageError::permanent(format!(
                "invalid model name {model:?}"
            )));
        }
        let mut timings = Timings::start();
        let found = self.find(model).await?;
        timings.lap("baseline");
        let generated = Utc::now();
        let interval = Interval::resolve(request, &found.spec.monitor.schedule, generated)?;
        if fan_out && let Some(planned) = self.plan(request, &found, &interval, generated).await? {
            return Ok(Started::Planned(planned));
        }
        let labels = self.read_labels(model, &interval).await?;
        timings.lap("feedback");
        let scanned = self.scan(&found, &interval, labels).await?;
        timings.lap("captures");
        let outcome = self
            .conclude(request, &found, interval, generated, scanned, timings)
            .await?;
        Ok(Started::Done(Box::new(outcome)))
    }

    /// The report of a scanned window: the analysis, the verdict, the rollout, late labels,
    /// the retrain decision, written once.
    async fn conclude(
        &self,
        request: &MonitorRequest,
        found: &found::Found,
        interval: Interval,
        generated: chrono::DateTime<Utc>,
        scanned: Scanned,
        mut timings: Timings,
    ) -> Result<MonitorOutcome, StageError> {
        let model = request.model.as_str();
        let Scanned {
            mut acc,
            captures,
            feedback,
            classes,
            labelled_csv,
            mut labelled_rows,
            rollout,
            unmatched,
            ..
        } = scanned;
        let analysis::Sections {
            labelled,
            data_drift,
            prediction_drift,
            data_quality,
            processing,
            performance,
            multivariate_drift,
        } = analysis::sections(found, &mut acc, classes.as_deref(), &interval);
        timings.lap("analysis");
        let concept_drift = self
            .concept_drift(
                model,
                &found.manifest.version,
                found.spec.monitor.trigger,
                &labelled,
                classes.is_some(),
            )
            .await?;
        let mut notes = verdict::notes(&interval, &captures, &feedback, &data_drift);
        notes.extend(trigger_note(found, &performance, concept_drift.is_some()));
        let verdict = verdict::verdict(
            found,
            &data_drift,
            &performance,
            (concept_drift.as_ref(), multivariate_drift.as_ref()),
        );
        let (rollout, rollout_hold) = self
            .rollout(
                found,
                rollout,
                classes.as_deref(),
                request.retrain,
                &mut notes,
            )
            .await?;

        let (run_prefix, report_key, html_key) = run_keys(model, &interval, generated)?;
        let late = self
            .late_labels(
                found,
                &interval,
                unmatched,
                labelled_csv.path(),
                &report_key,
            )
            .await?;
        labelled_rows += late.rows;
        notes.extend(late.note());
        let Interval { from, to, at } = interval;
        let retrain = self
            .decide(&Breach {
                request,
                found,
                verdict: &verdict,
                interval,
                report_key: &report_key,
                run_prefix: &run_prefix,
                labelled_path: labelled_csv.path(),
                labelled_rows,
                rollout_hold: rollout_hold.as_deref(),
            })
            .await?;

        let report = Report {
            schema_version: report::SCHEMA_VERSION,
            model: model.to_string(),
            version: found.manifest.version.clone(),
            generated_at: generated.to_rfc3339_opts(SecondsFormat::Secs, true),
            at: at.to_rfc3339_opts(SecondsFormat::Millis, true),
            window: Window {
                from: from.to_rfc3339_opts(SecondsFormat::Millis, true),
                to: to.to_rfc3339_opts(SecondsFormat::Millis, true),
            },
            captures,
            feedback,
            data_drift,
            prediction_drift,
            data_quality,
            performance,
            processing,
            verdict,
            retrain,
            concept_drift,
            late_labels: late.windows,
            multivariate_drift,
            rollout,
            notes,
            timings_ms: timings.into_map(),
        };
        self.publish(report, &report_key, &html_key, at.timestamp_millis())
            .await
    }

    /// Writes the report (JSON, then HTML) once, and its EMF lines.
    async fn publish(
        &self,
        report: Report,
        report_key: &ObjectKey,
        html_key: &ObjectKey,
        at_ms: i64,
    ) -> Result<MonitorOutcome, StageError> {
        self.store
            .put_if_absent(report_key, to_json_bytes(&report))
            .await?;
        let html = Bytes::from(html::render(&report));
        self.store.put_if_absent(html_key, html).await?;
        let emf = emf_lines(&report, at_ms);
        info!(model = %report.model, version = %report.version, breach = report.verdict.breach, retrain = %report.retrain.decision, report = %report_key, "monitored");
        Ok(MonitorOutcome {
            report,
            report_key: report_key.to_string(),
            html_key: html_key.to_string(),
            emf,
        })
    }

    /// The rollout section of a model with a shadow or canary (decided and applied), and
    /// why a breach may not retrain while it runs.
    async fn rollout(
        &self,
        found: &found::Found,
        rollout: Option<rollout::RolloutAcc>,
        classes: Option<&[String]>,
        retrain: bool,
        notes: &mut Vec<String>,
    ) -> Result<(Option<report::RolloutReport>, Option<String>), StageError> {
        let rollout = match rollout {
            Some(acc) => {
                let (role, candidate) = (acc.role(), acc.candidate().to_string());
                let mut section =
                    acc.finish(&found.spec.rollout, found.spec.rollout_metric(), classes);
                self.apply_rollout(found, role, &candidate, &mut section, retrain)
                    .await?;
                if section.skipped_requests > 0 {
                    notes.push(format!(
                        "{} requests were scored by production only: they lack features the shadow takes",
                        section.skipped_requests
                    ));
                }
                Some(section)
            }
            None => None,
        };
        let rollout_hold = rollout.as_ref().and_then(|r| match r.decision.as_str() {
            "end" if r.applied => None,
            "promote" if r.applied => Some(format!(
                "the {} {} was promoted by this run: it is the fresher version",
                r.role, r.candidate.version
            )),
            _ => Some(format!(
                "a rollout is in progress ({} {}): it is decided before another version is trained",
                r.role, r.candidate.version
            )),
        });
        Ok((rollout, rollout_hold))
    }

    /// Applies a rollout decision (`promote`, `step`, `end`) as one compare-and-swap, unless
    /// the run is report-only or the registry's rollout changed since the run began; then
    /// announces it.
    async fn apply_rollout(
        &self,
        found: &found::Found,
        role: lambdaml::registry::Role,
        candidate: &str,
        section: &mut report::RolloutReport,
        allowed: bool,
    ) -> Result<(), StageError> {
        if section.decision == "wait" {
            return Ok(());
        }
        if !allowed {
            section
                .detail
                .push_str(" (not applied: the request asked for a report only)");
            return Ok(());
        }
        let model = found.manifest.model.as_str();
        let before = found.registry.slot(role).cloned();
        let production = found.registry.production.clone();
        let (decision, detail, next) = (
            section.decision.clone(),
            section.detail.clone(),
            section.next_weight,
        );
        let mut start = 0;
        let (after, applied) = RegistryStore::new(self.store.clone())
            .update(model, |r| {
                start = r.history.len();
                // Decided on what the run saw: a person may have changed it meanwhile.
                if r.slot(role) != before.as_ref() || r.production != production {
                    return Ok(false);
                }
                match (decision.as_str(), next) {
                    ("promote", _) => r.promote(candidate, "monitor", &detail)?,
                    ("step", Some(w)) => r.step_canary(w, "monitor", &detail)?,
                    _ => {
                        r.retire(role, "monitor", &detail)?;
                    }
                }
                Ok(true)
            })
            .await
            .map_err(StageError::from)?;
        section.applied = applied;
        if applied {
            self.announcer.announce_since(&after, start).await?;
            info!(%model, %candidate, %role, decision = %section.decision, "rollout decided");
        } else {
            section
                .detail
                .push_str(" (not applied: the registry's rollout changed during the run)");
        }
        Ok(())
    }

    /// The newest report of `model`: (key, report).
    pub async fn latest_report(&self, model: &str) -> Result<Option<(String, Report)>, StageError> {
        let mut keys: Vec<String> = self
            .store
            .list_all(&layout::monitoring(model))
            .await?
            .into_iter()
            .map(|m| m.key.to_string())
            .filter(|k| layout::is_report_json(k))
            .collect();
        keys.sort();
        match keys.pop() {
            Some(k) => {
                let report: Report = self.store.get_json(&ObjectKey::new(k.as_str())?).await?;
                Ok(Some((k, report)))
            }
            None => Ok(None),
        }
    }
}

/// How long each phase of a run took, in milliseconds (the report's `timings_ms`).
struct Timings {
    mark: std::time::Instant,
    phases: BTreeMap<String, f64>,
}

impl Timings {
    fn start() -> Self {
        Timings {
            mark: std::time::Instant::now(),
            phases: BTreeMap::new(),
        }
    }

    /// Records the time since the previous lap as `phase`.
    fn lap(&mut self, phase: &str) {
        let now = std::time::Instant::now();
        self.phases.insert(
            phase.to_string(),
            now.duration_since(self.mark).as_secs_f64() * 1e3,
        );
        self.mark = now;
    }

    fn into_map(self) -> BTreeMap<String, f64> {
        self.phases
    }
}

/// What one monitor invocation did: its JSON answer and the EMF lines to print (Lambda
/// turns stdout EMF into CloudWatch metrics).
#[derive(Debug, Clone)]
pub struct Invocation {
    /// `{"runs": [...], "failed": [...]}`.
    pub response: serde_json::Value,
    /// EMF lines of every run.
    pub emf: Vec<String>,
}

impl Monitor {
    /// Answers a Lambda event: a direct request naming a model (`{"model": …, "window": …}`)
    /// monitors that model (or plans its window in parts); a part of a planned window
    /// (`{"model_name", "run", "part"}`) is aggregated; an EventBridge scheduled event (or
    /// `{}`) monitors every model in the registry, one model's failure (no baseline yet,
    /// say) not stopping the others. Anything else is refused with what was expected.
    pub async fn handle_event(&self, event: serde_json::Value) -> Result<Invocation, StageError> {
        let scheduled = event.get("detail-type").and_then(serde_json::Value::as_str)
            == Some("Scheduled Event")
            || event.as_object().is_some_and(|o| o.is_empty());
        if event.get("run").is_some() && event.get("part").is_some() {
            // A part of a planned window, invoked directly (`{"model_name", "run", "part"}`):
            // what its queued message would do.
            let part: lambdaml::message::MonitorPartRequest = serde_json::from_value(event)
                .map_err(|e| StageError::permanent(format!("invalid monitor part: {e}")))?;
            let outcome = self.handle_part(&part).await?;
            let emf = match &outcome {
                parts::PartOutcome::Reported { emf, .. } => emf.clone(),
                _ => Vec::new(),
            };
            return Ok(Invocation {
                response: serde_json::to_value(&outcome).map_err(StageError::invalid)?,
                emf,
            });
        }
        let requests: Vec<MonitorRequest> = if event.get("model").is_some() {
            vec![
                serde_json::from_value(event)
                    .map_err(|e| StageError::permanent(format!("invalid monitor request: {e}")))?,
            ]
        } else if scheduled {
            RegistryStore::new(self.store.clone())
                .models()
                .await
                .map_err(|e| StageError::context("listing the registry", e))?
                .into_iter()
                .map(MonitorRequest::new)
                .collect()
        } else if event.get("Records").is_some() {
            return Err(StageError::permanent(
                "the monitor takes SQS events only from its own queue (the parts of a planned window, see `handle_lambda_event`) and no S3 events: invoke it with {\"model\": NAME} or on an EventBridge schedule",
            ));
        } else {
            return Err(StageError::permanent(format!(
                "expected {{\"model\": NAME, ...}} or an EventBridge scheduled event, got {}",
                truncate(&event.to_string(), 200)
            )));
        };
        let mut runs = Vec::new();
        let mut failed = Vec::new();
        let mut emf = Vec::new();
        let mut only_error = None;
        for request in &requests {
            match self.start(request).await {
                Ok(Started::Planned(p)) => runs.push(serde_json::json!({
                    "model": p.model,
                    "planned": p.run,
                    "parts": p.parts,
                    "bytes": p.bytes,
                    "report": p.report,
                })),
                Ok(Started::Done(outcome)) => {
                    emf.extend(outcome.emf);
                    runs.push(serde_json::json!({
                        "model": outcome.report.model,
                        "report": outcome.report_key,
                        "html": outcome.html_key,
                        "breach": outcome.report.verdict.breach,
                        "reasons": outcome.report.verdict.reasons,
                        "retrain": outcome.report.retrain.decision,
                        "rollout": outcome.report.rollout.as_ref().map(|r| serde_json::json!({
                            "role": r.role,
                            "candidate": r.candidate.version,
                            "decision": r.decision,
                            "applied": r.applied,
                            "detail": r.detail,
                        })),
                    }));
                }
                Err(e) => {
                    warn!(model = %request.model, error = %e, "monitor run failed");
                    failed.push(serde_json::json!({"model": request.model, "error": e.reason()}));
                    only_error = Some(e);
                }
            }
        }
        if requests.len() == 1
            && let Some(e) = only_error
        {
            return Err(e);
        }
        Ok(Invocation {
            response: serde_json::json!({"runs": runs, "failed": failed}),
            emf,
        })
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// With a concept-drift trigger, a performance drop is reported, not a breach: the note
/// that says so.
fn trigger_note(
    found: &found::Found,
    performance: &report::Performance,
    concept: bool,
) -> Option<String> {
    (concept && performance.breach).then(|| {
        format!(
            "the window's {} dropped beyond performance_drop, which is reported, not a breach: [monitor] trigger = {:?} decides",
            performance.metric, found.spec.monitor.trigger
        )
        .to_lowercase()
    })
}

/// A monitor run's folder (`monitoring/<model>/<at>-<salt>`) and its report's two keys.
fn run_keys(
    model: &str,
    interval: &Interval,
    generated: chrono::DateTime<Utc>,
) -> Result<(String, ObjectKey, ObjectKey), StageError> {
    let Interval { from, to, at } = interval;
    let stamp = at.format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let salt = lambdaml::sha256_hex(
        format!("{from}{to}{}", generated.timestamp_nanos_opt().unwrap_or(0)).as_bytes(),
    );
    let run_prefix = layout::monitor_run(model, &stamp, &salt[..6]);
    let report_key = layout::report_json(&run_prefix)?;
    let html_key = layout::report_html(&run_prefix)?;
    Ok((run_prefix, report_key, html_key))
}

/// CloudWatch EMF lines: one with the run's verdicts, one per feature with its drift score.
pub fn emf_lines(report: &Report, timestamp_ms: i64) -> Vec<String> {
    let service = lambdaml::telemetry::service();
    let mut lines = Vec::new();
    let run = serde_json::json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": "lambdaml",
                "Dimensions": [["service", "model"]],
                "Metrics": [
                    {"Name": "DriftShare", "Unit": "None"},
                    {"Name": "DriftedFeatures", "Unit": "Count"},
                    {"Name": "DatasetDrift", "Unit": "Count"},
                    {"Name": "PredictionDrift", "Unit": "Count"},
                    {"Name": "PerformanceDrop", "Unit": "None"},
                    {"Name": "Breach", "Unit": "Count"},
                    {"Name": "RetrainSent", "Unit": "Count"},
                    {"Name": "ValidationErrorRate", "Unit": "None"}
                ]
            }]
        },
        "service": service,
        "model": report.model,
        "version": report.version,
        "DriftShare": report.data_drift.drift_share,
        "DriftedFeatures": report.data_drift.drifted,
        "DatasetDrift": u8::from(report.data_drift.dataset_drift),
        "PredictionDrift": u8::from(report.prediction_drift.drifted),
        "PerformanceDrop": report.performance.drop.unwrap_or(0.0),
        "Breach": u8::from(report.verdict.breach),
        "RetrainSent": u8::from(report.retrain.decision == "sent"),
        "ValidationErrorRate": report.data_quality.validation_error_rate,
    });
    lines.push(run.to_string());
    for f in &report.data_drift.features {
        let Some(score) = f.score else { continue };
        lines.push(
            serde_json::json!({
                "_aws": {
                    "Timestamp": timestamp_ms,
                    "CloudWatchMetrics": [{
                        "Namespace": "lambdaml",
                        "Dimensions": [["service", "model", "feature"]],
                        "Metrics": [{"Name": "DriftScore", "Unit": "None"}, {"Name": "Drifted", "Unit": "Count"}]
                    }]
                },
                "service": service,
                "model": report.model,
                "feature": f.name,
                "method": f.method,
                "DriftScore": score,
                "Drifted": u8::from(f.drifted),
            })
            .to_string(),
        );
    }
    lines
}
