//! The local HTTP server and the request limits the router applies everywhere.
//!
//! [`serve`] runs the router on a TCP listener the way `lambdaml serve` needs it: HTTP/1.1
//! with a header-read timeout (a client that trickles its headers is disconnected instead
//! of holding a connection forever), accept errors (out of file descriptors) survived,
//! and a graceful shutdown that finishes the requests in flight and then writes every
//! buffered capture.
//!
//! [`limit`] is a middleware on every route: at most `max_in_flight` requests are handled
//! at once (more get 503 with `Retry-After` at once, instead of queueing without bound), and
//! a request that takes longer than `request_timeout` (a body that trickles in, a stalled
//! store) is answered 503 and its work dropped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

use crate::error::ApiError;
use crate::respond::{error_response, new_request_id};
use crate::{ScoreState, router};

/// Serves the router on `listener` until `shutdown` resolves, then finishes the requests in
/// flight (at most `request_timeout` more) and writes every buffered capture.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ScoreState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let every = state
        .config
        .capture
        .max_age
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let flusher = state.capture.spawn_flusher(every);
    let app = router(state.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors or a connection reset before accept:
                        // the listener is fine, so wait a moment and go on.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(TokioTimer::new())
                    .header_read_timeout(state.config.header_timeout)
                    .keep_alive(true);
                let conn = http.serve_connection(
                    TokioIo::new(stream),
                    TowerToHyperService::new(app.clone()),
                );
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let grace = state.config.request_timeout + Duration::from_secs(1);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; closing them");
    }
    flusher.abort();
    if !state.settle(Duration::from_secs(5)).await {
        tracing::warn!("shadow scoring still running after 5 s; its records may be lost");
    }
    state.capture.flush().await;
    Ok(())
}

/// At most `max_in_flight` requests at once, each within `request_timeout` (see the module
/// docs).
pub(crate) async fn limit(
    State(state): State<Arc<ScoreState>>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        let e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "this server is handling its limit of {} requests at once; retry shortly",
                state.config.max_in_flight
            ),
        );
        let mut resp = error_response(&e, &new_request_id());
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return resp;
    };
    match tokio::time::timeout(state.config.request_timeout, next.run(request)).await {
        Ok(resp) => resp,
        Err(_) => {
            let e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the request took longer than this server's limit of {:?} (a slow body or a slow store); retry",
                    state.config.request_timeout
                ),
            );
            error_response(&e, &new_request_id())
        }
    }
}
