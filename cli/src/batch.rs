//! `lambdaml batch`: score files too large for one request, partitioned over the batch queue
//! and scored by concurrent workers — the batch Lambda's handler, run here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lambdaml::batch::{
    InputFormat, JobManifest, JobOptions, JobStatus, PartManifest, Plan, new_job_name,
    valid_job_name,
};
use lambdaml::layout;
use lambdaml::message::{BatchJobRequest, Message, Stage, StageMessage, batch_run_id};
use lambdaml::stage::{DrainOptions, Handled, StageHandler, drain};
use lambdaml::store::{ObjectKey, ObjectStore, ObjectStoreExt, StoreError};
use lambdaml_batch::Batch;
use serde::Serialize;

use crate::ctx::Ctx;
use crate::output::emit;

/// `lambdaml batch …`.
#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Score a file or a folder of files with a model version, in partitions: the inputs are
    /// put under batch/<model>/<job>/input/, planned, and scored by --workers concurrent
    /// workers over the batch queue (or by the batch Lambda, with --no-wait).
    Score(ScoreArgs),
    /// A job's progress: partitions done, rows scored and rejected, how it ended.
    Status(StatusArgs),
    /// Send the messages of a job's unscored partitions again (after dead-lettered
    /// partitions were fixed, or a runner stopped), and score them.
    Resume(ResumeArgs),
}

/// `lambdaml batch score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// The model.
    #[arg(long)]
    pub model: String,
    /// A .csv, .csv.gz or .parquet file, a folder of them, or s3://BUCKET/KEY (a key or a
    /// prefix ending in /) in the store's bucket.
    #[arg(long)]
    pub input: String,
    /// The version to score with (default: production).
    #[arg(long)]
    pub version: Option<String>,
    /// Rows per partition (at most 1,000,000; a partition also ends at 10 MiB of input).
    #[arg(long, default_value_t = lambdaml::batch::DEFAULT_PARTITION_ROWS)]
    pub partition_rows: u64,
    /// The job's name (default: the time and a random suffix).
    #[arg(long)]
    pub job: Option<String>,
    /// Write the model's input columns beside the scores.
    #[arg(long)]
    pub include_inputs: bool,
    /// Partitions scored at once (default: the core count).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Send the job to the batch queue and return (the batch Lambda scores it).
    #[arg(long)]
    pub no_wait: bool,
}

/// `lambdaml batch status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job.
    pub job: String,
    /// The model (found by listing batch/ when not given).
    #[arg(long)]
    pub model: Option<String>,
}

/// `lambdaml batch resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The job.
    pub job: String,
    /// The model (found by listing batch/ when not given).
    #[arg(long)]
    pub model: Option<String>,
    /// Partitions scored at once (default: the core count).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Send the messages and return.
    #[arg(long)]
    pub no_wait: bool,
}

pub async fn batch(ctx: &mut Ctx, command: BatchCommand) -> Result<()> {
    match command {
        BatchCommand::Score(args) => score(ctx, args).await,
        BatchCommand::Status(args) => {
            let model = find_model(ctx, &args.job, args.model.as_deref()).await?;
            let status = job_status(ctx.store.as_ref(), &model, &args.job).await?;
            emit(ctx.json, &status, render_status);
            Ok(())
        }
        BatchCommand::Resume(args) => {
            if let Some(w) = args.workers {
                ctx.workers = w.max(1);
            }
            let model = find_model(ctx, &args.job, args.model.as_deref()).await?;
            let request = BatchJobRequest {
                model: model.clone(),
                job: args.job.clone(),
                version: None,
                partition_rows: None,
                include_inputs: false,
            };
            run_job(ctx, request, args.no_wait).await
        }
    }
}

