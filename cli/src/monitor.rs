//! `lambdaml monitor` and `lambdaml report`.

use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use clap::Args;
use lambdaml::monitoring::Report;
use lambdaml::pipeline::{Function, Wired};
use lambdaml::stage::{DrainOptions, StageHandler, drain};
use lambdaml::store::{ObjectKey, ObjectStoreExt};
use lambdaml_monitor::{Monitor, MonitorRequest, Started};

use crate::ctx::Ctx;
use crate::output::emit;
use crate::render::render_handled;

/// `lambdaml monitor`.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// The model.
    #[arg(long)]
    pub model: String,
    /// The window's length, ending at --at (default: the spec's schedule period), e.g. 24h, 7d.
    #[arg(long)]
    pub window: Option<String>,
    /// Explicit window start (RFC 3339), with --to.
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// Explicit window end (RFC 3339), exclusive.
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// The evaluation time (RFC 3339; default now).
    #[arg(long)]
    pub at: Option<String>,
    /// Report only: never send a retrain message.
    #[arg(long)]
    pub no_retrain: bool,
    /// After a retrain message is sent, run the pipeline it starts (drain the queues).
    #[arg(long)]
    pub run: bool,
}

/// `lambdaml report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The model.
    #[arg(long)]
    pub model: String,
    /// Open the HTML report in the browser.
    #[arg(long)]
    pub open: bool,
}

/// A report in a few lines.
pub fn summary(r: &Report, html: &str) -> String {
    let mut s = format!(
        "{} version {} · window {} → {}\n",
        r.model, r.version, r.window.from, r.window.to
    );
    let p = &r.processing;
    s.push_str(&format!(
        "  traffic: {} requests, {} rows, error rate {:.2} %, latency p50 {} p99 {} ms\n",
        p.requests,
        p.rows,
        100.0 * p.error_rate,
        p.latency_ms
            .get("p50")
            .map_or("-".into(), |v| format!("{v:.2}")),
        p.latency_ms
            .get("p99")
            .map_or("-".into(), |v| format!("{v:.2}")),
    ));
    let d = &r.data_drift;
    let drifted: Vec<String> = d
        .features
        .iter()
        .filter(|f| f.drifted)
        .map(|f| {
            format!(
                "{} ({} {:.3})",
                f.name,
                f.method,
                f.score.unwrap_or(f64::NAN)
            )
        })
        .collect();
    s.push_str(&format!(
        "  data drift: {} of {} features (share {:.2}, dataset drift at {:.2}){}{}\n",
        d.drifted,
        d.tested,
        d.drift_share,
        d.drift_share_threshold,
        if drifted.is_empty() { "" } else { ": " },
        drifted.join(", ")
    ));
    s.push_str(&format!(
        "  prediction drift: {}\n",
        if r.prediction_drift.drifted {
            "yes"
        } else {
            "no"
        }
    ));
    let perf = &r.performance;
    s.push_str(&format!("  performance ({}): {}\n", perf.status, perf.note));
    for w in &r.data_quality.warnings {
        s.push_str(&format!("  data quality: {w}\n"));
    }
    if r.verdict.breach {
        s.push_str(&format!("  BREACH: {}\n", r.verdict.reasons.join("; ")));
    } else {
        s.push_str("  no breach\n");
    }
    s.push_str(&format!(
        "  retrain: {} — {}\n",
        r.retrain.decision, r.retrain.detail
    ));
    for n in &r.notes {
        s.push_str(&format!("  note: {n}\n"));
    }
    s.push_str(&format!("  report: {html}\n"));
    s
}

/// Where a store key lives on this machine, for a file:// store.
fn local_path(store_url: &str, key: &str) -> Option<std::path::PathBuf> {
    let root = store_url.strip_prefix("file://")?;
    Some(std::path::Path::new(root).join(key))
}

