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

use lambdaml::queue::DEPLOYMENTS;
use lambdaml::registry::{Action, Registry, RegistryStore};

use crate::commands::{Ctx, render_stats, stats_map};
use crate::models::train_spec;
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
    champion: String,
    challenger: serde_json::Value,
    registry: Registry,
    scoring: ScoreReport,
}

#[derive(Serialize)]
struct ScoreReport {
    model: String,
    version: String,
    requests: usize,
    rows_served: usize,
    seconds: f64,
    mean_latency_us: f64,
    accuracy: f64,
    rejected_example: serde_json::Value,
    captured: u64,
    feedback_labels: usize,
}

/// Serves the held-out days through the score function's router, one request per day as
/// live traffic would arrive, with capture on; posts each day's true label as feedback.
async fn score_holdout(ctx: &Ctx, model: &str, days: usize) -> Result<ScoreReport> {
    use axum::body::Body;
    use axum::http::Request;
    use lambdaml_score::{ScoreConfig, ScoreState, router};
    use tower::ServiceExt;

    let state = ScoreState::new(
        ctx.store.clone(),
        ScoreConfig {
            default_model: Some(model.to_string()),
            ..ScoreConfig::default()
        },
        Instant::now(),
    );
    let app = router(state.clone());
    let post = |path: String, body: serde_json::Value| {
        let app = app.clone();
        async move {
            let request = Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))?;
            let response = app.oneshot(request).await?;
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
            let value: serde_json::Value = serde_json::from_slice(&bytes)?;
            anyhow::Ok((status, value))
        }
    };
    let text = std::str::from_utf8(WEATHER_CSV)?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let label = header.len() - 1;
    let rows: Vec<&str> = lines.collect();
    let served = &rows[rows.len().saturating_sub(days)..];
    let started = Instant::now();
    let (mut correct, mut feedback) = (0usize, Vec::new());
    let mut version = String::new();
    for line in served {
        let values: Vec<&str> = line.split(',').collect();
        let record: serde_json::Map<String, serde_json::Value> = header[..label]
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
        let (status, answer) = post(
            "/invocations".to_string(),
            serde_json::json!({ "dataframe_records": [record] }),
        )
        .await?;
        if !status.is_success() {
            return Err(anyhow!("scoring a held-out day failed: {answer}"));
        }
        let truth = values.get(label).copied().unwrap_or_default();
        if answer["predictions"][0]["label"] == truth {
            correct += 1;
        }
        version = answer["model_version"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        feedback.push(serde_json::json!({
            "request_id": answer["request_id"], "row": 0, "label": truth
        }));
    }
    let seconds = started.elapsed().as_secs_f64();
    // A client's typo: a clear 422 naming the field, captured like every request.
    let (_, rejected_example) = post(
        "/invocations".to_string(),
        serde_json::json!({"dataframe_records": [{"temprature": 21.0}]}),
    )
    .await?;
    let feedback_labels = feedback.len();
    let (status, answer) = post(
        format!("/v2/models/{model}/feedback"),
        serde_json::json!({ "feedback": feedback }),
    )
    .await?;
    if !status.is_success() {
        return Err(anyhow!("posting feedback failed: {answer}"));
    }
    state.capture.flush().await;
    Ok(ScoreReport {
        model: model.to_string(),
        version,
        requests: served.len(),
        rows_served: served.len(),
        seconds,
        mean_latency_us: seconds * 1e6 / served.len().max(1) as f64,
        accuracy: correct as f64 / served.len().max(1) as f64,
        rejected_example,
        captured: state.capture.stats().written,
        feedback_labels,
    })
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
    // A challenger: the same model on one weak feature. The rule compares it with the
    // champion on the same held-out days and refuses it.
    let champion = RegistryStore::new(ctx.store.clone())
        .get(&spec.model.name)
        .await?
        .production
        .ok_or_else(|| anyhow!("the first model was not promoted: {handled:?}"))?;
    let worse_spec = WEATHER_SPEC.replace(
        "[features]\nexclude = []",
        "[features]\ninclude = [\"visibility\"]",
    );
    let (_, challenger_run) = train_spec(ctx, &worse_spec, "the demo's challenger spec").await?;
    let challenger = challenger_run
        .iter()
        .rev()
        .find(|h| h.stage == Stage::Deploy && h.outcome == "ok")
        .map(|h| h.detail.clone())
        .ok_or_else(|| anyhow!("the challenger was not decided: {challenger_run:?}"))?;
    handled.extend(challenger_run);
    // An operator overrides the rule by hand, then thinks better of it.
    let deploy = ctx.deploy_handler(ctx.queues.named(DEPLOYMENTS).await?);
    let challenger_version = challenger["version"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    deploy
        .manual(
            Action::Promote,
            &spec.model.name,
            Some(&challenger_version),
            "demo:operator",
            "override the rule",
        )
        .await
        .map_err(|e| anyhow!("{}", e.reason()))?;
    let after = deploy
        .manual(
            Action::Rollback,
            &spec.model.name,
            None,
            "demo:operator",
            "the override was a mistake",
        )
        .await
        .map_err(|e| anyhow!("{}", e.reason()))?;
    let registry = after;
    let holdout_days = runs.first().map(|r| r.holdout_rows).unwrap_or(1000);
    let scoring = score_holdout(ctx, &spec.model.name, holdout_days).await?;

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
        scoring,
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
        "3. redelivery the same file again → version {} ({}), no second dataset version or run\n",
        r.redelivery.version,
        if r.redelivery.created {
            "written again!"
        } else {
            "nothing written"
        }
    ));
    let reg = &r.registry;
    if let Some(v) = reg.versions.get(&r.champion) {
        s.push_str(&format!(
            "4. train      {} {}: logistic regression by L-BFGS → models/{}/{}/\n   evaluate   on the {} held-out days: {}\n   deploy     promoted (first version)\n",
            reg.model,
            v.version,
            reg.model,
            v.version,
            r.runs.first().map(|run| run.holdout_rows).unwrap_or_default(),
            metric_line(&v.metrics),
        ));
    }
    s.push_str(&format!(
        "5. challenger the same model on `visibility` alone → {}: {} — {}\n",
        r.challenger["version"].as_str().unwrap_or_default(),
        r.challenger["verdict"].as_str().unwrap_or_default(),
        r.challenger["reason"].as_str().unwrap_or_default(),
    ));
    s.push_str(&format!(
        "6. rollback   an operator promoted it by hand anyway; `lambdaml models rollback {}` → {} is back in production\n",
        reg.model,
        reg.production.as_deref().unwrap_or("none"),
    ));
    let sc = &r.scoring;
    s.push_str(&format!(
        "7. score      {} held-out days served one request each through the score router (POST /invocations):\n             version {}, accuracy {:.4}, {:.0} µs per request in-process ({:.2}s)\n             {} requests captured → captures/{}/…, {} true labels posted → feedback/{}/…\n",
        sc.requests, sc.version, sc.accuracy, sc.mean_latency_us, sc.seconds, sc.captured, sc.model, sc.feedback_labels, sc.model
    ));
    s.push_str(&format!(
        "             a typo is refused with 422: {}\n\n",
        sc.rejected_example["error"].as_str().unwrap_or_default()
    ));
    s.push_str("model versions:\n");
    let mut versions: Vec<_> = reg.versions.values().collect();
    versions.sort_by_key(|v| v.number);
    for v in versions {
        s.push_str(&format!(
            "  #{} {}  {:<12} {}\n",
            v.number,
            v.version,
            format!("{:?}", v.status).to_lowercase(),
            metric_line(&v.metrics)
        ));
    }
    s.push('\n');
    s.push_str(&render_stats(stats));
    s.push_str("\nInspect: lambdaml models history weather-rain · lambdaml datasets show weather · lambdaml queues\nServe:   lambdaml serve   then   curl 127.0.0.1:8080/v2/models/weather-rain   (its inputs; README shows a request)\n");
    s
}

fn metric_line(metrics: &std::collections::BTreeMap<String, f64>) -> String {
    ["roc_auc", "accuracy", "f1_macro", "log_loss"]
        .iter()
        .filter_map(|k| metrics.get(*k).map(|v| format!("{k} {v:.4}")))
        .collect::<Vec<_>>()
        .join(", ")
}