async fn score(ctx: &mut Ctx, args: ScoreArgs) -> Result<()> {
    if let Some(w) = args.workers {
        ctx.workers = w.max(1);
    }
    let job = args.job.clone().unwrap_or_else(new_job_name);
    for (what, name) in [("model", args.model.as_str()), ("job", job.as_str())] {
        if !valid_job_name(name) {
            bail!("invalid {what} name {name:?}: use ASCII letters, digits, `.`, `_` and `-`");
        }
    }
    if !(1..=lambdaml_batch::MAX_PARTITION_ROWS).contains(&args.partition_rows) {
        bail!(
            "--partition-rows {}: it must be between 1 and {}",
            args.partition_rows,
            lambdaml_batch::MAX_PARTITION_ROWS
        );
    }
    // A model (and version) that cannot score is named before anything is uploaded.
    let registry = lambdaml::registry::RegistryStore::new(ctx.store.clone());
    match registry.load(&args.model).await? {
        None => {
            let models = registry.models().await?;
            bail!(
                "no model {:?} in {} (the models: {})",
                args.model,
                ctx.store.url(),
                if models.is_empty() {
                    "none yet; train one with `lambdaml train`".to_string()
                } else {
                    models.join(", ")
                }
            );
        }
        Some((r, _)) => match &args.version {
            Some(v) if !r.versions.contains_key(v) => bail!(
                "model {} has no version {v:?} (its versions: {})",
                args.model,
                r.versions.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            None if r.production.is_none() => bail!(
                "model {} has no production version: name one with --version",
                args.model
            ),
            _ => {}
        },
    }
    if ctx
        .store
        .exists(&layout::batch_plan(&args.model, &job)?)
        .await?
    {
        bail!(
            "batch job {job} of model {} exists: choose another --job, or `lambdaml batch resume {job}`",
            args.model
        );
    }
    let inputs = collect_inputs(ctx, &args.input).await?;
    // The options first, naming every input: a notification of one input (S3 sends one per
    // object) does not plan the job before the rest are there.
    let options = JobOptions {
        version: args.version.clone(),
        partition_rows: Some(args.partition_rows),
        include_inputs: args.include_inputs,
        inputs: inputs.iter().map(|(name, _)| name.clone()).collect(),
    };
    let options_key = layout::batch_options(&args.model, &job)?;
    match ctx
        .store
        .put_if_absent(&options_key, lambdaml::store::to_json_bytes(&options))
        .await
    {
        Ok(_) => {}
        Err(StoreError::AlreadyExists(_)) => bail!(
            "batch job {job} of model {} exists ({options_key}): choose another --job",
            args.model
        ),
        Err(e) => return Err(e.into()),
    }
    for (name, source) in &inputs {
        let key = layout::batch_input_file(&args.model, &job, name)?;
        match source {
            Source::File(path) => {
                // The file store links a local input instead of copying it (gigabytes);
                // the job refuses it if it is then changed in place.
                ctx.store
                    .adopt_file(&key, path)
                    .await
                    .with_context(|| format!("uploading {}", path.display()))?;
            }
            Source::Object(from) => copy_object(ctx.store.as_ref(), from, &key).await?,
        }
    }
    if !ctx.json {
        eprintln!(
            "batch job {job}: {} input file(s) under {}",
            inputs.len(),
            layout::batch_input(&args.model, &job)
        );
    }
    let request = BatchJobRequest {
        model: args.model.clone(),
        job,
        version: args.version.clone(),
        partition_rows: Some(args.partition_rows),
        include_inputs: args.include_inputs,
    };
    run_job(ctx, request, args.no_wait).await
}

/// Sends the job message; unless `no_wait`, scores every partition here and reports.
async fn run_job(ctx: &Ctx, request: BatchJobRequest, no_wait: bool) -> Result<()> {
    let (model, job) = (request.model.clone(), request.job.clone());
    let message = Message::new(
        batch_run_id(&job),
        Some(model.clone()),
        StageMessage::BatchJob(request),
    );
    let queue = ctx.queues.get(Stage::Batch).await?;
    queue.send(&message.to_body()).await?;
    if no_wait {
        emit(
            ctx.json,
            &serde_json::json!({"model": model, "job": job, "queue": queue.name()}),
            |_| {
                format!(
                    "sent batch job {job} to {}; follow it with `lambdaml batch status {job}`\n",
                    queue.name()
                )
            },
        );
        return Ok(());
    }
    let started = Instant::now();
    let handler: Arc<dyn StageHandler> = Arc::new(ctx.wire::<Batch>().await?);
    let bar = if ctx.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len} partitions [{elapsed}, {eta} left]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message("planning");
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let options = DrainOptions {
        workers: ctx.workers,
        ..DrainOptions::default()
    };
    let rows = std::sync::atomic::AtomicU64::new(0);
    let failures = std::sync::Mutex::new(Vec::<String>::new());
    let on_handled = |h: &Handled| {
        match h.detail["outcome"].as_str() {
            Some("planned") => {
                bar.set_length(h.detail["partitions"].as_u64().unwrap_or(0));
                bar.set_message(format!("scoring ({} workers)", ctx.workers));
            }
            Some("scored") | Some("already_scored") => {
                let n = rows.fetch_add(
                    h.detail["rows_out"].as_u64().unwrap_or(0),
                    std::sync::atomic::Ordering::Relaxed,
                ) + h.detail["rows_out"].as_u64().unwrap_or(0);
                bar.inc(1);
                bar.set_message(format!("{n} rows scored"));
            }
            _ => {}
        }
        if h.outcome != "ok" {
            failures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(format!(
                    "{}: {}",
                    h.outcome,
                    h.detail.as_str().unwrap_or_default()
                ));
        }
    };
    drain(&ctx.queues, &[handler], &options, &on_handled).await?;
    bar.finish_and_clear();
    let failures = failures.into_inner().unwrap_or_default();
    let status = match job_status(ctx.store.as_ref(), &model, &job).await {
        Ok(status) => status,
        // Refused before it was planned: the queue's reason is the answer.
        Err(e) => match failures.first() {
            Some(first) => bail!("batch job {job} was refused ({first})"),
            None => return Err(e),
        },
    };
    let elapsed = started.elapsed().as_secs_f64();
    emit(ctx.json, &status, |s| {
        let mut out = render_status(s);
        if s.status == Some(JobStatus::Succeeded) && elapsed > 0.0 {
            out.push_str(&format!(
                "  {:.0} rows/s here ({} workers, {})\n",
                s.rows_out as f64 / elapsed,
                ctx.workers,
                seconds(elapsed)
            ));
        }
        out
    });
    if let Some(first) = failures.first()
        && status.status.is_none()
    {
        bail!(
            "batch job {job} did not finish: {} message(s) failed; the first: {first}",
            failures.len()
        );
    }
    match status.status {
        Some(JobStatus::Succeeded) => Ok(()),
        Some(JobStatus::Failed) => Err(anyhow!(
            "batch job {job} failed: {}",
            status.reason.unwrap_or_default()
        )),
        None => Err(anyhow!(
            "batch job {job} has not finished ({} of {} partitions); `lambdaml batch resume {job}` sends the rest again",
            status.partitions_done,
            status.partitions
        )),
    }
}

