//! The pipeline's shape, in one place: which queue each function consumes and which queue
//! it sends to, and the wiring that opens exactly those queues for a handler.
//!
//! ```text
//! ingest     ← ingest queue (raw files, retrains)     → preprocess queue
//! preprocess ← preprocess queue                        → train queue
//! train      ← train queue (and its own checkpoints)   → evaluate queue
//! evaluate   ← evaluate queue                          → deploy queue
//! deploy     ← deploy queue                            → deployments queue (announcements)
//! monitor    ← schedule, direct invocation, monitor queue (parts) → ingest queue (retrains),
//!                                                        monitor queue (parts)
//! batch      ← batch queue (jobs, partitions, batch/ objects) → batch queue (partitions)
//! evaluate, deploy, monitor: every registry change     → deployments queue (+ EventBridge)
//! score      ← HTTP                                    (no queue)
//! ```
//!
//! The Lambda mains ([`serve_stage`]), `lambdaml run`, `lambdaml local`, `lambdaml invoke`
//! and the demo all build handlers through [`Wired`], so the table below is the only place
//! that says which stage follows which. The monitor sends retrains to the ingest queue, not
//! the train queue: a retrain is a new dataset version (the window's labelled rows added to
//! the data the model was trained on), and only ingest makes dataset versions; preprocess,
//! train, evaluate and deploy then run as for any new data, so the promotion rule still
//! decides.

use std::sync::Arc;

use crate::message::Stage;
use crate::queue::{DEPLOYMENTS, Queue, QueueError, Queues};
use crate::store::ObjectStore;

/// The seven functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// Validates and versions raw files.
    Ingest,
    /// Splits and fits the feature pipeline.
    Preprocess,
    /// Fits the model.
    Train,
    /// Scores the holdout.
    Evaluate,
    /// Applies the promotion rule.
    Deploy,
    /// Serves predictions over HTTP.
    Score,
    /// Compares live traffic with the baseline.
    Monitor,
    /// Plans and scores batch jobs.
    Batch,
}

/// A queue a function sends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A stage's queue.
    Stage(Stage),
    /// Deploy's announcements of promotions and rollbacks.
    Deployments,
}

impl Function {
    /// Every function, pipeline order first.
    pub const ALL: [Function; 8] = [
        Function::Ingest,
        Function::Preprocess,
        Function::Train,
        Function::Evaluate,
        Function::Deploy,
        Function::Score,
        Function::Monitor,
        Function::Batch,
    ];

    /// Its name: the binary, the template's function, `lambdaml invoke NAME`.
    pub const fn name(self) -> &'static str {
        match self {
            Function::Ingest => "ingest",
            Function::Preprocess => "preprocess",
            Function::Train => "train",
            Function::Evaluate => "evaluate",
            Function::Deploy => "deploy",
            Function::Score => "score",
            Function::Monitor => "monitor",
            Function::Batch => "batch",
        }
    }

    /// The function named `name`.
    pub fn named(name: &str) -> Option<Function> {
        Function::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The queue whose messages it handles (its SQS event source), where it also parks
    /// what can never succeed.
    pub fn consumes(self) -> Option<Stage> {
        match self {
            Function::Ingest => Some(Stage::Ingest),
            Function::Preprocess => Some(Stage::Preprocess),
            Function::Train => Some(Stage::Train),
            Function::Evaluate => Some(Stage::Evaluate),
            Function::Deploy => Some(Stage::Deploy),
            Function::Batch => Some(Stage::Batch),
            // The parts of a window planned in parts (its direct and scheduled invocations
            // come from outside any queue).
            Function::Monitor => Some(Stage::Monitor),
            Function::Score => None,
        }
    }

    /// The queue it sends to.
    pub fn next(self) -> Option<Next> {
        match self {
            Function::Ingest => Some(Next::Stage(Stage::Preprocess)),
            Function::Preprocess => Some(Next::Stage(Stage::Train)),
            Function::Train => Some(Next::Stage(Stage::Evaluate)),
            Function::Evaluate => Some(Next::Stage(Stage::Deploy)),
            Function::Deploy => Some(Next::Deployments),
            Function::Monitor => Some(Next::Stage(Stage::Ingest)),
            // The planner sends one message per partition to its own queue.
            Function::Batch => Some(Next::Stage(Stage::Batch)),
            Function::Score => None,
        }
    }

    /// Whether it changes the registry, and so announces registry events on the
    /// deployments queue: evaluate registers versions, deploy decides them, the monitor
    /// decides rollouts.
    pub fn announces(self) -> bool {
        matches!(
            self,
            Function::Evaluate | Function::Deploy | Function::Monitor
        )
    }
}

