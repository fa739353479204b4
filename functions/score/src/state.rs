//! What every route shares: [`ScoreState`] (configuration, store, model cache, capture
//! writer, counters).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use lambdaml::capture::{CaptureWriter, Clock, system_clock};
use lambdaml::store::ObjectStore;

use crate::budget;
use crate::config::ScoreConfig;
use crate::error::ApiError;
use crate::loader::{LoadedModel, ModelCache, Serving, ShadowRun};
use crate::metrics::{Gauges, Metrics};
use crate::parse::Limits;
use lambdaml::registry::Role;

/// What a request was routed to before its body says which key it carries.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// An explicitly requested version: no canary, no shadow.
    Version(Arc<LoadedModel>),
    /// The model's production version and rollout roles.
    Serving(Arc<Serving>),
}

/// The version that answers one request, its role, and the shadow that mirrors it.
#[derive(Debug, Clone)]
pub(crate) struct Picked {
    pub model: Arc<LoadedModel>,
    pub role: Option<Role>,
    pub shadow: Option<ShadowRun>,
}

impl Target {
    /// The widest input of the versions that may answer.
    pub(crate) fn width(&self) -> usize {
        match self {
            Target::Version(m) => m.width(),
            Target::Serving(s) => s.width(),
        }
    }

    /// The version that answers a request carrying `key` (see [`Serving::answerer`]); a
    /// request production answers is mirrored to the shadow when in its share.
    pub(crate) fn pick(&self, key: Option<&str>) -> Picked {
        match self {
            Target::Version(m) => Picked {
                model: m.clone(),
                role: None,
                shadow: None,
            },
            Target::Serving(s) => {
                let (model, canary) = s.answerer(key);
                Picked {
                    model: model.clone(),
                    role: canary.then_some(Role::Canary),
                    shadow: if canary { None } else { s.shadow_for(key) },
                }
            }
        }
    }
}

/// The routing key of a request: the `x-lambdaml-key` header (a user, a session), which
/// keeps a caller on one side of a canary split.
pub(crate) fn header_key(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get("x-lambdaml-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| k.chars().take(256).collect())
}

/// Everything the routes share.
#[derive(Debug)]
pub struct ScoreState {
    /// The configuration.
    pub config: ScoreConfig,
    /// The store models are read from and captures written to.
    pub store: Arc<dyn ObjectStore>,
    /// Loaded models.
    pub cache: ModelCache,
    /// The capture writer.
    pub capture: Arc<CaptureWriter>,
    /// Counters.
    pub metrics: Metrics,
    /// Where request times come from.
    pub clock: Clock,
    pub(crate) started: Instant,
    pub(crate) cold_start: OnceLock<f64>,
    pub(crate) first_request: AtomicBool,
    /// Permits for requests in flight (see [`server`]).
    pub(crate) in_flight: Arc<tokio::sync::Semaphore>,
    /// The service name metrics carry (see [`lambdaml::telemetry::service`]).
    pub(crate) service: String,
    /// Shadow jobs not finished yet.
    pub(crate) shadows: Arc<crate::scoring::InFlight>,
}

impl ScoreState {
    /// The state over `store`; `started` is when the process started.
    pub fn new(store: Arc<dyn ObjectStore>, config: ScoreConfig, started: Instant) -> Arc<Self> {
        Self::with_clock(store, config, started, system_clock())
    }

    /// The state with request times from `clock` (capture timestamps and partitions, feedback
    /// times).
    pub fn with_clock(
        store: Arc<dyn ObjectStore>,
        config: ScoreConfig,
        started: Instant,
        clock: Clock,
    ) -> Arc<Self> {
        Arc::new(ScoreState {
            clock,
            cache: ModelCache::new(store.clone(), config.refresh, config.lru),
            capture: Arc::new(CaptureWriter::new(store.clone(), config.capture.clone())),
            metrics: Metrics::default(),
            store,
            started,
            cold_start: OnceLock::new(),
            first_request: AtomicBool::new(true),
            service: lambdaml::telemetry::service(),
            shadows: Arc::default(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                config
                    .max_in_flight
                    .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
            )),
            config,
        })
    }

    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_rows: self.config.max_rows,
        }
    }

    /// What a JSON body for a model of `width` inputs may take once parsed.
    pub(crate) fn json_budget(&self, width: usize) -> usize {
        budget::for_rows(self.config.max_rows, width)
    }

    /// The production version of `model` (and notes the cold start).
    pub async fn production(&self, model: &str) -> Result<Arc<LoadedModel>, ApiError> {
        let m = self.cache.production(model).await?;
        self.cold_start
            .get_or_init(|| self.started.elapsed().as_secs_f64());
        Ok(m)
    }

    pub(crate) async fn resolve(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<Arc<LoadedModel>, ApiError> {
        match version {
            Some(v) => self.cache.version(model, v).await,
            None => self.production(model).await,
        }
    }

    /// What answers a request for `model`: an explicit `version` alone, or what the model
    /// serves (production, its canary and shadow).
    pub(crate) async fn target(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<Target, ApiError> {
        match version {
            Some(v) => Ok(Target::Version(self.cache.version(model, v).await?)),
            None => {
                let serving = self.cache.serving(model).await?;
                self.cold_start
                    .get_or_init(|| self.started.elapsed().as_secs_f64());
                Ok(Target::Serving(serving))
            }
        }
    }

    /// Waits (up to `limit`) until every shadow job started so far has captured its record;
    /// false when some were still running at the limit. A shutdown calls it before the last
    /// flush, and a simulation before it reads the captures.
    pub async fn settle(&self, limit: std::time::Duration) -> bool {
        tokio::time::timeout(limit, self.shadows.settled())
            .await
            .is_ok()
    }

    /// Loads the default model's production version now (cold start work done before the
    /// first request). Returns what failed, if anything.
    pub async fn warm_up(&self) -> Option<String> {
        let model = self.config.default_model.as_deref()?;
        self.production(model).await.err().map(|e| e.error)
    }

    pub(crate) fn gauges(&self) -> Gauges {
        Gauges {
            cold_start_seconds: self.cold_start.get().copied(),
            model_loads: self.cache.loads(),
            registry_checks: self.cache.checks(),
            production: self.cache.resolved(),
            captures: self.capture.stats(),
            shadow: (self.shadows.outcomes(), self.shadows.count()),
        }
    }
}
