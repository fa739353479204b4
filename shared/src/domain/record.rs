//! Run records: one document per pipeline run (`runs/<run>/record.json`) that says what each
//! stage did, kept up to date by compare-and-swap as stages start and end.
//!
//! A pipeline run starts with a trigger — a raw file arriving (S3), a retrain the monitor
//! asked for, a command (`lambdaml train`, `lambdaml ingest`), a direct invocation — and its
//! run id travels unchanged in every message it causes (the envelope's `run_id`). Each stage
//! of the run is a [`StepRecord`], keyed by stage and model (one raw file feeds every spec of
//! its dataset): queued when a message for it is sent, running while a handler has it, then
//! succeeded, skipped-cached (its output existed: the run that made it is named), retrying
//! (its queue delivers it again), failed (a command or direct invocation: nothing retries
//! it) or dead-lettered (with the reason).
//!
//! Pipeline run ids have a prefix that says where they came from (`s3-`, `retrain-`,
//! `manual-`, `direct-`), so they never collide with the content-hashed preprocess runs that
//! share `runs/` (`<model>-<hash>`).

use serde::{Deserialize, Serialize};

use crate::message::{Stage, StageMessage};

/// The record schema this build writes; a record of a newer schema is shown as such.
pub const RECORD_SCHEMA: u32 = 1;

/// Where a run came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// A raw object arrived (an S3 notification).
    S3Object,
    /// The monitor asked for a retrain.
    Retrain,
    /// A command (`lambdaml train`, `lambdaml ingest`).
    Manual,
    /// A direct invocation of a function.
    Direct,
    /// Something older that did not say.
    Unknown,
}

impl TriggerKind {
    /// The run id prefix of runs of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            TriggerKind::S3Object => "s3",
            TriggerKind::Retrain => "retrain",
            TriggerKind::Manual => "manual",
            TriggerKind::Direct => "direct",
            TriggerKind::Unknown => "run",
        }
    }

    /// The kind a run id's prefix names.
    pub fn of_run(run: &str) -> TriggerKind {
        let prefix = run.split('-').next().unwrap_or_default();
        [
            TriggerKind::S3Object,
            TriggerKind::Retrain,
            TriggerKind::Manual,
            TriggerKind::Direct,
        ]
        .into_iter()
        .find(|k| k.prefix() == prefix)
        .unwrap_or(TriggerKind::Unknown)
    }
}

/// A fresh run id of `kind`: `<prefix>-<UTC time>-<8 hex>`.
pub fn new_run_id(kind: TriggerKind) -> String {
    let salt = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{}-{}-{}",
        kind.prefix(),
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        &salt[..8]
    )
}

/// The run id of `kind` that `seed` always gives (an S3 notification redelivered is the
/// same run).
pub fn stable_run_id(kind: TriggerKind, seed: &str) -> String {
    format!(
        "{}-{}",
        kind.prefix(),
        &crate::sha256_hex(seed.as_bytes())[..16]
    )
}

/// Whether `run` is a pipeline run id (not a preprocess run's folder) that a key may hold.
pub fn is_pipeline_run(run: &str) -> bool {
    TriggerKind::of_run(run) != TriggerKind::Unknown
        && !run.is_empty()
        && run.len() <= 128
        && run
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// What started a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// Where it came from.
    pub kind: TriggerKind,
    /// The raw object, the retrain's reason, or the command, in words.
    pub detail: String,
    /// The monitoring report that asked for a retrain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// The message that started it, as sent.
    pub message: serde_json::Value,
}

