//! Typed, versioned messages between pipeline stages.
//!
//! Every queue message is one JSON object with a `version` (the schema version of the
//! message format, [`MESSAGE_VERSION`]), the `stage` it is addressed to, a `run_id` that
//! names the pipeline run, the `model` when known, an `attempt` counter and the stage's own
//! fields. A message of another version is a permanent failure: no retry can make an old
//! handler understand a future format, so it goes to the dead-letter queue with its reason.

use serde::{Deserialize, Serialize};

use crate::store::ObjectKey;

/// The message schema version this build reads and writes.
pub const MESSAGE_VERSION: u32 = 1;

/// The queue-fed stages of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Validate and version a raw file.
    Ingest,
    /// Split and fit the feature pipeline.
    Preprocess,
    /// Fit a model.
    Train,
    /// Score the holdout.
    Evaluate,
    /// Apply the promotion rule.
    Deploy,
    /// Plan and score batch jobs (outside the training pipeline).
    Batch,
    /// Aggregate one part of a large monitoring window (the monitor's fan-out).
    Monitor,
}

impl Stage {
    /// Every stage: the pipeline's in order, then batch scoring.
    pub const ALL: [Stage; 7] = [
        Stage::Ingest,
        Stage::Preprocess,
        Stage::Train,
        Stage::Evaluate,
        Stage::Deploy,
        Stage::Batch,
        Stage::Monitor,
    ];

    /// Whether its work fans out (a job or a large file planned into partitions, one
    /// message each on its own queue), so its messages are handled several at a time.
    pub fn fans_out(self) -> bool {
        matches!(self, Stage::Ingest | Stage::Batch | Stage::Monitor)
    }

    /// The stage's name, as used in queue names and directories.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Preprocess => "preprocess",
            Stage::Train => "train",
            Stage::Evaluate => "evaluate",
            Stage::Deploy => "deploy",
            Stage::Batch => "batch",
            Stage::Monitor => "monitor",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Asks ingest to validate and version one raw file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestRequest {
    /// The raw object, e.g. `raw/weather/weather.csv`.
    pub key: ObjectKey,
    /// The dataset it belongs to; defaults to the segment after `raw/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
}

/// Asks ingest to check one partition of a file ingested in partitions (the plan is at
/// `ingest-parts/<dataset>/<version>/plan.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestPartitionRequest {
    /// The dataset name.
    pub dataset: String,
    /// The dataset version being written.
    pub dataset_version: String,
    /// The round: 1 checks against the first rows' guess, 2 against the whole file's schema
    /// when it differs.
    pub round: u32,
    /// The partition (0-based).
    pub partition: usize,
}

/// Asks the monitor to aggregate one part of a window planned in parts (the plan is
/// `monitor-parts/<model>/<run>/plan.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorPartRequest {
    /// The model (`model_name` on the wire: the envelope has its own `model`).
    #[serde(rename = "model_name")]
    pub model: String,
    /// The planned run (`<at>-<salt>`, the name its report folder will have).
    pub run: String,
    /// The part (0-based): a run of consecutive capture hours.
    pub part: usize,
}

/// Asks preprocess to split a dataset version and fit a model spec's feature pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessRequest {
    /// The dataset name.
    pub dataset: String,
    /// The dataset version (a content hash).
    pub dataset_version: String,
    /// The model spec to apply, as stored (`specs/<model>.toml`).
    pub spec: ObjectKey,
    /// Mixed into the cache keys of this run's preprocess and train: set by a forced run
    /// (`lambdaml train --no-cache`), so nothing earlier is reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
}

/// Asks train to fit a model on a preprocessed run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainRequest {
    /// The run manifest written by preprocess (`runs/<run>/manifest.json`).
    pub run_manifest: ObjectKey,
    /// A checkpoint to resume from (set when a previous invocation ran out of time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<ObjectKey>,
    /// The spec snapshot to train with, when it is not the one the run was preprocessed
    /// with: a preprocess run is shared by specs that differ only in sections preprocess
    /// does not read (`[train]`, `[promotion]`, `[monitor]`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ObjectKey>,
    /// The forced run's salt ([`PreprocessRequest::salt`]), mixed into the version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
}

