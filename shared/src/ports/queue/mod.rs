//! The queue port and its adapters: how stages hand work to each other.
//!
//! The port has SQS's semantics, because that is what runs in production and because they
//! are the right ones for a pipeline: delivery is at least once; a received message stays
//! invisible for a visibility timeout and reappears unless it is deleted; a message
//! received too many times moves to a dead-letter area with its last error. A handler that
//! knows a message can never succeed (an unknown message version, say) dead-letters it at
//! once with its reason instead of letting it be retried.
//!
//! Adapters: [`LocalQueue`], a durable queue in a directory (the embedded default), and
//! [`SqsQueue`]. A set of stage queues is opened by URL with [`open_queues`]:
//! `file://DIR` (one sub-directory per stage) or `sqs://PREFIX` (queue `PREFIX<stage>`
//! with dead-letter queue `PREFIX<stage>-dlq`).

mod local;
#[cfg(feature = "sqs")]
mod sqs;

use crate::error::{BackendKind, Cause, Classify, Retry};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use local::LocalQueue;
#[cfg(feature = "sqs")]
pub use sqs::SqsQueue;

use crate::message::Stage;

/// Errors of the queue port.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The receipt is not (or no longer) valid: the message was received again by someone
    /// else after this receipt's visibility timeout ran out.
    #[error("stale receipt {0}: the message was redelivered after its visibility timeout")]
    StaleReceipt(String),
    /// A malformed receipt.
    #[error("invalid receipt {0:?}")]
    InvalidReceipt(String),
    /// The queue URL could not be understood.
    #[error("invalid queue URL {url:?}: {reason}")]
    InvalidUrl {
        /// The rejected URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Local I/O failed.
    #[error("queue I/O error on {path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A stored message file is corrupt.
    #[error("corrupt queue entry {path}: {reason}")]
    Corrupt {
        /// The file involved.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The remote backend failed: throttled, timed out or unavailable (retry later), or
    /// refused the request.
    #[error("queue backend error on {queue} ({kind}): {message}")]
    Backend {
        /// The queue involved.
        queue: String,
        /// What kind of failure, for retrying.
        kind: BackendKind,
        /// What the backend said, in one line.
        message: String,
        /// The backend's own error.
        #[source]
        source: Cause,
    },
}

impl Classify for QueueError {
    /// A queue that cannot be reached or written may work later; a malformed URL or
    /// receipt, and a request the backend refused, will not.
    fn retry(&self) -> Retry {
        match self {
            QueueError::Backend { kind, .. } => kind.retry(),
            QueueError::InvalidUrl { .. } | QueueError::InvalidReceipt(_) => Retry::Permanent,
            _ => Retry::Retryable,
        }
    }
}

impl QueueError {
    /// A backend failure with only a message as its cause.
    pub(crate) fn unavailable(queue: impl Into<String>, message: impl Into<String>) -> Self {
        let message = message.into();
        QueueError::Backend {
            queue: queue.into(),
            kind: BackendKind::Unavailable,
            source: std::sync::Arc::new(crate::error::Message(message.clone())),
            message,
        }
    }

    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        QueueError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// A received message and the receipt that acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The message id, stable across redeliveries.
    pub id: String,
    /// The handle for `delete`, `release` and `dead_letter`; valid until the visibility
    /// timeout runs out.
    pub receipt: String,
    /// The message body.
    pub body: String,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
}

/// A message in the dead-letter area, with why it is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The original message id.
    pub id: String,
    /// The body as it was sent.
    pub body: String,
    /// How many times it was received.
    pub receive_count: u32,
    /// The last error recorded for it.
    pub reason: String,
}

/// Counts of messages in a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Ready to be received.
    pub visible: u64,
    /// Received and not yet deleted nor timed out.
    pub in_flight: u64,
    /// In the dead-letter area.
    pub dead: u64,
}

/// The queue port. See the module docs for its semantics.
#[async_trait]
pub trait Queue: Send + Sync + Debug {
    /// Enqueues a message; returns its id.
    async fn send(&self, body: &str) -> Result<String, QueueError>;

    /// Receives up to `max` visible messages, hiding each for `visibility`. Messages that
    /// have been received the maximum number of times are moved to the dead-letter area
    /// instead of being returned.
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Received>, QueueError>;

    /// Acknowledges a message: it will not be delivered again. Deleting a message that is
    /// already gone succeeds; deleting with a receipt that a later receive replaced fails.
    async fn delete(&self, receipt: &str) -> Result<(), QueueError>;

    /// Gives a message back after a failure: visible again after `delay`, with `error`
    /// recorded as its last error where the backend can keep it.
    async fn release(&self, receipt: &str, error: &str, delay: Duration) -> Result<(), QueueError>;

