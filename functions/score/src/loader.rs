//! Model loading: the production version from the registry, cached and re-checked on an
//! interval; explicit versions on demand in a small LRU.
//!
//! The production pointer of a model is resolved at its first request (cold start) and kept.
//! Once the refresh interval has passed, the next request re-checks it with a `HEAD` of the
//! registry document: an unchanged etag costs nothing more; a changed one (a promotion or a
//! rollback) loads the registry and, when the production version moved, the new version —
//! so a promotion takes effect within the interval without a redeploy. One request at a
//! time refreshes; the others keep using the version they have. When the store cannot be
//! reached, the last known version keeps serving and the failure is logged.
//!
//! The registry's rollout roles are resolved with production ([`Serving`]): the shadow and
//! the canary version, with their weights, change within the same interval. A role whose
//! version cannot be loaded is left out (and logged): production keeps serving.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use lambdaml::layout;
use lambdaml::model::{DenseModel, ModelManifest};
use lambdaml::registry::{RegistryStore, Role};
use lambdaml::store::{ObjectKey, ObjectStore, StoreError};

use crate::error::ApiError;

/// A model version ready to score: its manifest (with the fitted pipeline) and weights.
#[derive(Debug)]
pub struct LoadedModel {
    /// The model.
    pub name: String,
    /// The version.
    pub version: String,
    /// The manifest (architecture, pipeline, provenance).
    pub manifest: ModelManifest,
    /// The weights, compiled for serving.
    pub dense: DenseModel,
    /// Input feature name → its index in `manifest.pipeline.inputs`.
    pub index: HashMap<String, usize>,
    /// Dataset columns that are not inputs but are not unknown either (dropped columns, the
    /// label): a request may carry them and they are ignored.
    pub ignorable: BTreeSet<String>,
    /// The classes (classification), in output order.
    pub classes: Option<Vec<String>>,
    /// The version as the `x-lambdaml-version` response header (made once, not per answer).
    pub version_header: Option<axum::http::HeaderValue>,
}

impl LoadedModel {
    /// Builds a loaded model from a manifest and weights bytes.
    pub fn new(manifest: ModelManifest, weights: &[u8]) -> Result<Self, String> {
        let dense = DenseModel::from_safetensors(manifest.architecture.clone(), weights)
            .map_err(|e| e.to_string())?;
        let pipeline = &manifest.pipeline;
        let classes = lambdaml::model::check_pairing(&dense, pipeline)?;
        let index = pipeline
            .inputs
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        let mut ignorable: BTreeSet<String> =
            pipeline.dropped.iter().map(|d| d.name.clone()).collect();
        ignorable.insert(pipeline.label.name().to_string());
        Ok(LoadedModel {
            name: manifest.model.clone(),
            version: manifest.version.clone(),
            version_header: axum::http::HeaderValue::from_str(&manifest.version).ok(),
            dense,
            index,
            ignorable,
            classes,
            manifest,
        })
    }

    /// The number of input features.
    pub fn width(&self) -> usize {
        self.manifest.pipeline.inputs.len()
    }
}

/// Model and version names: what a path segment may carry before it reaches the store.
pub fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "no {what} {name:?} (names are 1-128 of A-Z a-z 0-9 - _ .)"
        )))
    }
}

/// What a model serves: its production version and the versions in rollout roles.
#[derive(Debug)]
pub struct Serving {
    /// The production version.
    pub production: Arc<LoadedModel>,
    /// The shadow and the share of requests it scores.
    pub shadow: Option<(Arc<LoadedModel>, f64)>,
    /// The canary and the share of requests it answers.
    pub canary: Option<(Arc<LoadedModel>, f64)>,
    /// For each of the shadow's inputs, its position among production's (None: production's
    /// requests do not carry it), worked out once per resolution, not per request.
    pub shadow_inputs: Arc<[Option<usize>]>,
}

/// A shadow to run on a request: the version and where its inputs are in production's.
#[derive(Debug, Clone)]
pub struct ShadowRun {
    /// The shadow version.
    pub model: Arc<LoadedModel>,
    /// Its inputs' positions among production's.
    pub inputs: Arc<[Option<usize>]>,
}

