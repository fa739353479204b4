//! The score function: one axum [`router`] that runs in Lambda (through `lambda_http`, for
//! API Gateway HTTP API and function URL events) and locally (`lambdaml serve`), with the
//! same code and behaviour in both.
//!
//! Routes:
//! - Open Inference Protocol (KServe V2): `GET /v2`, `/v2/health/live`, `/v2/health/ready`,
//!   `GET /v2/models/{m}[/versions/{v}]` (metadata), `GET …/ready`,
//!   `POST /v2/models/{m}[/versions/{v}]/infer`, plus `GET /v2/models` (the registry).
//! - MLflow scoring: `POST /invocations` (`dataframe_split`, `dataframe_records`,
//!   `instances`, `inputs`, `text/csv`; `?model=&version=` or the default model),
//!   `GET /ping`.
//! - Ground truth: `POST /v2/models/{m}/feedback`.
//! - `GET /metrics`: Prometheus text.
//!
//! Every request is validated against the version's fitted pipeline ([`parse`]), scored by
//! the compiled weights, captured ([`lambdaml::capture`]) and counted ([`metrics`]). Every
//! error is JSON: `{"error", "details": [{"row", "field", "reason"}], "request_id"}`; a
//! client's mistake is a 4xx, never a 5xx.

pub mod budget;
pub mod error;
pub mod guard;
pub mod loader;
pub mod metrics;
pub mod parse;
pub mod server;
pub mod stream;

pub use server::serve;

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use lambdaml::capture::{
    CaptureConfig, CaptureRecord, CaptureWriter, CapturedValue, Clock, FeedbackRecord, millis,
    system_clock, write_feedback,
};
use lambdaml::features::RawValue;
use lambdaml::store::ObjectStore;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::error::{ApiError, ErrorBody, Errors};
use crate::loader::{LoadedModel, ModelCache, check_name};
use crate::metrics::{Gauges, Metrics, Outcome};
use crate::parse::{Frame, Limits};

/// Lambda's synchronous payload limit, the default body limit.
pub const LAMBDA_PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;

/// How the score function behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreConfig {
    /// The model `/invocations` and `/ping` serve when the request names none.
    pub default_model: Option<String>,
    /// How often a production pointer is re-checked against the registry.
    pub refresh: Duration,
    /// Explicitly requested versions kept loaded.
    pub lru: usize,
    /// Request body limit in bytes.
    pub max_body_bytes: usize,
    /// Rows per request.
    pub max_rows: usize,
    /// Capture sampling and batching.
    pub capture: CaptureConfig,
    /// Write captures at the end of every request (Lambda: the process may be frozen or
    /// ended after any response).
    pub flush_each_request: bool,
    /// Print one CloudWatch EMF line per request on stdout (Lambda).
    pub emf: bool,
    /// Refuse requests a browser marks as cross-origin (`lambdaml serve`; see [`guard`]).
    pub same_origin_only: bool,
    /// Requests handled at once; more get 503 (see [`server`]).
    pub max_in_flight: usize,
    /// A request's whole time, body reading included (see [`server`]).
    pub request_timeout: Duration,
    /// How long `lambdaml serve` waits for a request's headers.
    pub header_timeout: Duration,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        ScoreConfig {
            default_model: None,
            refresh: Duration::from_secs(10),
            lru: 4,
            max_body_bytes: LAMBDA_PAYLOAD_LIMIT,
            max_rows: 10_000,
            capture: CaptureConfig::default(),
            flush_each_request: false,
            emf: false,
            same_origin_only: false,
            max_in_flight: 256,
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// `"250ms"`, `"10s"`, `"5m"`, `"1h"`.
pub fn parse_interval(text: &str) -> Option<Duration> {
    let t = text.trim();
    if let Some(ms) = t.strip_suffix("ms") {
        return ms.trim().parse().ok().map(Duration::from_millis);
    }
    lambdaml::spec::parse_duration_secs(t).map(Duration::from_secs)
}

impl ScoreConfig {
    /// The configuration from `LAMBDAML_*` variables (`get` looks one up); Lambda settings
    /// (flush every request, EMF) when `AWS_LAMBDA_FUNCTION_NAME` is set.
    ///
    /// `LAMBDAML_MODEL`, `LAMBDAML_REFRESH` (e.g. `10s`), `LAMBDAML_MAX_ROWS`,
    /// `LAMBDAML_MAX_BODY_BYTES`, `LAMBDAML_MAX_IN_FLIGHT`, `LAMBDAML_REQUEST_TIMEOUT`,
    /// `LAMBDAML_CAPTURE_SAMPLE` (0–1),
    /// `LAMBDAML_CAPTURE_MAX_BYTES`, `LAMBDAML_CAPTURE_MAX_AGE` (e.g. `60s`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut c = ScoreConfig::default();
        let lambda = get("AWS_LAMBDA_FUNCTION_NAME").is_some();
        c.flush_each_request = lambda;
        c.emf = lambda;
        c.default_model = get("LAMBDAML_MODEL").filter(|m| !m.is_empty());
        let number = |name: &str| -> Result<Option<usize>, String> {
            get(name)
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| format!("{name}={v:?} is not a whole number"))
                })
                .transpose()
        };
        let interval = |name: &str| -> Result<Option<Duration>, String> {
            get(name)
                .map(|v| {
                    parse_interval(&v).ok_or_else(|| {
                        format!("{name}={v:?} is not a duration like 500ms, 10s, 5m")
                    })
                })
                .transpose()
        };
        if let Some(d) = interval("LAMBDAML_REFRESH")? {
            c.refresh = d;
        }
        if let Some(n) = number("LAMBDAML_MAX_ROWS")? {
            c.max_rows = n.max(1);
        }
        if let Some(n) = number("LAMBDAML_MAX_BODY_BYTES")? {
            c.max_body_bytes = n;
        }
        if let Some(n) = number("LAMBDAML_MAX_IN_FLIGHT")? {
            c.max_in_flight = n.max(1);
        }
        if let Some(d) = interval("LAMBDAML_REQUEST_TIMEOUT")? {
            c.request_timeout = d.max(Duration::from_millis(1));
        }
        if let Some(n) = number("LAMBDAML_CAPTURE_MAX_BYTES")? {
            c.capture.max_bytes = n;
        }
        if let Some(d) = interval("LAMBDAML_CAPTURE_MAX_AGE")? {
            c.capture.max_age = d;
        }
        if let Some(v) = get("LAMBDAML_CAPTURE_SAMPLE") {
            c.capture.sample_rate = v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    format!("LAMBDAML_CAPTURE_SAMPLE={v:?} is not a number in [0, 1]")
                })?;
        }
        Ok(c)
    }
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
    started: Instant,
    cold_start: OnceLock<f64>,
    first_request: AtomicBool,
    /// Permits for requests in flight (see [`server`]).
    in_flight: Arc<tokio::sync::Semaphore>,
    /// The service name metrics carry (see [`lambdaml::telemetry::service`]).
    service: String,
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
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                config
                    .max_in_flight
                    .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
            )),
            config,
        })
    }

    fn limits(&self) -> Limits {
        Limits {
            max_rows: self.config.max_rows,
        }
    }

    /// What a JSON body for a model of `width` inputs may take once parsed.
    fn json_budget(&self, width: usize) -> usize {
        budget::for_rows(self.config.max_rows, width)
    }

    /// The production version of `model` (and notes the cold start).
    pub async fn production(&self, model: &str) -> Result<Arc<LoadedModel>, ApiError> {
        let m = self.cache.production(model).await?;
        self.cold_start
            .get_or_init(|| self.started.elapsed().as_secs_f64());
        Ok(m)
    }

    async fn resolve(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<Arc<LoadedModel>, ApiError> {
        match version {
            Some(v) => self.cache.version(model, v).await,
            None => self.production(model).await,
        }
    }

    /// Loads the default model's production version now (cold start work done before the
    /// first request). Returns what failed, if anything.
    pub async fn warm_up(&self) -> Option<String> {
        let model = self.config.default_model.as_deref()?;
        self.production(model).await.err().map(|e| e.error)
    }

    fn gauges(&self) -> Gauges {
        Gauges {
            cold_start_seconds: self.cold_start.get().copied(),
            model_loads: self.cache.loads(),
            registry_checks: self.cache.checks(),
            production: self.cache.resolved(),
            captures: self.capture.stats(),
        }
    }
}

