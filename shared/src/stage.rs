//! What every stage handler shares: its error type, and the two ways messages reach it —
//! drained from the port's queues by the local runner, or as a Lambda SQS batch.
//!
//! A handler's error says whether trying again can help. A retryable error (the store or a
//! queue was unreachable) leaves the message for redelivery; a permanent one (an unknown
//! message version, a file without its label column) sends it to the dead-letter area at
//! once, with the reason, because no retry will fix it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tracing::{info, warn};

use crate::lambda::{
    BatchItemFailure, BatchResponse, Incoming, S3Object, SqsRecord, classify, s3_objects,
};
use crate::message::{Message, Stage};
use crate::queue::{Queue, QueueError, Queues};

/// A handler failure, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    /// Retrying cannot help: dead-letter with this reason.
    #[error("{0}")]
    Permanent(String),
    /// May succeed later: redeliver.
    #[error("{0} (will retry)")]
    Retryable(String),
}

impl StageError {
    /// Whether a retry may help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StageError::Retryable(_))
    }

    /// The reason, without the retry note.
    pub fn reason(&self) -> &str {
        match self {
            StageError::Permanent(r) | StageError::Retryable(r) => r,
        }
    }
}

impl From<crate::store::StoreError> for StageError {
    fn from(e: crate::store::StoreError) -> Self {
        if e.is_retryable() {
            StageError::Retryable(e.to_string())
        } else {
            StageError::Permanent(e.to_string())
        }
    }
}

impl From<crate::store::JsonError> for StageError {
    fn from(e: crate::store::JsonError) -> Self {
        match e {
            crate::store::JsonError::Store(s) => s.into(),
            other => StageError::Permanent(other.to_string()),
        }
    }
}

impl From<QueueError> for StageError {
    fn from(e: QueueError) -> Self {
        StageError::Retryable(e.to_string())
    }
}

tokio::task_local! {
    static DEADLINE: std::time::Instant;
}

/// Runs `future` with an invocation deadline that handlers can read with [`deadline`]
/// (Lambda's context deadline; a long stage checkpoints before it).
pub async fn with_deadline<F: std::future::Future>(
    deadline: std::time::Instant,
    future: F,
) -> F::Output {
    DEADLINE.scope(deadline, future).await
}

/// The current invocation's deadline, if the caller set one.
pub fn deadline() -> Option<std::time::Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// A stage's message handler.
#[async_trait]
pub trait StageHandler: Send + Sync {
    /// The stage whose queue it reads.
    fn stage(&self) -> Stage;

    /// Handles one message; returns a JSON summary of what it did.
    async fn handle(&self, message: Message) -> Result<serde_json::Value, StageError>;

    /// Turns a direct invocation's payload into a message. By default the payload must be
    /// a full [`Message`]; stages with a simpler direct form override this.
    fn message_from_direct(&self, payload: serde_json::Value) -> Result<Message, StageError> {
        Message::parse(&payload.to_string()).map_err(|e| StageError::Permanent(e.to_string()))
    }

    /// Handles a direct payload that is not a stage message (deploy's rollback request, for
    /// one); `None` lets [`StageHandler::message_from_direct`] read it as a message.
    async fn handle_direct_action(
        &self,
        _payload: &serde_json::Value,
    ) -> Option<Result<serde_json::Value, StageError>> {
        None
    }

    /// Turns an object named by an S3 notification into a message. By default a stage
    /// takes no S3 events.
    fn message_from_s3(&self, object: &S3Object) -> Result<Message, StageError> {
        Err(StageError::Permanent(format!(
            "the {} stage takes no S3 events (got s3://{}/{})",
            self.stage(),
            object.bucket,
            object.key
        )))
    }
}

