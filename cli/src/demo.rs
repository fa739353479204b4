//! `lambdaml demo`: the loop on bundled real data, on the embedded default.
//!
//! The NOAA weather stream and its model spec are compiled into the binary, so the demo
//! needs nothing but this command. It uploads both to the store, ingests the file (schema
//! checks, quarantine, Parquet, profile), runs the stages the ingest triggers through the
//! local queues, delivers the same file again to show that nothing is duplicated, and
//! prints a summary.

use std::time::Instant;

use anyhow::{Result, anyhow};
use bytes::Bytes;
use clap::Args;
use lambdaml::dataset::{Profile, Schema};
use lambdaml::layout;
use lambdaml::message::{IngestRequest, Message, Stage, StageMessage};
use lambdaml::run::RunManifest;
use lambdaml::stage::Handled;
use lambdaml::store::{ObjectKey, ObjectStoreExt};
use lambdaml_deploy::Deploy;
use lambdaml_ingest::IngestOutcome;
use serde::Serialize;

use lambdaml::registry::{Action, Registry, RegistryStore};

use crate::ctx::Ctx;
use crate::models::train_spec;
use crate::output::emit;
use crate::render::stats_map;

const WEATHER_CSV: &[u8] = include_bytes!("../../data/weather_noaa.csv");
const WEATHER_SPEC: &str = include_str!("../../examples/specs/weather.toml");

/// `lambdaml demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {}

#[derive(Serialize)]
struct DemoReport {
    store: String,
    dataset: IngestOutcome,
    ingest_seconds: f64,
    redelivery: IngestOutcome,
    runs: Vec<RunManifest>,
    pipeline_seconds: f64,
    handled: Vec<Handled>,
    first_rejected: Vec<serde_json::Value>,
    schema: Schema,
    profile: Profile,
    queues: serde_json::Value,
    champion: String,
    challenger: serde_json::Value,
    registry: Registry,
    stream: StreamReport,
}

/// What the demo did before the stream, for the first part of the printout.
struct DemoHead<'a> {
    dataset: &'a IngestOutcome,
    ingest_seconds: f64,
    redelivery: &'a IngestOutcome,
    runs: &'a [RunManifest],
    pipeline_seconds: f64,
    first_rejected: &'a [serde_json::Value],
    schema: &'a Schema,
    profile: &'a Profile,
    champion: &'a str,
    challenger: &'a serde_json::Value,
    registry: &'a Registry,
}

/// Days per monitoring period in the demo's stream: a year.
const PERIOD_DAYS: usize = 365;
/// Days the first model is trained on: five years.
const INITIAL_DAYS: usize = 5 * PERIOD_DAYS;

/// Stream day `i` is stamped `1950-01-01 + i days`: the file carries no dates, and fifty
/// years from 1950 stay in the past, so `lambdaml monitor` right after the demo finds no
/// simulated traffic in "now".
fn day_time(day: usize) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::<chrono::Utc>::from_timestamp(-631_152_000, 0).unwrap_or_default()
        + chrono::Duration::days(day as i64)
        + chrono::Duration::hours(12)
}

#[derive(Serialize)]
struct PeriodRow {
    period: usize,
    first_day: usize,
    days: usize,
    version: String,
    accuracy: f64,
    drifted: u64,
    tested: u64,
    dataset_drift: bool,
    prediction_drift: bool,
    performance: String,
    drop: Option<f64>,
    breach: bool,
    retrain: String,
    retrain_detail: String,
    new_version: Option<String>,
    promoted: Option<bool>,
    /// The deploy rule's verdict on the retrained version (`promote`, `shadow`, `reject`…).
    verdict: Option<String>,
    /// The monitor's rollout decision on the shadow this period, with its evidence.
    rollout: Option<String>,
    report: String,
}