impl Trigger {
    /// The trigger of run `run`, started by `message` (its JSON) for `body`.
    pub fn of(run: &str, body: &StageMessage, message: serde_json::Value) -> Trigger {
        let kind = TriggerKind::of_run(run);
        let (detail, report) = match body {
            StageMessage::Retrain(r) => {
                (r.reason.clone(), r.report.as_ref().map(|k| k.to_string()))
            }
            StageMessage::Ingest(r) => (r.key.to_string(), None),
            StageMessage::IngestPartition(r) => (
                format!(
                    "ingest {} version {} partition {} (round {})",
                    r.dataset, r.dataset_version, r.partition, r.round
                ),
                None,
            ),
            StageMessage::Preprocess(r) => (
                format!(
                    "preprocess {} version {} with {}",
                    r.dataset, r.dataset_version, r.spec
                ),
                None,
            ),
            StageMessage::Train(r) => (format!("train {}", r.run_manifest), None),
            StageMessage::Evaluate(r) => (format!("evaluate {} {}", r.model, r.version), None),
            StageMessage::Deploy(r) => (format!("deploy {} {}", r.model, r.version), None),
            StageMessage::BatchJob(r) => (format!("batch job {} of {}", r.job, r.model), None),
            StageMessage::BatchPartition(r) => (
                format!("batch job {} partition {}", r.job, r.partition),
                None,
            ),
            StageMessage::BatchObject(r) => (r.key.to_string(), None),
            StageMessage::MonitorPart(r) => (
                format!("monitor {} run {} part {}", r.model, r.run, r.part),
                None,
            ),
        };
        Trigger {
            kind: if matches!(body, StageMessage::Retrain(_)) {
                TriggerKind::Retrain
            } else {
                kind
            },
            detail,
            report,
            message,
        }
    }
}

/// A step's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    /// A message for it waits in its queue.
    Queued,
    /// A handler has it.
    Running,
    /// Done.
    Succeeded,
    /// Its output existed; nothing was computed.
    SkippedCached,
    /// Failed; its queue will deliver it again.
    Retrying,
    /// Failed, and nothing will retry it (a command or a direct invocation failed).
    Failed,
    /// Failed for good; the message is in the dead-letter queue.
    DeadLettered,
}

impl StepStatus {
    /// Its name, as the record spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Queued => "queued",
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::SkippedCached => "skipped-cached",
            StepStatus::Retrying => "retrying",
            StepStatus::Failed => "failed",
            StepStatus::DeadLettered => "dead-lettered",
        }
    }

    /// Whether the step is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded
                | StepStatus::SkippedCached
                | StepStatus::Failed
                | StepStatus::DeadLettered
        )
    }
}

impl std::fmt::Display for StepStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stage of a run, for one model (none for a file's ingest, which serves them all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The stage.
    pub stage: Stage,
    /// The model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Where it stands.
    pub status: StepStatus,
    /// When its (latest) message was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<String>,
    /// When a handler first took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Seconds spent in handlers, all attempts together.
    #[serde(default)]
    pub seconds: f64,
    /// Handler invocations (a retry or a resumed checkpoint is one more).
    #[serde(default)]
    pub attempts: u32,
    /// The queue message ids it was delivered as.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub message_ids: Vec<String>,
    /// The Lambda request ids that handled it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_ids: Vec<String>,
    /// What it read: keys and versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    /// What it wrote (or found): keys and versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// For a cached step: the run that made what it found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_run: Option<String>,
    /// Why it failed or was dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The handler's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<serde_json::Value>,
}

impl StepRecord {
    fn new(stage: Stage, model: Option<String>) -> Self {
        StepRecord {
            stage,
            model,
            status: StepStatus::Queued,
            queued_at: None,
            started_at: None,
            ended_at: None,
            seconds: 0.0,
            attempts: 0,
            message_ids: Vec::new(),
            request_ids: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            reused_run: None,
            reason: None,
            summary: None,
        }
    }
}

/// A run's overall status, derived from its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// A step is queued, running or waiting for a retry.
    Running,
    /// Every step succeeded (or was cached).
    Succeeded,
    /// A step was dead-lettered or failed for good.
    Failed,
}

impl RunStatus {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `runs/<run>/record.json`. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The record schema ([`RECORD_SCHEMA`]).
    pub schema: u32,
    /// The run id.
    pub run: String,
    /// What started it.
    pub trigger: Trigger,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, the latest change.
    pub updated_at: String,
    /// Its steps, in the order they were first seen.
    pub steps: Vec<StepRecord>,
}