/// The router. See the module docs.
pub fn router(state: Arc<ScoreState>) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models", get(list_models))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/infer", post(infer))
        .route("/v2/models/{model}/feedback", post(feedback))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(version_metadata),
        )
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(version_ready),
        )
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(infer_version),
        )
        .route("/invocations", post(invocations))
        .route("/ping", get(ping))
        .route("/health", get(ping))
        .route("/version", get(version))
        .route("/metrics", get(prometheus))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), same_origin))
        .layer(middleware::from_fn_with_state(state.clone(), server::limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------
// Plumbing

/// A request id: 128 random bits as 32 hex digits. Feedback is joined to captures by this
/// id, so it must not be guessable: it comes from the thread-local CSPRNG (ChaCha, seeded
/// from the OS once per thread; no syscall per request).
pub(crate) fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn json_response(status: StatusCode, body: Vec<u8>, request_id: Option<&str>) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(id) = request_id
        && let Ok(v) = HeaderValue::from_str(id)
    {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

pub(crate) fn error_response(e: &ApiError, request_id: &str) -> Response {
    // A server fault's text names store keys, buckets and causes: that is for the log, not
    // for a client. The client gets the request id to quote.
    if e.status.is_server_error() && e.status != StatusCode::SERVICE_UNAVAILABLE {
        tracing::error!(request_id, status = e.status.as_u16(), error = %e.error, "request failed");
        let public = ApiError::new(
            e.status,
            format!("internal error; the server's log has the cause under request id {request_id}"),
        );
        return error_body(&public, request_id);
    }
    error_body(e, request_id)
}

fn error_body(e: &ApiError, request_id: &str) -> Response {
    // Every error lists at least one detail, so clients read one shape.
    let fallback;
    let details = if e.details.is_empty() {
        fallback = [lambdaml::capture::FieldError::new(
            None,
            None,
            e.error.clone(),
        )];
        &fallback[..]
    } else {
        &e.details[..]
    };
    let body = ErrorBody {
        error: &e.error,
        details,
        details_total: e.details_total.max(1),
        request_id,
    };
    json_response(e.status, to_json(&body), Some(request_id))
}

fn with_outcome(mut resp: Response, outcome: Outcome) -> Response {
    resp.extensions_mut().insert(outcome);
    resp
}

async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::too_large(format!(
            "the body is over this server's limit of {limit} bytes (Lambda's synchronous payload limit is 6 MB); split the batch"
        ))
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(format!(
            "could not read the request body: {e}"
        ))),
    }
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|s| !s.is_empty())
}

