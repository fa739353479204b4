//! The batch function: scores files too large for one request, partitioned over the batch
//! queue so Lambda's concurrency (or the local runner's workers) does the fan-out.
//!
//! One handler takes three messages (see [`lambdaml::batch`] for the plan, the manifests and
//! the bucket layout):
//! - **a job** (`lambdaml batch score`, a direct invocation, or an input object landing
//!   under `batch/<model>/<job>/input/`): plan its partitions ([`plan`]), write
//!   `plan.json`, send one partition message each. A job planned before (a redelivery, a
//!   `lambdaml batch resume`) re-sends the messages of the partitions not yet scored;
//! - **a partition**: score its rows with the version's fitted pipeline and weights — the
//!   score function's code ([`lambdaml::features`], [`lambdaml::model::DenseModel`]) —
//!   write `output/part-NNNNN.parquet`, its rejected rows and, last, its manifest; the
//!   worker that finds every partition's manifest written writes the job's ([`finish`]);
//! - **another object under `batch/`** (the job's own outputs, notified by S3): ignored.
//!
//! A partition already scored writes nothing again; a job whose version was rejected or
//! deleted, or whose input changed (another etag), fails with the reason in its manifest,
//! and its remaining partitions stop without scoring.

mod fast;
mod finish;
mod plan;
mod read;
mod score;
mod write;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lambdaml::batch::{JobManifest, JobOptions, JobStatus, Plan};
use lambdaml::lambda::S3Object;
use lambdaml::layout;
use lambdaml::message::{
    BatchInput, BatchJobRequest, BatchObjectRequest, BatchPartitionRequest, Envelope, Message,
    StageMessage, batch_run_id,
};
use lambdaml::pipeline::{Function, NoQueue, Wire, Wired};
use lambdaml::queue::Queue;
use lambdaml::stage::{Handler, StageError};
use lambdaml::store::{ObjectKey, ObjectStore, ObjectStoreExt, StoreError};
use serde::Serialize;

pub use plan::MAX_PARTITION_ROWS;
pub use score::Scorer;

/// What one batch message did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BatchOutcome {
    /// A job was planned (or, `existing`, had been: its unscored partitions were re-sent).
    Planned {
        /// The model.
        model: String,
        /// The job.
        job: String,
        /// The version it scores with.
        version: String,
        /// Its partitions.
        partitions: usize,
        /// Its rows, as planned.
        rows: u64,
        /// Partition messages sent.
        sent: usize,
        /// Whether the plan was already there.
        existing: bool,
        /// The plan.
        plan: ObjectKey,
    },
    /// A partition was scored.
    Scored {
        /// The model.
        model: String,
        /// The job.
        job: String,
        /// The partition.
        partition: usize,
        /// Records read.
        rows_in: u64,
        /// Rows scored.
        rows_out: u64,
        /// Rows rejected.
        rejected: u64,
        /// Its output.
        output: ObjectKey,
        /// How the job ended, when this partition was its last.
        #[serde(skip_serializing_if = "Option::is_none")]
        job_status: Option<JobStatus>,
    },
    /// The partition had been scored (a redelivery): nothing was written.
    AlreadyScored {
        /// The model.
        model: String,
        /// The job.
        job: String,
        /// The partition.
        partition: usize,
        /// How the job ended, when it has.
        #[serde(skip_serializing_if = "Option::is_none")]
        job_status: Option<JobStatus>,
    },
    /// The job has failed: this partition was not scored.
    Stopped {
        /// The model.
        model: String,
        /// The job.
        job: String,
        /// The partition.
        partition: Option<usize>,
        /// Why the job failed.
        reason: String,
    },
    /// A job's input arrived, but its `job.json` names inputs still missing: the last to
    /// arrive (or the explicit job message) plans it.
    Waiting {
        /// The model.
        model: String,
        /// The job.
        job: String,
        /// The inputs still missing.
        missing: Vec<String>,
    },
    /// An object under `batch/` that is not a job's input.
    Ignored {
        /// The object.
        key: String,
    },
}

