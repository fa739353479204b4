//! `lambdaml ui`: a read-only dashboard over any store (file or S3) — models and their
//! production, shadow and canary versions; per model a version timeline, the live metric,
//! drift share and retrain decisions over time; runs with their step tables and failures;
//! the lineage of a version; the monitoring reports. Server-rendered HTML with inline SVG
//! plots, no JavaScript build chain, nothing fetched from the network. It binds loopback
//! addresses only, unless `--public` says otherwise (it has no authentication).

mod pages;
pub mod plot;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Args;
use lambdaml::layout;
use lambdaml::store::{ObjectKey, ObjectStore};

use crate::ctx::Ctx;

/// `lambdaml ui`.
#[derive(Debug, Args)]
pub struct UiArgs {
    /// Where to listen: HOST:PORT (`localhost:8090`, `127.0.0.1:0` for any free port).
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub addr: String,
    /// Allow an address other than loopback (the dashboard has no authentication: anyone
    /// who can reach it reads every model's history).
    #[arg(long)]
    pub public: bool,
}

/// HTML-escapes `s`.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Why a page could not be made.
#[derive(Debug)]
pub enum PageError {
    /// The thing asked for is not there (404), in words naming what is.
    NotFound(String),
    /// The store failed (500).
    Store(anyhow::Error),
}

impl From<anyhow::Error> for PageError {
    fn from(e: anyhow::Error) -> Self {
        PageError::Store(e)
    }
}

impl From<lambdaml::store::StoreError> for PageError {
    fn from(e: lambdaml::store::StoreError) -> Self {
        PageError::Store(e.into())
    }
}

type Page = Result<String, PageError>;

fn respond(title: &str, page: Page) -> Response {
    match page {
        Ok(body) => html(StatusCode::OK, &layout(title, &body)),
        Err(PageError::NotFound(why)) => html(
            StatusCode::NOT_FOUND,
            &layout(
                "not found",
                &format!("<h1>Not found</h1><p>{}</p>", esc(&why)),
            ),
        ),
        Err(PageError::Store(e)) => html(
            StatusCode::INTERNAL_SERVER_ERROR,
            &layout(
                "error",
                &format!(
                    "<h1>The store could not be read</h1><p>{}</p>",
                    esc(&format!("{e:#}"))
                ),
            ),
        ),
    }
}