/// Parses a JSON body whose tree may take at most `budget` bytes (checked before the tree
/// is built; see [`budget`]).
fn parse_json(body: &[u8], budget: usize) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    // The walk is skipped where the body is too small to pass the budget however it is
    // built (the one-row requests of the hot path): no second pass over their bytes.
    let fits = body.len().saturating_mul(budget::MAX_BLOWUP) <= budget;
    match if fits {
        Ok(())
    } else {
        budget::check(body, budget)
    } {
        Ok(()) => {}
        Err(budget::Refusal::Malformed(e)) => {
            return Err(ApiError::bad_request(format!("malformed JSON: {e}")));
        }
        Err(budget::Refusal::OverBudget { budget }) => {
            return Err(ApiError::too_large(format!(
                "the JSON body holds more values than this server parses in one request ({} MiB once parsed, set by its row limit); split the batch",
                budget >> 20
            )));
        }
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

/// Refuses cross-origin browser requests when the server is configured to (see [`guard`]).
async fn same_origin(
    State(state): State<Arc<ScoreState>>,
    request: Request,
    next: Next,
) -> Response {
    if state.config.same_origin_only
        && let Some(why) = guard::cross_origin(request.headers())
    {
        let e = ApiError::field(
            StatusCode::FORBIDDEN,
            Some("origin"),
            format!("cross-origin browser requests are refused by this local server: {why}"),
        );
        return error_response(&e, &new_request_id());
    }
    next.run(request).await
}

/// Counts, logs EMF, and (in Lambda) writes captures before the response leaves.
async fn observe(State(state): State<Arc<ScoreState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut response = next.run(request).await;
    let latency = started.elapsed();
    let outcome = response
        .extensions_mut()
        .remove::<Outcome>()
        .unwrap_or_default();
    let route = if outcome.route.is_empty() {
        "other"
    } else {
        outcome.route
    };
    let status = response.status().as_u16();
    state.metrics.observe(route, status, &outcome, latency);
    if state.config.emf {
        let cold = state.first_request.swap(false, Ordering::Relaxed);
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let line = metrics::emf_line(
            &state.service,
            route,
            status,
            request_id,
            &outcome,
            latency,
            cold,
            chrono::Utc::now().timestamp_millis(),
        );
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }
    if state.config.flush_each_request {
        state.capture.flush().await;
    }
    response
}

async fn not_found(request: Request) -> Response {
    let id = new_request_id();
    let e = ApiError::not_found(format!(
        "no route {} {}; see GET /v2 and POST /v2/models/<model>/infer, POST /invocations",
        request.method(),
        request.uri().path()
    ));
    error_response(&e, &id)
}

async fn method_not_allowed(request: Request) -> Response {
    let id = new_request_id();
    let e = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    );
    error_response(&e, &id)
}

// ---------------------------------------------------------------------------------------
// Health and metadata

async fn server_metadata() -> Response {
    let body = serde_json::json!({
        "name": "lambdaml",
        "version": lambdaml::VERSION,
        "extensions": ["binary_tensor_data"],
    });
    with_outcome(
        json_response(StatusCode::OK, to_json(&body), None),
        Outcome {
            route: "health",
            ..Outcome::default()
        },
    )
}

