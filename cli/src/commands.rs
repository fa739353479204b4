//! The commands other than `demo`.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use lambdaml::dataset::{DatasetManifest, Profile, Schema};
use lambdaml::layout;
use lambdaml::message::{Message, PreprocessRequest, Stage, StageMessage};
use lambdaml::record::{TriggerKind, new_run_id};
use lambdaml::stage::{Handled, StageHandler};
use lambdaml::store::{ObjectStore, ObjectStoreExt};
use lambdaml_ingest::IngestOutcome;
use lambdaml_preprocess::{Preprocess, PreprocessOutcome};
use serde::Serialize;

use crate::ctx::Ctx;
use crate::output::emit;
use crate::render::{render_handled, render_stats, stats_map};
use crate::{Cli, Command};

pub async fn run(cli: Cli, store_given: bool, started: std::time::Instant) -> Result<()> {
    if let Command::Backtest(args) = cli.command {
        // A backtest never touches a store it was not told to use, and refuses bad input
        // before it creates one.
        crate::backtest::validate(&args)?;
        let (store, queues) = if store_given {
            (cli.store, cli.queues)
        } else {
            (crate::backtest::fresh_store(&args.spec)?, None)
        };
        let ctx = Ctx::open(&store, queues.as_deref(), cli.json).await?;
        return crate::backtest::backtest(&ctx, &store, args).await;
    }
    let mut ctx = Ctx::open(&cli.store, cli.queues.as_deref(), cli.json).await?;
    match cli.command {
        Command::Demo(args) => crate::demo::demo(&ctx, &cli.store, args).await,
        Command::Backtest(_) => unreachable!("handled above"),
        Command::Ingest(args) => ingest(&ctx, args).await,
        Command::Preprocess(args) => preprocess(&ctx, args).await,
        Command::Run(args) => {
            if let Some(w) = args.workers {
                ctx.workers = w.max(1);
            }
            let handled = ctx.drain().await?;
            let stats = ctx.queue_stats().await?;
            emit(
                ctx.json,
                &RunReport {
                    handled,
                    queues: stats_map(&stats),
                },
                |r| {
                    let mut s = render_handled(&r.handled);
                    s.push_str(&render_stats(&stats));
                    s
                },
            );
            Ok(())
        }
        Command::Datasets { command } => datasets(&ctx, command).await,
        Command::Queues(args) => queues(&ctx, args).await,
        Command::Train(args) => crate::models::train(&ctx, args).await,
        Command::Models { command } => crate::models::models(&ctx, command).await,
        Command::Serve(args) => crate::serve::serve(&ctx, started, args).await,
        Command::Predict(args) => crate::serve::predict(&ctx, started, args).await,
        Command::Feedback(args) => crate::serve::feedback(&ctx, args).await,
        Command::Monitor(args) => crate::monitor::monitor(&ctx, &cli.store, args).await,
        Command::Report(args) => crate::monitor::report(&ctx, &cli.store, args).await,
        Command::Captures { command } => crate::captures::captures(&ctx, command).await,
        Command::Runs { command } => crate::runs::runs(&ctx, command).await,
        Command::Lineage(args) => crate::lineage::command(&ctx, args).await,
        Command::Ui(args) => crate::ui::ui(&ctx, &cli.store, args).await,
        Command::Local(args) => crate::emulate::local(&ctx, &cli.store, args).await,
        Command::Invoke(args) => crate::emulate::invoke(&ctx, args).await,
        Command::Batch { command } => crate::batch::batch(&mut ctx, command).await,
        Command::Stack { command } => crate::emulate::stack(ctx.json, command).await,
    }
}

#[derive(Serialize)]
struct RunReport {
    handled: Vec<Handled>,
    queues: serde_json::Value,
}

/// `lambdaml ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// The raw file: CSV, gzip-compressed CSV or Parquet.
    pub file: PathBuf,
    /// The model spec (TOML) naming the dataset, label and task.
    #[arg(long)]
    pub spec: PathBuf,
    /// Store the file under this dataset instead of the spec's `dataset.name`.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Only ingest; leave the messages it sends in the queues.
    #[arg(long)]
    pub no_run: bool,
}

#[derive(Serialize)]
struct IngestReport {
    ingest: IngestOutcome,
    handled: Vec<Handled>,
}