fn html(status: StatusCode, body: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}\
header{background:#1d2330;color:#fff;padding:10px 24px}header a{color:#fff;margin-right:18px;text-decoration:none}\
header b{margin-right:28px}main{padding:16px 24px;max-width:1100px}\
table{border-collapse:collapse;margin:8px 0 18px;background:#fff}td,th{border:1px solid #dde1e7;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#eef1f5}.ok{color:#17803d}.bad{color:#b42318}.warn{color:#a15c07}.muted{color:#6b7280}\
figure{margin:10px 0 22px;background:#fff;border:1px solid #dde1e7;padding:8px;display:inline-block}figcaption{font-weight:600;margin-bottom:4px}\
.axis{stroke:#9aa3af}.series{fill:none;stroke-width:2}.series.cur{stroke:#2563eb}.series.ref{stroke:#9333ea}.series.alt{stroke:#ea580c}\
.dot.cur{fill:#2563eb}.dot.ref{fill:#9333ea}.dot.alt{fill:#ea580c}.tick{font-size:11px;fill:#4b5563}\
.limit{stroke:#b42318;stroke-dasharray:5 4}.mark{stroke-width:1.5;stroke-dasharray:2 3}.mark.retrain{stroke:#b42318}.mark.promote{stroke:#17803d}.mark.rollback{stroke:#a15c07}\
.key{font-weight:400;font-size:12px;margin-left:8px}.key.cur{color:#2563eb}.key.ref{color:#9333ea}.key.alt{color:#ea580c}\
.empty{color:#6b7280;font-style:italic}code{background:#eef1f5;padding:1px 4px}";

/// Counts the plots the browser drew (`data-plots-rendered` on `<body>`), as the reports
/// do; the test command reads it in headless Chromium.
const SCRIPT: &str = "<script>window.addEventListener('load',function(){var n=0;document.querySelectorAll('svg.plot').forEach(function(g){var b=g.getBoundingClientRect();if(b.width>0&&b.height>0&&g.querySelector('polyline,circle,rect'))n++;});document.body.setAttribute('data-plots-rendered',String(n));document.body.setAttribute('data-plots-total',String(document.querySelectorAll('svg.plot').length));});</script>";

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} — lambdaml</title>\
         <link rel=\"icon\" href=\"data:,\"><style>{STYLE}</style></head><body>\
         <header><b>lambdaml</b><a href=\"/\">models</a><a href=\"/runs\">runs</a></header>\
         <main>{body}</main>{SCRIPT}</body></html>",
        esc(title)
    )
}

type Store = Arc<dyn ObjectStore>;

async fn index(State(store): State<Store>) -> Response {
    respond("models", pages::index(store.as_ref()).await)
}

async fn model(State(store): State<Store>, Path(model): Path<String>) -> Response {
    respond(&model, pages::model(store.as_ref(), &model).await)
}

async fn runs(State(store): State<Store>) -> Response {
    respond("runs", pages::runs(store.as_ref()).await)
}

async fn run(State(store): State<Store>, Path(run): Path<String>) -> Response {
    respond(&run, pages::run(store.as_ref(), &run).await)
}

async fn lineage(
    State(store): State<Store>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    respond(
        &format!("{model} {version}"),
        pages::lineage(store.as_ref(), &model, &version).await,
    )
}

/// A monitoring report's HTML, as the monitor wrote it; nothing else of the store.
async fn report(State(store): State<Store>, Path(key): Path<String>) -> Response {
    let allowed = layout::is_report_html(&key);
    let key = match ObjectKey::new(key.as_str()) {
        Ok(k) if allowed => k,
        _ => {
            return respond(
                "not found",
                Err(PageError::NotFound(format!(
                    "{key} is not a monitoring report (monitoring/<model>/<run>/report.html)"
                ))),
            );
        }
    };
    match store.get(&key).await {
        // Served from the dashboard's origin, so sandboxed: its one script (counting the
        // plots drawn) runs in an origin of its own.
        Ok(o) => {
            let mut response = html(StatusCode::OK, &String::from_utf8_lossy(&o.bytes));
            response.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                header::HeaderValue::from_static("sandbox allow-scripts"),
            );
            response
        }
        Err(lambdaml::store::StoreError::NotFound(_)) => respond(
            "not found",
            Err(PageError::NotFound(format!("there is no report {key}"))),
        ),
        Err(e) => respond("error", Err(e.into())),
    }
}

/// The dashboard's routes over `store`: GET only.
pub fn router(store: Store) -> axum::Router {
    axum::Router::new()
        .route("/", get(index))
        .route("/models/{model}", get(model))
        .route("/runs", get(runs))
        .route("/runs/{run}", get(run))
        .route("/lineage/{model}/{version}", get(lineage))
        .route("/report/{*key}", get(report))
        .fallback(|| async {
            respond(
                "not found",
                Err(PageError::NotFound(
                    "no such page: start from the models (/) or the runs (/runs)".into(),
                )),
            )
        })
        .with_state(store)
}

/// Refuses an address beyond this machine unless `public`.
pub fn check_addr(addr: SocketAddr, public: bool) -> Result<()> {
    if !addr.ip().is_loopback() && !public {
        bail!(
            "refusing to serve the dashboard on {addr}: it has no authentication, so it binds \
             loopback addresses (127.0.0.1, ::1) only; pass --public to serve beyond this machine"
        );
    }
    Ok(())
}

pub async fn ui(ctx: &Ctx, store_url: &str, args: UiArgs) -> Result<()> {
    let addr = tokio::net::lookup_host(args.addr.as_str())
        .await
        .ok()
        .and_then(|mut found| found.next())
        .with_context(|| {
            format!(
                "--addr {:?} is not HOST:PORT (e.g. 127.0.0.1:8090 or localhost:8090)",
                args.addr
            )
        })?;
    check_addr(addr, args.public)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    // One line a script can read the port from (with --addr 127.0.0.1:0).
    println!("lambdaml ui: http://{local}/ (store {store_url}; read-only; Ctrl-C stops)");
    axum::serve(listener, router(ctx.store.clone()))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_without_public() {
        assert!(
            check_addr(
                "127.0.0.1:8090".parse().unwrap_or_else(|_| unreachable!()),
                false
            )
            .is_ok()
        );
        assert!(
            check_addr(
                "[::1]:8090".parse().unwrap_or_else(|_| unreachable!()),
                false
            )
            .is_ok()
        );
        let e = check_addr(
            "0.0.0.0:8090".parse().unwrap_or_else(|_| unreachable!()),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--public"), "{e}");
        assert!(
            check_addr(
                "0.0.0.0:8090".parse().unwrap_or_else(|_| unreachable!()),
                true
            )
            .is_ok()
        );
        assert_eq!(esc("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
    }
}