async fn live() -> Response {
    with_outcome(
        json_response(StatusCode::OK, br#"{"live":true}"#.to_vec(), None),
        Outcome {
            route: "health",
            ..Outcome::default()
        },
    )
}

async fn ready(State(state): State<Arc<ScoreState>>) -> Response {
    let outcome = Outcome {
        route: "health",
        ..Outcome::default()
    };
    let resp = match &state.config.default_model {
        None => json_response(StatusCode::OK, br#"{"ready":true}"#.to_vec(), None),
        Some(model) => match state.production(model).await {
            Ok(_) => json_response(StatusCode::OK, br#"{"ready":true}"#.to_vec(), None),
            Err(e) => error_response(
                &ApiError::unavailable(format!("not ready: {}", e.error)),
                &new_request_id(),
            ),
        },
    };
    with_outcome(resp, outcome)
}

async fn ping(State(state): State<Arc<ScoreState>>) -> Response {
    let outcome = Outcome {
        route: "health",
        ..Outcome::default()
    };
    let resp = match &state.config.default_model {
        None => (StatusCode::OK, "\n").into_response(),
        Some(model) => match state.production(model).await {
            Ok(_) => (StatusCode::OK, "\n").into_response(),
            Err(e) => error_response(&e, &new_request_id()),
        },
    };
    with_outcome(resp, outcome)
}

/// MLflow's `/version`: the server's version as bare text, as MLflow's scoring server
/// answers it.
async fn version() -> Response {
    with_outcome(
        (StatusCode::OK, lambdaml::VERSION).into_response(),
        Outcome {
            route: "health",
            ..Outcome::default()
        },
    )
}

async fn prometheus(State(state): State<Arc<ScoreState>>) -> Response {
    let text = state.metrics.render(&state.gauges());
    let mut resp = (StatusCode::OK, text).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    with_outcome(
        resp,
        Outcome {
            route: "metrics",
            ..Outcome::default()
        },
    )
}

#[derive(Serialize)]
struct TensorSpec<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: Vec<i64>,
}

/// The V2 metadata of a loaded version.
pub fn metadata(model: &LoadedModel) -> Value {
    use lambdaml::dataset::ColumnType;
    let inputs: Vec<TensorSpec<'_>> = model
        .manifest
        .pipeline
        .inputs
        .iter()
        .map(|f| TensorSpec {
            name: &f.name,
            datatype: match f.kind {
                ColumnType::Categorical => "BYTES",
                ColumnType::Boolean => "BOOL",
                ColumnType::Integer => "INT64",
                ColumnType::Float => "FP64",
            },
            shape: vec![-1],
        })
        .collect();
    let outputs: Vec<TensorSpec<'_>> = match &model.classes {
        Some(classes) => vec![
            TensorSpec {
                name: "label",
                datatype: "BYTES",
                shape: vec![-1],
            },
            TensorSpec {
                name: "probabilities",
                datatype: "FP64",
                shape: vec![-1, classes.len() as i64],
            },
        ],
        None => vec![TensorSpec {
            name: "prediction",
            datatype: "FP64",
            shape: vec![-1],
        }],
    };
    serde_json::json!({
        "name": model.name,
        "versions": [model.version],
        "platform": "lambdaml",
        "inputs": inputs,
        "outputs": outputs,
    })
}

async fn metadata_for(state: &ScoreState, model: &str, version: Option<&str>) -> Response {
    let id = new_request_id();
    let resp = match state.resolve(model, version).await {
        Ok(m) => json_response(StatusCode::OK, to_json(&metadata(&m)), Some(&id)),
        Err(e) => error_response(&e, &id),
    };
    with_outcome(
        resp,
        Outcome {
            route: "metadata",
            ..Outcome::default()
        },
    )
}

async fn model_metadata(
    State(state): State<Arc<ScoreState>>,
    Path(model): Path<String>,
) -> Response {
    metadata_for(&state, &model, None).await
}

async fn version_metadata(
    State(state): State<Arc<ScoreState>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    metadata_for(&state, &model, Some(&version)).await
}

async fn ready_for(state: &ScoreState, model: &str, version: Option<&str>) -> Response {
    let id = new_request_id();
    let resp = match state.resolve(model, version).await {
        Ok(m) => json_response(
            StatusCode::OK,
            to_json(&serde_json::json!({"name": m.name, "version": m.version, "ready": true})),
            Some(&id),
        ),
        Err(e) => error_response(&e, &id),
    };
    with_outcome(
        resp,
        Outcome {
            route: "metadata",
            ..Outcome::default()
        },
    )
}

async fn model_ready(State(state): State<Arc<ScoreState>>, Path(model): Path<String>) -> Response {
    ready_for(&state, &model, None).await
}

async fn version_ready(
    State(state): State<Arc<ScoreState>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    ready_for(&state, &model, Some(&version)).await
}

async fn list_models(State(state): State<Arc<ScoreState>>) -> Response {
    let id = new_request_id();
    let resp = match lambdaml::registry::RegistryStore::new(state.store.clone())
        .models()
        .await
    {
        Ok(models) => json_response(
            StatusCode::OK,
            to_json(&serde_json::json!({ "models": models })),
            Some(&id),
        ),
        Err(e) => error_response(&ApiError::internal(format!("listing models: {e}")), &id),
    };
    with_outcome(
        resp,
        Outcome {
            route: "metadata",
            ..Outcome::default()
        },
    )
}

// ---------------------------------------------------------------------------------------
// Scoring

/// The predictions for a frame.
#[derive(Debug)]
pub struct Scored {
    /// Rows.
    pub rows: usize,
    /// Probabilities (rows × classes) or values (rows).
    pub outputs: Vec<f64>,
    /// Predicted class index per row (classification).
    pub labels: Vec<usize>,
}

/// Validates and encodes the frame with the version's fitted pipeline, then predicts.
pub fn score_frame(model: &LoadedModel, frame: &Frame<'_>) -> Result<Scored, ApiError> {
    let width = model.width();
    let dim = model.manifest.pipeline.output_dim;
    let mut x = vec![0.0f32; frame.rows * dim];
    let mut errors = Errors::default();
    for (row, (values, out)) in frame
        .values
        .chunks_exact(width.max(1))
        .zip(x.chunks_exact_mut(dim.max(1)))
        .enumerate()
    {
        model.manifest.pipeline.transform_checked(values, out, |e| {
            errors.push(Some(row), Some(&e.field), e.reason);
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let mut outputs = Vec::with_capacity(frame.rows * model.dense.output_width());
    model
        .dense
        .predict_into(&x, frame.rows, &mut outputs)
        .map_err(|e| ApiError::internal(format!("prediction failed: {e}")))?;
    let labels = match &model.classes {
        Some(classes) => outputs
            .chunks_exact(classes.len().max(1))
            .map(|p| {
                let mut best = 0;
                for (i, v) in p.iter().enumerate() {
                    if *v > p[best] {
                        best = i;
                    }
                }
                best
            })
            .collect(),
        None => Vec::new(),
    };
    Ok(Scored {
        rows: frame.rows,
        outputs,
        labels,
    })
}

fn captured_inputs(frame: &Frame<'_>, width: usize) -> Vec<Vec<CapturedValue>> {
    frame
        .values
        .chunks_exact(width.max(1))
        .map(|row| {
            row.iter()
                .map(|v| match v {
                    RawValue::Missing => CapturedValue::Null,
                    RawValue::Number(x) => CapturedValue::Number(*x),
                    RawValue::Text(t) => CapturedValue::Text((*t).to_string()),
                })
                .collect()
        })
        .collect()
}

/// What a scoring call carries to its capture record and answer.
struct Call<'a> {
    state: &'a ScoreState,
    request_id: String,
    timestamp: String,
    started: Instant,
    protocol: &'static str,
    model: Option<String>,
    version: Option<String>,
    client_id: Option<String>,
}

impl<'a> Call<'a> {
    fn new(state: &'a ScoreState, protocol: &'static str) -> Self {
        Call {
            state,
            request_id: new_request_id(),
            timestamp: millis(state.clock.now()),
            started: Instant::now(),
            protocol,
            model: None,
            version: None,
            client_id: None,
        }
    }

    fn capture(&self, record: CaptureRecord) {
        if self.state.capture.record(&record) && !self.state.config.flush_each_request {
            let writer = self.state.capture.clone();
            tokio::spawn(async move { writer.flush_due().await });
        }
    }

    fn base_record(&self, status: u16, body_bytes: usize) -> CaptureRecord {
        CaptureRecord {
            request_id: self.request_id.clone(),
            client_id: self.client_id.clone(),
            timestamp: self.timestamp.clone(),
            model: self
                .model
                .clone()
                .unwrap_or_else(|| "_unrouted".to_string()),
            version: self.version.clone(),
            protocol: self.protocol.to_string(),
            status,
            latency_us: self.started.elapsed().as_micros() as u64,
            rows: 0,
            inputs: Vec::new(),
            labels: Vec::new(),
            outputs: Vec::new(),
            errors: Vec::new(),
            body: None,
            body_bytes,
        }
    }

    /// Answers and captures a rejected request.
    fn reject(&self, e: ApiError, body: &[u8]) -> Response {
        let mut record = self.base_record(e.status.as_u16(), body.len());
        record.errors = if e.details.is_empty() {
            vec![lambdaml::capture::FieldError::new(
                None,
                None,
                e.error.clone(),
            )]
        } else {
            e.details.clone()
        };
        const KEEP: usize = 64 << 10;
        record.body = Some(String::from_utf8_lossy(&body[..body.len().min(KEEP)]).into_owned());
        self.capture(record);
        let resp = error_response(&e, &self.request_id);
        with_outcome(
            resp,
            Outcome {
                route: self.protocol,
                model: self.model.clone(),
                version: self.version.clone(),
                rows: 0,
                validation_errors: e.details_total.max(1),
            },
        )
    }

    /// Answers and captures an accepted request.
    fn accept(
        &self,
        model: &LoadedModel,
        frame: &Frame<'_>,
        scored: Scored,
        body_bytes: usize,
        response: Vec<u8>,
    ) -> Response {
        let mut record = self.base_record(200, body_bytes);
        record.rows = scored.rows;
        record.inputs = captured_inputs(frame, model.width());
        if let Some(classes) = &model.classes {
            record.labels = scored.labels.iter().map(|i| classes[*i].clone()).collect();
        }
        record.outputs = scored.outputs;
        self.capture(record);
        with_outcome(
            json_response(StatusCode::OK, response, Some(&self.request_id)),
            Outcome {
                route: self.protocol,
                model: Some(model.name.clone()),
                version: Some(model.version.clone()),
                rows: scored.rows,
                validation_errors: 0,
            },
        )
    }
}

#[derive(Serialize)]
struct V2Output<'a> {
    name: &'static str,
    datatype: &'static str,
    shape: Vec<usize>,
    data: V2Data<'a>,
}

enum V2Data<'a> {
    Labels(&'a [usize], &'a [String]),
    Numbers(&'a [f64]),
}

impl Serialize for V2Data<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            V2Data::Labels(idx, classes) => {
                let mut seq = s.serialize_seq(Some(idx.len()))?;
                for i in *idx {
                    seq.serialize_element(&classes[*i])?;
                }
                seq.end()
            }
            V2Data::Numbers(x) => x.serialize(s),
        }
    }
}