#[derive(Serialize)]
struct StreamReport {
    periods: Vec<PeriodRow>,
    days: usize,
    mean_accuracy: f64,
    never_retrained_accuracy: f64,
    retrains: usize,
    promoted: usize,
    /// Shadows the monitor promoted and retired from live evidence.
    shadows_promoted: usize,
    shadows_retired: usize,
    seconds: f64,
    rejected_example: serde_json::Value,
    captured: u64,
    feedback_labels: usize,
    last_report: String,
}

fn day_record(header: &[&str], line: &str) -> (serde_json::Map<String, serde_json::Value>, String) {
    let values: Vec<&str> = line.split(',').collect();
    let label = header.len() - 1;
    let record = header[..label]
        .iter()
        .zip(&values)
        .map(|(h, v)| {
            let value = v
                .parse::<f64>()
                .map(serde_json::Value::from)
                .unwrap_or(serde_json::Value::Null);
            (h.to_string(), value)
        })
        .collect();
    (
        record,
        values.get(label).copied().unwrap_or_default().to_string(),
    )
}

fn table_header() -> String {
    "   year  days  live version      accuracy  drifted  perf. drop  breach  retrain / rollout\n"
        .to_string()
}

fn table_row(r: &PeriodRow) -> String {
    let retrain = match (r.retrain.as_str(), &r.new_version, r.promoted) {
        ("sent", Some(v), _) if r.verdict.as_deref() == Some("shadow") => {
            format!("sent → {v} enters as shadow")
        }
        ("sent", Some(v), Some(true)) => format!("sent → {v} promoted"),
        ("sent", Some(v), Some(false)) => format!("sent → {v} refused by the deploy rule"),
        ("sent", _, _) => "sent".to_string(),
        ("not_needed", _, _) => "—".to_string(),
        (d, _, _) => format!("{d}: {}", r.retrain_detail),
    };
    let retrain = match &r.rollout {
        Some(d) => format!("{d}; {retrain}"),
        None => retrain,
    };
    format!(
        "   {:>4}  {:>4}  {:<16}  {:.4}    {:>2}/{:<2}{}  {:>10}  {:<6}  {}\n",
        r.period,
        r.days,
        r.version,
        r.accuracy,
        r.drifted,
        r.tested,
        if r.dataset_drift { "*" } else { " " },
        r.drop.map_or("-".to_string(), |d| format!("{d:+.4}")),
        if r.breach { "yes" } else { "no" },
        retrain
    )
}