/// Asks evaluate to score a trained version (and the champion) on the run's holdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    /// The model (`model_name` on the wire: the envelope's `model` is optional).
    #[serde(rename = "model_name")]
    pub model: String,
    /// The model version (`model_version` on the wire: `version` is the message format's).
    #[serde(rename = "model_version")]
    pub version: String,
    /// The spec snapshot whose `[promotion]` and `[rollout]` decide it, when it is not the
    /// one the version was trained with (a spec that changed only those sections reuses
    /// the trained version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ObjectKey>,
}

/// Asks deploy to apply the promotion rule to an evaluated version.
///
/// Evaluate sends the evaluation and the spec's promotion rule with the request, so deploy
/// reads neither `evaluation.json` nor the run manifest and the spec behind it; a direct
/// request (`{"model_name", "model_version"}`) has neither, and deploy reads them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The model (`model_name` on the wire: the envelope's `model` is optional).
    #[serde(rename = "model_name")]
    pub model: String,
    /// The model version (`model_version` on the wire: `version` is the message format's).
    #[serde(rename = "model_version")]
    pub version: String,
    /// The version's evaluation, as written to `evaluation.json`. Left out when it is
    /// large (many classes), to keep the message far below SQS's 256 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Box<crate::evaluation::Evaluation>>,
    /// The promotion rule of the spec the version was trained with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<crate::spec::PromotionSection>,
    /// How a passing version reaches traffic (the same spec's `[rollout]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::spec::RolloutSection>,
}

impl DeployRequest {
    /// The largest evaluation a deploy message carries, as JSON.
    pub const MAX_EVALUATION_BYTES: usize = 64 * 1024;

    /// A request that carries nothing but the version.
    pub fn new(model: impl Into<String>, version: impl Into<String>) -> Self {
        DeployRequest {
            model: model.into(),
            version: version.into(),
            evaluation: None,
            promotion: None,
            rollout: None,
        }
    }
}

/// Asks the batch function to plan a job: every file under `batch/<model>/<job>/input/`
/// split into partitions, one message per partition sent to the batch queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchJobRequest {
    /// The model (`model_name`: the envelope's `model` is the message's own).
    #[serde(rename = "model_name")]
    pub model: String,
    /// The job.
    pub job: String,
    /// The version to score with; the production version when the job is planned if none.
    #[serde(
        default,
        rename = "model_version",
        skip_serializing_if = "Option::is_none"
    )]
    pub version: Option<String>,
    /// Rows per partition (default [`crate::batch::DEFAULT_PARTITION_ROWS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_rows: Option<u64>,
    /// Whether outputs carry the input columns besides the scores.
    #[serde(default)]
    pub include_inputs: bool,
}

/// Asks the batch function to score one partition of a planned job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchPartitionRequest {
    /// The model.
    #[serde(rename = "model_name")]
    pub model: String,
    /// The job.
    pub job: String,
    /// The partition ([`crate::batch::PlannedPart::index`]).
    pub partition: usize,
}

/// An object created under `batch/` (an S3 notification): a job's input starts the job;
/// anything else (the job's own outputs) is ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchObjectRequest {
    /// The object.
    pub key: ObjectKey,
}

/// What the batch queue carries.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchInput {
    /// Plan a job.
    Job(BatchJobRequest),
    /// Score a partition.
    Partition(BatchPartitionRequest),
    /// An object landed under `batch/`.
    Object(BatchObjectRequest),
}