#[derive(Serialize)]
struct V2Response<'a> {
    model_name: &'a str,
    model_version: &'a str,
    id: &'a str,
    parameters: RequestIdParam<'a>,
    outputs: Vec<V2Output<'a>>,
}

#[derive(Serialize)]
struct RequestIdParam<'a> {
    request_id: &'a str,
}

/// The V2 `infer` response body for `scored` (all outputs when `wanted` is empty).
pub fn v2_response(
    model: &LoadedModel,
    scored: &Scored,
    id: &str,
    request_id: &str,
    wanted: &[&str],
) -> Vec<u8> {
    let want = |name: &str| wanted.is_empty() || wanted.contains(&name);
    let mut outputs = Vec::with_capacity(2);
    match &model.classes {
        Some(classes) => {
            if want("label") {
                outputs.push(V2Output {
                    name: "label",
                    datatype: "BYTES",
                    shape: vec![scored.rows],
                    data: V2Data::Labels(&scored.labels, classes),
                });
            }
            if want("probabilities") {
                outputs.push(V2Output {
                    name: "probabilities",
                    datatype: "FP64",
                    shape: vec![scored.rows, classes.len()],
                    data: V2Data::Numbers(&scored.outputs),
                });
            }
        }
        None => outputs.push(V2Output {
            name: "prediction",
            datatype: "FP64",
            shape: vec![scored.rows],
            data: V2Data::Numbers(&scored.outputs),
        }),
    }
    to_json(&V2Response {
        model_name: &model.name,
        model_version: &model.version,
        id,
        parameters: RequestIdParam { request_id },
        outputs,
    })
}