/// The batch function's handler.
pub struct Batch {
    store: Arc<dyn ObjectStore>,
    queue: Arc<dyn Queue>,
    /// The last plan read (a worker scores many partitions of one job).
    plan: Mutex<Option<Arc<Plan>>>,
    /// The last version loaded.
    scorer: Mutex<Option<Arc<Scorer>>>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("store", &self.store.url())
            .field("queue", &self.queue.name())
            .finish()
    }
}

impl Batch {
    /// A handler over `store`, sending partition messages to `queue` (the batch queue).
    pub fn new(store: Arc<dyn ObjectStore>, queue: Arc<dyn Queue>) -> Self {
        Batch {
            store,
            queue,
            plan: Mutex::new(None),
            scorer: Mutex::new(None),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Plans `request`'s job, or re-sends the unscored partitions of a job planned before.
    pub async fn plan_job(&self, request: &BatchJobRequest) -> Result<BatchOutcome, StageError> {
        plan::plan_job(self, request, None).await
    }

    /// Scores one partition.
    pub async fn score_partition(
        &self,
        request: &BatchPartitionRequest,
    ) -> Result<BatchOutcome, StageError> {
        score::score_partition(self, request).await
    }

    /// An object landed under `batch/`: a job's input starts the job (with the options of
    /// its `job.json`, once every input it names is there); anything else is ignored.
    async fn object(&self, request: &BatchObjectRequest) -> Result<BatchOutcome, StageError> {
        let Some((model, job, true)) = layout::batch_key(request.key.as_str()) else {
            return Ok(BatchOutcome::Ignored {
                key: request.key.to_string(),
            });
        };
        let options_key = layout::batch_options(model, job).map_err(StageError::invalid)?;
        let options: JobOptions = match self.store.get(&options_key).await {
            Ok(object) => serde_json::from_slice(&object.bytes).map_err(|e| {
                StageError::permanent(format!(
                    "{options_key}: {e}; it may set model_version, partition_rows, \
                     include_inputs and inputs"
                ))
            })?,
            Err(StoreError::NotFound(_)) => JobOptions::default(),
            Err(e) => return Err(StageError::context(format!("reading {options_key}"), e)),
        };
        if !options.inputs.is_empty()
            && !self
                .store
                .exists(&layout::batch_plan(model, job).map_err(StageError::invalid)?)
                .await?
        {
            let prefix = layout::batch_input(model, job);
            let present: std::collections::BTreeSet<String> = self
                .store
                .list_all(&prefix)
                .await?
                .into_iter()
                .map(|m| m.key.as_str()[prefix.len()..].to_string())
                .collect();
            let missing: Vec<String> = options
                .inputs
                .iter()
                .filter(|i| !present.contains(*i))
                .cloned()
                .collect();
            if !missing.is_empty() {
                return Ok(BatchOutcome::Waiting {
                    model: model.to_string(),
                    job: job.to_string(),
                    missing,
                });
            }
        }
        let job_request = BatchJobRequest {
            model: model.to_string(),
            job: job.to_string(),
            version: options.version,
            partition_rows: options.partition_rows,
            include_inputs: options.include_inputs,
        };
        plan::plan_job(self, &job_request, Some(&request.key)).await
    }

    /// The job's plan (from the last one read when it is this job's: plans never change).
    pub(crate) async fn load_plan(&self, model: &str, job: &str) -> Result<Arc<Plan>, StageError> {
        if let Some(plan) = self
            .plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .filter(|p| p.model == model && p.job == job)
        {
            return Ok(plan.clone());
        }
        let key = layout::batch_plan(model, job).map_err(StageError::invalid)?;
        let plan: Plan = match self.store.get_json(&key).await {
            Ok(plan) => plan,
            Err(lambdaml::store::JsonError::Store(StoreError::NotFound(_))) => {
                return Err(StageError::permanent(format!(
                    "batch job {job} of model {model} has no plan ({key}): start it with \
                     `lambdaml batch score` or by putting its input under {}",
                    layout::batch_input(model, job)
                )));
            }
            Err(e) => return Err(StageError::context(format!("reading {key}"), e)),
        };
        let plan = Arc::new(plan);
        *self
            .plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(plan.clone());
        Ok(plan)
    }

    /// The job's manifest, if it has ended.
    pub(crate) async fn job_manifest(
        &self,
        model: &str,
        job: &str,
    ) -> Result<Option<JobManifest>, StageError> {
        let key = layout::batch_manifest(model, job).map_err(StageError::invalid)?;
        match self.store.get_json::<JobManifest>(&key).await {
            Ok(m) => Ok(Some(m)),
            Err(lambdaml::store::JsonError::Store(StoreError::NotFound(_))) => Ok(None),
            Err(e) => Err(StageError::context(format!("reading {key}"), e)),
        }
    }

    /// Sends the message for partition `index` of `plan`.
    pub(crate) async fn send_partition(&self, plan: &Plan, index: usize) -> Result<(), StageError> {
        let message = Message::new(
            batch_run_id(&plan.job),
            Some(plan.model.clone()),
            StageMessage::BatchPartition(BatchPartitionRequest {
                model: plan.model.clone(),
                job: plan.job.clone(),
                partition: index,
            }),
        );
        self.queue
            .send(&message.to_body())
            .await
            .map_err(|e| StageError::context("sending a partition message", e))?;
        Ok(())
    }
}

#[async_trait]
impl Handler for Batch {
    type Request = BatchInput;
    /// `{"model_name", "job", "model_version"?, "partition_rows"?, "include_inputs"?}`.
    type Direct = BatchJobRequest;
    type Outcome = BatchOutcome;

    async fn handle_request(
        &self,
        _envelope: &Envelope,
        request: BatchInput,
    ) -> Result<BatchOutcome, StageError> {
        match request {
            BatchInput::Job(r) => self.plan_job(&r).await,
            BatchInput::Partition(r) => self.score_partition(&r).await,
            BatchInput::Object(r) => self.object(&r).await,
        }
    }

    /// Batch jobs keep their own plan and manifests, not pipeline run records.
    fn run_records(&self) -> Option<&dyn ObjectStore> {
        None
    }

    fn s3_message(&self, object: &S3Object) -> Result<Message, StageError> {
        let key = ObjectKey::new(object.key.clone()).map_err(StageError::invalid)?;
        let (run, model) = match layout::batch_key(key.as_str()) {
            Some((model, job, _)) => (batch_run_id(job), Some(model.to_string())),
            None => ("batch-unknown".to_string(), None),
        };
        Ok(Message::new(
            run,
            model,
            StageMessage::BatchObject(BatchObjectRequest { key }),
        ))
    }
}

impl Wire for Batch {
    const FUNCTION: Function = Function::Batch;
    fn wire(wired: &Wired) -> Result<Self, NoQueue> {
        Ok(Batch::new(wired.store.clone(), wired.next()?))
    }
}

/// Writes the job's manifest as failed with `reason` (unless it has ended already) and
/// answers [`BatchOutcome::Stopped`] with the reason the manifest holds.
pub(crate) async fn fail_job(
    batch: &Batch,
    plan: &Plan,
    partition: Option<usize>,
    reason: String,
) -> Result<BatchOutcome, StageError> {
    let manifest = finish::failed_manifest(batch, plan, reason).await?;
    let key = layout::batch_manifest(&plan.model, &plan.job).map_err(StageError::invalid)?;
    let written = match batch
        .store
        .put_if_absent(&key, lambdaml::store::to_json_bytes(&manifest))
        .await
    {
        Ok(_) => manifest,
        Err(StoreError::AlreadyExists(_)) => batch
            .job_manifest(&plan.model, &plan.job)
            .await?
            .unwrap_or(manifest),
        Err(e) => return Err(StageError::context(format!("writing {key}"), e)),
    };
    tracing::warn!(model = %plan.model, job = %plan.job, reason = ?written.reason, "batch job failed");
    Ok(BatchOutcome::Stopped {
        model: plan.model.clone(),
        job: plan.job.clone(),
        partition,
        reason: written
            .reason
            .unwrap_or_else(|| "the job had already ended".to_string()),
    })
}

#[cfg(test)]
mod tests;
