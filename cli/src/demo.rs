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
use lambdaml::message::{IngestRequest, Message, Stage, StageMessage};
use lambdaml::run::RunManifest;
use lambdaml::stage::Handled;
use lambdaml::store::{ObjectKey, ObjectStoreExt};
use lambdaml_ingest::IngestOutcome;
use serde::Serialize;

use crate::commands::{Ctx, render_stats, stats_map};
use crate::output::emit;

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
    let raw = ObjectKey::new(format!("raw/{}/weather_noaa.csv", spec.dataset.name))?;
    ctx.store.put(&raw, Bytes::from_static(WEATHER_CSV)).await?;

    let started = Instant::now();
    let dataset = ctx.ingest_key(raw.clone(), None).await?;
    let ingest_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut handled = ctx.drain().await?;
    let pipeline_seconds = started.elapsed().as_secs_f64();

    // At-least-once delivery: the same S3 notification may arrive twice. Deliver the same
    // file again through the ingest queue and let the runner handle it.
    let again = Message::new(
        "demo-redelivery",
        None,
        StageMessage::Ingest(IngestRequest {
            key: raw,
            dataset: None,
        }),
    );
    ctx.queues
        .get(Stage::Ingest)
        .await?
        .send(&again.to_body())
        .await?;
    let second = ctx.drain().await?;
    let redelivery: IngestOutcome = second
        .iter()
        .find(|h| h.stage == Stage::Ingest && h.outcome == "ok")
        .and_then(|h| serde_json::from_value(h.detail.clone()).ok())
        .ok_or_else(|| anyhow!("the redelivered ingest message was not handled: {second:?}"))?;
    handled.extend(second);

    let prefix = format!("datasets/{}/{}", dataset.dataset, dataset.version);
    let key = |n: &str| ObjectKey::new(format!("{prefix}/{n}"));
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
    };
    emit(ctx.json, &report, |r| render(r, &stats));
    Ok(())
}

fn render(r: &DemoReport, stats: &[(Stage, lambdaml::queue::QueueStats)]) -> String {
    let d = &r.dataset;
    let prefix = format!("datasets/{}/{}", d.dataset, d.version);
    let mut s = format!(
        "1. ingest    dataset {} version {}{} in {:.2}s\n             {} valid rows → {prefix}/data.parquet, {} quarantined → rejected.jsonl\n",
        d.dataset,
        d.version,
        if d.created {
            ""
        } else {
            " (already in the store: nothing rewritten)"
        },
        r.ingest_seconds,
        d.rows,
        d.rejected,
    );
    for row in &r.first_rejected {
        let reasons: Vec<String> = row["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                format!(
                    "{}: {}",
                    x["column"].as_str().unwrap_or("row"),
                    x["reason"].as_str().unwrap_or_default()
                )
            })
            .collect();
        s.push_str(&format!(
            "             quarantined line {}: {}\n",
            row["line"],
            reasons.join("; ")
        ));
    }
    s.push_str("             schema: ");
    s.push_str(
        &r.schema
            .columns
            .iter()
            .map(|c| format!("{} {:?}", c.name, c.kind).to_lowercase())
            .collect::<Vec<_>>()
            .join(", "),
    );
    s.push('\n');
    if let Some(rain) = r.profile.columns.get(&r.schema.label) {
        let total: u64 = rain.frequencies.values().sum();
        let shares: Vec<String> = rain
            .frequencies
            .iter()
            .map(|(k, n)| format!("{k}: {:.1} %", 100.0 * *n as f64 / total.max(1) as f64))
            .collect();
        s.push_str(&format!(
            "             label {}: {}\n",
            r.schema.label,
            shares.join(", ")
        ));
    }
    for run in &r.runs {
        s.push_str(&format!(
            "2. preprocess run {} ({:.2}s): time-ordered split {} train / {} holdout rows,\n             {} features fitted on the training split only → runs/{}/\n",
            run.run_id, r.pipeline_seconds, run.train_rows, run.holdout_rows, run.features, run.run_id
        ));
        for d in &run.dropped {
            s.push_str(&format!("             dropped {d}\n"));
        }
    }
    s.push_str(&format!(
        "3. redelivery the same file again → version {} ({}), no second dataset version or run\n\n",
        r.redelivery.version,
        if r.redelivery.created {
            "written again!"
        } else {
            "nothing written"
        }
    ));
    s.push_str(&render_stats(stats));
    s.push_str("\nThe train messages wait in the train queue for the train stage.\n");
    s.push_str("Inspect: lambdaml datasets show weather · lambdaml queues · lambdaml --help\n");
    s
}