async fn infer(
    State(state): State<Arc<ScoreState>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    infer_common(&state, model, None, headers, body).await
}

async fn infer_version(
    State(state): State<Arc<ScoreState>>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    infer_common(&state, model, Some(version), headers, body).await
}

async fn infer_common(
    state: &ScoreState,
    model_name: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut call = Call::new(state, "v2");
    let bytes = match read_body(body, &headers, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return call.reject(e, &[]),
    };
    let model = match state.resolve(&model_name, version.as_deref()).await {
        Ok(m) => m,
        Err(e) => return call.reject(e, &bytes),
    };
    call.model = Some(model.name.clone());
    call.version = Some(model.version.clone());
    let header_len = headers
        .get("inference-header-content-length")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    match content_type(&headers).as_deref() {
        None | Some("application/json" | "application/octet-stream") => {}
        Some(other) => {
            return call.reject(
                ApiError::unsupported(format!(
                    "content type {other:?}: infer takes application/json (or the binary tensor extension); with curl add -H 'Content-Type: application/json'"
                )),
                &bytes,
            );
        }
    }
    off_worker(bytes.len(), || {
        v2_body(&mut call, &model, &bytes, header_len.as_deref())
    })
}

/// Parses, scores and answers a V2 infer body (synchronous: CPU only).
fn v2_body(
    call: &mut Call<'_>,
    model: &LoadedModel,
    bytes: &Bytes,
    header_len: Option<&str>,
) -> Response {
    let state = call.state;
    let (json_part, binary) = match parse::split_binary(bytes, header_len) {
        Ok(parts) => parts,
        Err(e) => return call.reject(e, bytes),
    };
    let json = match parse_json(json_part, state.json_budget(model.width())) {
        Ok(v) => v,
        Err(e) => return call.reject(e, bytes),
    };
    let request = match parse::v2_request(model, &json, binary, state.limits()) {
        Ok(r) => r,
        Err(e) => {
            call.client_id = json.get("id").and_then(Value::as_str).map(str::to_string);
            return call.reject(e, bytes);
        }
    };
    call.client_id = request.id.map(str::to_string);
    match score_frame(model, &request.frame) {
        Ok(scored) => {
            let id = request.id.unwrap_or(&call.request_id);
            let body = v2_response(model, &scored, id, &call.request_id, &request.outputs);
            call.accept(model, &request.frame, scored, bytes.len(), body)
        }
        Err(e) => call.reject(e, bytes),
    }
}

/// `?model=&version=` on `/invocations`.
#[derive(Debug, Deserialize)]
pub struct Target {
    model: Option<String>,
    version: Option<String>,
}

struct MlflowPredictions<'a> {
    scored: &'a Scored,
    classes: Option<&'a [String]>,
}

struct ClassRow<'a> {
    label: &'a str,
    classes: &'a [String],
    probabilities: &'a [f64],
}

struct Probabilities<'a>(&'a [String], &'a [f64]);

impl Serialize for Probabilities<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (c, p) in self.0.iter().zip(self.1) {
            map.serialize_entry(c, p)?;
        }
        map.end()
    }
}

impl Serialize for ClassRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("label", self.label)?;
        map.serialize_entry(
            "probabilities",
            &Probabilities(self.classes, self.probabilities),
        )?;
        map.end()
    }
}

impl Serialize for MlflowPredictions<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.scored.rows))?;
        match self.classes {
            Some(classes) => {
                for (label, p) in self
                    .scored
                    .labels
                    .iter()
                    .zip(self.scored.outputs.chunks_exact(classes.len().max(1)))
                {
                    seq.serialize_element(&ClassRow {
                        label: &classes[*label],
                        classes,
                        probabilities: p,
                    })?;
                }
            }
            None => {
                for v in &self.scored.outputs {
                    seq.serialize_element(v)?;
                }
            }
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct MlflowResponse<'a> {
    predictions: MlflowPredictions<'a>,
    model_name: &'a str,
    model_version: &'a str,
    request_id: &'a str,
}

async fn invocations(
    State(state): State<Arc<ScoreState>>,
    Query(target): Query<Target>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut call = Call::new(&state, "mlflow");
    let bytes = match read_body(body, &headers, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return call.reject(e, &[]),
    };
    let Some(model_name) = target.model.or_else(|| state.config.default_model.clone()) else {
        return call.reject(
            ApiError::field(
                StatusCode::BAD_REQUEST,
                Some("model"),
                "this server has no default model; name one with ?model=NAME",
            ),
            &bytes,
        );
    };
    let model = match state.resolve(&model_name, target.version.as_deref()).await {
        Ok(m) => m,
        Err(e) => return call.reject(e, &bytes),
    };
    call.model = Some(model.name.clone());
    call.version = Some(model.version.clone());
    let limits = state.limits();
    off_worker(bytes.len(), || {
        mlflow_body(&call, &model, &headers, &bytes, limits)
    })
}