impl RunRecord {
    /// A new record of `run`.
    pub fn new(run: &str, trigger: Trigger, at: &str) -> Self {
        RunRecord {
            schema: RECORD_SCHEMA,
            run: run.to_string(),
            trigger,
            created_at: at.to_string(),
            updated_at: at.to_string(),
            steps: Vec::new(),
        }
    }

    /// The step of `stage` for `model`, added when missing.
    pub fn step_mut(&mut self, stage: Stage, model: Option<&str>) -> &mut StepRecord {
        let found = self
            .steps
            .iter()
            .position(|s| s.stage == stage && s.model.as_deref() == model);
        let i = match found {
            Some(i) => i,
            None => {
                self.steps
                    .push(StepRecord::new(stage, model.map(str::to_string)));
                self.steps.len() - 1
            }
        };
        &mut self.steps[i]
    }

    /// Failed when a step was dead-lettered or failed for good, running while a step is
    /// not over, else succeeded.
    pub fn status(&self) -> RunStatus {
        if self
            .steps
            .iter()
            .any(|s| matches!(s.status, StepStatus::DeadLettered | StepStatus::Failed))
        {
            RunStatus::Failed
        } else if self.steps.iter().all(|s| s.status.is_final()) {
            RunStatus::Succeeded
        } else {
            RunStatus::Running
        }
    }

    /// The models its steps were for.
    pub fn models(&self) -> Vec<String> {
        let mut models: Vec<String> = self.steps.iter().filter_map(|s| s.model.clone()).collect();
        models.sort();
        models.dedup();
        models
    }

