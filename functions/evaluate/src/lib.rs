//! The evaluate function: holdout metrics for a new version and for the champion.
//!
//! The new version is scored on its run's holdout matrix. The current production version
//! (the champion), if any, is scored on the very same holdout rows — read from the dataset
//! version and transformed by the champion's own fitted pipeline — so the comparison is
//! fair even when the two were trained on different data or features. The result goes to
//! `models/<model>/<version>/evaluation.json`, after the version's monitoring baseline
//! (`baseline.json`: the run's training profile plus the holdout predictions and metrics);
//! the version is registered as a candidate with
//! its metrics; deploy is asked to decide.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use lambdaml::baseline::{Baseline, FeatureReference, PredictionBaseline};
use lambdaml::dataset::read_parquet;
use lambdaml::events::{Announcer, RegistryEvent};
use lambdaml::features::LabelEncoding;
use lambdaml::layout;
use lambdaml::matrix::Matrix;
use lambdaml::message::{DeployRequest, Envelope, EvaluateRequest, Message, StageMessage};
use lambdaml::metrics::{self, Metrics};
use lambdaml::model::{Model, ModelManifest};
use lambdaml::pipeline::{Function, NoQueue, Wire, Wired};
use lambdaml::queue::Queue;
use lambdaml::registry::{Action, RegistryStore, VersionEntry, VersionStatus};
use lambdaml::run::{RunManifest, Split};
use lambdaml::spec::{PromotionSection, RolloutSection, TaskKind};
use lambdaml::stage::{Handler, StageError};
use lambdaml::store::{
    JsonError, ObjectKey, ObjectStore, ObjectStoreExt, StoreError, to_json_bytes,
};
use tracing::{info, instrument, warn};

/// The evaluate handler. It needs the store and the deploy queue.
#[derive(Clone)]
pub struct Evaluate {
    store: Arc<dyn ObjectStore>,
    deploy: Arc<dyn Queue>,
    announcer: Announcer,
}

impl std::fmt::Debug for Evaluate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluate")
            .field("store", &self.store.url())
            .finish()
    }
}

pub use lambdaml::evaluation::{Against, Evaluation, Scored};

fn key(k: impl Into<String>) -> Result<ObjectKey, StageError> {
    ObjectKey::new(k).map_err(StageError::invalid)
}

/// The scalar metrics the registry keeps.
pub fn scalar_metrics(m: &Metrics) -> BTreeMap<String, f64> {
    [
        "roc_auc", "accuracy", "f1_macro", "log_loss", "brier", "rmse", "mae", "r2",
    ]
    .iter()
    .filter_map(|name| m.get(name).map(|v| (name.to_string(), v)))
    .collect()
}

/// Metrics of `model` on `matrix` (labels encoded by `label`).
pub fn score(model: &Model, label: &LabelEncoding, matrix: &Matrix) -> Result<Metrics, StageError> {
    Ok(score_with_outputs(model, label, matrix)?.0)
}

/// The paired bootstrap of `metric` between the challenger's and the champion's outputs on
/// the holdout `matrix` (see `lambdaml::compare`).
fn compare(
    label: &LabelEncoding,
    matrix: &Matrix,
    challenger: &[f64],
    champion: &[f64],
    metric: &str,
) -> Option<lambdaml::compare::Comparison> {
    use lambdaml::compare::{Truth, paired_bootstrap};
    match label {
        LabelEncoding::Classes { classes, .. } => {
            let truth: Vec<usize> = matrix.y.iter().map(|v| *v as usize).collect();
            paired_bootstrap(
                Truth::Classes(&truth, classes),
                challenger,
                champion,
                metric,
            )
        }
        LabelEncoding::Regression { .. } => {
            let truth: Vec<f64> = matrix.y.iter().map(|v| f64::from(*v)).collect();
            paired_bootstrap(Truth::Values(&truth), challenger, champion, metric)
        }
    }
}

/// Metrics of `model` on `matrix`, and its outputs (row-major probabilities or values).
pub fn score_with_outputs(
    model: &Model,
    label: &LabelEncoding,
    matrix: &Matrix,
) -> Result<(Metrics, Vec<f64>), StageError> {
    let predictions = model
        .predict_rows(&matrix.x, matrix.rows)
        .map_err(StageError::invalid)?;
    let metrics = match (model.arch.task, label) {
        (TaskKind::Regression, _) | (_, LabelEncoding::Regression { .. }) => {
            let truth: Vec<f64> = matrix.y.iter().map(|v| f64::from(*v)).collect();
            Metrics::Regression(metrics::regression(&truth, &predictions))
        }
        (_, LabelEncoding::Classes { classes, .. }) => {
            let truth: Vec<usize> = matrix.y.iter().map(|v| *v as usize).collect();
            Metrics::Classification(metrics::classification(&truth, &predictions, classes))
        }
    };
    Ok((metrics, predictions))
}