/// Parses, scores and answers an MLflow body (synchronous: CPU only).
fn mlflow_body(
    call: &Call<'_>,
    model: &LoadedModel,
    headers: &HeaderMap,
    bytes: &Bytes,
    limits: Limits,
) -> Response {
    let state = call.state;
    let respond = |frame: &Frame<'_>| -> Response {
        match score_frame(model, frame) {
            Ok(scored) => {
                let body = to_json(&MlflowResponse {
                    predictions: MlflowPredictions {
                        scored: &scored,
                        classes: model.classes.as_deref(),
                    },
                    model_name: &model.name,
                    model_version: &model.version,
                    request_id: &call.request_id,
                });
                call.accept(model, frame, scored, bytes.len(), body)
            }
            Err(e) => call.reject(e, bytes),
        }
    };
    match content_type(headers).as_deref() {
        Some("application/json") => {
            // Records stream straight into the frame; other forms are parsed as a tree.
            let mut owned = Vec::new();
            match stream::records(model, bytes, limits, &mut owned) {
                Some(Ok(pending)) => return respond(&pending.resolve(&owned)),
                Some(Err(e)) => return call.reject(e, bytes),
                None => {}
            }
            let json = match parse_json(bytes, state.json_budget(model.width())) {
                Ok(v) => v,
                Err(e) => return call.reject(e, bytes),
            };
            match parse::mlflow_json(model, &json, limits) {
                Ok(frame) => respond(&frame),
                Err(e) => call.reject(e, bytes),
            }
        }
        Some("text/csv") => {
            let csv = match parse::read_csv(bytes, limits) {
                Ok(c) => c,
                Err(e) => return call.reject(e, bytes),
            };
            match parse::csv_frame(model, &csv, limits) {
                Ok(frame) => respond(&frame),
                Err(e) => call.reject(e, bytes),
            }
        }
        other => call.reject(
            ApiError::unsupported(format!(
                "content type {}: /invocations takes application/json or text/csv (curl: -H 'Content-Type: application/json')",
                other.map_or("missing".to_string(), |o| format!("{o:?}"))
            )),
            bytes,
        ),
    }
}

/// Bodies from this size up are parsed and scored with [`tokio::task::block_in_place`], so
/// a large batch does not hold an async worker that other connections' requests (health
/// checks, one-row scoring) are waiting on. Smaller bodies take microseconds and stay put.
const OFF_WORKER_BYTES: usize = 64 * 1024;