/// A stable number in [0, 1) for `key` (FNV-1a, then a 64-bit mix): the same key always
/// lands on the same side of a weight, in every process.
pub fn key_fraction(salt: &str, key: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.bytes().chain([0u8]).chain(key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64's finaliser spreads FNV's low-entropy high bits.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl Serving {
    /// The version that answers a request: the canary for its weight's share (by `key`
    /// when the caller sent one, so a caller sticks to one version; at random otherwise),
    /// production for the rest. True when it is the canary.
    pub fn answerer(&self, key: Option<&str>) -> (&Arc<LoadedModel>, bool) {
        if let Some((canary, weight)) = &self.canary {
            let u = match key {
                Some(k) => key_fraction(&canary.name, k),
                None => rand::random::<f64>(),
            };
            if u < *weight {
                return (canary, true);
            }
        }
        (&self.production, false)
    }

    /// The shadow, when this request is in its share.
    pub fn shadow_for(&self, key: Option<&str>) -> Option<ShadowRun> {
        let (shadow, share) = self.shadow.as_ref()?;
        if *share < 1.0 {
            let u = match key {
                Some(k) => key_fraction("shadow", k),
                None => rand::random::<f64>(),
            };
            if u >= *share {
                return None;
            }
        }
        Some(ShadowRun {
            model: shadow.clone(),
            inputs: self.shadow_inputs.clone(),
        })
    }

    /// The widest input of the versions that may answer (a JSON body's parse budget).
    pub fn width(&self) -> usize {
        self.canary
            .as_ref()
            .map_or(0, |(c, _)| c.width())
            .max(self.production.width())
    }
}

struct Pointer {
    model: Option<Arc<Serving>>,
    etag: String,
    checked: Instant,
}

/// The cache. See the module docs.
pub struct ModelCache {
    store: Arc<dyn ObjectStore>,
    registry: RegistryStore,
    refresh: Duration,
    capacity: usize,
    production: RwLock<HashMap<String, Pointer>>,
    versions: Mutex<Vec<Arc<LoadedModel>>>,
    refreshing: tokio::sync::Mutex<()>,
    loads: AtomicU64,
    checks: AtomicU64,
}

impl std::fmt::Debug for ModelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelCache")
            .field("refresh", &self.refresh)
            .field("capacity", &self.capacity)
            .field("loads", &self.loads())
            .finish_non_exhaustive()
    }
}

impl ModelCache {
    /// A cache over `store` re-checking production pointers every `refresh` and keeping up
    /// to `capacity` explicitly requested versions.
    pub fn new(store: Arc<dyn ObjectStore>, refresh: Duration, capacity: usize) -> Self {
        ModelCache {
            registry: RegistryStore::new(store.clone()),
            store,
            refresh,
            capacity: capacity.max(1),
            production: RwLock::new(HashMap::new()),
            versions: Mutex::new(Vec::new()),
            refreshing: tokio::sync::Mutex::new(()),
            loads: AtomicU64::new(0),
            checks: AtomicU64::new(0),
        }
    }

    /// Versions loaded from the store so far.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Registry checks (HEAD requests) so far.
    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    /// The models with a resolved production version: (model, version).
    pub fn resolved(&self) -> Vec<(String, String)> {
        let map = self
            .production
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<(String, String)> = map
            .iter()
            .filter_map(|(m, p)| {
                p.model
                    .as_ref()
                    .map(|l| (m.clone(), l.production.version.clone()))
            })
            .collect();
        out.sort();
        out
    }

    /// The cached pointer: fresh, stale (with the etag to check), or none.
    fn cached_pointer(&self, model: &str) -> Option<(Option<Arc<Serving>>, Option<String>)> {
        let map = self
            .production
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(model).map(|p| {
            let stale = p.checked.elapsed() >= self.refresh;
            (p.model.clone(), stale.then(|| p.etag.clone()))
        })
    }

    /// The production version of `model`.
    pub async fn production(&self, model: &str) -> Result<Arc<LoadedModel>, ApiError> {
        Ok(self.serving(model).await?.production.clone())
    }

    /// What `model` serves: production and its rollout roles.
    pub async fn serving(&self, model: &str) -> Result<Arc<Serving>, ApiError> {
        check_name("model", model)?;
        let no_production = || {
            ApiError::unavailable(format!(
                "model {model:?} has no production version (promote one with `lambdaml models promote`)"
            ))
        };
        match self.cached_pointer(model) {
            Some((loaded, None)) => loaded.ok_or_else(no_production),
            Some((loaded, Some(etag))) => {
                // Due for a check. One request checks; the others use what they have.
                let Ok(_guard) = self.refreshing.try_lock() else {
                    return loaded.ok_or_else(no_production);
                };
                match self.refresh(model, Some(&etag)).await {
                    Ok(Some(fresh)) => fresh.ok_or_else(no_production),
                    Ok(None) => {
                        self.touch(model);
                        loaded.ok_or_else(no_production)
                    }
                    Err(e) if loaded.is_some() && e.status.is_server_error() => {
                        tracing::warn!(model, error = %e.error, "registry check failed; serving the version loaded before");
                        self.touch(model);
                        loaded.ok_or_else(no_production)
                    }
                    Err(e) => Err(e),
                }
            }
            None => {
                let _guard = self.refreshing.lock().await;
                if let Some((loaded, None)) = self.cached_pointer(model) {
                    return loaded.ok_or_else(no_production);
                }
                match self.refresh(model, None).await? {
                    Some(fresh) => fresh.ok_or_else(no_production),
                    None => Err(no_production()),
                }
            }
        }
    }

    fn touch(&self, model: &str) {
        let mut map = self
            .production
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = map.get_mut(model) {
            p.checked = Instant::now();
        }
    }

