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
mod config;
pub mod error;
pub mod guard;
pub mod loader;
pub mod metrics;
pub mod parse;
mod respond;
mod routes;
mod scoring;
pub mod server;
mod state;
pub mod stream;

pub use config::{LAMBDA_PAYLOAD_LIMIT, ScoreConfig, parse_interval};
pub use routes::feedback::feedback_records;
pub use routes::health::metadata;
pub use routes::mlflow::Target;
pub use routes::v2::v2_response;
pub use scoring::{Scored, score_frame};
pub use server::serve;
pub use state::ScoreState;

use std::sync::Arc;

use axum::Router;
use axum::middleware::{self};
use axum::routing::{get, post};

use crate::respond::{method_not_allowed, not_found, observe, same_origin};
use crate::routes::feedback::feedback;
use crate::routes::health::{
    list_models, live, model_metadata, model_ready, ping, prometheus, ready, server_metadata,
    version, version_metadata, version_ready,
};
use crate::routes::mlflow::invocations;
use crate::routes::v2::{infer, infer_version};

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