/// Where an input comes from.
enum Source {
    File(PathBuf),
    Object(ObjectKey),
}

/// The inputs `input` names (a file, a folder, or objects in the store's bucket), by the
/// name each gets under the job's input folder.
async fn collect_inputs(ctx: &Ctx, input: &str) -> Result<Vec<(String, Source)>> {
    if let Some(rest) = input.strip_prefix("s3://") {
        let (_bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let store_url = ctx.store.url();
        if !store_url.starts_with("s3://") {
            bail!(
                "--input {input}: an s3:// input needs an s3:// store (--store); this store is {store_url}"
            );
        }
        let objects = if key.is_empty() || key.ends_with('/') {
            ctx.store.list_all(key).await?
        } else {
            ctx.store
                .head(&ObjectKey::new(key.to_string())?)
                .await?
                .into_iter()
                .collect()
        };
        let objects: Vec<(String, Source)> = objects
            .into_iter()
            .filter(|o| InputFormat::of(o.key.as_str()).is_some())
            .map(|o| (o.key.file_name().to_string(), Source::Object(o.key)))
            .collect();
        if objects.is_empty() {
            bail!("--input {input}: no .csv, .csv.gz or .parquet objects there");
        }
        return Ok(objects);
    }
    let mut out = Vec::new();
    for file in input_files(&PathBuf::from(input))? {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("{}: the file name is not UTF-8", file.display()))?
            .to_string();
        out.push((name, Source::File(file)));
    }
    Ok(out)
}

/// The input files `path` names: itself, or the readable files of a folder.
fn input_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).with_context(|| format!("--input {}", path.display()))?;
    if meta.is_file() {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if InputFormat::of(name).is_none() {
            bail!(
                "--input {}: batch scoring reads .csv, .csv.gz and .parquet files",
                path.display()
            );
        }
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| InputFormat::of(n).is_some())
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "--input {}: no .csv, .csv.gz or .parquet files in it",
            path.display()
        );
    }
    Ok(files)
}

/// Copies an object through a temporary file (memory stays bounded by a chunk).
async fn copy_object(store: &dyn ObjectStore, from: &ObjectKey, to: &ObjectKey) -> Result<()> {
    use futures::StreamExt;
    let tmp = tempfile::NamedTempFile::new()?;
    let (file, path) = tmp.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let mut stream = store.get_stream(from).await?;
    while let Some(chunk) = stream.next().await {
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk?).await?;
    }
    tokio::io::AsyncWriteExt::flush(&mut file).await?;
    store.put_file(to, &path).await?;
    Ok(())
}

/// The model a job belongs to: the one given, or the one whose batch folder has the job.
async fn find_model(ctx: &Ctx, job: &str, model: Option<&str>) -> Result<String> {
    if let Some(m) = model {
        return Ok(m.to_string());
    }
    let models: Vec<String> = ctx
        .store
        .list_all(layout::BATCH)
        .await?
        .into_iter()
        .filter(|o| layout::is_batch_plan_of(o.key.as_str(), job))
        .filter_map(|o| layout::batch_key(o.key.as_str()).map(|(m, _, _)| m.to_string()))
        .collect();
    match models.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no batch job {job} in {} (is the job name right? --model narrows it)",
            ctx.store.url()
        ),
        many => bail!(
            "batch job {job} exists for models {}: say which with --model",
            many.join(", ")
        ),
    }
}

