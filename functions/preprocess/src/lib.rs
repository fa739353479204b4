//! The preprocess function: splits a dataset version and fits a model's feature pipeline.
//!
//! For one model spec and one dataset version, preprocess splits the rows into train and
//! holdout (seeded random, or time-ordered), fits the [`FeaturePipeline`] on the training
//! split only, encodes both splits as safetensors design matrices, and writes
//! `runs/<run>/{spec.toml, pipeline.json, split.json, reference.json, train.safetensors,
//! holdout.safetensors}` (`reference.json`: the training profile of every input, the
//! monitor's baseline) with
//! `manifest.json` last. The run id derives from the dataset version and the spec's bytes,
//! so a redelivered message finds the run complete and only re-sends the train message
//! (training is idempotent too).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use lambdaml::baseline::FeatureReference;
use lambdaml::dataset::{DatasetManifest, Schema, read_parquet};
use lambdaml::features::{FeaturePipeline, split_rows};
use lambdaml::layout;
use lambdaml::message::{Envelope, Message, PreprocessRequest, StageMessage, TrainRequest};
use lambdaml::pipeline::{Function, NoQueue, Wire, Wired};
use lambdaml::queue::Queue;
use lambdaml::run::{RunManifest, Split, run_id};
use lambdaml::spec::ModelSpec;
use lambdaml::stage::{Handler, StageError};
use lambdaml::store::{JsonError, ObjectStore, ObjectStoreExt, StoreError, to_json_bytes};
use serde::{Deserialize, Serialize};
use tracing::{info, instrument};

/// The preprocess handler. It needs the object store and the train queue.
#[derive(Clone)]
pub struct Preprocess {
    store: Arc<dyn ObjectStore>,
    train: Arc<dyn Queue>,
}

impl std::fmt::Debug for Preprocess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preprocess")
            .field("store", &self.store.url())
            .field("train", &self.train.name())
            .finish()
    }
}

/// What one preprocess did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessOutcome {
    /// The run id.
    pub run_id: String,
    /// The model.
    pub model: String,
    /// False when the run already existed and nothing was written.
    pub created: bool,
    /// Training rows.
    pub train_rows: usize,
    /// Holdout rows.
    pub holdout_rows: usize,
    /// Encoded features.
    pub features: usize,
    /// Dropped columns with reasons.
    pub dropped: Vec<String>,
    /// The run manifest key.
    pub manifest: String,
}

impl Preprocess {
    /// A handler over `store`, sending to the `train` queue.
    pub fn new(store: Arc<dyn ObjectStore>, train: Arc<dyn Queue>) -> Self {
        Preprocess { store, train }
    }