/// Handles a message after checking it is addressed to this stage.
async fn handle_checked(
    handler: &dyn StageHandler,
    message: Message,
) -> Result<serde_json::Value, StageError> {
    if message.body.stage() != handler.stage() {
        return Err(StageError::Permanent(format!(
            "a {} message reached the {} stage",
            message.body.stage(),
            handler.stage()
        )));
    }
    handler.handle(message).await
}

/// Handles one SQS body: a pipeline message, or a wrapped S3 notification.
async fn handle_body(
    handler: &dyn StageHandler,
    body: &str,
) -> Result<serde_json::Value, StageError> {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(body)
        && let Some(objects) = s3_objects(&value)
    {
        let objects = objects.map_err(|e| StageError::Permanent(e.to_string()))?;
        let mut results = Vec::with_capacity(objects.len());
        for object in &objects {
            let message = handler.message_from_s3(object)?;
            results.push(handle_checked(handler, message).await?);
        }
        return Ok(serde_json::Value::Array(results));
    }
    dispatch(handler, body).await
}

/// Answers any Lambda event for `handler`: a direct payload, an S3 notification, or an SQS
/// batch (answered with `batchItemFailures`). An error is returned only for a direct or S3
/// invocation; an SQS batch always answers with its per-record failures.
pub async fn handle_lambda_event(
    handler: &dyn StageHandler,
    event: serde_json::Value,
    dead_letter: Option<&dyn Queue>,
) -> Result<serde_json::Value, StageError> {
    match classify(event).map_err(|e| StageError::Permanent(e.to_string()))? {
        Incoming::Direct(payload) => {
            if let Some(result) = handler.handle_direct_action(&payload).await {
                return result;
            }
            let message = handler.message_from_direct(payload)?;
            handle_checked(handler, message).await
        }
        Incoming::S3(objects) => {
            let mut results = Vec::with_capacity(objects.len());
            for object in &objects {
                let message = handler.message_from_s3(object)?;
                results.push(handle_checked(handler, message).await?);
            }
            Ok(serde_json::Value::Array(results))
        }
        Incoming::Sqs(records) => {
            let response = handle_sqs_batch(handler, &records, dead_letter).await;
            Ok(serde_json::to_value(response).unwrap_or_default())
        }
    }
}

/// Parses a body and hands it to `handler`, refusing messages for another stage.
pub async fn dispatch(
    handler: &dyn StageHandler,
    body: &str,
) -> Result<serde_json::Value, StageError> {
    let message = Message::parse(body).map_err(|e| StageError::Permanent(e.to_string()))?;
    handle_checked(handler, message).await
}

/// Answers a Lambda SQS batch: each record (a pipeline message or a wrapped S3
/// notification) is handled on its own; failures are reported
/// per record. A permanent failure goes to `dead_letter` (the stage's DLQ) with its reason
/// when one is configured, and is reported as a failure otherwise, so that the queue's
/// redrive policy dead-letters it after `maxReceiveCount`.
pub async fn handle_sqs_batch(
    handler: &dyn StageHandler,
    records: &[SqsRecord],
    dead_letter: Option<&dyn Queue>,
) -> BatchResponse {
    let mut response = BatchResponse::default();
    for record in records {
        match handle_body(handler, &record.body).await {
            Ok(summary) => info!(message_id = %record.message_id, %summary, "message handled"),
            Err(err) => {
                warn!(message_id = %record.message_id, error = %err, "message failed");
                let parked = match (&err, dead_letter) {
                    (StageError::Permanent(reason), Some(dlq)) => {
                        let body = serde_json::json!({"reason": reason, "body": record.body});
                        dlq.send(&body.to_string()).await.is_ok()
                    }
                    _ => false,
                };
                if !parked {
                    response.batch_item_failures.push(BatchItemFailure {
                        item_identifier: record.message_id.clone(),
                    });
                }
            }
        }
    }
    response
}

