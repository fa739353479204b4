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

use crate::error::{Cause, Classify, Retry};
use crate::lambda::{
    BatchItemFailure, BatchResponse, Incoming, S3Object, SqsRecord, classify, s3_objects,
};
use crate::message::{DirectRequest, Envelope, Message, Stage, StageRequest};
use crate::queue::{Queue, QueueError, Queues};

/// A handler failure, classified, with its cause kept.
///
/// The reason is the whole sentence a person reads (a dead letter's reason, a log line);
/// the source keeps the typed cause for code that inspects it. Whether a failure is
/// retryable is decided by the cause's kind ([`Classify`]) when it has one: use `?` on the
/// ports' errors, [`StageError::context`] to say what was being done, and
/// [`StageError::invalid`] for input no retry will fix.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    /// Retrying cannot help: dead-letter with this reason.
    #[error("{reason}")]
    Permanent {
        /// Why.
        reason: String,
        /// The cause.
        #[source]
        source: Option<Cause>,
    },
    /// May succeed later: redeliver.
    #[error("{reason} (will retry)")]
    Retryable {
        /// Why.
        reason: String,
        /// The cause.
        #[source]
        source: Option<Cause>,
    },
}

impl StageError {
    /// A permanent failure with no other cause than `reason`.
    pub fn permanent(reason: impl std::fmt::Display) -> Self {
        StageError::Permanent {
            reason: reason.to_string(),
            source: None,
        }
    }

    /// A retryable failure with no other cause than `reason`.
    pub fn retryable(reason: impl std::fmt::Display) -> Self {
        StageError::Retryable {
            reason: reason.to_string(),
            source: None,
        }
    }

    /// Input no retry will fix (a spec that does not parse, a file without its label
    /// column): permanent, with `error` kept as the cause.
    pub fn invalid<E: std::error::Error + Send + Sync + 'static>(error: E) -> Self {
        StageError::Permanent {
            reason: error.to_string(),
            source: Some(std::sync::Arc::new(error)),
        }
    }

    /// A failure of this invocation's own machinery (writing a temporary file, say) that
    /// the input is not to blame for: retryable, with `error` kept as the cause.
    pub fn transient<E: std::error::Error + Send + Sync + 'static>(error: E) -> Self {
        StageError::Retryable {
            reason: error.to_string(),
            source: Some(std::sync::Arc::new(error)),
        }
    }

    /// `error` while doing `what` (`"reading the spec"`), classified by its kind.
    pub fn context<E>(what: impl std::fmt::Display, error: E) -> Self
    where
        E: Classify + std::error::Error + Send + Sync + 'static,
    {
        let reason = format!("{what}: {error}");
        let retry = error.retry();
        let source = Some(std::sync::Arc::new(error) as Cause);
        match retry {
            Retry::Retryable => StageError::Retryable { reason, source },
            Retry::Permanent => StageError::Permanent { reason, source },
        }
    }

    /// Whether a retry may help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StageError::Retryable { .. })
    }

    /// The reason, without the retry note.
    pub fn reason(&self) -> &str {
        match self {
            StageError::Permanent { reason, .. } | StageError::Retryable { reason, .. } => reason,
        }
    }
}

/// Every classified error becomes a stage error its kind decides; the reason is its text.
impl<E> From<E> for StageError
where
    E: Classify + std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        let reason = error.to_string();
        let retry = error.retry();
        let source = Some(std::sync::Arc::new(error) as Cause);
        match retry {
            Retry::Retryable => StageError::Retryable { reason, source },
            Retry::Permanent => StageError::Permanent { reason, source },
        }
    }
}

/// Runs a stage's CPU-bound work (`what` names it) on the blocking pool. A panic there is a
/// permanent failure with the panic's message: the same input panics again, so a retry only
/// burns receives (up to maxReceiveCount × the function's timeout). A task cancelled by a
/// runtime shutting down is retryable.
pub async fn run_blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StageError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        if e.is_panic() {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_string());
            StageError::permanent(format!(
                "{what} panicked (a bug; please report it): {message}"
            ))
        } else {
            StageError::retryable(format!("{what} was cancelled: {e}"))
        }
    })
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

