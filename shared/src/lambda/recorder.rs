//! Keeps run records ([`crate::record`]) as stages work: a message sent marks its step
//! queued, a handler taking it marks it running, its end marks it succeeded, skipped-cached,
//! failed or dead-lettered. Every change is one compare-and-swap of
//! `runs/<run>/record.json`, retried on conflict, so stages of one run that end at once
//! (one file fanning out to many models) never lose each other's steps.
//!
//! Recording is bookkeeping: a record that cannot be written is logged and the stage goes
//! on; a record that does not parse, or that a newer lambdaml wrote, is left alone.
//!
//! The run a handler works for, and how its message was delivered, are task-locals set by
//! the runners ([`crate::stage`]): senders take the run id from [`current_run`], so a run
//! id travels unchanged from the trigger to deploy.

use std::time::Duration;

use tracing::warn;

use crate::message::{Message, Stage};
use crate::record::{
    self, RECORD_SCHEMA, RunRecord, StepRecord, StepStatus, Trigger, is_pipeline_run,
};
use crate::store::{ObjectStore, ObjectStoreExt, StoreError, to_json_bytes};

/// Now, RFC 3339 with milliseconds: steps of one run often start within a second.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// How the message being handled was delivered.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// The queue's message id.
    pub message_id: Option<String>,
    /// This delivery's number (1 on the first).
    pub receive_count: u32,
    /// The delivery after which the queue gives up, when known.
    pub max_receives: Option<u32>,
}

tokio::task_local! {
    static RUN: String;
    static DELIVERY: Delivery;
    static REQUEST_ID: String;
}

/// Runs `future` as the handling of a message delivered as `delivery`.
pub async fn with_delivery<F: std::future::Future>(delivery: Delivery, future: F) -> F::Output {
    DELIVERY.scope(delivery, future).await
}

/// Runs `future` within the Lambda invocation `request_id`.
pub async fn with_request_id<F: std::future::Future>(request_id: String, future: F) -> F::Output {
    REQUEST_ID.scope(request_id, future).await
}

/// Runs `future` as work of pipeline run `run`.
pub async fn with_run<F: std::future::Future>(run: String, future: F) -> F::Output {
    RUN.scope(run, future).await
}

/// The pipeline run the current handler works for.
pub fn current_run() -> Option<String> {
    RUN.try_with(Clone::clone).ok()
}

/// The current run, or `fallback` outside a handler (a test calling a stage directly).
pub fn run_or(fallback: impl FnOnce() -> String) -> String {
    current_run().unwrap_or_else(fallback)
}

fn delivery() -> Option<Delivery> {
    DELIVERY.try_with(Clone::clone).ok()
}

fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Applies `change` to run `run`'s record by compare-and-swap, creating it with `trigger`
/// when there is none. Best effort: failures are logged.
pub async fn update(
    store: &dyn ObjectStore,
    run: &str,
    trigger: impl Fn() -> Trigger + Sync,
    change: impl Fn(&mut RunRecord) + Sync,
) {
    if !is_pipeline_run(run) {
        return;
    }
    if let Err(e) = try_update(store, run, &trigger, &change).await {
        warn!(%run, error = %e, "could not update the run record");
    }
}