/// Plays the rest of the weather stream after the first five years: each day served through
/// the score function's router with capture (clock set to the day), each year's true labels
/// posted as feedback, the monitor run on the year, and a retrain's pipeline run through the
/// local queues when the monitor sends one.
async fn play_stream(ctx: &Ctx, model: &str) -> Result<StreamReport> {
    use lambdaml::capture::Clock;
    use lambdaml::pipeline::{Function, Wired};
    use lambdaml_monitor::Monitor;
    use lambdaml_score::{ScoreConfig, ScoreState, router};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    let now_ms = Arc::new(AtomicI64::new(day_time(INITIAL_DAYS).timestamp_millis()));
    let clock_ms = now_ms.clone();
    let clock = Clock::new(move || {
        chrono::DateTime::<chrono::Utc>::from_timestamp_millis(clock_ms.load(Ordering::Relaxed))
            .unwrap_or_default()
    });
    let state = ScoreState::with_clock(
        ctx.store.clone(),
        ScoreConfig {
            default_model: Some(model.to_string()),
            // A retrained version goes live for the very next request.
            refresh: std::time::Duration::ZERO,
            ..ScoreConfig::default()
        },
        Instant::now(),
        clock,
    );
    let app = router(state.clone());
    let wired = Wired::open(Function::Monitor, ctx.store.clone(), &ctx.queues).await?;
    let monitor = Monitor::from_wiring(&wired);
    let text = std::str::from_utf8(WEATHER_CSV)?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let rows: Vec<&str> = lines.collect();
    let started = Instant::now();
    let mut periods = Vec::new();
    let mut rejected_example = serde_json::Value::Null;
    let mut feedback_labels = 0;
    let mut last_report = String::new();
    if !ctx.json {
        print!("{}", table_header());
    }
    let registry = RegistryStore::new(ctx.store.clone());
    let first_version = registry.get(model).await?.production.unwrap_or_default();
    for (p, first) in (INITIAL_DAYS..rows.len()).step_by(PERIOD_DAYS).enumerate() {
        let last = (first + PERIOD_DAYS).min(rows.len());
        let version = registry.get(model).await?.production.unwrap_or_default();
        let (correct, feedback) =
            score_days(&app, &now_ms, &header, &rows[first..last], first).await?;
        if p == 0 {
            // A client's typo: a clear 422 naming the field, captured like every request.
            rejected_example = post_json(
                app.clone(),
                "/invocations".to_string(),
                serde_json::json!({"dataframe_records": [{"temprature": 21.0}]}),
            )
            .await?
            .1;
        }
        // The year's true labels arrive at its end.
        let to = day_time(last) - chrono::Duration::hours(12);
        now_ms.store(to.timestamp_millis() - 1, Ordering::Relaxed);
        feedback_labels += feedback.len();
        let (status, answer) = post_json(
            app.clone(),
            format!("/v2/models/{model}/feedback"),
            serde_json::json!({ "feedback": feedback }),
        )
        .await?;
        if !status.is_success() {
            return Err(anyhow!("posting feedback failed: {answer}"));
        }
        // The shadow's copies are captured off the response path: all of them before the
        // monitor reads the year.
        state.settle(std::time::Duration::from_secs(30)).await;
        state.capture.flush().await;
        let from = day_time(first) - chrono::Duration::hours(12);
        let (outcome, new_version, verdict) =
            monitor_period(ctx, &monitor, model, from, to).await?;
        let r = &outcome.report;
        let promoted = verdict.as_ref().map(|v| v == "promote");
        let rollout = r.rollout.as_ref().map(|ro| {
            let evidence = ro.comparison.as_ref().map_or(String::new(), |c| {
                format!(
                    " ({} {:+.4} [{:+.4}, {:+.4}], agreement {:.2})",
                    c.metric,
                    c.improvement,
                    c.interval[0],
                    c.interval[1],
                    ro.agreement.label_agreement.unwrap_or(f64::NAN)
                )
            });
            let what = match ro.decision.as_str() {
                "promote" => "promoted",
                "end" => "retired",
                other => other,
            };
            format!("shadow {} {what}{evidence}", ro.candidate.version)
        });
        last_report = outcome.html_key.clone();
        let row = PeriodRow {
            period: p + 1,
            first_day: first,
            days: last - first,
            version,
            accuracy: correct as f64 / (last - first).max(1) as f64,
            drifted: r.data_drift.drifted,
            tested: r.data_drift.tested,
            dataset_drift: r.data_drift.dataset_drift,
            prediction_drift: r.prediction_drift.drifted,
            performance: r.performance.status.clone(),
            drop: r.performance.drop,
            breach: r.verdict.breach,
            retrain: r.retrain.decision.clone(),
            retrain_detail: r.retrain.detail.clone(),
            new_version,
            promoted,
            verdict,
            rollout,
            report: outcome.report_key.clone(),
        };
        if !ctx.json {
            print!("{}", table_row(&row));
        }
        periods.push(row);
    }
    let seconds = started.elapsed().as_secs_f64();
    let never = never_retrained(ctx, model, &first_version, &header, &rows).await?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let accuracies: Vec<f64> = periods.iter().map(|r| r.accuracy).collect();
    Ok(StreamReport {
        days: rows.len() - INITIAL_DAYS,
        mean_accuracy: mean(&accuracies),
        never_retrained_accuracy: mean(&never),
        retrains: periods.iter().filter(|r| r.retrain == "sent").count(),
        promoted: periods.iter().filter(|r| r.promoted == Some(true)).count(),
        shadows_promoted: periods
            .iter()
            .filter(|r| {
                r.rollout
                    .as_deref()
                    .is_some_and(|d| d.contains(" promoted"))
            })
            .count(),
        shadows_retired: periods
            .iter()
            .filter(|r| r.rollout.as_deref().is_some_and(|d| d.contains(" retired")))
            .count(),
        periods,
        seconds,
        rejected_example,
        captured: state.capture.stats().written,
        feedback_labels,
        last_report,
    })
}