/// Runs CPU-bound request work off the async worker when the body is large and the runtime
/// has other workers to hand the worker's tasks to (a current-thread runtime — tests, some
/// embedders — runs it in place).
fn off_worker<R>(body_len: usize, work: impl FnOnce() -> R) -> R {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if body_len >= OFF_WORKER_BYTES && multi {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

// ---------------------------------------------------------------------------------------
// Feedback

/// Reads ground-truth feedback for `model` from a JSON body:
/// `{"request_id", "label"}`, `{"request_id", "labels": [...]}` (one per row), or
/// `{"feedback": [{"request_id", "row"?, "label"}, ...]}`. Labels are checked against the
/// classes (classification) or must be numbers (regression).
pub fn feedback_records(
    classes: Option<&[String]>,
    body: &Value,
    source: &str,
    received_at: &str,
) -> Result<Vec<FeedbackRecord>, ApiError> {
    let received_at = received_at.to_string();
    let mut out = Vec::new();
    let mut errors = Errors::default();
    let mut add =
        |errors: &mut Errors, item: usize, request_id: &Value, row: usize, label: &Value| {
            let request_id = match request_id {
                Value::String(s) if !s.is_empty() && s.len() <= 128 => s.clone(),
                other => {
                    errors.push(
                        Some(item),
                        Some("request_id"),
                        format!("expected the request id the score function returned, got {other}"),
                    );
                    return;
                }
            };
            let label = match label_text(classes, label) {
                Ok(l) => l,
                Err(reason) => {
                    errors.push(Some(item), Some("label"), reason);
                    return;
                }
            };
            out.push(FeedbackRecord {
                request_id,
                row,
                label,
                received_at: received_at.clone(),
                source: source.to_string(),
            });
        };
    let Value::Object(obj) = body else {
        return Err(ApiError::bad_request(
            "expected a JSON object: {\"request_id\", \"label\"}, {\"request_id\", \"labels\"} or {\"feedback\": [...]}",
        ));
    };
    if let Some(items) = obj.get("feedback") {
        let Value::Array(items) = items else {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                Some("feedback"),
                "expected an array of {request_id, row, label}",
            ));
        };
        for (i, item) in items.iter().enumerate() {
            let row = match item.get("row") {
                None | Some(Value::Null) => Some(0),
                Some(v) => v.as_u64().map(|r| r as usize),
            };
            let Some(row) = row else {
                errors.push(Some(i), Some("row"), "expected a row number");
                continue;
            };
            add(
                &mut errors,
                i,
                item.get("request_id").unwrap_or(&Value::Null),
                row,
                item.get("label").unwrap_or(&Value::Null),
            );
        }
    } else {
        let id = obj.get("request_id").unwrap_or(&Value::Null);
        match (obj.get("label"), obj.get("labels")) {
            (Some(label), None) => add(&mut errors, 0, id, 0, label),
            (None, Some(Value::Array(labels))) => {
                for (row, label) in labels.iter().enumerate() {
                    add(&mut errors, row, id, row, label);
                }
            }
            _ => {
                return Err(ApiError::field(
                    StatusCode::BAD_REQUEST,
                    Some("label"),
                    "expected label (one row) or labels (an array, one per row), or a feedback array",
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    if out.is_empty() {
        return Err(ApiError::bad_request("no feedback in the request"));
    }
    Ok(out)
}

fn label_text(classes: Option<&[String]>, label: &Value) -> Result<String, String> {
    let text = match label {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => n.to_string(),
        },
        Value::Bool(b) => b.to_string(),
        other => return Err(format!("expected a label, got {other}")),
    };
    match classes {
        Some(classes) if !classes.contains(&text) => Err(format!(
            "{text:?} is not a class of this model ({})",
            classes.join(", ")
        )),
        Some(_) => Ok(text),
        None => match text.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(text),
            _ => Err(format!(
                "expected a number (a regression target), got {text:?}"
            )),
        },
    }
}

async fn feedback(
    State(state): State<Arc<ScoreState>>,
    Path(model_name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = new_request_id();
    let outcome = |model: Option<String>, rows: usize, errors: usize| Outcome {
        route: "feedback",
        model,
        version: None,
        rows,
        validation_errors: errors,
    };
    let result = async {
        check_name("model", &model_name)?;
        // Labels flow into retraining data, so a body a browser may send cross-site without
        // asking (no content type, text/plain, a form) is refused before it is read.
        match content_type(&headers).as_deref() {
            Some("application/json") => {}
            other => {
                return Err(ApiError::unsupported(format!(
                    "content type {}: feedback takes application/json",
                    other.map_or("missing".to_string(), |o| format!("{o:?}"))
                )));
            }
        }
        let bytes = read_body(body, &headers, state.config.max_body_bytes).await?;
        let model = state.production(&model_name).await?;
        // A feedback item is a small object: budget it as a row of a few fields.
        let json = parse_json(&bytes, state.json_budget(4))?;
        let records = feedback_records(
            model.classes.as_deref(),
            &json,
            "http",
            &millis(state.clock.now()),
        )?;
        let key = write_feedback(state.store.as_ref(), &model.name, &records)
            .await
            .map_err(|e| ApiError::internal(format!("writing feedback: {e}")))?;
        Ok::<_, ApiError>((records.len(), key))
    }
    .await;
    match result {
        Ok((n, key)) => with_outcome(
            json_response(
                StatusCode::OK,
                to_json(&serde_json::json!({
                    "accepted": n, "stored": key.as_str(), "request_id": request_id
                })),
                Some(&request_id),
            ),
            outcome(Some(model_name), n, 0),
        ),
        Err(e) => {
            let errors = e.details_total.max(1);
            with_outcome(error_response(&e, &request_id), outcome(None, 0, errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_comes_from_the_environment_with_clear_errors() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = ScoreConfig::from_lookup(env(&[
            ("LAMBDAML_MODEL", "m"),
            ("LAMBDAML_REFRESH", "250ms"),
            ("LAMBDAML_CAPTURE_SAMPLE", "0.5"),
            ("AWS_LAMBDA_FUNCTION_NAME", "score"),
        ]))
        .unwrap();
        assert_eq!(c.default_model.as_deref(), Some("m"));
        assert_eq!(c.refresh, Duration::from_millis(250));
        assert_eq!(c.capture.sample_rate, 0.5);
        assert!(
            c.flush_each_request && c.emf,
            "Lambda flushes every invocation"
        );
        let local = ScoreConfig::from_lookup(env(&[])).unwrap();
        assert!(!local.flush_each_request && !local.emf);
        let e = ScoreConfig::from_lookup(env(&[("LAMBDAML_CAPTURE_SAMPLE", "2")])).unwrap_err();
        assert!(e.contains("LAMBDAML_CAPTURE_SAMPLE"), "{e}");
        let e = ScoreConfig::from_lookup(env(&[("LAMBDAML_REFRESH", "soon")])).unwrap_err();
        assert!(e.contains("LAMBDAML_REFRESH"), "{e}");
    }

    #[test]
    fn feedback_labels_are_checked_against_the_classes() {
        let classes = vec!["0".to_string(), "1".to_string()];
        let ok = feedback_records(
            Some(&classes),
            &serde_json::json!({"request_id": "r1", "labels": [1, "0"]}),
            "http",
            "2026-01-01T00:00:00.000Z",
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!((ok[0].row, ok[0].label.as_str()), (0, "1"));
        assert_eq!((ok[1].row, ok[1].label.as_str()), (1, "0"));
        let e = feedback_records(
            Some(&classes),
            &serde_json::json!({"feedback": [{"request_id": "r", "label": "2"}, {"label": "1"}]}),
            "http",
            "2026-01-01T00:00:00.000Z",
        )
        .unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.details_total, 2);
        assert_eq!(e.details[0].field.as_deref(), Some("label"));
        assert_eq!(e.details[1].field.as_deref(), Some("request_id"));
        let e = feedback_records(
            None,
            &serde_json::json!({"request_id": "r", "label": "x"}),
            "cli",
            "2026-01-01T00:00:00.000Z",
        )
        .unwrap_err();
        assert!(e.error.contains("regression"), "{}", e.error);
    }
}