impl std::fmt::Display for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The ports a function's handler is built from: the store, the queue it consumes (if any)
/// and the queue it sends to (if any), opened from the table above.
#[derive(Clone)]
pub struct Wired {
    /// The function.
    pub function: Function,
    /// The object store.
    pub store: Arc<dyn ObjectStore>,
    own: Option<Arc<dyn Queue>>,
    next: Option<Arc<dyn Queue>>,
    announcer: crate::events::Announcer,
}

impl std::fmt::Debug for Wired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wired")
            .field("function", &self.function)
            .field("store", &self.store.url())
            .field("own", &self.own.as_ref().map(|q| q.name()))
            .field("next", &self.next.as_ref().map(|q| q.name()))
            .finish()
    }
}

/// A handler asked its wiring for a queue its function does not have: a bug in the
/// handler, named here rather than a panic.
#[derive(Debug, thiserror::Error)]
#[error("the {function} function has no {which} queue")]
pub struct NoQueue {
    function: Function,
    which: &'static str,
}

impl Wired {
    /// Opens `function`'s queues from `queues`.
    pub async fn open(
        function: Function,
        store: Arc<dyn ObjectStore>,
        queues: &Queues,
    ) -> Result<Self, QueueError> {
        let own = match function.consumes() {
            Some(stage) => Some(queues.get(stage).await?),
            None => None,
        };
        let next = match function.next() {
            Some(Next::Stage(stage)) => Some(queues.get(stage).await?),
            Some(Next::Deployments) => Some(queues.named(DEPLOYMENTS).await?),
            None => None,
        };
        let deployments = if function.announces() {
            Some(queues.named(DEPLOYMENTS).await?)
        } else {
            None
        };
        Ok(Wired {
            function,
            store,
            own,
            next,
            announcer: crate::events::Announcer::new(deployments, None),
        })
    }

    /// This wiring with registry events also published to `bus` (EventBridge).
    pub fn with_bus(mut self, bus: Option<Arc<dyn crate::events::EventSink>>) -> Self {
        self.announcer = self.announcer.with_bus(bus);
        self
    }

    /// Where this function announces registry changes (empty for functions that make
    /// none).
    pub fn announcer(&self) -> crate::events::Announcer {
        self.announcer.clone()
    }

    /// The queue this function consumes.
    pub fn own(&self) -> Result<Arc<dyn Queue>, NoQueue> {
        self.own.clone().ok_or(NoQueue {
            function: self.function,
            which: "own",
        })
    }

    /// The queue this function consumes, if it has one.
    pub fn own_queue(&self) -> Option<Arc<dyn Queue>> {
        self.own.clone()
    }

    /// The queue this function sends to.
    pub fn next(&self) -> Result<Arc<dyn Queue>, NoQueue> {
        self.next.clone().ok_or(NoQueue {
            function: self.function,
            which: "next",
        })
    }

    /// The queue this function sends to, if it has one.
    pub fn next_queue(&self) -> Option<Arc<dyn Queue>> {
        self.next.clone()
    }
}

/// A stage handler built from its function's wiring.
pub trait Wire: Sized {
    /// Its function.
    const FUNCTION: Function;

    /// The handler over `wired`'s ports.
    fn wire(wired: &Wired) -> Result<Self, NoQueue>;
}