/// Runs the monitor on one period (which also decides a shadow from the period's live
/// days); when it sends a retrain, runs the pipeline through the local queues and returns
/// the version made and the deploy rule's verdict on it.
async fn monitor_period(
    ctx: &Ctx,
    monitor: &lambdaml_monitor::Monitor,
    model: &str,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Result<(
    lambdaml_monitor::MonitorOutcome,
    Option<String>,
    Option<String>,
)> {
    use lambdaml_monitor::MonitorRequest;
    let outcome = monitor
        .run(&MonitorRequest {
            model: model.to_string(),
            window: None,
            from: Some(from.to_rfc3339()),
            to: Some(to.to_rfc3339()),
            at: Some(to.to_rfc3339()),
            retrain: true,
        })
        .await
        .map_err(|e| anyhow!("monitor: {}", e.reason()))?;
    let (mut new_version, mut verdict) = (None, None);
    if outcome.report.retrain.decision == "sent" {
        let handled = ctx.drain().await?;
        if let Some(d) = handled
            .iter()
            .rev()
            .find(|h| h.stage == Stage::Deploy && h.outcome == "ok")
        {
            new_version = d.detail["version"].as_str().map(str::to_string);
            verdict = d.detail["verdict"].as_str().map(str::to_string);
        }
    }
    Ok((outcome, new_version, verdict))
}

/// POSTs a JSON body to the router; the status and the JSON answer.
async fn post_json(
    app: axum::Router,
    path: String,
    body: serde_json::Value,
) -> Result<(axum::http::StatusCode, serde_json::Value)> {
    use tower::ServiceExt;
    let request = axum::http::Request::post(path)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))?;
    let response = app.oneshot(request).await?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    Ok((status, serde_json::from_slice(&bytes)?))
}