    /// Keeps a message being worked on invisible for `timeout` from now (a heartbeat for
    /// work that may outlast the visibility timeout it was received with).
    async fn extend(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError>;

    /// Moves a message that can never succeed to the dead-letter area at once, with its
    /// reason.
    async fn dead_letter(&self, message: &Received, reason: &str) -> Result<(), QueueError>;

    /// Up to `max` messages of the dead-letter area, for inspection (they stay there).
    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError>;

    /// Message counts.
    async fn stats(&self) -> Result<QueueStats, QueueError>;

    /// A human-readable name (directory or queue URL).
    fn name(&self) -> String;

    /// The delivery after which the queue gives a message up to its dead-letter queue, when
    /// this side knows it (a local queue does; SQS's redrive policy is the queue's own).
    fn max_receives(&self) -> Option<u32> {
        None
    }
}

/// The queue deploy announces promotions and rollbacks on, for whoever listens (the score
/// function's reload, notifications).
pub const DEPLOYMENTS: &str = "deployments";

/// The queues of every stage, opened lazily from one URL.
#[derive(Debug)]
pub struct Queues {
    url: String,
    backend: QueueBackend,
    max_receives: u32,
    opened: Mutex<HashMap<String, Arc<dyn Queue>>>,
}

#[derive(Debug, Clone)]
enum QueueBackend {
    Local(std::path::PathBuf),
    #[cfg(feature = "sqs")]
    Sqs {
        prefix: String,
        client: aws_sdk_sqs::Client,
    },
}

/// Opens the stage queues named by `url` (see the module docs). `max_receives` applies to
/// local queues; SQS queues use their redrive policy.
pub async fn open_queues(url: &str, max_receives: u32) -> Result<Queues, QueueError> {
    let backend = if let Some(path) = url.strip_prefix("file://") {
        if path.is_empty() {
            return Err(QueueError::InvalidUrl {
                url: url.to_string(),
                reason: "file:// needs a directory".to_string(),
            });
        }
        QueueBackend::Local(path.into())
    } else if let Some(prefix) = url.strip_prefix("sqs://") {
        sqs_backend(url, prefix).await?
    } else {
        return Err(QueueError::InvalidUrl {
            url: url.to_string(),
            reason: "unknown scheme; use file://DIR or sqs://QUEUE-NAME-PREFIX".to_string(),
        });
    };
    Ok(Queues {
        url: url.to_string(),
        backend,
        max_receives: max_receives.max(1),
        opened: Mutex::new(HashMap::new()),
    })
}

#[cfg(feature = "sqs")]
async fn sqs_backend(_url: &str, prefix: &str) -> Result<QueueBackend, QueueError> {
    let config = crate::store::sdk_config().await;
    Ok(QueueBackend::Sqs {
        prefix: prefix.to_string(),
        client: aws_sdk_sqs::Client::new(&config),
    })
}

#[cfg(not(feature = "sqs"))]
async fn sqs_backend(url: &str, _prefix: &str) -> Result<QueueBackend, QueueError> {
    Err(no_sqs(url))
}

#[cfg(not(feature = "sqs"))]
fn no_sqs(url: &str) -> QueueError {
    QueueError::InvalidUrl {
        url: url.to_string(),
        reason: "this build has no SQS adapter: build lambdaml-shared with the `sqs` feature"
            .to_string(),
    }
}

/// Opens one queue by URL: an SQS queue URL (`https://…`, or `http://…` on an emulator) or
/// a local queue directory (`file://DIR`). Functions use it for their dead-letter queue.
pub async fn open_queue(url: &str, max_receives: u32) -> Result<Arc<dyn Queue>, QueueError> {
    if let Some(path) = url.strip_prefix("file://") {
        Ok(Arc::new(LocalQueue::open(path, max_receives)?))
    } else if url.starts_with("https://") || url.starts_with("http://") {
        #[cfg(feature = "sqs")]
        return Ok(Arc::new(SqsQueue::new(
            aws_sdk_sqs::Client::new(&crate::store::sdk_config().await),
            url,
        )));
        #[cfg(not(feature = "sqs"))]
        return Err(no_sqs(url));
    } else {
        Err(QueueError::InvalidUrl {
            url: url.to_string(),
            reason: "use an SQS queue URL or file://DIR".to_string(),
        })
    }
}

impl Queues {
    /// The queue that feeds `stage`.
    pub async fn get(&self, stage: Stage) -> Result<Arc<dyn Queue>, QueueError> {
        self.named(stage.as_str()).await
    }

    /// A queue by name: a stage's, or [`DEPLOYMENTS`] (deployment events).
    pub async fn named(&self, name: &str) -> Result<Arc<dyn Queue>, QueueError> {
        if let Some(q) = self
            .opened
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
        {
            return Ok(q.clone());
        }
        let queue: Arc<dyn Queue> = match &self.backend {
            QueueBackend::Local(dir) => {
                Arc::new(LocalQueue::open(dir.join(name), self.max_receives)?)
            }
            #[cfg(feature = "sqs")]
            QueueBackend::Sqs { prefix, client } => {
                Arc::new(SqsQueue::by_name(client.clone(), &format!("{prefix}{name}")).await?)
            }
        };
        self.opened
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_string(), queue.clone());
        Ok(queue)
    }

    /// The URL these queues were opened from.
    pub fn url(&self) -> &str {
        &self.url
    }
}
