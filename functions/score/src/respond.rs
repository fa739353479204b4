//! The plumbing every route uses: request ids, reading and parsing bodies, the JSON and
//! error responses (one `ApiError` → response point), and the router's middleware (origin
//! guard, metrics/EMF/capture flushing, fallbacks).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde::Serialize;
use serde_json::Value;

use crate::error::{ApiError, ErrorBody};
use crate::metrics::Outcome;
use crate::state::ScoreState;
use crate::{budget, guard, metrics};

/// A request id: 128 random bits as 32 hex digits. Feedback is joined to captures by this
/// id, so it must not be guessable: it comes from the thread-local CSPRNG (ChaCha, seeded
/// from the OS once per thread; no syscall per request).
pub(crate) fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

pub(crate) fn json_response(
    status: StatusCode,
    body: Vec<u8>,
    request_id: Option<&str>,
) -> Response {
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

pub(crate) fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
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

pub(crate) fn error_body(e: &ApiError, request_id: &str) -> Response {
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

pub(crate) fn with_outcome(mut resp: Response, outcome: Outcome) -> Response {
    resp.extensions_mut().insert(outcome);
    resp
}

pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, ApiError> {
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

pub(crate) fn content_type(headers: &HeaderMap) -> Option<String> {
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
pub(crate) fn parse_json(body: &[u8], budget: usize) -> Result<Value, ApiError> {
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
pub(crate) async fn same_origin(
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
pub(crate) async fn observe(
    State(state): State<Arc<ScoreState>>,
    request: Request,
    next: Next,
) -> Response {
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

pub(crate) async fn not_found(request: Request) -> Response {
    let id = new_request_id();
    let e = ApiError::not_found(format!(
        "no route {} {}; see GET /v2 and POST /v2/models/<model>/infer, POST /invocations",
        request.method(),
        request.uri().path()
    ));
    error_response(&e, &id)
}

pub(crate) async fn method_not_allowed(request: Request) -> Response {
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
