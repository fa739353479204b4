//! `lambdaml lineage MODEL VERSION` and `lambdaml lineage --request-id ID`: where a version
//! came from and what became of it, from what the stages wrote — raw file → dataset version
//! → spec → preprocess run → training → evaluation → registry decisions → the traffic it
//! served → the reports that judged it → the retrain it caused and the version that replaced
//! it. Works on any store (file or S3): it only reads.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use lambdaml::capture::CaptureRecord;
use lambdaml::dataset::DatasetManifest;
use lambdaml::evaluation::Evaluation;
use lambdaml::layout;
use lambdaml::model::ModelManifest;
use lambdaml::registry::{Action, HistoryEntry, VersionEntry};
use lambdaml::run::RunManifest;
use lambdaml::store::{ObjectKey, ObjectStore, ObjectStoreExt};
use lambdaml_evaluate::scalar_metrics;
use serde::Serialize;

use crate::ctx::Ctx;
use crate::history;
use crate::output::emit;

/// `lambdaml lineage`.
#[derive(Debug, Args)]
pub struct LineageArgs {
    /// The model.
    pub model: Option<String>,
    /// The version (default: the model's production version).
    pub version: Option<String>,
    /// Start from a scored request instead: its capture record, the version that answered,
    /// and that version's lineage.
    #[arg(long, conflicts_with = "version")]
    pub request_id: Option<String>,
}

/// The raw file a dataset version was made from.
#[derive(Debug, Serialize)]
pub struct Raw {
    pub key: String,
    pub bytes: u64,
    pub sha256: String,
    /// Its etag now, when it is still in the store.
    pub etag: Option<String>,
}