tokio::task_local! {
    static SLOT: std::cell::RefCell<Option<tokio::sync::OwnedSemaphorePermit>>;
}

/// Frees the current message's worker slot of [`drain`] before the handler returns: a
/// handler calls it once its CPU-bound work is done and only writing is left (a batch
/// partition's output and manifest, fsyncs mostly), so the runner can start the next
/// message meanwhile; the message itself is still settled only when the handler returns.
/// Outside `drain` (a Lambda invocation) it does nothing.
pub fn release_slot() {
    let _ = SLOT.try_with(|slot| slot.borrow_mut().take());
}

/// A stage's message handler, as the runners hold it (`dyn`): implemented for every
/// [`Handler`]; its `handle` refuses a message addressed to another stage.
#[async_trait]
pub trait StageHandler: Send + Sync {
    /// The stage whose queue it reads.
    fn stage(&self) -> Stage;

    /// Handles one message; returns a JSON summary of what it did.
    async fn handle(&self, message: Message) -> Result<serde_json::Value, StageError>;

    /// Turns a direct invocation's payload into a message. By default the payload must be
    /// a full [`Message`]; stages with a simpler direct form override this.
    fn message_from_direct(&self, payload: serde_json::Value) -> Result<Message, StageError> {
        Message::parse(&payload.to_string()).map_err(StageError::invalid)
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
        Err(StageError::permanent(format!(
            "the {} stage takes no S3 events (got s3://{}/{})",
            self.stage(),
            object.bucket,
            object.key
        )))
    }
}

/// A stage's handler, typed: it receives its own request, taken out of the message once
/// (a message for another stage is refused before it is called), and its direct form is
/// read generically. Every `Handler` is a [`StageHandler`].
#[async_trait]
pub trait Handler: Send + Sync {
    /// What its queue carries.
    type Request: StageRequest;
    /// What a direct invocation may send instead of a whole message.
    type Direct: DirectRequest + Send;
    /// What it did, as the invocation's JSON answer and the run report show it.
    type Outcome: Serialize + Send;

    /// Handles one request.
    async fn handle_request(
        &self,
        envelope: &Envelope,
        request: Self::Request,
    ) -> Result<Self::Outcome, StageError>;

    /// Where its runs are recorded (`runs/<run>/record.json`, see
    /// [`crate::recorder`]); `None` records nothing.
    fn run_records(&self) -> Option<&dyn crate::store::ObjectStore>;

    /// Handles a direct payload that is neither a message nor the direct form (deploy's
    /// rollback); `None` reads it as a message or the direct form.
    async fn direct_action(
        &self,
        _payload: &serde_json::Value,
    ) -> Option<Result<serde_json::Value, StageError>> {
        None
    }

    /// The message an object named by an S3 notification stands for. By default a stage
    /// takes no S3 events.
    fn s3_message(&self, object: &S3Object) -> Result<Message, StageError> {
        Err(StageError::permanent(format!(
            "the {} stage takes no S3 events (got s3://{}/{})",
            Self::Request::STAGE,
            object.bucket,
            object.key
        )))
    }
}

#[async_trait]
impl<H: Handler> StageHandler for H {
    fn stage(&self) -> Stage {
        H::Request::STAGE
    }

    /// Handles the request in the message's run ([`crate::recorder::current_run`]), its
    /// step recorded as it starts and ends.
    async fn handle(&self, message: Message) -> Result<serde_json::Value, StageError> {
        let store = self.run_records();
        let copy = store.map(|_| message.clone());
        if let (Some(store), Some(m)) = (store, &copy) {
            crate::recorder::started(store, m).await;
        }
        let started = std::time::Instant::now();
        let run = message.run_id.clone();
        let result = crate::recorder::with_run(run, async move {
            let (envelope, body) = message.into_parts();
            let request = H::Request::from_body(body).map_err(|other| {
                StageError::permanent(format!(
                    "a {other} message reached the {} stage",
                    H::Request::STAGE
                ))
            })?;
            let outcome = self.handle_request(&envelope, request).await?;
            serde_json::to_value(outcome).map_err(StageError::invalid)
        })
        .await;
        if let (Some(store), Some(m)) = (store, &copy) {
            let seconds = started.elapsed().as_secs_f64();
            crate::recorder::ended(store, m, result.as_ref(), seconds).await;
        }
        result
    }

