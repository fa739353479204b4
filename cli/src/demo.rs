//! `lambdaml demo`: the loop on bundled real data, on the embedded default.
//!
//! The NOAA weather stream and its model spec are compiled into the binary, so the demo
//! needs nothing but this command. It uploads both to the store, ingests the file (schema
//! checks, quarantine, Parquet, profile), runs the stages the ingest triggers through the
//! local queues, delivers the same file again to show that nothing is duplicated, plays the
//! rest of the stream through the loop, scores the whole file as a batch job, and prints a
//! summary.

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

use crate::backtest::PeriodLine;
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
    batch: batch::BatchDemo,
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
struct StreamReport {
    periods: Vec<PeriodLine>,
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

fn table_header() -> String {
    "   year  days  live version      accuracy  drifted  perf. drop  breach  retrain / rollout\n"
        .to_string()
}

fn table_row(r: &PeriodLine, header: bool) -> String {
    let promoted = r.verdict.as_deref().map(|v| v == "promote");
    let retrain = match (r.retrain.as_str(), &r.new_version, promoted) {
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
        "{}   {:>4}  {:>4}  {:<16}  {:.4}    {:>2}/{:<2}{}  {:>10}  {:<6}  {}\n",
        if header {
            table_header()
        } else {
            String::new()
        },
        r.period,
        r.rows,
        r.version,
        r.metric,
        r.drifted,
        r.tested,
        if r.dataset_drift { "*" } else { " " },
        r.drop.map_or("-".to_string(), |d| format!("{d:+.4}")),
        if r.breach { "yes" } else { "no" },
        retrain
    )
}

/// Plays the rest of the weather stream after the first five years with `lambdaml
/// backtest`'s loop: each year's days served through the score function's router with
/// capture (clock set to the year), its true labels posted as feedback, the monitor run on
/// the year, and a retrain's pipeline run through the local queues when the monitor sends
/// one; the first version, never retrained, scores the same days beside it.
async fn play_stream(ctx: &Ctx, model: &str) -> Result<StreamReport> {
    use crate::backtest::{BacktestArgs, PlayOptions, Replay, Rows, play};

    let started = Instant::now();
    let registry = RegistryStore::new(ctx.store.clone());
    let first_version = registry.get(model).await?.production.unwrap_or_default();
    let manifest: lambdaml::model::ModelManifest = ctx
        .store
        .get_json(&layout::model_manifest(model, &first_version)?)
        .await?;
    let rows = Rows::parse(WEATHER_CSV, "data/weather_noaa.csv")?;
    let label = rows
        .column("rain")
        .ok_or_else(|| anyhow!("the weather file has no rain column"))?;
    let days = rows.len() - INITIAL_DAYS;
    let start = day_time(INITIAL_DAYS) - chrono::Duration::hours(12);
    let rejected_example = typo(ctx, model, start).await?;
    let replay = Replay::new(
        rows,
        label,
        &manifest.pipeline,
        true,
        start,
        chrono::Duration::days(PERIOD_DAYS as i64),
    );
    let args = BacktestArgs {
        file: "data/weather_noaa.csv".into(),
        spec: "examples/specs/weather.toml".into(),
        initial: INITIAL_DAYS,
        period: PERIOD_DAYS,
        order_by: None,
        labels_delay: 0,
        period_time: format!("{PERIOD_DAYS}d"),
        html: None,
    };
    let options = PlayOptions {
        every_period: false,
        batch: 1,
        printer: table_row,
    };
    let played = play(ctx, &replay, &args, model, &first_version, &options).await?;
    let periods = played.lines;
    let mean = |v: &mut dyn Iterator<Item = f64>| {
        let (n, s) = v.fold((0usize, 0.0), |(n, s), x| (n + 1, s + x));
        s / n.max(1) as f64
    };
    let rolled = |what: &str| {
        periods
            .iter()
            .filter(|r| r.rollout.as_deref().is_some_and(|d| d.contains(what)))
            .count()
    };
    Ok(StreamReport {
        days,
        mean_accuracy: mean(&mut periods.iter().map(|r| r.metric)),
        never_retrained_accuracy: mean(&mut periods.iter().map(|r| r.never)),
        retrains: periods.iter().filter(|r| r.retrain == "sent").count(),
        promoted: periods
            .iter()
            .filter(|r| r.verdict.as_deref() == Some("promote"))
            .count(),
        shadows_promoted: rolled(" promoted"),
        shadows_retired: rolled(" retired"),
        last_report: periods.last().map(|r| r.report.clone()).unwrap_or_default(),
        periods,
        seconds: started.elapsed().as_secs_f64(),
        rejected_example,
        captured: played.captured,
        feedback_labels: played.labels,
    })
}

/// A client's typo on the stream's first day: a clear 422 naming the field, captured like
/// every request.
async fn typo(
    ctx: &Ctx,
    model: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<serde_json::Value> {
    use lambdaml_score::{ScoreConfig, ScoreState, router};
    let state = ScoreState::with_clock(
        ctx.store.clone(),
        ScoreConfig {
            default_model: Some(model.to_string()),
            ..ScoreConfig::default()
        },
        Instant::now(),
        lambdaml::capture::Clock::new(move || at),
    );
    let (_, answer) = crate::backtest::post(
        &router(state.clone()),
        "/invocations",
        &serde_json::json!({"dataframe_records": [{"temprature": 21.0}]}),
    )
    .await?;
    state.capture.flush().await;
    Ok(answer)
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
    let batch = batch::batch_step(ctx, &spec.model.name, WEATHER_CSV).await?;
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
        batch,
    };
    emit(ctx.json, &report, |r| render_tail(r, store_url, &stats));
    Ok(())
}

mod batch;
mod render;
use render::{render, render_tail};