/// Options of [`drain`].
#[derive(Debug, Clone)]
pub struct DrainOptions {
    /// Visibility timeout of received messages.
    pub visibility: Duration,
    /// Delay before a retryable failure is redelivered.
    pub retry_delay: Duration,
    /// Stop after this many handled messages (a safety net against loops).
    pub max_messages: usize,
}

impl Default for DrainOptions {
    fn default() -> Self {
        DrainOptions {
            visibility: Duration::from_secs(900),
            retry_delay: Duration::from_millis(200),
            max_messages: 100_000,
        }
    }
}

/// One handled message, for the run report.
#[derive(Debug, Clone, Serialize)]
pub struct Handled {
    /// The stage.
    pub stage: Stage,
    /// The message id.
    pub id: String,
    /// `ok`, `retry` or `dead_letter`.
    pub outcome: &'static str,
    /// The handler's summary or the error.
    pub detail: serde_json::Value,
}

/// Drives the stages in-process until every queue is empty: receives from each stage's
/// queue in pipeline order, handles, deletes what succeeded, releases what may succeed
/// later and dead-letters what never will. `on_handled` sees each outcome as it happens.
pub async fn drain(
    queues: &Queues,
    handlers: &[Arc<dyn StageHandler>],
    options: &DrainOptions,
    on_handled: &(dyn Fn(&Handled) + Sync),
) -> Result<Vec<Handled>, QueueError> {
    let mut report = Vec::new();
    loop {
        let mut progressed = false;
        let mut waiting = false;
        for handler in handlers {
            let queue = queues.get(handler.stage()).await?;
            let received = queue.receive(10, options.visibility).await?;
            for message in received {
                progressed = true;
                let (outcome, detail) = match handle_body(handler.as_ref(), &message.body).await {
                    Ok(summary) => {
                        queue.delete(&message.receipt).await?;
                        ("ok", summary)
                    }
                    Err(StageError::Retryable(reason)) => {
                        queue
                            .release(&message.receipt, &reason, options.retry_delay)
                            .await?;
                        ("retry", serde_json::Value::String(reason))
                    }
                    Err(StageError::Permanent(reason)) => {
                        queue.dead_letter(&message, &reason).await?;
                        ("dead_letter", serde_json::Value::String(reason))
                    }
                };
                let handled = Handled {
                    stage: handler.stage(),
                    id: message.id,
                    outcome,
                    detail,
                };
                on_handled(&handled);
                report.push(handled);
                if report.len() >= options.max_messages {
                    return Ok(report);
                }
            }
            let stats = queue.stats().await?;
            if stats.visible > 0 || stats.in_flight > 0 {
                waiting = true;
            }
        }
        if !progressed {
            if !waiting {
                return Ok(report);
            }
            // Only delayed retries remain: wait for them to become visible.
            tokio::time::sleep(options.retry_delay.min(Duration::from_millis(100))).await;
        }
    }
}

/// The Lambda runtime loop every function's `main` runs: each invocation gets a span with
/// its request id, the invocation's deadline (for stages that checkpoint), and
/// [`handle_lambda_event`]; permanently failed SQS records go to `dead_letter` when set.
pub async fn serve_lambda(
    handler: Arc<dyn StageHandler>,
    dead_letter: Option<Arc<dyn Queue>>,
) -> Result<(), lambda_runtime::Error> {
    use tracing::Instrument;
    lambda_runtime::run(lambda_runtime::service_fn(
        |event: lambda_runtime::LambdaEvent<serde_json::Value>| {
            let (handler, dead_letter) = (handler.clone(), dead_letter.clone());
            let span = crate::telemetry::invocation_span(&event.context.request_id);
            let remaining = event
                .context
                .deadline()
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            let deadline = std::time::Instant::now() + remaining;
            async move {
                with_deadline(
                    deadline,
                    handle_lambda_event(handler.as_ref(), event.payload, dead_letter.as_deref()),
                )
                .await
                .map_err(lambda_runtime::Error::from)
            }
            .instrument(span)
        },
    ))
    .await
}
