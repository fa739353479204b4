//! `lambdaml serve`, `lambdaml predict` and `lambdaml feedback`: the score function's router
//! on a local port, in-process on a file, and ground truth from a file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use axum::body::Body;
use axum::http::Request;
use clap::Args;
use lambdaml::capture::{CaptureConfig, write_feedback};
use lambdaml_score::{ScoreConfig, ScoreState, parse_interval, router};
use serde::Serialize;
use tower::ServiceExt;

use crate::ctx::Ctx;
use crate::output::emit;

fn interval(text: &str) -> Result<Duration, String> {
    parse_interval(text).ok_or_else(|| format!("{text:?} is not a duration like 500ms, 10s, 5m"))
}

fn rate(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| format!("{text:?} is not a number in [0, 1]"))
}

/// `lambdaml serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Keep it on loopback unless you mean to expose the server.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// The model /invocations and /ping serve (default: the only model in the registry).
    #[arg(long, env = "LAMBDAML_MODEL")]
    pub model: Option<String>,
    /// How often the production version is re-checked in the registry.
    #[arg(long, default_value = "10s", value_parser = interval)]
    pub refresh: Duration,
    /// Rows per request.
    #[arg(long, default_value_t = 10_000)]
    pub max_rows: usize,
    /// Request body limit in bytes (Lambda's synchronous limit is 6 MB).
    #[arg(long, default_value_t = lambdaml_score::LAMBDA_PAYLOAD_LIMIT)]
    pub max_body_bytes: usize,
    /// Share of accepted requests captured (rejected ones always are).
    #[arg(long, default_value = "1.0", value_parser = rate)]
    pub capture_sample: f64,
    /// Write captures at least this often. A `kill -9` loses at most the captures of this
    /// long (or of 4 MB per model and hour, whichever comes first); see --capture-sync.
    #[arg(long, default_value = "60s", value_parser = interval)]
    pub capture_max_age: Duration,
    /// Write each request's capture to the store before answering it (as in Lambda):
    /// nothing is lost to a crash, at the cost of one store write per request.
    #[arg(long)]
    pub capture_sync: bool,
    /// Requests handled at once; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    /// A request's whole time, body included; slower ones are answered 503.
    #[arg(long, default_value = "30s", value_parser = interval)]
    pub request_timeout: Duration,
    /// Also print a CloudWatch EMF line per request on stdout.
    #[arg(long)]
    pub emf: bool,
}

async fn default_model(ctx: &Ctx, given: Option<String>) -> Result<Option<String>> {
    if given.is_some() {
        return Ok(given);
    }
    let models = lambdaml::registry::RegistryStore::new(ctx.store.clone())
        .models()
        .await?;
    Ok(match models.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    })
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub async fn serve(ctx: &Ctx, started: Instant, args: ServeArgs) -> Result<()> {
    let model = default_model(ctx, args.model).await?;
    let config = ScoreConfig {
        default_model: model.clone(),
        refresh: args.refresh,
        max_rows: args.max_rows.max(1),
        max_body_bytes: args.max_body_bytes,
        capture: CaptureConfig {
            sample_rate: args.capture_sample,
            max_age: args.capture_max_age,
            ..CaptureConfig::default()
        },
        emf: args.emf,
        flush_each_request: args.capture_sync,
        max_in_flight: args.max_in_flight.max(1),
        request_timeout: args.request_timeout.max(Duration::from_millis(1)),
        same_origin_only: true,
        ..ScoreConfig::default()
    };
    let state = ScoreState::new(ctx.store.clone(), config, started);
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("listening on {}", args.addr))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        eprintln!("warning: listening on {addr}, which is reachable from other machines");
    }
    let serving = match (&model, state.warm_up().await) {
        (Some(m), None) => {
            let v = state
                .cache
                .resolved()
                .into_iter()
                .find(|(name, _)| name == m)
                .map(|(_, v)| v)
                .unwrap_or_default();
            format!("default model {m} (production version {v})")
        }
        (Some(m), Some(problem)) => format!("default model {m} — not ready: {problem}"),
        (None, _) => "no default model (name one in requests, or --model)".to_string(),
    };
    if !ctx.json {
        eprintln!(
            "lambdaml serve — http://{addr}  {serving}\n  POST /v2/models/<model>/infer · POST /invocations · POST /v2/models/<model>/feedback · GET /metrics\n  captures → {}captures/  (Ctrl-C writes what is buffered and stops)",
            ctx.store.url().trim_end_matches('/').to_string() + "/"
        );
    }
    lambdaml_score::serve(listener, state.clone(), shutdown_signal()).await?;
    let stats = state.capture.stats();
    emit(ctx.json, &stats, |s| {
        format!(
            "stopped: {} requests captured, {} written to the store in {} objects\n",
            s.buffered, s.written, s.objects
        )
    });
    Ok(())
}

/// `lambdaml predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The model.
    #[arg(long)]
    pub model: String,
    /// A version (default: production).
    #[arg(long)]
    pub version: Option<String>,
    /// Rows to score: a CSV file with a header, or an MLflow JSON body.
    #[arg(long)]
    pub input: PathBuf,
    /// Do not capture the accepted requests.
    #[arg(long)]
    pub no_capture: bool,
}