/// A job's progress, as `lambdaml batch status` shows it.
#[derive(Debug, Serialize)]
pub struct JobProgress {
    pub model: String,
    pub job: String,
    pub version: String,
    pub planned_at: String,
    pub inputs: Vec<String>,
    pub partitions: usize,
    pub partitions_done: usize,
    pub rows_planned: u64,
    pub rows_in: u64,
    pub rows_out: u64,
    pub rejected: u64,
    /// How it ended (absent while it runs).
    pub status: Option<JobStatus>,
    pub reason: Option<String>,
    pub outputs: String,
    pub rejected_key: Option<String>,
    pub rejected_reasons: std::collections::BTreeMap<String, u64>,
    pub wall_seconds: Option<f64>,
}

async fn job_status(store: &dyn ObjectStore, model: &str, job: &str) -> Result<JobProgress> {
    let plan_key = layout::batch_plan(model, job)?;
    let plan: Plan = match store.get_json(&plan_key).await {
        Ok(p) => p,
        Err(lambdaml::store::JsonError::Store(StoreError::NotFound(_))) => {
            bail!(
                "batch job {job} of model {model} has no plan yet ({plan_key}): it was not started, or its planning failed (see `lambdaml queues`)"
            )
        }
        Err(e) => return Err(e.into()),
    };
    let manifest: Option<JobManifest> =
        match store.get_json(&layout::batch_manifest(model, job)?).await {
            Ok(m) => Some(m),
            Err(lambdaml::store::JsonError::Store(StoreError::NotFound(_))) => None,
            Err(e) => return Err(e.into()),
        };
    let mut progress = JobProgress {
        model: model.to_string(),
        job: job.to_string(),
        version: plan.version.clone(),
        planned_at: plan.planned_at.clone(),
        inputs: plan.inputs.iter().map(|i| i.name.clone()).collect(),
        partitions: plan.partitions.len(),
        partitions_done: 0,
        rows_planned: plan.rows(),
        rows_in: 0,
        rows_out: 0,
        rejected: 0,
        status: None,
        reason: None,
        outputs: layout::batch_outputs(model, job),
        rejected_key: None,
        rejected_reasons: Default::default(),
        wall_seconds: None,
    };
    match manifest {
        Some(m) => {
            progress.partitions_done = m.partitions_done;
            progress.rows_in = m.rows_in;
            progress.rows_out = m.rows_out;
            progress.rejected = m.rejected;
            progress.status = Some(m.status);
            progress.reason = m.reason;
            progress.rejected_key = m.rejected_key.map(|k| k.to_string());
            progress.rejected_reasons = m.rejected_reasons;
            progress.wall_seconds = Some(m.wall_seconds);
        }
        None => {
            for o in store.list_all(&layout::batch_outputs(model, job)).await? {
                if layout::is_batch_part_manifest(o.key.as_str()) {
                    let p: PartManifest = store.get_json(&o.key).await?;
                    progress.partitions_done += 1;
                    progress.rows_in += p.rows_in;
                    progress.rows_out += p.rows_out;
                    progress.rejected += p.rejected;
                }
            }
        }
    }
    Ok(progress)
}

fn render_status(p: &JobProgress) -> String {
    let width = 30;
    let filled = (p.partitions_done * width)
        .checked_div(p.partitions)
        .unwrap_or(width);
    let bar = format!(
        "[{}{}]",
        "#".repeat(filled),
        ".".repeat(width - filled.min(width))
    );
    let state = match (p.status, &p.reason) {
        (Some(JobStatus::Succeeded), _) => "succeeded".to_string(),
        (Some(JobStatus::Failed), Some(r)) => format!("FAILED: {r}"),
        (Some(JobStatus::Failed), None) => "FAILED".to_string(),
        (None, _) => "running".to_string(),
    };
    let mut s = format!(
        "batch job {} (model {} version {}): {state}\n  {bar} {}/{} partitions\n  rows: {} read, {} scored, {} rejected (of {} planned)\n  inputs: {}\n  outputs: {}\n",
        p.job,
        p.model,
        p.version,
        p.partitions_done,
        p.partitions,
        p.rows_in,
        p.rows_out,
        p.rejected,
        p.rows_planned,
        p.inputs.join(", "),
        p.outputs
    );
    if let Some(k) = &p.rejected_key {
        s.push_str(&format!("  rejected rows: {k}\n"));
    }
    for (reason, n) in p.rejected_reasons.iter().take(5) {
        s.push_str(&format!("    {n} × {reason}\n"));
    }
    if let Some(w) = p.wall_seconds {
        s.push_str(&format!("  wall time: {}\n", seconds(w)));
    }
    s
}

/// A duration for people: milliseconds under a second (a small job's 0.03 s is not "0.0 s").
fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.1} s")
    }
}
