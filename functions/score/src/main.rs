//! The score Lambda: configuration from the environment, the production model loaded during
//! init (cold start work outside the first request), then `lambda_http` runs the same axum
//! router `lambdaml serve` runs locally. API Gateway HTTP API, REST API, ALB and function
//! URL events all arrive as HTTP requests.

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use lambda_http::RequestExt;
use lambdaml::config::FunctionConfig;
use lambdaml::store::open_store;
use lambdaml::telemetry::{self, LogFormat};
use lambdaml_score::{ScoreConfig, ScoreState, router};
use tracing::Instrument;

/// Every request runs in the invocation's span: its request id, trace id and cold start
/// are keys of every log line it writes.
async fn invocation(request: Request, next: Next) -> Response {
    let span = match request.lambda_context_ref() {
        Some(c) => telemetry::invocation_span(&c.request_id, c.xray_trace_id.as_deref()),
        None => tracing::Span::none(),
    };
    next.run(request).instrument(span).await
}

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let started = Instant::now();
    telemetry::init(LogFormat::detect(), "info");
    let config = FunctionConfig::from_env()?;
    let score = ScoreConfig::from_lookup(|k| std::env::var(k).ok())?;
    let store = open_store(&config.store).await?;
    let state = ScoreState::new(store, score, started);
    if let Some(problem) = state.warm_up().await {
        // Not fatal: the model may be promoted later; requests say what is missing.
        tracing::warn!(%problem, "no production model at cold start");
    }
    lambda_http::run(router(state).layer(middleware::from_fn(invocation))).await
}