/// The stage-specific part of a message.
/// What the monitor sends the ingest queue on a breach: build a new dataset version from the
/// captured rows and their feedback labels (plus older data) and run the normal pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrainRequest {
    /// The model (`model_name`: the envelope's `model` is the message's own).
    #[serde(rename = "model_name")]
    pub model: String,
    /// Its dataset.
    pub dataset: String,
    /// Why: the breach, in words.
    pub reason: String,
    /// The labelled captured rows (CSV, header = input features + label), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labelled: Option<ObjectKey>,
    /// The dataset version the production model was trained on: the older data.
    pub base_dataset_version: String,
    /// Keep the most recent `window_rows` rows (`sliding`) or everything (`all`).
    pub data: crate::spec::RetrainData,
    /// Rows a sliding window keeps.
    pub window_rows: usize,
    /// The monitoring report that decided it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ObjectKey>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum StageMessage {
    /// Build a retraining dataset version (handled by ingest).
    Retrain(RetrainRequest),
    /// For ingest.
    Ingest(IngestRequest),
    /// One partition of a file ingested in partitions (handled by ingest).
    IngestPartition(IngestPartitionRequest),
    /// For preprocess.
    Preprocess(PreprocessRequest),
    /// For train.
    Train(TrainRequest),
    /// For evaluate.
    Evaluate(EvaluateRequest),
    /// For deploy.
    Deploy(DeployRequest),
    /// Plan a batch job (handled by batch).
    BatchJob(BatchJobRequest),
    /// Score one partition of a batch job (handled by batch).
    BatchPartition(BatchPartitionRequest),
    /// An object landed under `batch/` (handled by batch).
    BatchObject(BatchObjectRequest),
    /// Aggregate one part of a monitoring window (handled by the monitor).
    MonitorPart(MonitorPartRequest),
}

impl StageMessage {
    /// The stage this message is addressed to.
    pub fn stage(&self) -> Stage {
        match self {
            StageMessage::Ingest(_)
            | StageMessage::IngestPartition(_)
            | StageMessage::Retrain(_) => Stage::Ingest,
            StageMessage::Preprocess(_) => Stage::Preprocess,
            StageMessage::Train(_) => Stage::Train,
            StageMessage::Evaluate(_) => Stage::Evaluate,
            StageMessage::Deploy(_) => Stage::Deploy,
            StageMessage::BatchJob(_)
            | StageMessage::BatchPartition(_)
            | StageMessage::BatchObject(_) => Stage::Batch,
            StageMessage::MonitorPart(_) => Stage::Monitor,
        }
    }
}

/// What ingest's queue carries: a raw file to version, or a retraining dataset to build.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestInput {
    /// A raw file.
    File(IngestRequest),
    /// A retrain the monitor asked for.
    Retrain(RetrainRequest),
    /// One partition of a large file.
    Partition(IngestPartitionRequest),
}

/// A stage's typed request: a message body addressed to the stage becomes one, once, where
/// the message is read (see `lambdaml::stage::Handler`); a handler never matches
/// [`StageMessage`] itself.
pub trait StageRequest: Sized + Send + 'static {
    /// The stage whose queue carries it.
    const STAGE: Stage;

    /// The request, or the stage the body is addressed to when it is another.
    fn from_body(body: StageMessage) -> Result<Self, Stage>;
}

impl StageRequest for IngestInput {
    const STAGE: Stage = Stage::Ingest;
    fn from_body(body: StageMessage) -> Result<Self, Stage> {
        match body {
            StageMessage::Ingest(r) => Ok(IngestInput::File(r)),
            StageMessage::Retrain(r) => Ok(IngestInput::Retrain(r)),
            StageMessage::IngestPartition(r) => Ok(IngestInput::Partition(r)),
            other => Err(other.stage()),
        }
    }
}

impl StageRequest for BatchInput {
    const STAGE: Stage = Stage::Batch;
    fn from_body(body: StageMessage) -> Result<Self, Stage> {
        match body {
            StageMessage::BatchJob(r) => Ok(BatchInput::Job(r)),
            StageMessage::BatchPartition(r) => Ok(BatchInput::Partition(r)),
            StageMessage::BatchObject(r) => Ok(BatchInput::Object(r)),
            other => Err(other.stage()),
        }
    }
}