async fn try_update(
    store: &dyn ObjectStore,
    run: &str,
    trigger: &(dyn Fn() -> Trigger + Sync),
    change: &(dyn Fn(&mut RunRecord) + Sync),
) -> Result<(), StoreError> {
    let key = crate::layout::run_record(run)?;
    for attempt in 0..50u64 {
        let (mut record, etag) = match store.get(&key).await {
            Ok(object) => match serde_json::from_slice::<RunRecord>(&object.bytes) {
                Ok(r) if r.schema <= RECORD_SCHEMA => (r, Some(object.etag)),
                Ok(r) => {
                    warn!(%run, schema = r.schema, "a newer lambdaml wrote this run record; left alone");
                    return Ok(());
                }
                Err(e) => {
                    warn!(%run, error = %e, "the run record does not parse; left alone");
                    return Ok(());
                }
            },
            Err(StoreError::NotFound(_)) => (RunRecord::new(run, trigger(), &now()), None),
            Err(e) => return Err(e),
        };
        change(&mut record);
        record.updated_at = now();
        let bytes = to_json_bytes(&record);
        let written = match &etag {
            Some(etag) => store.put_if_match(&key, bytes, etag).await,
            None => store.put_if_absent(&key, bytes).await,
        };
        match written {
            Ok(_) => return Ok(()),
            Err(StoreError::PreconditionFailed { .. } | StoreError::AlreadyExists(_)) => {
                let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 10;
                tokio::time::sleep(Duration::from_millis(attempt.min(20) * 2 + jitter)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::unavailable(
        key.as_str(),
        "the run record kept changing under 50 writes",
    ))
}

fn trigger_of(message: &Message) -> impl Fn() -> Trigger + Sync + '_ {
    move || {
        Trigger::of(
            &message.run_id,
            &message.body,
            serde_json::to_value(message).unwrap_or_default(),
        )
    }
}

/// The step's model: the envelope's, else the one its request names.
fn model_of(message: &Message) -> Option<String> {
    use crate::message::StageMessage as M;
    message.model.clone().or_else(|| match &message.body {
        M::Retrain(r) => Some(r.model.clone()),
        M::Evaluate(r) => Some(r.model.clone()),
        M::Deploy(r) => Some(r.model.clone()),
        M::BatchJob(r) => Some(r.model.clone()),
        M::BatchPartition(r) => Some(r.model.clone()),
        M::MonitorPart(r) => Some(r.model.clone()),
        M::Ingest(_)
        | M::IngestPartition(_)
        | M::Preprocess(_)
        | M::Train(_)
        | M::BatchObject(_) => None,
    })
}

/// `message` was sent to its stage's queue.
pub async fn queued(store: &dyn ObjectStore, message: &Message) {
    let (stage, model) = (message.body.stage(), model_of(message));
    let inputs = record::inputs_of(&message.body);
    update(store, &message.run_id, trigger_of(message), |r| {
        let step = r.step_mut(stage, model.as_deref());
        step.status = StepStatus::Queued;
        step.queued_at = Some(now());
        step.inputs.clone_from(&inputs);
        step.reason = None;
    })
    .await;
}

/// A handler took `message`.
pub async fn started(store: &dyn ObjectStore, message: &Message) {
    let (stage, model) = (message.body.stage(), model_of(message));
    let inputs = record::inputs_of(&message.body);
    let (delivery, request) = (delivery(), request_id());
    update(store, &message.run_id, trigger_of(message), |r| {
        let step = r.step_mut(stage, model.as_deref());
        step.status = StepStatus::Running;
        step.started_at.get_or_insert_with(now);
        step.attempts += 1;
        step.ended_at = None;
        step.reason = None;
        step.inputs.clone_from(&inputs);
        if let Some(id) = delivery.as_ref().and_then(|d| d.message_id.clone())
            && !step.message_ids.contains(&id)
        {
            step.message_ids.push(id);
        }
        if let Some(id) = &request
            && !step.request_ids.contains(id)
        {
            step.request_ids.push(id.clone());
        }
    })
    .await;
}

/// How a handler's work on `message` ended.
pub async fn ended(
    store: &dyn ObjectStore,
    message: &Message,
    result: Result<&serde_json::Value, &crate::stage::StageError>,
    seconds: f64,
) {
    let (stage, model) = (message.body.stage(), model_of(message));
    let (status, reason, summary, outputs, reused) = match result {
        Ok(summary) => {
            let cached = record::is_cached(summary);
            let reused = if cached {
                made_by(store, summary).await
            } else {
                None
            };
            let status = if summary.get("status").and_then(serde_json::Value::as_str)
                == Some("checkpointed")
            {
                // The same step goes on in the next invocation, whose message marked it
                // queued before this answer (and may have started, even ended, since):
                // the status is left to it.
                None
            } else if cached {
                Some(StepStatus::SkippedCached)
            } else {
                Some(StepStatus::Succeeded)
            };
            let outputs = record::outputs_of(stage, summary);
            (status, None, Some(summary.clone()), outputs, reused)
        }
        Err(err) => {
            let delivery = delivery();
            // Without a delivery (a command, a direct invocation) nothing retries it.
            let last = delivery.as_ref().is_none_or(|d| {
                !err.is_retryable() || d.max_receives.is_some_and(|m| d.receive_count >= m)
            });
            let reason = match &delivery {
                Some(Delivery {
                    receive_count,
                    max_receives: Some(max),
                    ..
                }) if err.is_retryable() => {
                    format!(
                        "failed on delivery {receive_count} of {max}: {}",
                        err.reason()
                    )
                }
                _ => err.reason().to_string(),
            };
            let status = match (last, &delivery) {
                (false, _) => StepStatus::Retrying,
                (true, Some(_)) => StepStatus::DeadLettered,
                (true, None) => StepStatus::Failed,
            };
            (Some(status), Some(reason), None, Vec::new(), None)
        }
    };
    update(store, &message.run_id, trigger_of(message), |r| {
        let step: &mut StepRecord = r.step_mut(stage, model.as_deref());
        step.seconds += seconds;
        if let Some(status) = status {
            step.status = status;
            step.ended_at = Some(now());
        }
        step.reason.clone_from(&reason);
        if summary.is_some() {
            step.summary.clone_from(&summary);
            step.outputs.clone_from(&outputs);
        }
        step.reused_run.clone_from(&reused);
    })
    .await;
}

/// The pipeline run that wrote the manifest a cached answer names.
async fn made_by(store: &dyn ObjectStore, summary: &serde_json::Value) -> Option<String> {
    let key = summary.get("manifest")?.as_str()?;
    let key = crate::store::ObjectKey::new(key).ok()?;
    let manifest: serde_json::Value = store.get_json(&key).await.ok()?;
    manifest.get("pipeline_run")?.as_str().map(str::to_string)
}

/// The stage and model a record step stands for, in words (`train weather-rain`).
pub fn step_name(stage: Stage, model: Option<&str>) -> String {
    match model {
        Some(m) => format!("{stage} {m}"),
        None => stage.to_string(),
    }
}

/// What a stage sends on within its run: like [`send`] while a handler works for a run,
/// a plain send when the stage was called directly (a test, a library user), which asked
/// for no record.
pub async fn forward(
    store: &dyn ObjectStore,
    queue: &dyn crate::queue::Queue,
    message: &Message,
) -> Result<String, crate::queue::QueueError> {
    if current_run().is_some() {
        queued(store, message).await;
    }
    queue.send(&message.to_body()).await
}

/// Sends `message` to `queue`, its step marked queued first (so the stage that takes it can
/// never be overtaken by the mark): how a run is started (a command, a retrain).
pub async fn send(
    store: &dyn ObjectStore,
    queue: &dyn crate::queue::Queue,
    message: &Message,
) -> Result<String, crate::queue::QueueError> {
    queued(store, message).await;
    queue.send(&message.to_body()).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::message::{PreprocessRequest, StageMessage};
    use crate::record::RunStatus;
    use crate::store::{MemoryStore, ObjectKey};

    fn preprocess(run: &str, model: &str) -> Message {
        Message::new(
            run,
            Some(model.to_string()),
            StageMessage::Preprocess(PreprocessRequest {
                dataset: "d".into(),
                dataset_version: "v".into(),
                spec: ObjectKey::new(format!("specs/history/{model}/x.toml")).unwrap(),
                salt: None,
            }),
        )
    }

    async fn read(store: &MemoryStore, run: &str) -> RunRecord {
        store
            .get_json(&crate::layout::run_record(run).unwrap())
            .await
            .unwrap()
    }

    /// One file fanning out to many models: every step survives concurrent writers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_steps_of_one_run_are_all_kept() {
        let store = std::sync::Arc::new(MemoryStore::new());
        let run = "s3-0123456789abcdef";
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let m = preprocess(run, &format!("model-{i}"));
                    queued(store.as_ref(), &m).await;
                    started(store.as_ref(), &m).await;
                    let ok = serde_json::json!({"run_id": "p", "manifest": "runs/p/manifest.json", "created": true});
                    ended(store.as_ref(), &m, Ok(&ok), 0.5).await;
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let record = read(&store, run).await;
        assert_eq!(record.steps.len(), 16);
        assert!(
            record
                .steps
                .iter()
                .all(|s| s.status == StepStatus::Succeeded && s.attempts == 1 && s.seconds == 0.5)
        );
        assert_eq!(record.status(), RunStatus::Succeeded);
    }

    #[tokio::test]
    async fn a_retryable_failure_on_the_last_delivery_is_dead_lettered_with_the_delivery() {
        let store = MemoryStore::new();
        let m = preprocess("manual-x", "m");
        let err = crate::stage::StageError::retryable("the store did not answer");
        let delivery = |n| Delivery {
            message_id: Some("id-1".into()),
            receive_count: n,
            max_receives: Some(3),
        };
        with_delivery(delivery(1), async {
            started(&store, &m).await;
            ended(&store, &m, Err(&err), 0.1).await;
        })
        .await;
        let r = read(&store, "manual-x").await;
        assert_eq!(r.steps[0].status, StepStatus::Retrying);
        assert_eq!(r.status(), RunStatus::Running, "a retry is coming");
        with_delivery(delivery(3), async {
            started(&store, &m).await;
            ended(&store, &m, Err(&err), 0.1).await;
        })
        .await;
        let r = read(&store, "manual-x").await;
        let step = &r.steps[0];
        assert_eq!(step.status, StepStatus::DeadLettered);
        assert_eq!(step.attempts, 2);
        assert_eq!(step.message_ids, vec!["id-1".to_string()]);
        assert_eq!(
            step.reason.as_deref(),
            Some("failed on delivery 3 of 3: the store did not answer")
        );
        assert_eq!(r.status(), RunStatus::Failed);
    }

    #[tokio::test]
    async fn a_failure_nothing_retries_fails_the_run_and_a_checkpoint_leaves_the_status() {
        let store = MemoryStore::new();
        let m = preprocess("manual-z", "m");
        started(&store, &m).await;
        let err = crate::stage::StageError::retryable("the store did not answer");
        ended(&store, &m, Err(&err), 0.1).await;
        let r = read(&store, "manual-z").await;
        assert_eq!(
            r.steps[0].status,
            StepStatus::Failed,
            "a command is not retried"
        );
        assert_eq!(r.status(), RunStatus::Failed);
        // A checkpointed invocation ends after its continuation was queued and started.
        let m = preprocess("manual-w", "m");
        started(&store, &m).await;
        queued(&store, &m).await;
        started(&store, &m).await;
        let paused = serde_json::json!({"status": "checkpointed"});
        ended(&store, &m, Ok(&paused), 2.0).await;
        let r = read(&store, "manual-w").await;
        assert_eq!(r.steps[0].status, StepStatus::Running, "the continuation's");
        assert_eq!(r.steps[0].attempts, 2);
        assert_eq!(r.steps[0].seconds, 2.0);
    }

    #[tokio::test]
    async fn corrupt_records_and_non_pipeline_runs_are_left_alone() {
        let store = MemoryStore::new();
        let key = crate::layout::run_record("manual-y").unwrap();
        store
            .put(&key, bytes::Bytes::from_static(b"{oops"))
            .await
            .unwrap();
        queued(&store, &preprocess("manual-y", "m")).await;
        assert_eq!(&store.get(&key).await.unwrap().bytes[..], b"{oops");
        // A preprocess run's id is not a pipeline run: nothing is written.
        queued(&store, &preprocess("weather-rain-0123456789ab", "m")).await;
        assert!(store.list_all("runs/").await.unwrap().len() == 1);
    }
}