async fn ingest(ctx: &Ctx, args: IngestArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.spec)
        .with_context(|| format!("reading the spec {}", args.spec.display()))?;
    let spec = ctx
        .put_spec(&text, &args.spec.display().to_string())
        .await?;
    if !args.file.is_file() {
        bail!("{} is not a file", args.file.display());
    }
    let dataset = args.dataset.unwrap_or(spec.dataset.name.clone());
    let name = args
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("{} has no file name", args.file.display()))?;
    let key = layout::raw(&dataset, &name)?;
    ctx.store.put_file(&key, &args.file).await?;
    let outcome = ctx.ingest_key(key, Some(dataset)).await?;
    let handled = if args.no_run {
        Vec::new()
    } else {
        ctx.drain().await?
    };
    emit(
        ctx.json,
        &IngestReport {
            ingest: outcome,
            handled,
        },
        |r| {
            let o = &r.ingest;
            let mut s = format!(
                "dataset {} version {}{}: {} rows, {} rejected ({})\n",
                o.dataset,
                o.version,
                if o.created {
                    ""
                } else {
                    " (already ingested; nothing written)"
                },
                o.rows,
                o.rejected,
                o.manifest
            );
            if let Some(p) = &o.partitioned {
                s.push_str(&format!(
                    "checked in {} partitions ({} round{}; LAMBDAML_INGEST_PARTITION_MIB sets their size)\n",
                    p.partitions,
                    p.round,
                    if p.round == 1 { "" } else { "s" }
                ));
            }
            if !r.handled.is_empty() {
                s.push_str(&render_handled(&r.handled));
            }
            s
        },
    );
    Ok(())
}

/// `lambdaml preprocess`.
#[derive(Debug, Args)]
pub struct PreprocessArgs {
    /// The dataset.
    #[arg(long)]
    pub dataset: String,
    /// The dataset version (default: the latest).
    #[arg(long)]
    pub version: Option<String>,
    /// The model spec file (TOML).
    #[arg(long)]
    pub spec: PathBuf,
}

async fn preprocess(ctx: &Ctx, args: PreprocessArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.spec)
        .with_context(|| format!("reading the spec {}", args.spec.display()))?;
    let spec = ctx
        .put_spec(&text, &args.spec.display().to_string())
        .await?;
    let version = match args.version {
        Some(v) => v,
        None => {
            latest_version(ctx.store.as_ref(), &args.dataset)
                .await?
                .version
        }
    };
    let sha = lambdaml::sha256_hex(text.as_bytes());
    let snapshot = layout::spec_snapshot(&spec.model.name, &sha)?;
    ctx.store
        .put_immutable(&snapshot, bytes::Bytes::from(text))
        .await?;
    let handler = ctx.wire::<Preprocess>().await?;
    let message = Message::new(
        new_run_id(TriggerKind::Manual),
        Some(spec.model.name.clone()),
        StageMessage::Preprocess(PreprocessRequest {
            dataset: args.dataset,
            dataset_version: version,
            spec: snapshot,
            salt: None,
        }),
    );
    let outcome: PreprocessOutcome = serde_json::from_value(
        StageHandler::handle(&handler, message)
            .await
            .map_err(|e| anyhow!("{}", e.reason()))?,
    )?;
    emit(ctx.json, &outcome, |o| {
        format!(
            "run {}{}: {} train / {} holdout rows, {} features{}\n",
            o.run_id,
            if o.created {
                ""
            } else {
                " (already there; nothing written)"
            },
            o.train_rows,
            o.holdout_rows,
            o.features,
            if o.dropped.is_empty() {
                String::new()
            } else {
                format!("; dropped {}", o.dropped.join("; "))
            }
        )
    });
    Ok(())
}

/// `lambdaml run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Batch partitions scored at once (default: the core count).
    #[arg(long)]
    pub workers: Option<usize>,
}

/// `lambdaml datasets …`.
#[derive(Debug, Subcommand)]
pub enum DatasetsCommand {
    /// Every dataset version in the store.
    List,
    /// One dataset version: manifest, schema, profile and rejected rows.
    Show {
        /// The dataset.
        dataset: String,
        /// The version (default: the latest).
        #[arg(long)]
        version: Option<String>,
        /// Also print up to this many rejected rows.
        #[arg(long, default_value_t = 5)]
        rejected: usize,
    },
}