/// Scores each day of `days` (the first is day `first`) as that day, one request each;
/// returns how many were right and the feedback (true labels) to send.
async fn score_days(
    app: &axum::Router,
    now_ms: &std::sync::atomic::AtomicI64,
    header: &[&str],
    days: &[&str],
    first: usize,
) -> Result<(usize, Vec<serde_json::Value>)> {
    let (mut correct, mut feedback) = (0usize, Vec::new());
    for (i, line) in days.iter().enumerate() {
        let day = first + i;
        now_ms.store(
            day_time(day).timestamp_millis(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let (record, truth) = day_record(header, line);
        let (status, answer) = post_json(
            app.clone(),
            "/invocations".to_string(),
            serde_json::json!({ "dataframe_records": [record] }),
        )
        .await?;
        if !status.is_success() {
            return Err(anyhow!("scoring day {day} failed: {answer}"));
        }
        if answer["predictions"][0]["label"] == truth.as_str() {
            correct += 1;
        }
        feedback.push(serde_json::json!({
            "request_id": answer["request_id"], "row": 0, "label": truth
        }));
    }
    Ok((correct, feedback))
}

/// The accuracy of each period's days scored by the first version alone, never retrained
/// (no capture): what the loop is compared with.
async fn never_retrained(
    ctx: &Ctx,
    model: &str,
    first_version: &str,
    header: &[&str],
    rows: &[&str],
) -> Result<Vec<f64>> {
    use lambdaml_score::{ScoreConfig, ScoreState, router};
    // The same days scored by the first version alone, never retrained (no capture).
    let quiet = ScoreState::new(
        ctx.store.clone(),
        ScoreConfig {
            default_model: Some(model.to_string()),
            capture: lambdaml::capture::CaptureConfig {
                sample_rate: 0.0,
                ..lambdaml::capture::CaptureConfig::default()
            },
            ..ScoreConfig::default()
        },
        Instant::now(),
    );
    let quiet_app = router(quiet);
    let mut never = Vec::new();
    for first in (INITIAL_DAYS..rows.len()).step_by(PERIOD_DAYS) {
        let last = (first + PERIOD_DAYS).min(rows.len());
        let (records, truths): (Vec<_>, Vec<_>) = rows[first..last]
            .iter()
            .map(|l| day_record(header, l))
            .unzip();
        let (_, answer) = post_json(
            quiet_app.clone(),
            format!("/invocations?model={model}&version={first_version}"),
            serde_json::json!({ "dataframe_records": records }),
        )
        .await?;
        let correct = truths
            .iter()
            .enumerate()
            .filter(|(i, t)| answer["predictions"][*i]["label"] == t.as_str())
            .count();
        never.push(correct as f64 / truths.len().max(1) as f64);
    }
    Ok(never)
}

/// At-least-once delivery: the same S3 notification may arrive twice. Delivers the same
/// file again through the ingest queue and lets the runner handle it.
async fn redeliver(ctx: &Ctx, raw: ObjectKey) -> Result<(IngestOutcome, Vec<Handled>)> {
    // file again through the ingest queue and let the runner handle it.
    // A run of its own, recorded: every step of it skipped-cached.
    let again = Message::new(
        lambdaml::record::new_run_id(lambdaml::record::TriggerKind::Manual),
        None,
        StageMessage::Ingest(IngestRequest {
            key: raw,
            dataset: None,
        }),
    );
    let queue = ctx.queues.get(Stage::Ingest).await?;
    lambdaml::recorder::send(ctx.store.as_ref(), queue.as_ref(), &again).await?;
    let second = ctx.drain().await?;
    let redelivery: IngestOutcome = second
        .iter()
        .find(|h| h.stage == Stage::Ingest && h.outcome == "ok")
        .and_then(|h| serde_json::from_value(h.detail.clone()).ok())
        .ok_or_else(|| anyhow!("the redelivered ingest message was not handled: {second:?}"))?;
    Ok((redelivery, second))
}

/// A challenger: the same model on one weak feature, which the rule refuses against the
/// champion on the same held-out days; then an operator overrides the rule by hand and
/// thinks better of it. Returns the champion, the challenger's decision and the registry.
async fn challenge(
    ctx: &Ctx,
    model: &str,
    handled: &mut Vec<Handled>,
) -> Result<(String, serde_json::Value, lambdaml::registry::Registry)> {
    let champion = RegistryStore::new(ctx.store.clone())
        .get(model)
        .await?
        .production
        .ok_or_else(|| anyhow!("the first model was not promoted: {handled:?}"))?;
    let worse_spec = WEATHER_SPEC.replace(
        "[features]\nexclude = []",
        "[features]\ninclude = [\"visibility\"]",
    );
    let (_, challenger_run) =
        train_spec(ctx, &worse_spec, "the demo's challenger spec", false).await?;
    let challenger = challenger_run
        .iter()
        .rev()
        .find(|h| h.stage == Stage::Deploy && h.outcome == "ok")
        .map(|h| h.detail.clone())
        .ok_or_else(|| anyhow!("the challenger was not decided: {challenger_run:?}"))?;
    handled.extend(challenger_run);
    // The experiment is over: the model's spec goes back to all features, so retraining
    // (and the monitor's "spec changed" rule) sees the spec production was trained with.
    ctx.put_spec(WEATHER_SPEC, "the bundled weather spec")
        .await?;
    // An operator overrides the rule by hand, then thinks better of it.
    let deploy = ctx.wire::<Deploy>().await?;
    let challenger_version = challenger["version"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    deploy
        .manual(
            Action::Promote,
            model,
            Some(&challenger_version),
            "demo:operator",
            "override the rule",
        )
        .await
        .map_err(|e| anyhow!("{}", e.reason()))?;
    let after = deploy
        .manual(
            Action::Rollback,
            model,
            None,
            "demo:operator",
            "the override was a mistake",
        )
        .await
        .map_err(|e| anyhow!("{}", e.reason()))?;
    Ok((champion, challenger, after))
}

pub async fn demo(ctx: &Ctx, store_url: &str, _args: DemoArgs) -> Result<()> {
    if !ctx.json {
        println!(
            "lambdaml demo — store {store_url} (embedded default: local files, no cloud, no Docker)"
        );
        println!(
            "data: NOAA daily weather, Nebraska, 18,159 days in order (data/weather_noaa.csv)\n"
        );
    }
    let spec = ctx
        .put_spec(WEATHER_SPEC, "the bundled weather spec")
        .await?;
    // The first five years train the first model; the rest of the stream arrives as traffic.
    let initial: Vec<u8> = {
        let text = std::str::from_utf8(WEATHER_CSV)?;
        let mut out = String::new();
        for line in text.lines().take(INITIAL_DAYS + 1) {
            out.push_str(line);
            out.push('\n');
        }
        out.into_bytes()
    };
    let raw = layout::raw(&spec.dataset.name, "weather_noaa_first_5_years.csv")?;
    ctx.store.put(&raw, Bytes::from(initial)).await?;

    let started = Instant::now();
    let dataset = ctx.ingest_key(raw.clone(), None).await?;
    let ingest_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut handled = ctx.drain().await?;
    let pipeline_seconds = started.elapsed().as_secs_f64();

    let (redelivery, second) = redeliver(ctx, raw).await?;
    handled.extend(second);

    let key = |n: &str| layout::dataset_file(&dataset.dataset, &dataset.version, n);
    let schema: Schema = ctx.store.get_json(&key("schema.json")?).await?;
    let profile: Profile = ctx.store.get_json(&key("profile.json")?).await?;
    let rejected = ctx.store.get(&key("rejected.jsonl")?).await?.bytes;
    let first_rejected: Vec<serde_json::Value> = String::from_utf8_lossy(&rejected)
        .lines()
        .take(3)
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut runs = Vec::new();
    for h in handled
        .iter()
        .filter(|h| h.stage == Stage::Preprocess && h.outcome == "ok")
    {
        if let Some(manifest) = h.detail.get("manifest").and_then(|m| m.as_str()) {
            let run: RunManifest = ctx.store.get_json(&ObjectKey::new(manifest)?).await?;
            if !runs.iter().any(|r: &RunManifest| r.run_id == run.run_id) {
                runs.push(run);
            }
        }
    }
    let (champion, challenger, after) = challenge(ctx, &spec.model.name, &mut handled).await?;
    let registry = after;
    if !ctx.json {
        print!(
            "{}",
            render(&DemoHead {
                dataset: &dataset,
                ingest_seconds,
                redelivery: &redelivery,
                runs: &runs,
                pipeline_seconds,
                first_rejected: &first_rejected,
                schema: &schema,
                profile: &profile,
                champion: &champion,
                challenger: &challenger,
                registry: &registry,
            })
        );
        println!(
            "7. the loop   the next {} days arrive one request a day through the score router (capture on);\n             each year's true labels are posted as feedback, the monitor compares the year with the\n             live version's baseline, and a breach retrains through the queues (deploy rule decides):\n",
            WEATHER_CSV
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                .saturating_sub(1 + INITIAL_DAYS)
        );
    }
    let stream = play_stream(ctx, &spec.model.name).await?;
    let registry = RegistryStore::new(ctx.store.clone())
        .get(&spec.model.name)
        .await?;

    let stats = ctx.queue_stats().await?;
    let report = DemoReport {
        store: store_url.to_string(),
        dataset,
        ingest_seconds,
        redelivery,
        runs,
        pipeline_seconds,
        handled,
        first_rejected,
        schema,
        profile,
        queues: stats_map(&stats),
        champion,
        challenger,
        registry,
        stream,
    };
    emit(ctx.json, &report, |r| render_tail(r, store_url, &stats));
    Ok(())
}

mod render;
use render::{render, render_tail};