impl StageRequest for MonitorPartRequest {
    const STAGE: Stage = Stage::Monitor;
    fn from_body(body: StageMessage) -> Result<Self, Stage> {
        match body {
            StageMessage::MonitorPart(r) => Ok(r),
            other => Err(other.stage()),
        }
    }
}

/// The batch function's direct form: a job to plan (`{"model_name", "job", …}`).
impl DirectRequest for BatchJobRequest {
    fn into_message(self) -> Message {
        let model = Some(self.model.clone());
        Message::new(batch_run_id(&self.job), model, StageMessage::BatchJob(self))
    }
}

/// The run id of a batch job's messages: `batch-<job>`.
pub fn batch_run_id(job: &str) -> String {
    format!("batch-{job}")
}

macro_rules! stage_request {
    ($request:ty, $variant:ident) => {
        impl StageRequest for $request {
            const STAGE: Stage = Stage::$variant;
            fn from_body(body: StageMessage) -> Result<Self, Stage> {
                match body {
                    StageMessage::$variant(r) => Ok(r),
                    other => Err(other.stage()),
                }
            }
        }
    };
}

stage_request!(PreprocessRequest, Preprocess);
stage_request!(TrainRequest, Train);
stage_request!(EvaluateRequest, Evaluate);
stage_request!(DeployRequest, Deploy);

/// A stage's direct form (`{"key": …}`, `{"run_manifest": …}`, `{"model_name", …}`): what
/// `aws lambda invoke` and `lambdaml invoke` send instead of a whole message, and the
/// first-attempt message it stands for.
pub trait DirectRequest: serde::de::DeserializeOwned {
    /// The message, with a run id that names the request.
    fn into_message(self) -> Message;
}

/// A monitor part sent directly (`{"model_name", "run", "part"}`) is the planned run's
/// part: the same run id its queued message has.
impl DirectRequest for MonitorPartRequest {
    fn into_message(self) -> Message {
        let seed = format!("monitor-{}-{}", self.model, self.run);
        let run = crate::record::stable_run_id(crate::record::TriggerKind::Direct, &seed);
        let model = Some(self.model.clone());
        Message::new(run, model, StageMessage::MonitorPart(self))
    }
}

impl DirectRequest for IngestRequest {
    fn into_message(self) -> Message {
        let run = crate::record::new_run_id(crate::record::TriggerKind::Direct);
        Message::new(run, None, StageMessage::Ingest(self))
    }
}

impl DirectRequest for PreprocessRequest {
    fn into_message(self) -> Message {
        let run = crate::record::new_run_id(crate::record::TriggerKind::Direct);
        Message::new(run, None, StageMessage::Preprocess(self))
    }
}

impl DirectRequest for TrainRequest {
    fn into_message(self) -> Message {
        let run = crate::record::new_run_id(crate::record::TriggerKind::Direct);
        Message::new(run, None, StageMessage::Train(self))
    }
}

impl DirectRequest for EvaluateRequest {
    fn into_message(self) -> Message {
        let run = crate::record::new_run_id(crate::record::TriggerKind::Direct);
        let model = Some(self.model.clone());
        Message::new(run, model, StageMessage::Evaluate(self))
    }
}

impl DirectRequest for DeployRequest {
    fn into_message(self) -> Message {
        let run = crate::record::new_run_id(crate::record::TriggerKind::Direct);
        let model = Some(self.model.clone());
        Message::new(run, model, StageMessage::Deploy(self))
    }
}

/// Everything of a message but the stage's own fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The pipeline run.
    pub run_id: String,
    /// The model, when known.
    pub model: Option<String>,
    /// Earlier attempts of this step.
    pub attempt: u32,
}

/// A message between stages. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The message schema version.
    pub version: u32,
    /// The pipeline run this message belongs to.
    pub run_id: String,
    /// The model, when the stage knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// How many times this step has been attempted before (0 on the first send).
    #[serde(default)]
    pub attempt: u32,
    /// The stage and its fields.
    #[serde(flatten)]
    pub body: StageMessage,
}