/// Why a handler could not be wired.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A queue could not be opened.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The handler asked for a queue its function does not have.
    #[error(transparent)]
    NoQueue(#[from] NoQueue),
}

/// Handler `H` over `store` and `queues`, wired as its function is everywhere.
pub async fn wire<H: Wire>(
    store: Arc<dyn ObjectStore>,
    queues: &Queues,
) -> Result<(H, Wired), WireError> {
    let wired = Wired::open(H::FUNCTION, store, queues).await?;
    Ok((H::wire(&wired)?, wired))
}

/// Opens `H`'s wiring from its Lambda environment (`LAMBDAML_STORE`, `LAMBDAML_QUEUES`);
/// also returns the wiring and `LAMBDAML_MAX_RECEIVES`.
pub async fn wire_from_env<H: Wire>()
-> Result<(H, Wired, u32), Box<dyn std::error::Error + Send + Sync>> {
    let config = crate::config::FunctionConfig::from_env()?;
    let store = crate::store::open_store(&config.store).await?;
    let queues = crate::queue::open_queues(&config.queues, config.max_receives).await?;
    let bus = crate::events::bus_from_env().await?;
    let wired = Wired::open(H::FUNCTION, store, &queues)
        .await?
        .with_bus(bus);
    Ok((H::wire(&wired)?, wired, config.max_receives))
}

/// A stage function's Lambda `main`: telemetry, its wiring from the environment, then the
/// runtime loop ([`crate::stage::serve_lambda`]), records that can never succeed parked in
/// its own queue's dead-letter queue.
#[cfg(feature = "lambda")]
pub async fn serve_stage<H>() -> Result<(), lambda_runtime::Error>
where
    H: Wire + crate::stage::StageHandler + 'static,
{
    use crate::telemetry::{self, LogFormat};
    telemetry::init(LogFormat::detect(), "info");
    let (handler, wired, max_receives) = wire_from_env::<H>().await?;
    crate::stage::serve_lambda(Arc::new(handler), wired.own_queue(), max_receives).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_is_consumed_by_one_function_and_fed_by_one() {
        for stage in Stage::ALL {
            let consumers: Vec<_> = Function::ALL
                .into_iter()
                .filter(|f| f.consumes() == Some(stage))
                .collect();
            assert_eq!(consumers.len(), 1, "{stage}");
            assert_eq!(consumers[0].name(), stage.as_str());
            let feeders = Function::ALL
                .into_iter()
                .filter(|f| f.next() == Some(Next::Stage(stage)))
                .count();
            // Ingest is fed by S3 notifications and by the monitor's retrains; batch by S3
            // notifications and by its own planner; the monitor's parts by its own planner
            // alone (its own queue is not its `next`).
            let expected = usize::from(stage != Stage::Monitor);
            assert_eq!(feeders, expected, "{stage}");
        }
        assert_eq!(
            Function::Monitor.next(),
            Some(Next::Stage(Stage::Ingest)),
            "retrains make a dataset version first"
        );
        for f in Function::ALL {
            assert_eq!(Function::named(f.name()), Some(f));
        }
        assert_eq!(Function::named("trian"), None);
    }

    #[tokio::test]
    async fn wiring_opens_the_queues_of_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(crate::store::MemoryStore::new());
        let url = format!("file://{}", dir.path().display());
        let queues = crate::queue::open_queues(&url, 3).await.unwrap();
        let w = Wired::open(Function::Train, store.clone(), &queues)
            .await
            .unwrap();
        assert!(w.own().unwrap().name().ends_with("train"));
        assert!(w.next().unwrap().name().ends_with("evaluate"));
        let w = Wired::open(Function::Deploy, store.clone(), &queues)
            .await
            .unwrap();
        assert!(w.next().unwrap().name().ends_with(DEPLOYMENTS));
        let w = Wired::open(Function::Score, store, &queues).await.unwrap();
        let e = w.next().unwrap_err().to_string();
        assert_eq!(e, "the score function has no next queue");
    }
}