pub async fn monitor(ctx: &Ctx, store_url: &str, args: MonitorArgs) -> Result<()> {
    let wired = Wired::open(Function::Monitor, ctx.store.clone(), &ctx.queues)
        .await?
        .with_bus(lambdaml::events::bus_from_env().await?);
    let monitor = Monitor::from_wiring(&wired);
    let request = MonitorRequest {
        model: args.model.clone(),
        window: args.window,
        from: args.from,
        to: args.to,
        at: args.at,
        retrain: !args.no_retrain,
    };
    let outcome = match monitor
        .start(&request)
        .await
        .map_err(|e| anyhow!("{}", e.reason()))?
    {
        Started::Done(outcome) => *outcome,
        Started::Planned(planned) => monitor_parts(ctx, &monitor, planned).await?,
    };
    let html = local_path(store_url, &outcome.html_key)
        .map_or(outcome.html_key.clone(), |p| p.display().to_string());
    let mut handled = Vec::new();
    if args.run && outcome.report.retrain.decision == "sent" {
        handled = ctx.drain().await?;
    }
    if ctx.json {
        emit(
            true,
            &serde_json::json!({
                "report_key": outcome.report_key,
                "html_key": outcome.html_key,
                "report": outcome.report,
                "handled": handled,
            }),
            |_| String::new(),
        );
    } else {
        print!("{}", summary(&outcome.report, &html));
        if !handled.is_empty() {
            print!("{}", render_handled(&handled));
        } else if outcome.report.retrain.decision == "sent" {
            println!(
                "  the retrain waits on the ingest queue: `lambdaml run` trains and deploys it"
            );
        }
    }
    Ok(())
}

/// A window planned in parts: handles the monitor queue (`workers` at a time) until its
/// report is written, and reads it.
async fn monitor_parts(
    ctx: &Ctx,
    monitor: &Monitor,
    planned: lambdaml_monitor::parts::PlannedRun,
) -> Result<lambdaml_monitor::MonitorOutcome> {
    let bar = crate::output::spinner(
        ctx.json,
        &format!(
            "aggregating the window in {} parts ({:.0} MiB of captures); parts handled:",
            planned.parts,
            planned.bytes as f64 / 1_048_576.0
        ),
    );
    let handlers: Vec<Arc<dyn StageHandler>> = vec![Arc::new(monitor.clone())];
    let options = DrainOptions {
        workers: ctx.workers,
        ..DrainOptions::default()
    };
    let handled = drain(&ctx.queues, &handlers, &options, &|_| bar.inc(1)).await?;
    bar.finish_and_clear();
    let key = ObjectKey::new(planned.report.clone())?;
    let report: Report = match ctx.store.get_json(&key).await {
        Ok(r) => r,
        Err(e) => {
            let failed = handled.iter().find(|h| h.outcome == "dead_letter");
            bail!(
                "the window of {} planned in {} parts ended without a report ({}): {}",
                planned.model,
                planned.parts,
                planned.plan,
                failed.map_or_else(|| e.to_string(), |f| f.detail.to_string())
            );
        }
    };
    // Stamped at the run's evaluation time, as a single invocation stamps them.
    let at = chrono::DateTime::parse_from_rfc3339(&report.at).map_or_else(
        |_| chrono::Utc::now().timestamp_millis(),
        |t| t.timestamp_millis(),
    );
    let emf = lambdaml_monitor::emf_lines(&report, at);
    Ok(lambdaml_monitor::MonitorOutcome {
        html_key: lambdaml::layout::report_html_beside(&planned.report),
        report_key: planned.report,
        report,
        emf,
    })
}

pub async fn report(ctx: &Ctx, store_url: &str, args: ReportArgs) -> Result<()> {
    let monitor = Monitor::new(ctx.store.clone(), None);
    let (key, report) = monitor
        .latest_report(&args.model)
        .await
        .map_err(|e| anyhow!("{}", e.reason()))?
        .ok_or_else(|| {
            anyhow!(
                "no monitoring report for {:?} yet: run `lambdaml monitor --model {}` first",
                args.model,
                args.model
            )
        })?;
    let html_key = lambdaml::layout::report_html_beside(&key);
    let html = match local_path(store_url, &html_key) {
        Some(p) => p,
        None => {
            // Another store: copy the page to a local file to open it.
            let bytes = ctx
                .store
                .get(&lambdaml::store::ObjectKey::new(html_key.clone())?)
                .await?
                .bytes;
            let p = std::env::temp_dir().join(format!("lambdaml-{}-report.html", args.model));
            std::fs::write(&p, &bytes)?;
            p
        }
    };
    if args.open {
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        if let Err(e) = std::process::Command::new(opener).arg(&html).spawn() {
            eprintln!(
                "could not start {opener} ({e}); open {} yourself",
                html.display()
            );
        }
    }
    emit(
        ctx.json,
        &serde_json::json!({"report_key": key, "html": html, "report": report}),
        |_| summary(&report, &html.display().to_string()),
    );
    Ok(())
}