async fn manifests(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<DatasetManifest>> {
    let mut out = Vec::new();
    for meta in store.list_all(prefix).await? {
        if meta.key.as_str().ends_with("/manifest.json") {
            out.push(store.get_json::<DatasetManifest>(&meta.key).await?);
        }
    }
    out.sort_by(|a, b| (&a.dataset, &a.created_at).cmp(&(&b.dataset, &b.created_at)));
    Ok(out)
}

pub async fn latest_version(store: &dyn ObjectStore, dataset: &str) -> Result<DatasetManifest> {
    manifests(store, &layout::dataset_versions(dataset))
        .await?
        .pop()
        .ok_or_else(|| anyhow!("dataset {dataset:?} has no versions; ingest a file first"))
}

#[derive(Serialize)]
struct DatasetView {
    manifest: DatasetManifest,
    schema: Schema,
    profile: Profile,
    rejected_rows: Vec<serde_json::Value>,
}

async fn datasets(ctx: &Ctx, command: DatasetsCommand) -> Result<()> {
    match command {
        DatasetsCommand::List => {
            let all = manifests(ctx.store.as_ref(), layout::DATASETS).await?;
            emit(ctx.json, &serde_json::json!({ "versions": all }), |_| {
                if all.is_empty() {
                    return "no datasets yet: try `lambdaml demo` or `lambdaml ingest FILE --spec SPEC`\n".to_string();
                }
                let mut s = format!(
                    "{:<16} {:<17} {:>8} {:>8}  {:<20}  source\n",
                    "dataset", "version", "rows", "rejected", "created"
                );
                for m in &all {
                    s.push_str(&format!(
                        "{:<16} {:<17} {:>8} {:>8}  {:<20}  {}\n",
                        m.dataset, m.version, m.rows, m.rejected, m.created_at, m.source.key
                    ));
                }
                s
            });
        }
        DatasetsCommand::Show {
            dataset,
            version,
            rejected,
        } => {
            let manifest = match version {
                Some(v) => ctx
                    .store
                    .get_json::<DatasetManifest>(&layout::dataset_file(
                        &dataset,
                        &v,
                        "manifest.json",
                    )?)
                    .await
                    .with_context(|| format!("dataset {dataset:?} version {v:?}"))?,
                None => latest_version(ctx.store.as_ref(), &dataset).await?,
            };
            let key = |name: &str| layout::dataset_file(&manifest.dataset, &manifest.version, name);
            let schema: Schema = ctx.store.get_json(&key("schema.json")?).await?;
            let profile: Profile = ctx.store.get_json(&key("profile.json")?).await?;
            let rejected_text = ctx.store.get(&key("rejected.jsonl")?).await?.bytes;
            let rejected_rows: Vec<serde_json::Value> = String::from_utf8_lossy(&rejected_text)
                .lines()
                .take(rejected)
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            let view = DatasetView {
                manifest,
                schema,
                profile,
                rejected_rows,
            };
            emit(ctx.json, &view, render_dataset);
        }
    }
    Ok(())
}

fn render_dataset(v: &DatasetView) -> String {
    let m = &v.manifest;
    let mut s = format!(
        "dataset {} version {}\n  source {} ({} bytes, {:?})\n  {} rows, {} rejected, label {:?}, created {}\n\n",
        m.dataset,
        m.version,
        m.source.key,
        m.source.bytes,
        m.source.format,
        m.rows,
        m.rejected,
        m.label,
        m.created_at
    );
    s.push_str(&format!(
        "  {:<26} {:<12} {:>8} {:>7}  summary\n",
        "column", "type", "count", "missing"
    ));
    for c in &v.schema.columns {
        let Some(p) = v.profile.columns.get(&c.name) else {
            continue;
        };
        let summary = match (p.mean, p.std, p.min, p.max) {
            (Some(mean), std, Some(min), Some(max)) => format!(
                "mean {mean:.4} std {:.4} min {min} max {max}",
                std.unwrap_or(f64::NAN)
            ),
            _ => p
                .frequencies
                .iter()
                .take(6)
                .map(|(k, n)| format!("{k}: {n}"))
                .collect::<Vec<_>>()
                .join(", "),
        };
        s.push_str(&format!(
            "  {:<26} {:<12} {:>8} {:>7}  {}\n",
            c.name,
            format!("{:?}{}", c.kind, if c.nullable { "?" } else { "" }).to_lowercase(),
            p.count,
            p.missing,
            summary
        ));
    }
    if !v.rejected_rows.is_empty() {
        s.push_str("\n  rejected rows (line: reasons):\n");
        for r in &v.rejected_rows {
            let reasons: Vec<String> = r["reasons"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| match x["column"].as_str() {
                            Some(c) => format!("{c}: {}", x["reason"].as_str().unwrap_or_default()),
                            None => x["reason"].as_str().unwrap_or_default().to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            s.push_str(&format!("    {}: {}\n", r["line"], reasons.join("; ")));
        }
    }
    s
}

/// `lambdaml queues`.
#[derive(Debug, Args)]
pub struct QueuesArgs {
    /// Also list up to this many dead letters per queue.
    #[arg(long, default_value_t = 10)]
    pub dead: usize,
}

async fn queues(ctx: &Ctx, args: QueuesArgs) -> Result<()> {
    let stats = ctx.queue_stats().await?;
    let mut dead = serde_json::Map::new();
    for stage in Stage::ALL {
        let letters = ctx.queues.get(stage).await?.dead_letters(args.dead).await?;
        if !letters.is_empty() {
            dead.insert(stage.to_string(), serde_json::to_value(letters)?);
        }
    }
    let report = serde_json::json!({"queues": stats_map(&stats), "dead_letters": dead});
    emit(ctx.json, &report, |_| {
        let mut s = render_stats(&stats);
        for (stage, letters) in &dead {
            for l in letters.as_array().into_iter().flatten() {
                s.push_str(&format!(
                    "dead letter on {stage}: {} (received {} times)\n",
                    l["reason"].as_str().unwrap_or_default(),
                    l["receive_count"]
                ));
            }
        }
        s
    });
    Ok(())
}
