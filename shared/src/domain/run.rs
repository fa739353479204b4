//! Pipeline runs: what preprocess hands to training.
//!
//! A run is one model spec applied to one dataset version. Its id derives from the two
//! content hashes (the dataset version and the spec's bytes), so a redelivered preprocess
//! message finds its run already there and creates nothing new. A run's artifacts live
//! under `runs/<run>/`; `manifest.json` is written last and names them all.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `runs/<run>/manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    /// The run id.
    pub run_id: String,
    /// The model name.
    pub model: String,
    /// The dataset name.
    pub dataset: String,
    /// The dataset version.
    pub dataset_version: String,
    /// SHA-256 of the spec's bytes.
    pub spec_sha256: String,
    /// Rows in the training split.
    pub train_rows: usize,
    /// Rows in the holdout split.
    pub holdout_rows: usize,
    /// Encoded feature count.
    pub features: usize,
    /// Columns the pipeline dropped, with reasons.
    pub dropped: Vec<String>,
    /// Artifact keys: `spec`, `pipeline`, `split`, `train`, `holdout`.
    pub artifacts: BTreeMap<String, String>,
    /// The pipeline run that wrote it (`runs/<run>/record.json`), when it ran in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_run: Option<String>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// The lambdaml version that wrote it.
    pub lambdaml_version: String,
}

/// The spec a run could not be read back with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunSpecError {
    /// The manifest or the snapshot could not be read.
    #[error(transparent)]
    Store(#[from] crate::store::JsonError),
    /// The manifest names no spec snapshot.
    #[error("run {0} has no spec artifact")]
    NoSpec(String),
    /// The snapshot is not a valid spec.
    #[error("{key}: {source}")]
    Spec {
        /// The snapshot's key.
        key: String,
        /// Why.
        #[source]
        source: crate::spec::SpecError,
    },
}

impl crate::error::Classify for RunSpecError {
    fn retry(&self) -> crate::error::Retry {
        match self {
            RunSpecError::Store(e) => e.retry(),
            RunSpecError::Spec { .. } | RunSpecError::NoSpec(_) => crate::error::Retry::Permanent,
        }
    }
}

impl RunManifest {
    /// `runs/<run_id>/manifest.json`.
    pub async fn read(
        store: &dyn crate::store::ObjectStore,
        run_id: &str,
    ) -> Result<Self, crate::store::JsonError> {
        use crate::store::ObjectStoreExt;
        store.get_json(&crate::layout::run_manifest(run_id)?).await
    }

    /// The spec this run was made with: its content-addressed snapshot, parsed.
    pub async fn spec(
        &self,
        store: &dyn crate::store::ObjectStore,
    ) -> Result<crate::spec::ModelSpec, RunSpecError> {
        Ok(read_spec(store, self.spec_key()?.as_str()).await?.0)
    }

    /// The key of the spec snapshot this run was made with.
    pub fn spec_key(&self) -> Result<crate::store::ObjectKey, RunSpecError> {
        let text = self
            .artifacts
            .get("spec")
            .ok_or_else(|| RunSpecError::NoSpec(self.run_id.clone()))?;
        crate::store::ObjectKey::new(text.as_str())
            .map_err(|e| RunSpecError::Store(crate::store::JsonError::from(e)))
    }
}

/// The spec stored at `key`, parsed, and the SHA-256 of its bytes.
pub async fn read_spec(
    store: &dyn crate::store::ObjectStore,
    key: &str,
) -> Result<(crate::spec::ModelSpec, String), RunSpecError> {
    let key = crate::store::ObjectKey::new(key).map_err(crate::store::JsonError::from)?;
    let bytes = store
        .get(&key)
        .await
        .map_err(crate::store::JsonError::from)?
        .bytes;
    let spec =
        crate::spec::ModelSpec::parse(&String::from_utf8_lossy(&bytes)).map_err(|source| {
            RunSpecError::Spec {
                key: key.to_string(),
                source,
            }
        })?;
    Ok((spec, crate::sha256_hex(&bytes)))
}

/// The spec a model version was trained with: the snapshot its manifest names, or (for a
/// manifest written before versions named theirs) its run's.
pub async fn trained_spec(
    store: &dyn crate::store::ObjectStore,
    manifest: &crate::model::ModelManifest,
) -> Result<crate::spec::ModelSpec, RunSpecError> {
    match &manifest.spec {
        Some(key) => Ok(read_spec(store, key).await?.0),
        None => {
            RunManifest::read(store, &manifest.run_id)
                .await?
                .spec(store)
                .await
        }
    }
}

/// `runs/<run>/split.json`: which dataset rows went where, so a later stage can apply
/// another pipeline (the champion's) to the very same holdout rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// Training row indices into the dataset version's `data.parquet`.
    pub train: Vec<usize>,
    /// Holdout row indices.
    pub holdout: Vec<usize>,
}

/// The run id for a model, a dataset version and the cache key of what preprocess reads
/// (`ModelSpec::preprocess_key`).
pub fn run_id(model: &str, dataset_version: &str, spec_sha256: &str) -> String {
    let digest = crate::sha256_hex(format!("{dataset_version}\n{spec_sha256}").as_bytes());
    format!("{model}-{}", &digest[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_deterministic_and_distinct() {
        let a = run_id("m", "v1", "s1");
        assert_eq!(a, run_id("m", "v1", "s1"));
        assert_ne!(a, run_id("m", "v2", "s1"));
        assert_ne!(a, run_id("m", "v1", "s2"));
        assert!(a.starts_with("m-"));
    }
}