    /// Preprocesses one (dataset version, spec) pair. See the crate docs.
    #[instrument(skip(self), fields(dataset = %request.dataset, version = %request.dataset_version))]
    pub async fn preprocess(
        &self,
        request: &PreprocessRequest,
    ) -> Result<PreprocessOutcome, StageError> {
        let spec_bytes = match self.store.get(&request.spec).await {
            Ok(o) => o.bytes,
            Err(StoreError::NotFound(_)) => {
                return Err(StageError::permanent(format!(
                    "model spec {} does not exist",
                    request.spec
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let spec_text = String::from_utf8_lossy(&spec_bytes);
        let spec = ModelSpec::parse(&spec_text)
            .map_err(|e| StageError::permanent(format!("{}: {e}", request.spec)))?;
        if spec.dataset.name != request.dataset {
            return Err(StageError::permanent(format!(
                "spec {} is for dataset {:?}, not {:?}",
                request.spec, spec.dataset.name, request.dataset
            )));
        }
        let model = spec.model.name.clone();
        let spec_sha = lambdaml::sha256_hex(&spec_bytes);
        // Keyed by the sections preprocess reads (lambdaml::spec's cache module), so a spec
        // that changes only `[train]` or `[monitor]` reuses this run.
        let cache_key = match &request.salt {
            Some(salt) => format!("{}\n{salt}", spec.preprocess_key()),
            None => spec.preprocess_key(),
        };
        let run = run_id(&model, &request.dataset_version, &cache_key);
        let run_key = |name: &str| layout::run_file(&run, name);
        let manifest_key = run_key("manifest.json")?;

        let (manifest, created) = match self.store.get_json::<RunManifest>(&manifest_key).await {
            Ok(existing) => {
                info!(%run, "run exists; nothing written");
                (existing, false)
            }
            Err(JsonError::Store(StoreError::NotFound(_))) => (
                self.build_run(request, &spec, spec_bytes.clone(), &spec_sha, &run)
                    .await?,
                true,
            ),
            Err(e) => return Err(e.into()),
        };

        let pipeline_run = lambdaml::recorder::run_or(|| {
            lambdaml::record::new_run_id(lambdaml::record::TriggerKind::Direct)
        });
        let message = Message::new(
            pipeline_run,
            Some(model.clone()),
            StageMessage::Train(TrainRequest {
                run_manifest: manifest_key.clone(),
                checkpoint: None,
                spec: Some(request.spec.clone()),
                salt: request.salt.clone(),
            }),
        );
        lambdaml::recorder::forward(self.store.as_ref(), self.train.as_ref(), &message).await?;
        info!(%run, %model, train = manifest.train_rows, holdout = manifest.holdout_rows, created, "preprocessed");
        Ok(PreprocessOutcome {
            run_id: run,
            model,
            created,
            train_rows: manifest.train_rows,
            holdout_rows: manifest.holdout_rows,
            features: manifest.features,
            dropped: manifest.dropped,
            manifest: manifest_key.to_string(),
        })
    }

    async fn build_run(
        &self,
        request: &PreprocessRequest,
        spec: &ModelSpec,
        spec_bytes: Bytes,
        spec_sha: &str,
        run: &str,
    ) -> Result<RunManifest, StageError> {
        let dataset_key =
            |name: &str| layout::dataset_file(&request.dataset, &request.dataset_version, name);
        let dataset_manifest: DatasetManifest =
            match self.store.get_json(&dataset_key("manifest.json")?).await {
                Ok(m) => m,
                Err(JsonError::Store(StoreError::NotFound(_))) => {
                    return Err(StageError::permanent(format!(
                        "dataset {} version {} does not exist",
                        request.dataset, request.dataset_version
                    )));
                }
                Err(e) => return Err(e.into()),
            };
        if dataset_manifest.label != spec.dataset.label {
            return Err(StageError::permanent(format!(
                "dataset {} version {} was ingested with label {:?}, the spec names {:?}",
                request.dataset,
                request.dataset_version,
                dataset_manifest.label,
                spec.dataset.label
            )));
        }
        let schema: Schema = self.store.get_json(&dataset_key("schema.json")?).await?;
        let dir = tempfile::tempdir().map_err(StageError::from)?;
        let data_path = dir.path().join("data.parquet");
        let data = self.store.get(&dataset_key("data.parquet")?).await?;
        std::fs::write(&data_path, &data.bytes).map_err(StageError::from)?;
        drop(data);

        let spec_owned = spec.clone();
        let (pipeline, train, holdout, split, reference) =
            lambdaml::stage::run_blocking("preprocess", move || {
                let table = read_parquet(&data_path).map_err(StageError::invalid)?;
                let (train_rows, holdout_rows) =
                    split_rows(&spec_owned, &table).map_err(StageError::invalid)?;
                let pipeline = FeaturePipeline::fit(&spec_owned, &schema, &table, &train_rows)
                    .map_err(StageError::invalid)?;
                let train = pipeline
                    .transform_table(&table, &train_rows)
                    .map_err(StageError::invalid)?;
                let holdout = pipeline
                    .transform_table(&table, &holdout_rows)
                    .map_err(StageError::invalid)?;
                let reference = FeatureReference::build(&pipeline, &table, &train_rows);
                let split = Split {
                    train: train_rows,
                    holdout: holdout_rows,
                };
                Ok::<_, StageError>((pipeline, train, holdout, split, reference))
            })
            .await??;

        let run_key = |name: &str| layout::run_file(run, name);
        let mut artifacts = BTreeMap::new();
        let writes: [(&str, &str, Bytes); 6] = [
            (
                "split",
                "split.json",
                Bytes::from(serde_json::to_vec(&split).map_err(StageError::invalid)?),
            ),
            ("spec", "spec.toml", spec_bytes),
            ("pipeline", "pipeline.json", to_json_bytes(&pipeline)),
            ("reference", "reference.json", to_json_bytes(&reference)),
            (
                "train",
                "train.safetensors",
                Bytes::from(train.to_safetensors().map_err(StageError::invalid)?),
            ),
            (
                "holdout",
                "holdout.safetensors",
                Bytes::from(holdout.to_safetensors().map_err(StageError::invalid)?),
            ),
        ];
        for (name, file, bytes) in writes {
            let key = run_key(file)?;
            self.store.put_immutable(&key, bytes).await?;
            artifacts.insert(name.to_string(), key.to_string());
        }
        let manifest = RunManifest {
            run_id: run.to_string(),
            model: spec.model.name.clone(),
            dataset: request.dataset.clone(),
            dataset_version: request.dataset_version.clone(),
            spec_sha256: spec_sha.to_string(),
            train_rows: train.rows,
            holdout_rows: holdout.rows,
            features: pipeline.output_dim,
            dropped: pipeline
                .dropped
                .iter()
                .map(|d| format!("{}: {}", d.name, d.reason))
                .collect(),
            artifacts,
            pipeline_run: lambdaml::recorder::current_run(),
            created_at: lambdaml::now_rfc3339(),
            lambdaml_version: lambdaml::VERSION.to_string(),
        };
        match self
            .store
            .put_if_absent(&run_key("manifest.json")?, to_json_bytes(&manifest))
            .await
        {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(manifest),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait]
impl Handler for Preprocess {
    type Request = PreprocessRequest;
    /// `{"dataset", "dataset_version", "spec"}`.
    type Direct = PreprocessRequest;
    type Outcome = PreprocessOutcome;

    async fn handle_request(
        &self,
        _envelope: &Envelope,
        request: PreprocessRequest,
    ) -> Result<PreprocessOutcome, StageError> {
        self.preprocess(&request).await
    }

    fn run_records(&self) -> Option<&dyn ObjectStore> {
        Some(self.store.as_ref())
    }
}

impl Wire for Preprocess {
    const FUNCTION: Function = Function::Preprocess;
    fn wire(wired: &Wired) -> Result<Self, NoQueue> {
        Ok(Preprocess::new(wired.store.clone(), wired.next()?))
    }
}