/// Why a message body could not be read. Always permanent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Not JSON at all.
    #[error("message is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// No `version` field.
    #[error("message has no `version` field (expected version {MESSAGE_VERSION})")]
    MissingVersion,
    /// A version this build does not read.
    #[error("unsupported message version {found}; this build reads version {MESSAGE_VERSION}")]
    UnsupportedVersion {
        /// The version found.
        found: u64,
    },
    /// The right version but the wrong shape.
    #[error("malformed message: {0}")]
    Malformed(#[source] serde_json::Error),
}

impl Message {
    /// A first-attempt message of the current version.
    pub fn new(run_id: impl Into<String>, model: Option<String>, body: StageMessage) -> Self {
        Message {
            version: MESSAGE_VERSION,
            run_id: run_id.into(),
            model,
            attempt: 0,
            body,
        }
    }

    /// Parses and checks a message body.
    pub fn parse(body: &str) -> Result<Self, MessageError> {
        let value: serde_json::Value = serde_json::from_str(body).map_err(MessageError::NotJson)?;
        match value.get("version").map(serde_json::Value::as_u64) {
            None => return Err(MessageError::MissingVersion),
            Some(Some(v)) if v == u64::from(MESSAGE_VERSION) => {}
            Some(found) => {
                return Err(MessageError::UnsupportedVersion {
                    found: found.unwrap_or(0),
                });
            }
        }
        serde_json::from_value(value).map_err(MessageError::Malformed)
    }

    /// The envelope and the body.
    pub fn into_parts(self) -> (Envelope, StageMessage) {
        let envelope = Envelope {
            run_id: self.run_id,
            model: self.model,
            attempt: self.attempt,
        };
        (envelope, self.body)
    }

    /// The JSON body to send.
    pub fn to_body(&self) -> String {
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message::new(
            "run-1",
            Some("weather-rain".into()),
            StageMessage::Preprocess(PreprocessRequest {
                dataset: "weather".into(),
                dataset_version: "abc".into(),
                spec: ObjectKey::new("specs/weather-rain.toml").unwrap(),
                salt: None,
            }),
        )
    }

    #[test]
    fn messages_round_trip_with_stage_tag() {
        let m = sample();
        let body = m.to_body();
        assert!(body.contains("\"stage\":\"preprocess\""), "{body}");
        assert!(body.contains("\"version\":1"), "{body}");
        assert_eq!(Message::parse(&body).unwrap(), m);
        assert_eq!(m.body.stage(), Stage::Preprocess);
    }

    #[test]
    fn unknown_versions_are_refused_with_the_version() {
        let body = sample().to_body().replace("\"version\":1", "\"version\":7");
        let err = Message::parse(&body).unwrap_err();
        assert!(matches!(err, MessageError::UnsupportedVersion { found: 7 }));
        assert!(err.to_string().contains("version 7"), "{err}");
        let err = Message::parse(r#"{"stage":"ingest","key":"raw/a/b.csv"}"#).unwrap_err();
        assert!(matches!(err, MessageError::MissingVersion));
        assert!(matches!(
            Message::parse("not json").unwrap_err(),
            MessageError::NotJson(_)
        ));
    }

    #[test]
    fn model_versions_do_not_clash_with_the_message_version() {
        let m = Message::new(
            "r",
            Some("m".into()),
            StageMessage::Evaluate(EvaluateRequest {
                model: "m".into(),
                version: "abc123".into(),
                spec: None,
            }),
        );
        let body = m.to_body();
        assert!(body.contains("\"model_version\":\"abc123\""), "{body}");
        assert_eq!(Message::parse(&body).unwrap(), m);
    }

    #[test]
    fn malformed_fields_are_named() {
        let err =
            Message::parse(r#"{"version":1,"run_id":"r","stage":"ingest","key":"../etc/passwd"}"#)
                .unwrap_err();
        assert!(matches!(err, MessageError::Malformed(_)));
        assert!(err.to_string().contains(".."), "{err}");
    }
}