impl Evaluate {
    /// A handler over `store`, sending to `deploy`.
    pub fn new(store: Arc<dyn ObjectStore>, deploy: Arc<dyn Queue>) -> Self {
        Evaluate {
            store,
            deploy,
            announcer: Announcer::default(),
        }
    }

    /// Loads a version's manifest and model (the weights it serves).
    pub async fn load(
        store: &dyn ObjectStore,
        model: &str,
        version: &str,
    ) -> Result<(ModelManifest, Model), StageError> {
        Self::load_weights(store, model, version, "weights").await
    }

    /// Loads a version's manifest and the model its holdout evaluates: with `train.refit =
    /// "all"` the split fit, not the served refit.
    pub async fn load_evaluated(
        store: &dyn ObjectStore,
        model: &str,
        version: &str,
    ) -> Result<(ModelManifest, Model), StageError> {
        Self::load_weights(store, model, version, "evaluated_weights").await
    }

    /// The manifest and the model of artifact `which` (else `weights`).
    async fn load_weights(
        store: &dyn ObjectStore,
        model: &str,
        version: &str,
        which: &str,
    ) -> Result<(ModelManifest, Model), StageError> {
        let manifest: ModelManifest = match store
            .get_json(&layout::model_manifest(model, version)?)
            .await
        {
            Ok(m) => m,
            Err(JsonError::Store(StoreError::NotFound(_))) => {
                return Err(StageError::permanent(format!(
                    "model {model} has no version {version}"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let weights_key = manifest
            .artifacts
            .get(which)
            .or_else(|| manifest.artifacts.get("weights"))
            .cloned()
            .unwrap_or_default();
        let weights = store.get(&key(weights_key)?).await?;
        let net = Model::from_safetensors(manifest.architecture.clone(), &weights.bytes)
            .map_err(|e| StageError::permanent(format!("{model} {version}: {e}")))?;
        Ok((manifest, net))
    }

    /// Evaluates one version (see the crate docs); also says whether its evaluation
    /// existed (a redelivery, or a spec that changed only its promotion rule).
    #[instrument(skip(self))]
    pub async fn evaluate(
        &self,
        request: &EvaluateRequest,
    ) -> Result<(Evaluation, bool), StageError> {
        let (model, version) = (&request.model, &request.version);
        let decided_by = request.spec.as_ref();
        let eval_key = layout::evaluation(model, version)?;
        let (manifest, _) = Self::load(self.store.as_ref(), model, version).await?;
        let (promotion, rollout) = self.rules(&manifest, decided_by).await?;
        let (evaluation, cached) = match self.store.get_json::<Evaluation>(&eval_key).await {
            Ok(existing) => (existing, true),
            Err(JsonError::Store(StoreError::NotFound(_))) => (
                self.build(model, version, &eval_key, &promotion.metric)
                    .await?,
                false,
            ),
            Err(e) => return Err(e.into()),
        };
        // Register (idempotent) and hand to deploy, also on a redelivery.
        let entry = VersionEntry {
            version: version.clone(),
            number: 0,
            status: VersionStatus::Candidate,
            run_id: manifest.run_id.clone(),
            dataset_version: manifest.dataset_version.clone(),
            manifest: layout::model_manifest(model, version)?.to_string(),
            metrics: scalar_metrics(&evaluation.metrics),
            registered_at: lambdaml::now_rfc3339(),
        };
        let (registry, _) = RegistryStore::new(self.store.clone())
            .update(model, |r| Ok(r.register(entry.clone(), "evaluate")))
            .await?;
        // Announced on every delivery (one event id), like deploy's decisions.
        if let Some(i) = registry
            .history
            .iter()
            .position(|h| h.action == Action::Register && &h.version == version)
            && let Some(event) = RegistryEvent::of(&registry, i)
        {
            self.announcer.announce(&[event]).await?;
        }
        // Deploy gets what it decides with: the evaluation (when small) and the rules.
        let mut request = DeployRequest::new(model.clone(), version.clone());
        request.promotion = Some(promotion);
        request.rollout = Some(rollout);
        if serde_json::to_vec(&evaluation).map_or(0, |j| j.len())
            <= DeployRequest::MAX_EVALUATION_BYTES
        {
            request.evaluation = Some(Box::new(evaluation.clone()));
        }
        let run = lambdaml::recorder::run_or(|| {
            lambdaml::record::new_run_id(lambdaml::record::TriggerKind::Direct)
        });
        let message = Message::new(run, Some(model.clone()), StageMessage::Deploy(request));
        lambdaml::recorder::forward(self.store.as_ref(), self.deploy.as_ref(), &message).await?;
        Ok((evaluation, cached))
    }

    /// The promotion rule and rollout of `spec` (the request's), else of the spec the
    /// version was trained with.
    async fn rules(
        &self,
        manifest: &ModelManifest,
        spec: Option<&ObjectKey>,
    ) -> Result<(PromotionSection, RolloutSection), StageError> {
        let spec = match spec {
            Some(key) => {
                lambdaml::run::read_spec(self.store.as_ref(), key.as_str())
                    .await?
                    .0
            }
            None => lambdaml::run::trained_spec(self.store.as_ref(), manifest).await?,
        };
        Ok((spec.promotion, spec.rollout))
    }

    /// Scores the version and the champion on the holdout; `metric` (the promotion rule's)
    /// is the one their paired comparison is made on.
    async fn build(
        &self,
        model: &str,
        version: &str,
        eval_key: &ObjectKey,
        metric: &str,
    ) -> Result<Evaluation, StageError> {
        let (manifest, net) = Self::load_evaluated(self.store.as_ref(), model, version).await?;
        let run: RunManifest = self
            .store
            .get_json(&layout::run_manifest(&manifest.run_id)?)
            .await?;
        let holdout_key = run.artifacts.get("holdout").cloned().unwrap_or_default();
        let holdout = Matrix::from_safetensors(&self.store.get(&key(holdout_key)?).await?.bytes)
            .map_err(StageError::invalid)?;
        let (metrics, outputs) = score_with_outputs(&net, &manifest.pipeline.label, &holdout)?;
        self.write_baseline(
            model, version, &manifest, &run, &holdout, &metrics, &outputs,
        )
        .await?;

        // A throttled or failing store is retried; only a corrupt registry is permanent.
        let registry = RegistryStore::new(self.store.clone())
            .load(model)
            .await?
            .map(|(r, _)| r);
        let production_then = registry.as_ref().and_then(|r| r.production.clone());
        let champion_version = registry
            .as_ref()
            .and_then(|r| r.production.clone())
            .filter(|v| v != version);
        let mut comparison = None;
        let (champion, champion_note) = match champion_version {
            None => (None, None),
            Some(cv) => match self.score_champion(model, &cv, &run).await {
                Ok((m, champion_outputs)) => {
                    comparison = compare(
                        &manifest.pipeline.label,
                        &holdout,
                        &outputs,
                        &champion_outputs,
                        metric,
                    );
                    (
                        Some(Scored {
                            version: cv,
                            metrics: m,
                        }),
                        None,
                    )
                }
                Err(e) => {
                    warn!(%model, champion = %cv, error = %e, "champion could not be scored on this holdout");
                    (
                        None,
                        Some(format!(
                            "champion {cv} could not be scored on this holdout: {}",
                            e.reason()
                        )),
                    )
                }
            },
        };
        let evaluation = Evaluation {
            model: model.to_string(),
            version: version.to_string(),
            run_id: run.run_id.clone(),
            holdout_rows: holdout.rows,
            metrics,
            champion,
            champion_note,
            against: Some(Against {
                production: production_then,
            }),
            comparison,
            created_at: lambdaml::now_rfc3339(),
        };
        match self
            .store
            .put_if_absent(eval_key, to_json_bytes(&evaluation))
            .await
        {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        info!(%model, %version, "evaluated");
        Ok(evaluation)
    }

    /// Writes `baseline.json` (once): the run's training profile, the holdout predictions
    /// and metrics.
    #[allow(clippy::too_many_arguments)]
    async fn write_baseline(
        &self,
        model: &str,
        version: &str,
        manifest: &ModelManifest,
        run: &RunManifest,
        holdout: &Matrix,
        metrics: &Metrics,
        outputs: &[f64],
    ) -> Result<(), StageError> {
        let reference = match run.artifacts.get("reference") {
            Some(k) => {
                self.store
                    .get_json::<FeatureReference>(&key(k.clone())?)
                    .await?
            }
            None => {
                return Err(StageError::permanent(format!(
                    "run {} has no training profile (reference.json); preprocess it again",
                    run.run_id
                )));
            }
        };
        let classes = match &manifest.pipeline.label {
            LabelEncoding::Classes { classes, .. } => Some(classes.as_slice()),
            LabelEncoding::Regression { .. } => None,
        };
        let baseline = Baseline {
            model: model.to_string(),
            version: version.to_string(),
            run_id: run.run_id.clone(),
            train_rows: reference.rows,
            holdout_rows: holdout.rows as u64,
            features: reference.features,
            prediction: PredictionBaseline::from_outputs(classes, outputs),
            metrics: scalar_metrics(metrics),
            created_at: lambdaml::now_rfc3339(),
            estimator: classes.and_then(|c| cbpe_of(holdout, outputs, c.len())),
            loss_estimator: if classes.is_none() {
                dle_of(holdout, outputs)
            } else {
                None
            },
            reconstruction: reference.reconstruction,
        };
        // The samples first, the JSON that describes them last.
        let (json, samples) = baseline.encode();
        for (k, bytes) in [
            (layout::baseline_samples(model, version)?, samples),
            (layout::baseline(model, version)?, json),
        ] {
            match self
                .store
                .put_if_absent(&k, bytes::Bytes::from(bytes))
                .await
            {
                Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Scores the champion on the challenger run's holdout rows, through the champion's own
    /// pipeline.
    async fn score_champion(
        &self,
        model: &str,
        champion: &str,
        run: &RunManifest,
    ) -> Result<(Metrics, Vec<f64>), StageError> {
        let (manifest, net) = Self::load(self.store.as_ref(), model, champion).await?;
        let split: Split = self
            .store
            .get_json(&key(run
                .artifacts
                .get("split")
                .cloned()
                .unwrap_or_default())?)
            .await?;
        let data = self
            .store
            .get(&layout::dataset_file(
                &run.dataset,
                &run.dataset_version,
                "data.parquet",
            )?)
            .await?;
        let dir = tempfile::tempdir().map_err(StageError::from)?;
        let path = dir.path().join("data.parquet");
        std::fs::write(&path, &data.bytes).map_err(StageError::from)?;
        let pipeline = manifest.pipeline.clone();
        let matrix =
            lambdaml::stage::run_blocking("transforming the champion's holdout", move || {
                let table = read_parquet(&path).map_err(StageError::invalid)?;
                pipeline
                    .transform_table(&table, &split.holdout)
                    .map_err(StageError::invalid)
            })
            .await??;
        score_with_outputs(&net, &manifest.pipeline.label, &matrix)
    }
}

/// The classifier's performance estimator, fitted on its holdout outputs (`None` for a
/// holdout whose outputs do not line up with its rows).
fn cbpe_of(holdout: &Matrix, outputs: &[f64], classes: usize) -> Option<lambdaml::estimate::Cbpe> {
    if classes < 2 || holdout.rows == 0 || outputs.len() != holdout.rows * classes {
        return None;
    }
    // At most FIT_ROWS rows: time and memory bounded whatever the holdout's size.
    let rows = lambdaml::estimate::fit_rows(holdout.rows);
    let truth: Vec<usize> = rows.iter().map(|r| holdout.y[*r] as usize).collect();
    let proba: Vec<f64> = rows
        .iter()
        .flat_map(|r| outputs[r * classes..(r + 1) * classes].iter().copied())
        .collect();
    let predicted = lambdaml::estimate::predicted_classes(&proba, classes);
    Some(lambdaml::estimate::Cbpe::fit(
        &truth, &proba, &predicted, classes,
    ))
}

/// The regressor's loss estimator, fitted on its holdout's encoded rows and predictions.
fn dle_of(holdout: &Matrix, outputs: &[f64]) -> Option<lambdaml::estimate::dle::Dle> {
    if holdout.rows == 0 || outputs.len() != holdout.rows {
        return None;
    }
    let rows = lambdaml::estimate::fit_rows(holdout.rows);
    let d = holdout.cols;
    let x: Vec<f64> = rows
        .iter()
        .flat_map(|r| holdout.x[r * d..(r + 1) * d].iter().map(|v| f64::from(*v)))
        .collect();
    let truth: Vec<f64> = rows.iter().map(|r| f64::from(holdout.y[*r])).collect();
    let predicted: Vec<f64> = rows.iter().map(|r| outputs[*r]).collect();
    lambdaml::estimate::dle::Dle::fit(&x, d, &predicted, &truth)
}

#[async_trait]
impl Handler for Evaluate {
    type Request = EvaluateRequest;
    /// `{"model_name", "model_version"}`.
    type Direct = EvaluateRequest;
    /// A summary: the scalar metrics of the version and of the champion.
    type Outcome = serde_json::Value;

    async fn handle_request(
        &self,
        _envelope: &Envelope,
        request: EvaluateRequest,
    ) -> Result<serde_json::Value, StageError> {
        let (e, cached) = self.evaluate(&request).await?;
        Ok(serde_json::json!({
            "cached": cached,
            "model": e.model,
            "version": e.version,
            "holdout_rows": e.holdout_rows,
            "metrics": scalar_metrics(&e.metrics),
            "champion": e.champion.as_ref().map(|c| serde_json::json!({"version": c.version, "metrics": scalar_metrics(&c.metrics)})),
        }))
    }

    fn run_records(&self) -> Option<&dyn ObjectStore> {
        Some(self.store.as_ref())
    }
}

impl Wire for Evaluate {
    const FUNCTION: Function = Function::Evaluate;
    fn wire(wired: &Wired) -> Result<Self, NoQueue> {
        let mut evaluate = Evaluate::new(wired.store.clone(), wired.next()?);
        evaluate.announcer = wired.announcer();
        Ok(evaluate)
    }
}