    /// A whole message (it has `version` or `stage`), or the stage's direct form.
    fn message_from_direct(&self, payload: serde_json::Value) -> Result<Message, StageError> {
        if payload.get("version").is_some() || payload.get("stage").is_some() {
            return Message::parse(&payload.to_string()).map_err(StageError::invalid);
        }
        let direct: H::Direct = serde_json::from_value(payload).map_err(|e| {
            StageError::permanent(format!("invalid {} request: {e}", H::Request::STAGE))
        })?;
        Ok(direct.into_message())
    }

    async fn handle_direct_action(
        &self,
        payload: &serde_json::Value,
    ) -> Option<Result<serde_json::Value, StageError>> {
        self.direct_action(payload).await
    }

    fn message_from_s3(&self, object: &S3Object) -> Result<Message, StageError> {
        self.s3_message(object)
    }
}

/// Handles one SQS body: a pipeline message, or a wrapped S3 notification.
async fn handle_body(
    handler: &dyn StageHandler,
    body: &str,
) -> Result<serde_json::Value, StageError> {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(body)
        && let Some(objects) = s3_objects(&value)
    {
        let objects = objects.map_err(StageError::invalid)?;
        let mut results = Vec::with_capacity(objects.len());
        for object in &objects {
            let message = handler.message_from_s3(object)?;
            results.push(handler.handle(message).await?);
        }
        return Ok(serde_json::Value::Array(results));
    }
    dispatch(handler, body).await
}

/// Where the records of a Lambda SQS batch came from: the stage's own queue, in which a
/// record that can never succeed is parked (its dead-letter queue, with the reason) instead
/// of being retried until the redrive policy moves it without one.
#[derive(Debug, Clone, Copy)]
pub struct SqsSource<'a> {
    /// The queue the event source mapping reads.
    pub queue: &'a dyn Queue,
    /// The queue's maxReceiveCount: a record that fails on this delivery is parked with its
    /// error even when the error was retryable.
    pub max_receives: u32,
}

/// Answers any Lambda event for `handler`: a direct payload, an S3 notification, or an SQS
/// batch (answered with `batchItemFailures`). An error is returned only for a direct or S3
/// invocation; an SQS batch always answers with its per-record failures.
pub async fn handle_lambda_event(
    handler: &dyn StageHandler,
    event: serde_json::Value,
    source: Option<SqsSource<'_>>,
) -> Result<serde_json::Value, StageError> {
    match classify(event).map_err(StageError::invalid)? {
        Incoming::Direct(payload) => {
            if let Some(result) = handler.handle_direct_action(&payload).await {
                return result;
            }
            let message = handler.message_from_direct(payload)?;
            handler.handle(message).await
        }
        Incoming::S3(objects) => {
            let mut results = Vec::with_capacity(objects.len());
            for object in &objects {
                let message = handler.message_from_s3(object)?;
                results.push(handler.handle(message).await?);
            }
            Ok(serde_json::Value::Array(results))
        }
        Incoming::Sqs(records) => {
            let response = handle_sqs_batch(handler, &records, source).await;
            Ok(serde_json::to_value(response).unwrap_or_default())
        }
    }
}

/// Parses a body and hands it to `handler`, refusing messages for another stage.
pub async fn dispatch(
    handler: &dyn StageHandler,
    body: &str,
) -> Result<serde_json::Value, StageError> {
    let message = Message::parse(body).map_err(StageError::invalid)?;
    handler.handle(message).await
}

