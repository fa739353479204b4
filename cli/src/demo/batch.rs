//! The demo's last step: the whole weather file scored by the production version as a
//! batch job, its partitions on the batch queue handled by `ctx.workers` workers.

use std::time::Instant;

use anyhow::{Result, anyhow};
use bytes::Bytes;
use lambdaml::batch::JobManifest;
use lambdaml::layout;
use lambdaml::message::{BatchJobRequest, Message, Stage, StageMessage, batch_run_id};
use lambdaml::store::ObjectStoreExt;
use serde::Serialize;

use crate::ctx::Ctx;

/// Rows per partition in the demo: the 18,159 days in ten partitions.
const PARTITION_ROWS: u64 = 2_000;

/// What the batch step did.
#[derive(Debug, Serialize)]
pub(super) struct BatchDemo {
    pub job: String,
    pub workers: usize,
    pub seconds: f64,
    pub manifest: JobManifest,
}

pub(super) async fn batch_step(ctx: &Ctx, model: &str, csv: &'static [u8]) -> Result<BatchDemo> {
    let job = format!("demo-{}", lambdaml::batch::new_job_name());
    let input = layout::batch_input_file(model, &job, "weather_noaa.csv")?;
    ctx.store.put(&input, Bytes::from_static(csv)).await?;
    let message = Message::new(
        batch_run_id(&job),
        Some(model.to_string()),
        StageMessage::BatchJob(BatchJobRequest {
            model: model.to_string(),
            job: job.clone(),
            version: None,
            partition_rows: Some(PARTITION_ROWS),
            include_inputs: false,
        }),
    );
    let started = Instant::now();
    ctx.queues
        .get(Stage::Batch)
        .await?
        .send(&message.to_body())
        .await?;
    ctx.drain().await?;
    let seconds = started.elapsed().as_secs_f64();
    let manifest: JobManifest = ctx
        .store
        .get_json(&layout::batch_manifest(model, &job)?)
        .await
        .map_err(|e| anyhow!("the demo's batch job did not finish: {e}"))?;
    Ok(BatchDemo {
        job,
        workers: ctx.workers,
        seconds,
        manifest,
    })
}

/// The step's lines in the summary.
pub(super) fn render_batch(b: &BatchDemo, model: &str) -> String {
    let m = &b.manifest;
    format!(
        "\n8. batch      the whole file scored by production ({}) as a batch job: {} rows in {} partitions of\n             {PARTITION_ROWS} by {} workers in {:.2}s ({:.0} rows/s), {} rejected → {}\n             (lambdaml batch status {} · README \"Batch scoring\")\n",
        m.version,
        m.rows_in,
        m.partitions,
        b.workers,
        b.seconds,
        m.rows_out as f64 / b.seconds.max(1e-9),
        m.rejected,
        layout::batch_outputs(model, &b.job),
        b.job
    )
}
