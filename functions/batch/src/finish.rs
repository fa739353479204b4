//! Ending a job: the worker that finds every partition's manifest written sums them into
//! the job's manifest, merges the rejected rows, and writes it once (`put_if_absent`). Two
//! workers finishing together both see every manifest (each lists after writing its own,
//! and listings are strongly consistent); one of them writes.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use futures::StreamExt;
use lambdaml::batch::{
    JobManifest, JobStatus, MAX_MERGED_REJECTED_BYTES, PartManifest, Plan, RejectedRow,
};
use lambdaml::layout;
use lambdaml::stage::StageError;
use lambdaml::store::{ObjectStore, ObjectStoreExt, StoreError};

use crate::Batch;

/// The partitions whose manifest is written.
pub(crate) async fn finished_parts(
    batch: &Batch,
    plan: &Plan,
) -> Result<BTreeSet<usize>, StageError> {
    let prefix = layout::batch_outputs(&plan.model, &plan.job);
    Ok(batch
        .store
        .list_all(&prefix)
        .await?
        .into_iter()
        .filter_map(|m| layout::batch_part_of_manifest(m.key.as_str()))
        .filter(|i| *i < plan.partitions.len())
        .collect())
}

/// Whether one of the last partitions has no manifest yet: messages go out in about
/// partition order, so until a job's end one of its last partitions is usually unscored, and a few
/// existence checks answer what a listing of every output would (a listing stats hundreds
/// of files, or pages through them on S3, after every partition). `false` means: list.
async fn last_parts_pending(batch: &Batch, plan: &Plan) -> Result<bool, StageError> {
    const PROBES: usize = 4;
    for index in (0..plan.partitions.len()).rev().take(PROBES) {
        let key = layout::batch_part_manifest(&plan.model, &plan.job, index)
            .map_err(StageError::invalid)?;
        if !batch.store.exists(&key).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn part_manifests(
    batch: &Batch,
    plan: &Plan,
    parts: &BTreeSet<usize>,
) -> Result<Vec<PartManifest>, StageError> {
    let store = batch.store.clone();
    let reads: Vec<Result<PartManifest, StageError>> = futures::stream::iter(parts.iter().copied())
        .map(|i| {
            let store = store.clone();
            async move {
                let key = layout::batch_part_manifest(&plan.model, &plan.job, i)
                    .map_err(StageError::invalid)?;
                store
                    .get_json::<PartManifest>(&key)
                    .await
                    .map_err(|e| StageError::context(format!("reading {key}"), e))
            }
        })
        .buffered(16)
        .collect()
        .await;
    reads.into_iter().collect()
}

/// Writes the job's manifest when every partition is done; answers how the job ended, if
/// it has.
pub(crate) async fn maybe_finish(
    batch: &Batch,
    plan: &Plan,
) -> Result<Option<JobStatus>, StageError> {
    if let Some(m) = batch.job_manifest(&plan.model, &plan.job).await? {
        return Ok(Some(m.status));
    }
    if last_parts_pending(batch, plan).await? {
        return Ok(None);
    }
    let done = finished_parts(batch, plan).await?;
    if done.len() < plan.partitions.len() {
        return Ok(None);
    }
    let parts = part_manifests(batch, plan, &done).await?;
    let mut manifest = summary(plan, &parts, JobStatus::Succeeded, None);
    let (merged, reasons) = merge_rejected(batch.store.as_ref(), &parts).await?;
    manifest.rejected_reasons = reasons;
    if let Some(bytes) = merged {
        let key = layout::batch_rejected(&plan.model, &plan.job).map_err(StageError::invalid)?;
        batch.store.put(&key, bytes).await?;
        manifest.rejected_key = Some(key);
    }
    let key = layout::batch_manifest(&plan.model, &plan.job).map_err(StageError::invalid)?;
    match batch
        .store
        .put_if_absent(&key, lambdaml::store::to_json_bytes(&manifest))
        .await
    {
        Ok(_) => {
            tracing::info!(model = %plan.model, job = %plan.job, rows_out = manifest.rows_out, rejected = manifest.rejected, "batch job finished");
            Ok(Some(JobStatus::Succeeded))
        }
        Err(StoreError::AlreadyExists(_)) => Ok(batch
            .job_manifest(&plan.model, &plan.job)
            .await?
            .map(|m| m.status)),
        Err(e) => Err(StageError::context(format!("writing {key}"), e)),
    }
}

/// A failed job's manifest: what was done before it stopped.
pub(crate) async fn failed_manifest(
    batch: &Batch,
    plan: &Plan,
    reason: String,
) -> Result<JobManifest, StageError> {
    let done = finished_parts(batch, plan).await?;
    let parts = part_manifests(batch, plan, &done).await?;
    Ok(summary(plan, &parts, JobStatus::Failed, Some(reason)))
}

fn summary(
    plan: &Plan,
    parts: &[PartManifest],
    status: JobStatus,
    reason: Option<String>,
) -> JobManifest {
    let now = chrono::Utc::now();
    let planned = chrono::DateTime::parse_from_rfc3339(&plan.planned_at)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or(now);
    let seconds = |p: &PartManifest| p.read_seconds + p.score_seconds + p.write_seconds;
    JobManifest {
        model: plan.model.clone(),
        version: plan.version.clone(),
        job: plan.job.clone(),
        status,
        reason,
        partitions: plan.partitions.len(),
        partitions_done: parts.len(),
        rows_in: parts.iter().map(|p| p.rows_in).sum(),
        rows_out: parts.iter().map(|p| p.rows_out).sum(),
        rejected: parts.iter().map(|p| p.rejected).sum(),
        rejected_reasons: BTreeMap::new(),
        rejected_key: None,
        outputs: parts.iter().map(|p| p.output.clone()).collect(),
        planned_at: plan.planned_at.clone(),
        finished_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        wall_seconds: (now - planned).num_milliseconds().max(0) as f64 / 1000.0 + plan.plan_seconds,
        plan_seconds: plan.plan_seconds,
        worker_seconds: parts.iter().map(seconds).sum(),
        slowest_partition_seconds: parts.iter().map(seconds).fold(0.0, f64::max),
    }
}

/// The partitions' rejected rows merged in partition order (when they fit
/// [`MAX_MERGED_REJECTED_BYTES`]) and the most frequent reasons.
async fn merge_rejected(
    store: &dyn ObjectStore,
    parts: &[PartManifest],
) -> Result<(Option<Bytes>, BTreeMap<String, u64>), StageError> {
    let mut merged = Vec::new();
    let mut fits = true;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for part in parts {
        let Some(key) = &part.rejected_key else {
            continue;
        };
        let bytes = store.get(key).await?.bytes;
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Ok(row) = serde_json::from_slice::<RejectedRow>(line) {
                for r in &row.reasons {
                    let reason = match &r.column {
                        Some(c) => format!("{c}: {}", r.reason),
                        None => r.reason.clone(),
                    };
                    *counts.entry(reason).or_default() += 1;
                }
            }
        }
        if fits && merged.len() + bytes.len() <= MAX_MERGED_REJECTED_BYTES {
            merged.extend_from_slice(&bytes);
        } else {
            fits = false;
        }
    }
    let mut top: Vec<(String, u64)> = counts.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(20);
    let merged = (fits && !merged.is_empty()).then(|| Bytes::from(merged));
    Ok((merged, top.into_iter().collect()))
}
