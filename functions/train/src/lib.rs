//! The train function: fits a candle model on a preprocessed run.
//!
//! The version id derives from the run id, so a redelivered message finds the version
//! complete and only re-sends the evaluate message. Weights go to
//! `models/<model>/<version>/model.safetensors`, then `manifest.json` (architecture,
//! hyper-parameters, seed, the fitted pipeline, the dataset version, training summary,
//! crate version and git revision) last. When the invocation deadline approaches, training
//! stops at a step boundary, saves a checkpoint under `models/<model>/<version>/checkpoints/`
//! and re-queues itself with the checkpoint, so a long fit spans invocations without losing
//! work. A diverging fit is a permanent failure that leaves `error.json` and no manifest,
//! so nothing can promote it.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use lambdaml::features::{FeaturePipeline, LabelEncoding};
use lambdaml::layout;
use lambdaml::matrix::Matrix;
use lambdaml::message::{Envelope, EvaluateRequest, Message, StageMessage, TrainRequest};
use lambdaml::model::{Architecture, ModelManifest, TrainingSummary};
use lambdaml::pipeline::{Function, NoQueue, Wire, Wired};
use lambdaml::queue::Queue;
use lambdaml::run::RunManifest;
use lambdaml::spec::{ModelSpec, Refit};
use lambdaml::stage::{Handler, StageError};
use lambdaml::store::{
    JsonError, ObjectKey, ObjectStore, ObjectStoreExt, StoreError, to_json_bytes,
};
use lambdaml::train::{
    Checkpoint, CheckpointState, Options, Outcome, Progress, TrainError, Trained, train,
};
use serde::{Deserialize, Serialize};
use tracing::{info, instrument};

/// Progress callback for the CLI's bar.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// The train handler. It needs the store, the evaluate queue, and its own queue (to
/// re-queue itself at the deadline).
#[derive(Clone)]
pub struct Train {
    store: Arc<dyn ObjectStore>,
    evaluate: Arc<dyn Queue>,
    train: Arc<dyn Queue>,
    progress: Option<ProgressFn>,
    step_budget: Option<u32>,
}

impl std::fmt::Debug for Train {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Train")
            .field("store", &self.store.url())
            .finish()
    }
}

/// What one train invocation did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOutcome {
    /// The model.
    pub model: String,
    /// The version.
    pub version: String,
    /// `trained`, `exists` (a redelivery) or `checkpointed` (resumes in a new invocation).
    pub status: String,
    /// Steps done so far.
    pub steps: u32,
    /// Final (or current) training loss.
    pub loss: f64,
    /// The manifest key (when trained).
    pub manifest: Option<String>,
}

/// The version id of the model trained on preprocess run `run_id` with a spec whose
/// `[train]` hashes to `train_key` (`ModelSpec::train_key`), salted by a forced run.
pub fn model_version(run_id: &str, train_key: &str, salt: Option<&str>) -> String {
    let seed = match salt {
        Some(salt) => format!("{run_id}\n{train_key}\n{salt}"),
        None => format!("{run_id}\n{train_key}"),
    };
    lambdaml::sha256_hex(seed.as_bytes())[..12].to_string()
}

fn key(k: String) -> Result<ObjectKey, StageError> {
    ObjectKey::new(k).map_err(StageError::invalid)
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointMeta {
    state: CheckpointState,
    seconds: f64,
    invocations: u32,
}

/// One run being trained: what the pause and finish steps need of it.
struct Job<'a> {
    request: &'a TrainRequest,
    run: &'a RunManifest,
    spec: &'a ModelSpec,
    /// The spec snapshot's key and SHA-256.
    spec_key: &'a ObjectKey,
    spec_sha: &'a str,
    model: &'a str,
    version: &'a str,
    manifest_key: &'a ObjectKey,
    /// Seconds trained, over every invocation.
    seconds: f64,
    /// Invocations that trained, this one included.
    invocations: u32,
}