    /// Re-reads the production pointer unless the registry's etag is still `etag`.
    /// `Ok(None)`: unchanged. `Ok(Some(v))`: the new pointer (None: no production version).
    async fn refresh(
        &self,
        model: &str,
        etag: Option<&str>,
    ) -> Result<Option<Option<Arc<Serving>>>, ApiError> {
        let key = layout::registry(model).map_err(|e| ApiError::not_found(e.to_string()))?;
        self.checks.fetch_add(1, Ordering::Relaxed);
        let head = match self.store.head(&key).await {
            Ok(Some(meta)) => meta,
            Ok(None) | Err(StoreError::NotFound(_)) => {
                return Err(ApiError::not_found(format!(
                    "no model {model:?} in the registry"
                )));
            }
            Err(e) => return Err(ApiError::internal(format!("reading the registry: {e}"))),
        };
        if etag == Some(head.etag.as_str()) {
            return Ok(None);
        }
        let (registry, etag) = match self.registry.load(model).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                return Err(ApiError::not_found(format!(
                    "no model {model:?} in the registry"
                )));
            }
            Err(e) => return Err(ApiError::internal(format!("reading the registry: {e}"))),
        };
        let loaded = match &registry.production {
            Some(version) => {
                let production = self.version(model, version).await?;
                tracing::info!(model, version = %production.version, "production version resolved");
                let mut roles = [None, None];
                for (slot, role) in roles.iter_mut().zip([Role::Shadow, Role::Canary]) {
                    let Some(s) = registry.slot(role) else {
                        continue;
                    };
                    match self.version(model, &s.version).await {
                        Ok(m) => {
                            tracing::info!(model, version = %s.version, %role, weight = s.weight, "rollout version resolved");
                            *slot = Some((m, s.weight));
                        }
                        Err(e) => {
                            tracing::error!(model, version = %s.version, %role, error = %e.error, "the {role} version cannot be loaded; production serves alone");
                        }
                    }
                }
                let [shadow, canary] = roles;
                let shadow_inputs: Arc<[Option<usize>]> = match &shadow {
                    Some((s, _)) => s
                        .manifest
                        .pipeline
                        .inputs
                        .iter()
                        .map(|f| production.index.get(&f.name).copied())
                        .collect(),
                    None => Arc::from(Vec::new()),
                };
                Some(Arc::new(Serving {
                    production,
                    shadow,
                    canary,
                    shadow_inputs,
                }))
            }
            None => None,
        };
        let mut map = self
            .production
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(
            model.to_string(),
            Pointer {
                model: loaded.clone(),
                etag,
                checked: Instant::now(),
            },
        );
        Ok(Some(loaded))
    }

    /// An explicit version of `model`, from the LRU or the store.
    pub async fn version(&self, model: &str, version: &str) -> Result<Arc<LoadedModel>, ApiError> {
        check_name("model", model)?;
        check_name("version", version)?;
        {
            let mut lru = self
                .versions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(pos) = lru
                .iter()
                .position(|m| m.name == model && m.version == version)
            {
                let hit = lru.remove(pos);
                lru.push(hit.clone());
                return Ok(hit);
            }
        }
        let loaded = Arc::new(self.load(model, version).await?);
        self.loads.fetch_add(1, Ordering::Relaxed);
        let mut lru = self
            .versions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !lru.iter().any(|m| m.name == model && m.version == version) {
            lru.push(loaded.clone());
            if lru.len() > self.capacity {
                lru.remove(0);
            }
        }
        Ok(loaded)
    }

    async fn load(&self, model: &str, version: &str) -> Result<LoadedModel, ApiError> {
        let manifest_key = layout::model_manifest(model, version)
            .map_err(|e| ApiError::not_found(e.to_string()))?;
        let manifest: ModelManifest = match self.store.get(&manifest_key).await {
            Ok(object) => serde_json::from_slice(&object.bytes).map_err(|e| {
                ApiError::internal(format!("{manifest_key} is not a model manifest: {e}"))
            })?,
            Err(StoreError::NotFound(_)) => {
                return Err(ApiError::not_found(format!(
                    "model {model:?} has no version {version:?}"
                )));
            }
            Err(e) => return Err(ApiError::internal(format!("reading {manifest_key}: {e}"))),
        };
        if manifest.model != model || manifest.version != version {
            return Err(ApiError::internal(format!(
                "{manifest_key} describes {}/{}",
                manifest.model, manifest.version
            )));
        }
        let weights_key = manifest
            .artifacts
            .get("weights")
            .cloned()
            .map(ObjectKey::new)
            .unwrap_or_else(|| layout::weights(model, version))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let weights = self
            .store
            .get(&weights_key)
            .await
            .map_err(|e| ApiError::internal(format!("reading {weights_key}: {e}")))?;
        LoadedModel::new(manifest, &weights.bytes)
            .map_err(|e| ApiError::internal(format!("loading {model}/{version}: {e}")))
    }
}