/// Answers a Lambda SQS batch: each record (a pipeline message or a wrapped S3
/// notification) is handled on its own and failures are reported per record, so one bad
/// record never fails its batch. A record that can never succeed — a permanent failure, or
/// any failure on its `max_receives`-th delivery — is parked in the source queue's
/// dead-letter queue with its reason (and so not reported); without a source, or when
/// parking fails, it is reported and the queue's redrive policy dead-letters it after
/// maxReceiveCount deliveries.
pub async fn handle_sqs_batch(
    handler: &dyn StageHandler,
    records: &[SqsRecord],
    source: Option<SqsSource<'_>>,
) -> BatchResponse {
    let mut response = BatchResponse::default();
    for record in records {
        let delivery = crate::recorder::Delivery {
            message_id: Some(record.message_id.clone()),
            receive_count: record.receive_count(),
            max_receives: source.map(|s| s.max_receives.max(1)),
        };
        let handled =
            crate::recorder::with_delivery(delivery, handle_body(handler, &record.body)).await;
        match handled {
            Ok(summary) => info!(message_id = %record.message_id, %summary, "message handled"),
            Err(err) => {
                let receives = record.receive_count();
                warn!(message_id = %record.message_id, receives, error = %err, "message failed");
                let parked = match source {
                    Some(source)
                        if !err.is_retryable() || receives >= source.max_receives.max(1) =>
                    {
                        let reason = if err.is_retryable() {
                            format!(
                                "failed on delivery {receives} of {}: {}",
                                source.max_receives,
                                err.reason()
                            )
                        } else {
                            err.reason().to_string()
                        };
                        let received = crate::queue::Received {
                            id: record.message_id.clone(),
                            receipt: record.receipt_handle.clone(),
                            body: record.body.clone(),
                            receive_count: receives,
                        };
                        match source.queue.dead_letter(&received, &reason).await {
                            Ok(()) => true,
                            Err(e) => {
                                warn!(message_id = %record.message_id, error = %e, "could not park the message; it will be redelivered");
                                false
                            }
                        }
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
    /// Messages of the fan-out stages (batch, ingest and monitor, whose work is split in
    /// partitions) worked on at once; a handler that frees its slot early
    /// ([`release_slot`]) lets one more start while it finishes.
    pub workers: usize,
}

impl Default for DrainOptions {
    fn default() -> Self {
        DrainOptions {
            visibility: Duration::from_secs(900),
            retry_delay: Duration::from_millis(200),
            max_messages: 100_000,
            workers: 1,
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
/// later and dead-letters what never will. The fan-out stages' messages (batch, ingest,
/// monitor) are worked on `options.workers` at a time, their queue drained before the next
/// stage's (their partitions fan out); the others one at a time. `on_handled` sees each
/// outcome as it happens. On a queue error, or after `options.max_messages`, no further
/// message is taken and those in flight are finished and settled before it returns.
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
            let got = if handler.stage().fans_out() {
                match drain_fan_out(
                    queue.as_ref(),
                    handler.as_ref(),
                    options,
                    on_handled,
                    &mut report,
                )
                .await?
                {
                    FanOut::Enough => return Ok(report),
                    FanOut::Drained { got } => got,
                }
            } else {
                let received = queue.receive(10, options.visibility).await?;
                let got = !received.is_empty();
                for message in received {
                    let handled =
                        handle_received(queue.as_ref(), handler.as_ref(), message, options).await?;
                    on_handled(&handled);
                    report.push(handled);
                    if report.len() >= options.max_messages {
                        return Ok(report);
                    }
                }
                got
            };
            progressed |= got;
            // Whether messages wait matters only when no queue gave any (then the loop
            // sleeps or ends); counting them reads every message of a local queue, which
            // cost a batch worker milliseconds between partitions.
            if !got {
                let stats = queue.stats().await?;
                if stats.visible > 0 || stats.in_flight > 0 {
                    waiting = true;
                }
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

/// How [`drain_fan_out`] ended.
enum FanOut {
    /// The queue gave nothing more; `got` says whether it gave anything.
    Drained { got: bool },
    /// `max_messages` were handled.
    Enough,
}

/// Drains one fan-out stage's queue (see [`drain`]). Messages stream through
/// `options.workers` slots: a slot that frees takes the next message at once (waiting for a
/// whole round would leave a core idle behind the slowest partition), and only as many are
/// received as there are free slots, so that several runners sharing the queue share its
/// partitions. A handler may free its slot before it returns ([`release_slot`]: its writing
/// overlaps the next message's work), so up to twice `workers` messages are in flight. A
/// queue error or the message limit stops the taking, not the messages already taken:
/// cancelling them would leave them invisible until their visibility timeout, some with
/// their output half written.
async fn drain_fan_out(
    queue: &dyn Queue,
    handler: &dyn StageHandler,
    options: &DrainOptions,
    on_handled: &(dyn Fn(&Handled) + Sync),
    report: &mut Vec<Handled>,
) -> Result<FanOut, QueueError> {
    use futures::StreamExt;
    let workers = options.workers.max(1);
    let slots = Arc::new(tokio::sync::Semaphore::new(workers));
    let most = 2 * workers;
    let mut got = false;
    let mut empty = false;
    let mut failed: Option<QueueError> = None;
    let mut enough = false;
    let mut in_flight = futures::stream::FuturesUnordered::new();
    loop {
        let free = slots
            .available_permits()
            .min(most.saturating_sub(in_flight.len()))
            .min(10);
        if failed.is_none() && !enough && !empty && free > 0 {
            match queue.receive(free, options.visibility).await {
                Ok(received) => {
                    empty = received.is_empty();
                    got |= !empty;
                    for message in received {
                        // `free` permits were available and only this task takes them.
                        let permit = slots.clone().try_acquire_owned().ok();
                        in_flight.push(SLOT.scope(
                            std::cell::RefCell::new(permit),
                            handle_received(queue, handler, message, options),
                        ));
                    }
                }
                Err(e) => failed = Some(e),
            }
        }
        if in_flight.is_empty() {
            break;
        }
        let admit = failed.is_none() && !enough && !empty && in_flight.len() < most;
        tokio::select! {
            handled = in_flight.next() => {
                let Some(handled) = handled else {
                    break;
                };
                // What it handled may have sent more (a job its partitions).
                empty = false;
                match handled {
                    Ok(handled) => {
                        on_handled(&handled);
                        report.push(handled);
                        enough |= report.len() >= options.max_messages;
                    }
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            // A handler freed its slot: go and take the next message.
            permit = slots.clone().acquire_owned(), if admit => drop(permit),
        }
    }
    match (failed, enough) {
        (Some(e), _) => Err(e),
        (None, true) => Ok(FanOut::Enough),
        (None, false) => Ok(FanOut::Drained { got }),
    }
}

/// Handles one received message and settles it on `queue`.
async fn handle_received(
    queue: &dyn Queue,
    handler: &dyn StageHandler,
    message: crate::queue::Received,
    options: &DrainOptions,
) -> Result<Handled, QueueError> {
    let delivery = crate::recorder::Delivery {
        message_id: Some(message.id.clone()),
        receive_count: message.receive_count,
        max_receives: queue.max_receives(),
    };
    let max = delivery.max_receives;
    let last = max.is_some_and(|m| message.receive_count >= m);
    let handled =
        crate::recorder::with_delivery(delivery, handle_body(handler, &message.body)).await;
    let (outcome, detail) = match handled {
        Ok(summary) => {
            queue.delete(&message.receipt).await?;
            ("ok", summary)
        }
        Err(StageError::Retryable { reason, .. }) if last => {
            let reason = format!(
                "failed on delivery {} of {}: {reason}",
                message.receive_count,
                max.unwrap_or(message.receive_count)
            );
            queue.dead_letter(&message, &reason).await?;
            ("dead_letter", serde_json::Value::String(reason))
        }
        Err(StageError::Retryable { reason, .. }) => {
            queue
                .release(&message.receipt, &reason, options.retry_delay)
                .await?;
            ("retry", serde_json::Value::String(reason))
        }
        Err(StageError::Permanent { reason, .. }) => {
            queue.dead_letter(&message, &reason).await?;
            ("dead_letter", serde_json::Value::String(reason))
        }
    };
    Ok(Handled {
        stage: handler.stage(),
        id: message.id,
        outcome,
        detail,
    })
}

#[cfg(feature = "lambda")]
/// The Lambda runtime loop every function's `main` runs: each invocation gets a span with
/// its request id, the invocation's deadline (for stages that checkpoint), and
/// [`handle_lambda_event`]; SQS records that can never succeed are parked in `own_queue`'s
/// dead-letter queue with their reason (see [`handle_sqs_batch`]).
pub async fn serve_lambda(
    handler: Arc<dyn StageHandler>,
    own_queue: Option<Arc<dyn Queue>>,
    max_receives: u32,
) -> Result<(), lambda_runtime::Error> {
    use tracing::Instrument;
    lambda_runtime::run(lambda_runtime::service_fn(
        |event: lambda_runtime::LambdaEvent<serde_json::Value>| {
            let (handler, own_queue) = (handler.clone(), own_queue.clone());
            let span = crate::telemetry::invocation_span(
                &event.context.request_id,
                event.context.xray_trace_id.as_deref(),
            );
            let remaining = event
                .context
                .deadline()
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            let deadline = std::time::Instant::now() + remaining;
            async move {
                let source = own_queue.as_deref().map(|queue| SqsSource {
                    queue,
                    max_receives,
                });
                let request_id = event.context.request_id.clone();
                crate::recorder::with_request_id(
                    request_id,
                    with_deadline(
                        deadline,
                        handle_lambda_event(handler.as_ref(), event.payload, source),
                    ),
                )
                .await
                .map_err(lambda_runtime::Error::from)
            }
            .instrument(span)
        },
    ))
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::message::{IngestRequest, StageMessage};
    use crate::queue::LocalQueue;
    use crate::store::ObjectKey;

    #[tokio::test]
    async fn a_panic_in_blocking_work_is_permanent_with_its_message() {
        let err = run_blocking("ingest", || -> u32 {
            panic!("index out of bounds: poison")
        })
        .await
        .unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.reason().contains("ingest panicked"), "{err}");
        assert!(err.reason().contains("poison"), "{err}");
        let n = format!("row {}", 7);
        let err = run_blocking("train", move || -> u32 { panic!("{n}") })
            .await
            .unwrap_err();
        assert!(err.reason().contains("row 7"), "{err}");
        assert_eq!(run_blocking("x", || 3).await.unwrap(), 3);
    }

    /// Fails every message as if the store were unreachable.
    #[derive(Debug)]
    struct Unreachable;

    #[async_trait]
    impl StageHandler for Unreachable {
        fn stage(&self) -> Stage {
            Stage::Ingest
        }
        async fn handle(&self, _: Message) -> Result<serde_json::Value, StageError> {
            Err(StageError::retryable("the store did not answer"))
        }
    }

    #[tokio::test]
    async fn a_retryable_failure_is_redelivered_until_the_last_delivery_then_parked() {
        let dir = tempfile::tempdir().unwrap();
        // The local queue would give up after 10; the batch handler parks at 3.
        let queue = LocalQueue::open(dir.path(), 10).unwrap();
        let body = Message::new(
            "r",
            None,
            StageMessage::Ingest(IngestRequest {
                key: ObjectKey::new("raw/a/b.csv".to_string()).unwrap(),
                dataset: None,
            }),
        )
        .to_body();
        queue.send(&body).await.unwrap();
        let source = SqsSource {
            queue: &queue,
            max_receives: 3,
        };
        for delivery in 1..=3u32 {
            let received = queue.receive(10, Duration::from_millis(1)).await.unwrap();
            assert_eq!(received.len(), 1, "delivery {delivery}");
            assert_eq!(received[0].receive_count, delivery);
            let event = crate::lambda::sqs_event(&received, "arn:aws:sqs:us-east-1:1:q");
            let out = handle_lambda_event(&Unreachable, event, Some(source))
                .await
                .unwrap();
            let failures = out["batchItemFailures"].as_array().unwrap().len();
            if delivery < 3 {
                assert_eq!(
                    failures, 1,
                    "reported for redelivery on delivery {delivery}"
                );
                assert!(queue.dead_letters(10).await.unwrap().is_empty());
                tokio::time::sleep(Duration::from_millis(5)).await;
            } else {
                assert_eq!(failures, 0, "parked on the last delivery");
            }
        }
        let dead = queue.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].body, body);
        assert_eq!(
            dead[0].reason,
            "failed on delivery 3 of 3: the store did not answer"
        );
        assert!(
            queue
                .receive(10, Duration::from_secs(1))
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// The first partition frees its slot (its "writing" is left), then waits until the
    /// second has started: with one worker slot that happens only through
    /// [`release_slot`]. Both messages are still unsettled while they overlap.
    struct Overlapping {
        release: bool,
        seen: std::sync::atomic::AtomicUsize,
        second: tokio::sync::Notify,
        queue: Arc<dyn crate::queue::Queue>,
    }

    #[async_trait]
    impl StageHandler for Overlapping {
        fn stage(&self) -> Stage {
            Stage::Batch
        }
        async fn handle(&self, _: Message) -> Result<serde_json::Value, StageError> {
            let n = self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n == 0 {
                if self.release {
                    release_slot();
                }
                self.second.notified().await;
                Ok(serde_json::json!({"first": true}))
            } else {
                let stats = self.queue.stats().await.map_err(StageError::transient)?;
                self.second.notify_one();
                Ok(serde_json::json!({"in_flight": stats.in_flight}))
            }
        }
    }

    #[tokio::test]
    async fn a_freed_slot_takes_the_next_message_before_the_first_is_settled() {
        for release in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let queues = crate::queue::open_queues(&format!("file://{}", dir.path().display()), 5)
                .await
                .unwrap();
            let queue = queues.get(Stage::Batch).await.unwrap();
            for partition in 0..2 {
                let body = Message::new(
                    "batch-j",
                    Some("m".to_string()),
                    StageMessage::BatchPartition(crate::message::BatchPartitionRequest {
                        model: "m".to_string(),
                        job: "j".to_string(),
                        partition,
                    }),
                )
                .to_body();
                queue.send(&body).await.unwrap();
            }
            let handler: Arc<dyn StageHandler> = Arc::new(Overlapping {
                release,
                seen: Default::default(),
                second: tokio::sync::Notify::new(),
                queue: queue.clone(),
            });
            let options = DrainOptions {
                workers: 1,
                ..DrainOptions::default()
            };
            let drained = tokio::time::timeout(
                Duration::from_secs(3),
                drain(&queues, &[handler], &options, &|_| {}),
            )
            .await;
            if release {
                let handled = drained.expect("the second message started").unwrap();
                assert_eq!(handled.len(), 2);
                assert!(handled.iter().all(|h| h.outcome == "ok"), "{handled:?}");
                // The second saw both in flight: the first was not deleted early. (The two
                // finish together; their order in the report is not fixed.)
                let second = handled.iter().find(|h| !h.detail["in_flight"].is_null());
                assert_eq!(second.unwrap().detail["in_flight"], 2, "{handled:?}");
                assert!(
                    handled.iter().any(|h| h.detail["first"] == true),
                    "{handled:?}"
                );
                let stats = queue.stats().await.unwrap();
                assert_eq!((stats.visible, stats.in_flight), (0, 0));
            } else {
                assert!(
                    drained.is_err(),
                    "one slot, never freed: one message at a time"
                );
            }
        }
    }
}