/// A version's lineage. Each part is `None` where the store does not have it.
#[derive(Debug, Serialize)]
pub struct Lineage {
    pub model: String,
    pub version: String,
    /// The pipeline run that trained it (`lambdaml runs show`).
    pub pipeline_run: Option<String>,
    pub raw: Option<Raw>,
    pub dataset: Option<DatasetManifest>,
    /// The spec snapshot it was trained with, and its SHA-256.
    pub spec: Option<String>,
    pub spec_sha256: Option<String>,
    pub preprocess: Option<RunManifest>,
    pub training: Option<ModelManifest>,
    pub evaluation: Option<EvaluationView>,
    pub registry: Option<VersionEntry>,
    /// Every registry decision about it: who, when, why.
    pub decisions: Vec<HistoryEntry>,
    /// The windows of traffic it answered, as the monitor judged them.
    pub served: Vec<Served>,
    /// The retrains those reports caused, and what they made.
    pub retrains: Vec<Retrain>,
    /// The version that took production from it.
    pub replaced_by: Option<HistoryEntry>,
    /// Parts that could not be read, and why.
    pub unreadable: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct EvaluationView {
    pub holdout_rows: usize,
    pub metrics: BTreeMap<String, f64>,
    pub champion: Option<String>,
    pub champion_metrics: BTreeMap<String, f64>,
    pub created_at: String,
}

/// One monitoring report of the version.
#[derive(Debug, Serialize)]
pub struct Served {
    pub report: String,
    pub html: String,
    pub from: String,
    pub to: String,
    pub requests: u64,
    pub rows: u64,
    pub drift_share: f64,
    pub metric: Option<f64>,
    pub breach: bool,
    pub reasons: Vec<String>,
    pub decision: String,
}

/// A retrain a report of the version asked for.
#[derive(Debug, Serialize)]
pub struct Retrain {
    pub report: String,
    pub reason: String,
    /// Its pipeline run, when recorded.
    pub run: Option<String>,
    /// The versions its run trained.
    pub versions: Vec<String>,
}

async fn optional<T: serde::de::DeserializeOwned>(
    store: &dyn ObjectStore,
    key: &ObjectKey,
    unreadable: &mut Vec<String>,
) -> Option<T> {
    match store.get_json::<T>(key).await {
        Ok(v) => Some(v),
        Err(lambdaml::store::JsonError::Store(lambdaml::store::StoreError::NotFound(_))) => None,
        Err(e) => {
            unreadable.push(format!("{key}: {e}"));
            None
        }
    }
}

/// The lineage of `model` `version`; an unknown model or version is an error naming the
/// ones there are.
pub async fn lineage(store: &dyn ObjectStore, model: &str, version: &str) -> Result<Lineage> {
    let registry = match history::registry(store, model).await? {
        Some(Ok(r)) => Some(r),
        Some(Err(u)) => bail!("{}: {}", u.key, u.reason),
        None => None,
    };
    let manifest_key = layout::model_manifest(model, version)?;
    let mut unreadable = Vec::new();
    let training: Option<ModelManifest> = optional(store, &manifest_key, &mut unreadable).await;
    let entry = registry
        .as_ref()
        .and_then(|r| r.versions.get(version).cloned());
    if training.is_none() && entry.is_none() {
        let Some(registry) = &registry else {
            let models: Vec<String> = history::registries(store).await?.into_keys().collect();
            bail!(
                "there is no model {model:?}; the models are: {}",
                if models.is_empty() {
                    "none yet".to_string()
                } else {
                    models.join(", ")
                }
            );
        };
        let versions: Vec<&String> = registry.versions.keys().collect();
        bail!(
            "model {model} has no version {version:?}; its versions are: {}",
            versions
                .iter()
                .map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut out = Lineage {
        model: model.to_string(),
        version: version.to_string(),
        pipeline_run: training.as_ref().and_then(|m| m.pipeline_run.clone()),
        raw: None,
        dataset: None,
        spec: training.as_ref().and_then(|m| m.spec.clone()),
        spec_sha256: training.as_ref().map(|m| m.spec_sha256.clone()),
        preprocess: None,
        training: None,
        evaluation: None,
        registry: entry,
        decisions: Vec::new(),
        served: Vec::new(),
        retrains: Vec::new(),
        replaced_by: None,
        unreadable: Vec::new(),
    };
    if let Some(m) = &training {
        let dataset_key = layout::dataset_file(&m.dataset, &m.dataset_version, "manifest.json")?;
        out.dataset = optional(store, &dataset_key, &mut unreadable).await;
        out.preprocess = optional(store, &layout::run_manifest(&m.run_id)?, &mut unreadable).await;
        if out.spec.is_none() {
            out.spec = out
                .preprocess
                .as_ref()
                .and_then(|r| r.artifacts.get("spec").cloned());
        }
    }
    if let Some(d) = &out.dataset {
        let etag = match ObjectKey::new(d.source.key.as_str()) {
            Ok(k) => store.head(&k).await.ok().flatten().map(|m| m.etag),
            Err(_) => None,
        };
        out.raw = Some(Raw {
            key: d.source.key.clone(),
            bytes: d.source.bytes,
            sha256: d.source.sha256.clone(),
            etag,
        });
    }
    let evaluation: Option<Evaluation> =
        optional(store, &layout::evaluation(model, version)?, &mut unreadable).await;
    out.evaluation = evaluation.map(|e| EvaluationView {
        holdout_rows: e.holdout_rows,
        metrics: scalar_metrics(&e.metrics),
        champion: e.champion.as_ref().map(|c| c.version.clone()),
        champion_metrics: e
            .champion
            .as_ref()
            .map(|c| scalar_metrics(&c.metrics))
            .unwrap_or_default(),
        created_at: e.created_at,
    });
    out.training = training;
    if let Some(r) = &registry {
        out.decisions = r
            .history
            .iter()
            .filter(|h| h.version == version)
            .cloned()
            .collect();
        out.replaced_by = r
            .history
            .iter()
            .filter(|h| matches!(h.action, Action::Promote | Action::Rollback))
            .find(|h| h.previous.as_deref() == Some(version) && h.version != version)
            .cloned();
    }
    served(store, &mut out).await?;
    out.unreadable = unreadable;
    Ok(out)
}

/// The version's monitoring reports and the retrains they caused.
async fn served(store: &dyn ObjectStore, out: &mut Lineage) -> Result<()> {
    // The run records are read only when a report sent a retrain.
    let mut records: Option<Vec<lambdaml::record::RunRecord>> = None;
    for r in history::reports(store, &out.model).await? {
        let r = match r {
            Ok(r) => r,
            Err(u) => {
                out.unreadable.push(format!("{}: {}", u.key, u.reason));
                continue;
            }
        };
        if r.report.version != out.version {
            continue;
        }
        let rep = &r.report;
        out.served.push(Served {
            report: r.key.clone(),
            html: r.html_key.clone(),
            from: rep.window.from.clone(),
            to: rep.window.to.clone(),
            requests: rep.captures.records_in_window,
            rows: rep.captures.rows_scored,
            drift_share: rep.data_drift.drift_share,
            metric: rep.performance.current,
            breach: rep.verdict.breach,
            reasons: rep.verdict.reasons.clone(),
            decision: rep.retrain.decision.clone(),
        });
        if rep.retrain.decision == "sent" {
            if records.is_none() {
                let all = history::records(store).await?;
                records = Some(all.into_iter().filter_map(Result::ok).collect());
            }
            let run = records
                .iter()
                .flatten()
                .find(|rec| rec.trigger.report.as_deref() == Some(r.key.as_str()));
            out.retrains.push(Retrain {
                report: r.key.clone(),
                reason: rep.retrain.detail.clone(),
                run: run.map(|rec| rec.run.clone()),
                versions: run.map(versions_made).unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// The model versions a run's train steps made or found.
pub fn versions_made(record: &lambdaml::record::RunRecord) -> Vec<String> {
    record
        .steps
        .iter()
        .filter(|s| s.stage == lambdaml::message::Stage::Train)
        .filter_map(|s| {
            s.summary
                .as_ref()?
                .get("version")?
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// The capture record of `request_id` (in `model`'s captures, or every model's).
pub async fn find_request(
    store: &dyn ObjectStore,
    request_id: &str,
    model: Option<&str>,
) -> Result<Option<CaptureRecord>> {
    let prefix = match model {
        Some(m) => layout::records_of(layout::CAPTURES, m),
        None => layout::records_of_all(layout::CAPTURES),
    };
    let needle = format!("\"request_id\":\"{request_id}\"");
    for meta in store.list_all(&prefix).await? {
        let bytes = store.get(&meta.key).await?.bytes;
        if !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            continue;
        }
        for line in bytes.split(|b| *b == b'\n') {
            if let Ok(r) = serde_json::from_slice::<CaptureRecord>(line)
                && r.request_id == request_id
            {
                return Ok(Some(r));
            }
        }
    }
    Ok(None)
}

#[derive(Serialize)]
struct FromRequest {
    request_id: String,
    timestamp: String,
    model: String,
    version: Option<String>,
    role: Option<String>,
    status: u16,
    rows: usize,
    lineage: Option<Lineage>,
}

pub async fn command(ctx: &Ctx, args: LineageArgs) -> Result<()> {
    let store = ctx.store.as_ref();
    if let Some(id) = &args.request_id {
        let capture = find_request(store, id, args.model.as_deref())
            .await?
            .ok_or_else(|| {
                anyhow!(
                    "no captured request has the id {id:?}{} (captures are written when \
                     the model's spec has capture on; `lambdaml captures export` lists them)",
                    args.model
                        .as_deref()
                        .map(|m| format!(" in {m}'s captures"))
                        .unwrap_or_default()
                )
            })?;
        let lineage = match &capture.version {
            Some(v) => Some(lineage(store, &capture.model, v).await?),
            None => None,
        };
        let view = FromRequest {
            request_id: capture.request_id.clone(),
            timestamp: capture.timestamp.clone(),
            model: capture.model.clone(),
            version: capture.version.clone(),
            role: capture.role.map(|r| format!("{r:?}").to_lowercase()),
            status: capture.status,
            rows: capture.rows,
            lineage,
        };
        emit(ctx.json, &view, |v| {
            let mut s = format!(
                "request {} at {}: {} row(s) to {} {} ({}), status {}\n\n",
                v.request_id,
                v.timestamp,
                v.rows,
                v.model,
                v.version.as_deref().unwrap_or("(no version: refused)"),
                v.role.as_deref().unwrap_or("production"),
                v.status
            );
            if let Some(l) = &v.lineage {
                s.push_str(&render(l));
            }
            s
        });
        return Ok(());
    }
    let Some(model) = &args.model else {
        bail!("give MODEL [VERSION], or --request-id ID (see `lambdaml lineage --help`)");
    };
    let version = match &args.version {
        Some(v) => v.clone(),
        None => match history::registry(store, model).await? {
            Some(Ok(r)) => r.production.clone().ok_or_else(|| {
                anyhow!(
                    "model {model} has no production version; name one of its versions: {}",
                    r.versions.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?,
            Some(Err(u)) => bail!("{}: {}", u.key, u.reason),
            None => {
                let models: Vec<String> = history::registries(store).await?.into_keys().collect();
                bail!(
                    "there is no model {model:?}; the models are: {}",
                    if models.is_empty() {
                        "none yet".into()
                    } else {
                        models.join(", ")
                    }
                )
            }
        },
    };
    let version = &version;
    let l = lineage(store, model, version)
        .await
        .with_context(|| format!("the lineage of {model} {version}"))?;
    emit(ctx.json, &l, render);
    Ok(())
}

/// The lineage for people, in the order things happened.
pub fn render(l: &Lineage) -> String {
    let mut s = format!("lineage of {} {}\n", l.model, l.version);
    let mut line = |label: &str, text: String| s.push_str(&format!("  {label:<12} {text}\n"));
    if let Some(r) = &l.raw {
        line(
            "raw file",
            format!(
                "{} ({} bytes, sha256 {}, etag {})",
                r.key,
                r.bytes,
                r.sha256.chars().take(16).collect::<String>(),
                r.etag.as_deref().unwrap_or("gone")
            ),
        );
    }
    if let Some(d) = &l.dataset {
        line(
            "dataset",
            format!(
                "{} version {}: {} rows, {} rejected, {} columns (run {})",
                d.dataset,
                d.version,
                d.rows,
                d.rejected,
                d.columns.len(),
                d.pipeline_run.as_deref().unwrap_or("unrecorded")
            ),
        );
    }
    if let Some(spec) = &l.spec {
        line("spec", spec.clone());
    }
    if let Some(p) = &l.preprocess {
        line(
            "preprocess",
            format!(
                "run {}: {} train / {} holdout rows, {} features",
                p.run_id, p.train_rows, p.holdout_rows, p.features
            ),
        );
    }
    if let Some(t) = &l.training {
        line(
            "training",
            format!(
                "{} steps, loss {:.5}, {:.1} s, {} invocation(s), git {} (run {})",
                t.training.steps,
                t.training.loss,
                t.training.seconds,
                t.training.invocations,
                t.git_revision.as_deref().unwrap_or("unknown"),
                t.pipeline_run.as_deref().unwrap_or("unrecorded")
            ),
        );
    }
    s.push_str(&render_after(l));
    s
}

/// The lineage from evaluation on: the decisions, the traffic, what replaced it.
fn render_after(l: &Lineage) -> String {
    let mut s = String::new();
    let mut line = |label: &str, text: String| s.push_str(&format!("  {label:<12} {text}\n"));
    if let Some(e) = &l.evaluation {
        let metrics = |m: &BTreeMap<String, f64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        line(
            "evaluation",
            format!("{} holdout rows: {}", e.holdout_rows, metrics(&e.metrics)),
        );
        if let Some(c) = &e.champion {
            line(
                "  against",
                format!("{c}: {}", metrics(&e.champion_metrics)),
            );
        }
    }
    for d in &l.decisions {
        line(
            "registry",
            format!("{} {} by {}: {}", d.at, d.action.event(), d.actor, d.reason),
        );
    }
    for w in &l.served {
        line(
            "served",
            format!(
                "{} → {}: {} requests, {} rows, drift share {:.2}{}, {}{}",
                w.from,
                w.to,
                w.requests,
                w.rows,
                w.drift_share,
                w.metric
                    .map(|m| format!(", metric {m:.4}"))
                    .unwrap_or_default(),
                w.decision,
                if w.breach {
                    format!(" ({})", w.reasons.join("; "))
                } else {
                    String::new()
                }
            ),
        );
    }
    for r in &l.retrains {
        line(
            "retrain",
            format!(
                "run {} made {} ({})",
                r.run.as_deref().unwrap_or("unrecorded"),
                if r.versions.is_empty() {
                    "no version yet".to_string()
                } else {
                    r.versions.join(", ")
                },
                r.report
            ),
        );
    }
    if let Some(h) = &l.replaced_by {
        line(
            "replaced by",
            format!("{} at {} ({})", h.version, h.at, h.action.event()),
        );
    }
    for u in &l.unreadable {
        line("unreadable", u.clone());
    }
    s
}