impl Train {
    /// A handler over `store`, sending to `evaluate` and re-queueing on `train`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        evaluate: Arc<dyn Queue>,
        train: Arc<dyn Queue>,
    ) -> Self {
        Train {
            store,
            evaluate,
            train,
            progress: None,
            step_budget: None,
        }
    }

    /// Reports each step (the CLI's progress bar).
    pub fn with_progress(mut self, progress: ProgressFn) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Checkpoints and re-queues after this many steps per invocation, deadline or not
    /// (bounds how much work one invocation can lose).
    pub fn with_step_budget(mut self, steps: u32) -> Self {
        self.step_budget = Some(steps);
        self
    }

    /// Trains the model of one run. See the crate docs.
    #[instrument(skip(self), fields(run = %request.run_manifest))]
    pub async fn train(
        &self,
        request: &TrainRequest,
        attempt: u32,
    ) -> Result<TrainOutcome, StageError> {
        let run: RunManifest = match self.store.get_json(&request.run_manifest).await {
            Ok(r) => r,
            Err(JsonError::Store(StoreError::NotFound(_))) => {
                return Err(StageError::permanent(format!(
                    "run manifest {} does not exist",
                    request.run_manifest
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let artifact = |name: &str| -> Result<ObjectKey, StageError> {
            run.artifacts
                .get(name)
                .ok_or_else(|| {
                    StageError::permanent(format!("run {} has no {name} artifact", run.run_id))
                })
                .and_then(|k| key(k.clone()))
        };
        // The message's spec (a run is shared by specs that differ only where preprocess
        // does not read), else the run's.
        let spec_key = match &request.spec {
            Some(k) => k.clone(),
            None => run.spec_key()?,
        };
        let (spec, spec_sha) = lambdaml::run::read_spec(self.store.as_ref(), spec_key.as_str())
            .await
            .map_err(|e| StageError::context("reading the spec", e))?;
        let model = spec.model.name.clone();
        let version = model_version(&run.run_id, &spec.train_key(), request.salt.as_deref());
        let manifest_key = layout::model_manifest(&model, &version)?;
        if let Some(done) = self
            .trained_before(&spec_key, &model, &version, &manifest_key)
            .await?
        {
            return Ok(done);
        }
        let pipeline: FeaturePipeline = self.store.get_json(&artifact("pipeline")?).await?;
        let data = Matrix::from_safetensors(&self.store.get(&artifact("train")?).await?.bytes)
            .map_err(StageError::invalid)?;
        let classes = match &pipeline.label {
            LabelEncoding::Classes { classes, .. } => classes.len(),
            LabelEncoding::Regression { .. } => 1,
        };
        let arch = Architecture::from_spec(&spec, pipeline.output_dim, classes);
        let (resume, seconds_before, invocations) =
            self.load_checkpoint(request.checkpoint.as_ref()).await?;
        let resumed_step = resume.as_ref().map_or(0, |c| c.state.step);
        let deadline = lambdaml::stage::deadline()
            // Leave time to write the checkpoint and the message.
            .map(|d| {
                d.checked_sub(std::time::Duration::from_secs(20))
                    .unwrap_or(d)
            });
        let started = Instant::now();
        let outcome = self
            .fit(arch.clone(), &spec, data, classes, deadline, resume)
            .await?;
        let seconds = seconds_before + started.elapsed().as_secs_f64();
        let (outcome, rows) = match outcome {
            Ok(o) => o,
            Err(err @ (TrainError::Diverged { .. } | TrainError::Data(_))) => {
                let record = serde_json::json!({"run_id": run.run_id, "error": err.to_string(), "at": lambdaml::now_rfc3339()});
                self.store
                    .put(
                        &layout::train_error(&model, &version)?,
                        to_json_bytes(&record),
                    )
                    .await?;
                return Err(StageError::permanent(format!("{model} {version}: {err}")));
            }
            Err(err) => return Err(StageError::permanent(err)),
        };
        let job = Job {
            request,
            run: &run,
            spec: &spec,
            spec_key: &spec_key,
            spec_sha: &spec_sha,
            model: &model,
            version: &version,
            manifest_key: &manifest_key,
            seconds,
            invocations: invocations + 1,
        };
        match outcome {
            Outcome::Paused(checkpoint) if checkpoint.state.step == resumed_step && attempt > 0 => {
                Err(StageError::permanent(format!(
                    "{model} {version}: two invocations in a row ended before one training step; \
                 the function's timeout leaves no time to train (raise it above a minute)"
                )))
            }
            Outcome::Paused(checkpoint) => self.pause(&job, checkpoint, attempt).await,
            Outcome::Done(trained) => {
                let refit = match spec.train.refit {
                    Refit::All => self.refit(&run, &arch, &spec, classes, deadline).await?,
                    Refit::Split => None,
                };
                self.finish(&job, trained, refit, arch, pipeline, rows)
                    .await
            }
        }
    }

    /// The outcome of a redelivered message whose version is already trained: evaluation
    /// is asked for again (idempotent), nothing is trained.
    async fn trained_before(
        &self,
        spec_key: &ObjectKey,
        model: &str,
        version: &str,
        manifest_key: &ObjectKey,
    ) -> Result<Option<TrainOutcome>, StageError> {
        let Some(existing) = self.store.head(manifest_key).await? else {
            return Ok(None);
        };
        let manifest: ModelManifest = self.store.get_json(&existing.key).await?;
        self.send_evaluate(model, version, spec_key).await?;
        Ok(Some(TrainOutcome {
            model: model.to_string(),
            version: version.to_string(),
            status: "exists".into(),
            steps: manifest.training.steps,
            loss: manifest.training.loss,
            manifest: Some(manifest_key.to_string()),
        }))
    }

    /// A checkpoint's state and tensors, the seconds trained before it and the invocations
    /// that trained (none without a checkpoint).
    async fn load_checkpoint(
        &self,
        stem: Option<&ObjectKey>,
    ) -> Result<(Option<Checkpoint>, f64, u32), StageError> {
        let Some(k) = stem else {
            return Ok((None, 0.0, 0));
        };
        let meta: CheckpointMeta = self.store.get_json(&layout::checkpoint_state(k)?).await?;
        let tensors = self
            .store
            .get(&layout::checkpoint_tensors(k)?)
            .await?
            .bytes
            .to_vec();
        let checkpoint = Checkpoint {
            state: meta.state,
            tensors,
        };
        Ok((Some(checkpoint), meta.seconds, meta.invocations))
    }

    /// Writes the checkpoint and re-queues the run to resume from it.
    async fn pause(
        &self,
        job: &Job<'_>,
        checkpoint: Checkpoint,
        attempt: u32,
    ) -> Result<TrainOutcome, StageError> {
        let (model, version) = (job.model, job.version);
        let base = layout::checkpoint(model, version, u64::from(checkpoint.state.step))?;
        self.store
            .put(
                &layout::checkpoint_tensors(&base)?,
                Bytes::from(checkpoint.tensors),
            )
            .await?;
        let meta = CheckpointMeta {
            state: checkpoint.state.clone(),
            seconds: job.seconds,
            invocations: job.invocations,
        };
        self.store
            .put(&layout::checkpoint_state(&base)?, to_json_bytes(&meta))
            .await?;
        let run = lambdaml::recorder::run_or(|| {
            lambdaml::record::new_run_id(lambdaml::record::TriggerKind::Direct)
        });
        let mut message = Message::new(
            run,
            Some(model.to_string()),
            StageMessage::Train(TrainRequest {
                run_manifest: job.request.run_manifest.clone(),
                checkpoint: Some(base),
                spec: Some(job.spec_key.clone()),
                salt: job.request.salt.clone(),
            }),
        );
        message.attempt = attempt + 1;
        lambdaml::recorder::forward(self.store.as_ref(), self.train.as_ref(), &message).await?;
        info!(%model, %version, step = checkpoint.state.step, "deadline near: checkpointed and re-queued");
        Ok(TrainOutcome {
            model: model.to_string(),
            version: version.to_string(),
            status: "checkpointed".into(),
            steps: checkpoint.state.step,
            loss: f64::NAN,
            manifest: None,
        })
    }

    /// Writes the weights, then the manifest that names them, and asks for evaluation.
    /// The fit on the training split, on the blocking pool, reporting its steps; also the
    /// rows it saw.
    async fn fit(
        &self,
        arch: Architecture,
        spec: &ModelSpec,
        data: Matrix,
        classes: usize,
        deadline: Option<Instant>,
        resume: Option<Checkpoint>,
    ) -> Result<Result<(Outcome, usize), TrainError>, StageError> {
        let (params, optimizer, step_budget) =
            (spec.train.clone(), spec.optimizer(), self.step_budget);
        let progress = self.progress.clone();
        lambdaml::stage::run_blocking("training", move || {
            let report = |p: Progress| {
                tracing::debug!(
                    step = p.step,
                    loss = p.loss,
                    validation_loss = p.validation_loss,
                    "training progress"
                );
                if let Some(f) = &progress {
                    f(p);
                }
            };
            train(
                &arch,
                &params,
                optimizer,
                &data,
                classes,
                &Options {
                    deadline,
                    step_budget,
                    resume,
                    progress: &report,
                },
            )
            .map(|o| (o, data.rows))
        })
        .await
    }

    /// `train.refit = "all"`: the same fit again on the training split and the holdout
    /// together (no checkpoints: when the deadline comes first, the split fit is served and
    /// the manifest says so by having no `refit_rows`). Returns the weights and the rows.
    async fn refit(
        &self,
        run: &RunManifest,
        arch: &Architecture,
        spec: &ModelSpec,
        classes: usize,
        deadline: Option<Instant>,
    ) -> Result<Option<(Vec<u8>, usize)>, StageError> {
        let matrix = |name: &str| -> Result<ObjectKey, StageError> {
            run.artifacts
                .get(name)
                .ok_or_else(|| StageError::permanent(format!("run {} has no {name}", run.run_id)))
                .and_then(|k| key(k.clone()))
        };
        let mut all = Matrix::from_safetensors(&self.store.get(&matrix("train")?).await?.bytes)
            .map_err(StageError::invalid)?;
        let holdout = Matrix::from_safetensors(&self.store.get(&matrix("holdout")?).await?.bytes)
            .map_err(StageError::invalid)?;
        all.x.extend_from_slice(&holdout.x);
        all.y.extend_from_slice(&holdout.y);
        all.rows += holdout.rows;
        let (arch, params, optimizer) = (arch.clone(), spec.train.clone(), spec.optimizer());
        let rows = all.rows;
        let outcome = lambdaml::stage::run_blocking("refitting on the whole window", move || {
            train(
                &arch,
                &params,
                optimizer,
                &all,
                classes,
                &Options {
                    deadline,
                    step_budget: None,
                    resume: None,
                    progress: &|_| {},
                },
            )
        })
        .await?;
        match outcome {
            Ok(Outcome::Done(t)) => Ok(Some((t.weights, rows))),
            Ok(Outcome::Paused(_)) => {
                tracing::warn!(run = %run.run_id, "the refit ran out of time; serving the split fit");
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(run = %run.run_id, error = %e, "the refit failed; serving the split fit");
                Ok(None)
            }
        }
    }

    async fn finish(
        &self,
        job: &Job<'_>,
        trained: Trained,
        refit: Option<(Vec<u8>, usize)>,
        arch: Architecture,
        pipeline: FeaturePipeline,
        rows: usize,
    ) -> Result<TrainOutcome, StageError> {
        let (run, spec, model, version) = (job.run, job.spec, job.model, job.version);
        let weights_key = layout::weights(model, version)?;
        let mut artifacts = std::collections::BTreeMap::new();
        let refit_rows = match refit {
            // Served: the refit; evaluated: the split fit.
            Some((weights, rows)) => {
                let evaluated = layout::evaluated_weights(model, version)?;
                self.store
                    .put_immutable(&evaluated, Bytes::from(trained.weights))
                    .await?;
                self.store
                    .put_immutable(&weights_key, Bytes::from(weights))
                    .await?;
                artifacts.insert("evaluated_weights".to_string(), evaluated.to_string());
                Some(rows)
            }
            None => {
                self.store
                    .put_immutable(&weights_key, Bytes::from(trained.weights))
                    .await?;
                None
            }
        };
        artifacts.insert("weights".to_string(), weights_key.to_string());
        let manifest = ModelManifest {
            model: model.to_string(),
            version: version.to_string(),
            architecture: arch,
            hyper_parameters: spec.train.clone(),
            optimizer: spec.optimizer(),
            pipeline,
            schema: layout::dataset_file(&run.dataset, &run.dataset_version, "schema.json")?
                .to_string(),
            run_id: run.run_id.clone(),
            dataset: run.dataset.clone(),
            dataset_version: run.dataset_version.clone(),
            spec_sha256: job.spec_sha.to_string(),
            training: TrainingSummary {
                rows,
                steps: trained.steps,
                loss: trained.loss,
                validation_loss: trained.validation_loss,
                converged: trained.converged,
                seconds: job.seconds,
                invocations: job.invocations,
                refit_rows,
            },
            artifacts,
            spec: Some(job.spec_key.to_string()),
            pipeline_run: lambdaml::recorder::current_run(),
            lambdaml_version: lambdaml::VERSION.to_string(),
            git_revision: option_env!("LAMBDAML_GIT_REVISION").map(str::to_string),
            created_at: lambdaml::now_rfc3339(),
        };
        match self
            .store
            .put_if_absent(job.manifest_key, to_json_bytes(&manifest))
            .await
        {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.send_evaluate(model, version, job.spec_key).await?;
        let seconds = job.seconds;
        info!(%model, %version, steps = trained.steps, loss = trained.loss, seconds, "trained");
        Ok(TrainOutcome {
            model: model.to_string(),
            version: version.to_string(),
            status: "trained".into(),
            steps: trained.steps,
            loss: trained.loss,
            manifest: Some(job.manifest_key.to_string()),
        })
    }

    /// Asks evaluate for `version`, decided by the spec at `spec` (in this run).
    async fn send_evaluate(
        &self,
        model: &str,
        version: &str,
        spec: &ObjectKey,
    ) -> Result<(), StageError> {
        let run = lambdaml::recorder::run_or(|| {
            lambdaml::record::new_run_id(lambdaml::record::TriggerKind::Direct)
        });
        let message = Message::new(
            run,
            Some(model.to_string()),
            StageMessage::Evaluate(EvaluateRequest {
                model: model.to_string(),
                version: version.to_string(),
                spec: Some(spec.clone()),
            }),
        );
        lambdaml::recorder::forward(self.store.as_ref(), self.evaluate.as_ref(), &message).await?;
        Ok(())
    }
}

#[async_trait]
impl Handler for Train {
    type Request = TrainRequest;
    /// `{"run_manifest": "runs/<run>/manifest.json"}`.
    type Direct = TrainRequest;
    type Outcome = TrainOutcome;

    async fn handle_request(
        &self,
        envelope: &Envelope,
        request: TrainRequest,
    ) -> Result<TrainOutcome, StageError> {
        self.train(&request, envelope.attempt).await
    }

    fn run_records(&self) -> Option<&dyn ObjectStore> {
        Some(self.store.as_ref())
    }
}

impl Wire for Train {
    const FUNCTION: Function = Function::Train;
    /// Sends to evaluate; re-queues its own checkpoints on the train queue.
    fn wire(wired: &Wired) -> Result<Self, NoQueue> {
        Ok(Train::new(wired.store.clone(), wired.next()?, wired.own()?))
    }
}