pub async fn predict(ctx: &Ctx, started: Instant, args: PredictArgs) -> Result<()> {
    let bytes =
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let content_type = match args.input.extension().and_then(|e| e.to_str()) {
        Some("json") => "application/json",
        Some("csv") => "text/csv",
        _ => bail!(
            "{}: expected a .csv file (with a header) or a .json MLflow body",
            args.input.display()
        ),
    };
    let config = ScoreConfig {
        max_rows: usize::MAX,
        max_body_bytes: usize::MAX,
        capture: CaptureConfig {
            sample_rate: if args.no_capture { 0.0 } else { 1.0 },
            ..CaptureConfig::default()
        },
        ..ScoreConfig::default()
    };
    let state = ScoreState::new(ctx.store.clone(), config, started);
    let mut uri = format!("/invocations?model={}", args.model);
    if let Some(v) = &args.version {
        uri.push_str(&format!("&version={v}"));
    }
    let request = Request::post(uri)
        .header("content-type", content_type)
        .body(Body::from(bytes))?;
    let response = router(state.clone()).oneshot(request).await?;
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    state.settle(std::time::Duration::from_secs(10)).await;
    state.capture.flush().await;
    let value: serde_json::Value = serde_json::from_slice(&body)?;
    if !status.is_success() {
        let details: Vec<String> = value["details"]
            .as_array()
            .map(|d| {
                d.iter()
                    .take(10)
                    .map(|d| {
                        let row = d["row"]
                            .as_u64()
                            .map(|r| format!("row {r} "))
                            .unwrap_or_default();
                        let field = d["field"]
                            .as_str()
                            .map(|f| format!("{f}: "))
                            .unwrap_or_default();
                        format!("  {row}{field}{}", d["reason"].as_str().unwrap_or(""))
                    })
                    .collect()
            })
            .unwrap_or_default();
        return Err(anyhow!(
            "{} ({status})\n{}",
            value["error"].as_str().unwrap_or("scoring failed"),
            details.join("\n")
        ));
    }
    if ctx.json {
        println!("{value}");
        return Ok(());
    }
    // CSV on stdout: the label and one probability per class, or the value.
    let predictions = value["predictions"].as_array().cloned().unwrap_or_default();
    match predictions.first().and_then(|p| p.get("probabilities")) {
        Some(first) => {
            let classes: Vec<&String> = first
                .as_object()
                .map(|m| m.keys().collect())
                .unwrap_or_default();
            let mut out = String::from("label");
            for c in &classes {
                out.push_str(&format!(",p_{c}"));
            }
            println!("{out}");
            for p in &predictions {
                let mut line = p["label"].as_str().unwrap_or("").to_string();
                for c in &classes {
                    line.push_str(&format!(",{}", p["probabilities"][c.as_str()]));
                }
                println!("{line}");
            }
        }
        None => {
            println!("prediction");
            for p in &predictions {
                println!("{p}");
            }
        }
    }
    eprintln!(
        "{} rows scored by {} version {} (request {})",
        predictions.len(),
        value["model_name"].as_str().unwrap_or(""),
        value["model_version"].as_str().unwrap_or(""),
        value["request_id"].as_str().unwrap_or("")
    );
    Ok(())
}

/// `lambdaml feedback`.
#[derive(Debug, Args)]
pub struct FeedbackArgs {
    /// The model.
    #[arg(long)]
    pub model: String,
    /// Ground truth: a CSV with columns request_id, label and optionally row; or JSON lines
    /// of {"request_id", "row", "label"}.
    #[arg(long)]
    pub file: PathBuf,
}

#[derive(Serialize)]
struct FeedbackReport {
    accepted: usize,
    stored: String,
}

pub async fn feedback(ctx: &Ctx, args: FeedbackArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let items: Vec<serde_json::Value> = if args.file.extension().and_then(|e| e.to_str())
        == Some("csv")
    {
        let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
        let header = reader.headers()?.clone();
        for need in ["request_id", "label"] {
            if !header.iter().any(|h| h == need) {
                bail!(
                    "{}: no {need:?} column (the columns are: {})",
                    args.file.display(),
                    header.iter().collect::<Vec<_>>().join(", ")
                );
            }
        }
        let mut items = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let record =
                record.with_context(|| format!("{} line {}", args.file.display(), i + 2))?;
            let mut item = serde_json::Map::new();
            for (h, v) in header.iter().zip(record.iter()) {
                let value = match h {
                    "row" => serde_json::json!(v.trim().parse::<u64>().map_err(|_| anyhow!(
                        "{} line {}: row {v:?} is not a row number",
                        args.file.display(),
                        i + 2
                    ))?),
                    _ => serde_json::json!(v),
                };
                item.insert(h.to_string(), value);
            }
            items.push(serde_json::Value::Object(item));
        }
        items
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("{} line {}: not JSON", args.file.display(), i + 1))
            })
            .collect::<Result<_>>()?
    };
    let state = ScoreState::new(ctx.store.clone(), ScoreConfig::default(), Instant::now());
    let model = state
        .production(&args.model)
        .await
        .map_err(|e| anyhow!("{}", e.error))?;
    let records = lambdaml_score::feedback_records(
        model.classes.as_deref(),
        &serde_json::json!({ "feedback": items }),
        "cli",
        &lambdaml::capture::now_millis(),
    )
    .map_err(|e| {
        let details: Vec<String> = e
            .details
            .iter()
            .take(10)
            .map(|d| {
                format!(
                    "  item {} {}: {}",
                    d.row.unwrap_or(0) + 1,
                    d.field.as_deref().unwrap_or(""),
                    d.reason
                )
            })
            .collect();
        anyhow!("{}\n{}", e.error, details.join("\n"))
    })?;
    let key = write_feedback(ctx.store.as_ref(), &model.name, &records).await?;
    emit(
        ctx.json,
        &FeedbackReport {
            accepted: records.len(),
            stored: key.to_string(),
        },
        |r| format!("{} labels stored at {}\n", r.accepted, r.stored),
    );
    Ok(())
}