    /// Seconds from its creation to its latest change.
    pub fn seconds(&self) -> f64 {
        let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
        match (parse(&self.created_at), parse(&self.updated_at)) {
            (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1000.0,
            _ => 0.0,
        }
    }
}

/// What a message's stage reads, in words a person can follow to the store.
pub fn inputs_of(body: &StageMessage) -> Vec<String> {
    match body {
        StageMessage::Ingest(r) => vec![r.key.to_string()],
        StageMessage::IngestPartition(r) => {
            vec![crate::layout::ingest_parts(&r.dataset, &r.dataset_version)]
        }
        StageMessage::Retrain(r) => {
            let mut v = vec![format!(
                "dataset {} version {} ({:?}, {} rows)",
                r.dataset, r.base_dataset_version, r.data, r.window_rows
            )];
            v.extend(r.labelled.as_ref().map(|k| k.to_string()));
            v.extend(r.report.as_ref().map(|k| k.to_string()));
            v
        }
        StageMessage::Preprocess(r) => vec![
            crate::layout::dataset_version(&r.dataset, &r.dataset_version),
            r.spec.to_string(),
        ],
        StageMessage::Train(r) => {
            let mut v = vec![r.run_manifest.to_string()];
            v.extend(r.spec.as_ref().map(|k| k.to_string()));
            v.extend(r.checkpoint.as_ref().map(|k| k.to_string()));
            v
        }
        StageMessage::Evaluate(r) => vec![crate::layout::model_version(&r.model, &r.version)],
        StageMessage::Deploy(r) => vec![crate::layout::model_version(&r.model, &r.version)],
        StageMessage::BatchJob(r) => vec![crate::layout::batch_input(&r.model, &r.job)],
        StageMessage::BatchPartition(r) => vec![crate::layout::batch_job(&r.model, &r.job)],
        StageMessage::BatchObject(r) => vec![r.key.to_string()],
        StageMessage::MonitorPart(r) => vec![crate::layout::monitor_parts(&r.model, &r.run)],
    }
}

/// The keys and versions a handler's answer names: its manifest, run and version fields.
pub fn outputs_of(stage: Stage, summary: &serde_json::Value) -> Vec<String> {
    let field = |name: &str| summary.get(name).and_then(serde_json::Value::as_str);
    let mut out = Vec::new();
    out.extend(field("manifest").map(str::to_string));
    match stage {
        Stage::Ingest => {
            if let (Some(d), Some(v)) = (field("dataset"), field("version")) {
                out.push(crate::layout::dataset_version(d, v));
            }
        }
        Stage::Preprocess => out.extend(field("run_id").map(crate::layout::run_folder)),
        Stage::Train | Stage::Evaluate | Stage::Deploy => {
            if let (Some(m), Some(v)) = (field("model"), field("version")) {
                out.push(crate::layout::model_version(m, v));
            }
        }
        Stage::Batch => out.extend(field("output").map(str::to_string)),
        Stage::Monitor => out.extend(field("report").map(str::to_string)),
    }
    out.sort();
    out.dedup();
    out
}

/// Whether a handler's answer says its output already existed (nothing was computed).
pub fn is_cached(summary: &serde_json::Value) -> bool {
    let no = Some(&serde_json::Value::Bool(false));
    summary.get("created") == no
        // Deploy: the version was decided before; the registry is unchanged.
        || summary.get("changed") == no
        || summary.get("status").and_then(serde_json::Value::as_str) == Some("exists")
        || summary.get("cached") == Some(&serde_json::Value::Bool(true))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::message::IngestRequest;
    use crate::store::ObjectKey;

    #[test]
    fn run_ids_say_where_they_came_from_and_fit_a_key() {
        let id = new_run_id(TriggerKind::S3Object);
        assert!(id.starts_with("s3-"), "{id}");
        assert!(is_pipeline_run(&id), "{id}");
        assert_eq!(TriggerKind::of_run(&id), TriggerKind::S3Object);
        assert_ne!(id, new_run_id(TriggerKind::S3Object));
        let stable = stable_run_id(TriggerKind::S3Object, "bucket/key/etag");
        assert_eq!(
            stable,
            stable_run_id(TriggerKind::S3Object, "bucket/key/etag")
        );
        // A preprocess run folder is not a pipeline run.
        assert!(!is_pipeline_run("weather-rain-0123456789ab"));
        assert!(!is_pipeline_run("manual-a/../b"));
        assert_eq!(
            TriggerKind::of_run("retrain-m-20260101T000000Z"),
            TriggerKind::Retrain
        );
    }

    #[test]
    fn steps_are_keyed_by_stage_and_model_and_the_run_status_follows_them() {
        let body = StageMessage::Ingest(IngestRequest {
            key: ObjectKey::new("raw/d/a.csv").unwrap(),
            dataset: None,
        });
        let mut r = RunRecord::new(
            "s3-x",
            Trigger::of("s3-x", &body, serde_json::json!({})),
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(r.trigger.kind, TriggerKind::S3Object);
        assert_eq!(r.trigger.detail, "raw/d/a.csv");
        r.step_mut(Stage::Ingest, None).status = StepStatus::Succeeded;
        r.step_mut(Stage::Preprocess, Some("a")).status = StepStatus::Queued;
        r.step_mut(Stage::Preprocess, Some("b")).status = StepStatus::SkippedCached;
        assert_eq!(r.steps.len(), 3);
        assert_eq!(r.status(), RunStatus::Running);
        r.step_mut(Stage::Preprocess, Some("a")).status = StepStatus::Succeeded;
        assert_eq!(r.steps.len(), 3);
        assert_eq!(r.status(), RunStatus::Succeeded);
        r.step_mut(Stage::Train, Some("a")).status = StepStatus::DeadLettered;
        assert_eq!(r.status(), RunStatus::Failed);
        assert_eq!(r.models(), vec!["a".to_string(), "b".to_string()]);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"skipped-cached\""), "{json}");
        assert!(json.contains("\"dead-lettered\""), "{json}");
        let back: RunRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn cached_answers_and_outputs_are_read_from_the_summary() {
        let s = serde_json::json!({"dataset": "d", "version": "v", "created": false, "manifest": "datasets/d/v/manifest.json"});
        assert!(is_cached(&s));
        assert_eq!(
            outputs_of(Stage::Ingest, &s),
            vec![
                "datasets/d/v".to_string(),
                "datasets/d/v/manifest.json".to_string()
            ]
        );
        assert!(!is_cached(&serde_json::json!({"status": "trained"})));
        assert!(is_cached(&serde_json::json!({"status": "exists"})));
    }
}
