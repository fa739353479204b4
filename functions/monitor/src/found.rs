//! What a run compares with: the production version's manifest, baseline and spec, and the
//! capture and feedback objects of a window.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use lambdaml::baseline::Baseline;
use lambdaml::layout;
use lambdaml::model::ModelManifest;
use lambdaml::registry::RegistryStore;
use lambdaml::spec::ModelSpec;
use lambdaml::stage::StageError;
use lambdaml::store::{ObjectKey, ObjectStoreExt, StoreError};
use tracing::warn;

use crate::Monitor;

/// The production version a run compares with, and what it needs of it.
#[derive(Debug)]
pub(crate) struct Found {
    pub manifest: ModelManifest,
    pub baseline: Baseline,
    pub spec: ModelSpec,
    pub spec_changed: bool,
    /// Every version the registry knows.
    pub versions: HashSet<String>,
    /// The registry as the run began (its rollout roles).
    pub registry: lambdaml::registry::Registry,
    /// The classes of the rollout's candidate, in its output order (classification).
    pub candidate_classes: Option<Vec<String>>,
}

/// Where each baseline feature sits in a version's capture rows (its pipeline's input order).
pub(crate) fn input_map(
    baseline: &Baseline,
    pipeline: &lambdaml::features::FeaturePipeline,
) -> Vec<Option<usize>> {
    baseline
        .features
        .iter()
        .map(|f| pipeline.inputs.iter().position(|i| i.name == f.name))
        .collect()
}

impl Monitor {
    /// The production version of `model`: manifest, baseline, the spec it was trained with
    /// (the live spec's monitor and retrain settings applied), every known version.
    pub(crate) async fn find(&self, model: &str) -> Result<Found, StageError> {
        let registry = RegistryStore::new(self.store.clone())
            .load(model)
            .await
            .map_err(StageError::invalid)?
            .map(|(r, _)| r)
            .ok_or_else(|| {
                StageError::permanent(format!("model {model:?} is not in the registry"))
            })?;
        let version = registry.production.clone().ok_or_else(|| {
            StageError::permanent(format!(
                "model {model:?} has no production version to monitor"
            ))
        })?;
        let manifest: ModelManifest = self
            .store
            .get_json(&layout::model_manifest(model, &version)?)
            .await?;
        let baseline = match self.store.get(&layout::baseline(model, &version)?).await {
            Ok(json) => {
                let samples = self
                    .store
                    .get(&layout::baseline_samples(model, &version)?)
                    .await?;
                Baseline::decode(&json.bytes, &samples.bytes).map_err(StageError::invalid)?
            }
            Err(StoreError::NotFound(_)) => {
                return Err(StageError::permanent(format!(
                    "{model} version {version} has no baseline.json (evaluated before monitoring existed?); \
                     evaluate it again to make one"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let trained = lambdaml::run::trained_spec(self.store.as_ref(), &manifest).await?;
        // The live spec's monitoring and retraining settings apply at once (an operator may
        // switch retraining off); a change anywhere that shapes the model — data, features,
        // split, preprocessing, training — means "rebuild with new features".
        let (spec, spec_changed) = match self.store.get(&layout::spec(model)?).await {
            Ok(o) => match ModelSpec::parse(&String::from_utf8_lossy(&o.bytes)) {
                Ok(live) => {
                    let changed = live.dataset != trained.dataset
                        || live.task != trained.task
                        || live.features != trained.features
                        || live.split != trained.split
                        || live.preprocess != trained.preprocess
                        || live.train != trained.train;
                    let mut spec = trained.clone();
                    spec.monitor = live.monitor;
                    spec.retrain = live.retrain;
                    spec.rollout = live.rollout;
                    (spec, changed)
                }
                Err(e) => {
                    warn!(%model, error = %e, "the live spec does not parse; using the trained one");
                    (trained, false)
                }
            },
            Err(StoreError::NotFound(_)) => (trained, false),
            Err(e) => return Err(e.into()),
        };
        // A shadow or canary may order (or name) its classes differently: its outputs are
        // compared by class name.
        let candidate = [
            lambdaml::registry::Role::Shadow,
            lambdaml::registry::Role::Canary,
        ]
        .into_iter()
        .find_map(|r| registry.slot(r).map(|s| s.version.clone()));
        let candidate_classes = match candidate {
            Some(v) => match self
                .store
                .get_json::<ModelManifest>(&layout::model_manifest(model, &v)?)
                .await
            {
                Ok(m) => match m.pipeline.label {
                    lambdaml::features::LabelEncoding::Classes { classes, .. } => Some(classes),
                    lambdaml::features::LabelEncoding::Regression { .. } => None,
                },
                Err(e) => {
                    warn!(%model, version = %v, error = %e, "the rollout's candidate has no readable manifest");
                    None
                }
            },
            None => None,
        };
        Ok(Found {
            candidate_classes,
            manifest,
            baseline,
            spec,
            spec_changed,
            versions: registry.versions.keys().cloned().collect(),
            registry,
        })
    }

    /// Keys under `root/<model>/` whose hour folder starts in `[from, to]`.
    pub(crate) async fn keys_between(
        &self,
        root: &str,
        model: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ObjectKey>, StageError> {
        Ok(self
            .metas_between(root, model, from, to)
            .await?
            .into_iter()
            .map(|m| m.key)
            .collect())
    }

    /// [`Monitor::keys_between`] with each object's size.
    pub(crate) async fn metas_between(
        &self,
        root: &str,
        model: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<lambdaml::store::ObjectMeta>, StageError> {
        let first_hour = from.timestamp().div_euclid(3600);
        // `to` is exclusive: a window ending on the hour does not read the next hour.
        let last_hour = (to.timestamp_millis() - 1).div_euclid(3_600_000);
        let days = (to - from).num_days();
        let mut metas = Vec::new();
        if days > 31 {
            metas = self
                .store
                .list_all(&layout::records_of(root, model))
                .await?;
        } else {
            let mut day = from.date_naive();
            let last = to.date_naive();
            while day <= last {
                metas.extend(
                    self.store
                        .list_all(&layout::records_of_day(root, model, day))
                        .await?,
                );
                match day.succ_opt() {
                    Some(next) => day = next,
                    None => break,
                }
            }
        }
        let mut metas: Vec<lambdaml::store::ObjectMeta> = metas
            .into_iter()
            .filter(|m| {
                layout::record_hour(m.key.as_str()).is_some_and(|t| {
                    let h = t.timestamp().div_euclid(3600);
                    h >= first_hour && h <= last_hour
                })
            })
            .collect();
        metas.sort_by(|a, b| a.key.cmp(&b.key));
        metas.dedup_by(|a, b| a.key == b.key);
        Ok(metas)
    }
}
