//! Ingest in partitions: a CSV file over the partition size is split at record boundaries
//! into partitions (`plan`, one streamed pass), each checked by its own invocation (one
//! message on ingest's own queue), and the first partition to see every report merges them
//! into the version a one-pass ingest would write (see `lambdaml::dataset::parts` for what
//! is identical and what is sketched).
//!
//! Everything lives under `ingest-parts/<dataset>/<version>/` until the version's manifest
//! is written: the plan (written before any message is sent), then per round and partition
//! the valid rows (`.parquet`), rejected rows (`.jsonl`) and the report (`.json`, written
//! last, so its presence means the partition is done). A redelivered partition message
//! finds its report and only checks whether the round is complete; a partition of a version
//! already written or quarantined does nothing. The raw object is read by byte ranges under
//! its etag at planning: a file replaced while its partitions run is refused.

use std::path::PathBuf;

use bytes::Bytes;
use lambdaml::dataset::parts::{Finished, FinishedPart, PartReport, finish_parts, ingest_part};
use lambdaml::dataset::{ColumnSchema, DatasetManifest, Format, IngestConfig};
use lambdaml::layout;
use lambdaml::message::{IngestPartitionRequest, Message, StageMessage};
use lambdaml::stage::StageError;
use lambdaml::store::{ObjectKey, ObjectStoreExt, StoreError, to_json_bytes};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::{Ingest, IngestOutcome, Published};

/// Files over this many bytes are ingested in partitions of at most this size, unless
/// `LAMBDAML_INGEST_PARTITION_MIB` says otherwise.
pub const DEFAULT_PARTITION_BYTES: u64 = 256 << 20;
/// Partitions of one file at most.
pub const MAX_PARTITIONS: usize = 10_000;

/// One partition: bytes `start..end` of the raw file, whose first byte is on line
/// `first_line`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedPart {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// The physical line of its first byte (the header is line 1).
    pub first_line: u64,
    /// Records in it.
    pub rows: u64,
}

/// `ingest-parts/<dataset>/<version>/plan.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestPlan {
    /// The dataset.
    pub dataset: String,
    /// The version being written.
    pub version: String,
    /// The raw object.
    pub source: String,
    /// Its etag when planned: partitions read it only while it is unchanged.
    pub etag: String,
    /// Its size.
    pub bytes: u64,
    /// Its sha256 (the version's hash input).
    pub sha256: String,
    /// How it is read.
    pub config: IngestConfig,
    /// The schema round 1 checks against: the first rows' guess.
    pub columns: Vec<ColumnSchema>,
    /// Bytes `0..header_end` (the header line) go before each partition's records.
    pub header_end: u64,
    /// Line ends in those bytes.
    pub header_lines: u64,
    /// The partitions, in file order.
    pub parts: Vec<PlannedPart>,
    /// Only this model is asked to preprocess the version (a retrain of one model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_only: Option<String>,
    /// When planned.
    pub created_at: String,
}

/// Where a partitioned ingest stands, in its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partitioned {
    /// Partitions in the plan.
    pub partitions: usize,
    /// The round this step belonged to.
    pub round: u32,
    /// The partition this step checked (absent for the planner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<usize>,
    /// What this step did: `planned`, `checked`, `already_checked`, `recheck` (the whole
    /// file's schema differs from the guess: a second round was sent), `written` (the
    /// version), `stopped` (the version is already written or was refused).
    pub step: String,
}

impl Ingest {
    pub(crate) fn partitioned_outcome(
        &self,
        plan: &IngestPlan,
        round: u32,
        partition: Option<usize>,
        step: &str,
    ) -> Result<IngestOutcome, StageError> {
        Ok(IngestOutcome {
            dataset: plan.dataset.clone(),
            version: plan.version.clone(),
            created: false,
            rows: 0,
            rejected: 0,
            manifest: layout::dataset_file(&plan.dataset, &plan.version, "manifest.json")?
                .to_string(),
            models: Vec::new(),
            partitioned: Some(Partitioned {
                partitions: plan.parts.len(),
                round,
                partition,
                step: step.to_string(),
            }),
        })
    }

    /// Checks one partition, then finishes the round when it was the last.
    pub(crate) async fn partition(
        &self,
        request: &IngestPartitionRequest,
    ) -> Result<IngestOutcome, StageError> {
        let (dataset, version) = (&request.dataset, &request.dataset_version);
        let plan: IngestPlan = self
            .store
            .get_json(&layout::ingest_plan(dataset, version)?)
            .await
            .map_err(|e| match e {
                lambdaml::store::JsonError::Store(StoreError::NotFound(_)) => {
                    StageError::permanent(format!(
                        "no ingest plan for {dataset} version {version}: a partition message \
                         needs the plan its planner wrote"
                    ))
                }
                other => other.into(),
            })?;
        let index = request.partition;
        if index >= plan.parts.len() || request.round == 0 || request.round > 2 {
            return Err(StageError::permanent(format!(
                "partition {index} round {} is not in the plan of {dataset} version {version} \
                 ({} partitions, rounds 1-2)",
                request.round,
                plan.parts.len()
            )));
        }
        if self.version_settled(&plan).await? {
            return self.partitioned_outcome(&plan, request.round, Some(index), "stopped");
        }
        let columns = self.round_columns(&plan, request.round).await?;
        let report_key = layout::ingest_part_file(dataset, version, request.round, index, "json")?;
        let started = std::time::Instant::now();
        let step = if self.store.exists(&report_key).await? {
            "already_checked"
        } else {
            match self
                .check_partition(&plan, &columns, request.round, index)
                .await?
            {
                Ok(()) => {
                    let seconds = started.elapsed().as_secs_f64();
                    info!(%dataset, %version, partition = index, round = request.round, seconds, "partition checked");
                    "checked"
                }
                Err(err) => {
                    let dir = tempfile::tempdir().map_err(StageError::from)?;
                    let source =
                        ObjectKey::new(plan.source.clone()).map_err(StageError::invalid)?;
                    return Err(self
                        .quarantine(&source, dataset, version, &err, dir.path())
                        .await);
                }
            }
        };
        let done = self
            .store
            .list_all(&layout::ingest_round_parts(dataset, version, request.round))
            .await?
            .iter()
            .filter(|m| layout::is_ingest_part_report(m.key.as_str()))
            .count();
        if done < plan.parts.len() || !self.elected(&plan, request.round, index).await? {
            return self.partitioned_outcome(&plan, request.round, Some(index), step);
        }
        self.finish_round(&plan, &columns, request.round, index)
            .await
    }

    /// Whether partition `index` merges the round: the first to see every report claims it
    /// (two partitions ending together would both merge); its own redelivery, after a crash
    /// mid-merge, finds its claim and merges again.
    async fn elected(
        &self,
        plan: &IngestPlan,
        round: u32,
        index: usize,
    ) -> Result<bool, StageError> {
        let key = layout::ingest_round_merger(&plan.dataset, &plan.version, round)?;
        let claim = Bytes::from(index.to_string());
        match self.store.put_if_absent(&key, claim.clone()).await {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists(_)) => Ok(self.store.get(&key).await?.bytes == claim),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the version was written (or refused) already: then partitions stop.
    async fn version_settled(&self, plan: &IngestPlan) -> Result<bool, StageError> {
        let manifest = layout::dataset_file(&plan.dataset, &plan.version, "manifest.json")?;
        let refused = layout::quarantine_file(&plan.dataset, &plan.version, "error.json")?;
        Ok(self.store.exists(&manifest).await? || self.store.exists(&refused).await?)
    }

    async fn round_columns(
        &self,
        plan: &IngestPlan,
        round: u32,
    ) -> Result<Vec<ColumnSchema>, StageError> {
        if round == 1 {
            return Ok(plan.columns.clone());
        }
        Ok(self
            .store
            .get_json(&layout::ingest_round(&plan.dataset, &plan.version, round)?)
            .await?)
    }

    /// Reads the partition's bytes (under the plan's etag), checks its rows, and uploads
    /// its rows, rejected rows and report (last). The inner error refuses the whole file.
    async fn check_partition(
        &self,
        plan: &IngestPlan,
        columns: &[ColumnSchema],
        round: u32,
        index: usize,
    ) -> Result<Result<(), lambdaml::dataset::DatasetError>, StageError> {
        let part = &plan.parts[index];
        let source = ObjectKey::new(plan.source.clone()).map_err(StageError::invalid)?;
        let read = |range: std::ops::Range<u64>| {
            let (store, source, etag) = (self.store.clone(), source.clone(), plan.etag.clone());
            async move {
                store
                    .get_range(&source, range, Some(&etag))
                    .await
                    .map_err(|e| match e {
                        StoreError::PreconditionFailed { .. } | StoreError::NotFound(_) => {
                            StageError::permanent(format!(
                                "{source} changed or disappeared while it was ingested in \
                                 partitions (its etag is no longer {etag}); upload it again"
                            ))
                        }
                        other => other.into(),
                    })
            }
        };
        let header = read(0..plan.header_end).await?;
        let body = read(part.start..part.end).await?;
        let dir = tempfile::tempdir().map_err(StageError::from)?;
        let input = dir.path().join("part.csv");
        write_part(&input, &header, &body).map_err(StageError::from)?;
        drop(body);
        // Lines before the partition in the file, less the header's in the partition file.
        let line_offset = (part.first_line - 1).saturating_sub(plan.header_lines);
        let (config, cols, out) = (
            plan.config.clone(),
            columns.to_vec(),
            dir.path().to_path_buf(),
        );
        let seed = 0x5EED_0000 + index as u64 * 1_000;
        let output = lambdaml::stage::run_blocking("checking a partition", move || {
            ingest_part(&input, &config, &cols, line_offset, seed, &out)
        })
        .await?;
        let output = match output {
            Ok(o) => o,
            Err(e) => return Ok(Err(e)),
        };
        let file =
            |ext: &str| layout::ingest_part_file(&plan.dataset, &plan.version, round, index, ext);
        self.store
            .put_file(&file("parquet")?, &output.data_path)
            .await?;
        self.store
            .put_file(&file("jsonl")?, &output.rejected_path)
            .await?;
        self.store
            .put(&file("json")?, to_json_bytes(&output.report))
            .await?;
        Ok(Ok(()))
    }

    /// The round's last partition: merges the reports; sends a second round when the
    /// whole file's schema differs from the round's, else writes the version and asks
    /// preprocess for it.
    async fn finish_round(
        &self,
        plan: &IngestPlan,
        columns: &[ColumnSchema],
        round: u32,
        index: usize,
    ) -> Result<IngestOutcome, StageError> {
        let (dataset, version) = (plan.dataset.as_str(), plan.version.as_str());
        let started = std::time::Instant::now();
        let dir = tempfile::tempdir().map_err(StageError::from)?;
        let mut parts = Vec::with_capacity(plan.parts.len());
        // The store's own files, kept until the merge is done.
        let mut snapshots = Vec::new();
        for i in 0..plan.parts.len() {
            let file = |ext: &str| layout::ingest_part_file(dataset, version, round, i, ext);
            let report: PartReport = self.store.get_json(&file("json")?).await?;
            let (data_path, data) = self
                .fetch(
                    &file("parquet")?,
                    dir.path().join(format!("part-{i:05}.parquet")),
                )
                .await?;
            let (rejected_path, rejected) = self
                .fetch(
                    &file("jsonl")?,
                    dir.path().join(format!("part-{i:05}.jsonl")),
                )
                .await?;
            snapshots.extend([data, rejected].into_iter().flatten());
            parts.push(FinishedPart {
                report,
                data_path,
                rejected_path,
            });
        }
        let (config, cols, out) = (
            plan.config.clone(),
            columns.to_vec(),
            dir.path().to_path_buf(),
        );
        let finished = lambdaml::stage::run_blocking("merging partitions", move || {
            finish_parts(&config, &cols, &parts, &out)
        })
        .await?;
        let source = ObjectKey::new(plan.source.clone()).map_err(StageError::invalid)?;
        let output = match finished {
            Ok(Finished::Done(output)) => output,
            Ok(Finished::Recheck(decided)) if round == 1 => {
                return self.second_round(plan, decided, index).await;
            }
            Ok(Finished::Recheck(_)) => {
                return Err(StageError::permanent(format!(
                    "{dataset} version {version}: the second round's schema differs from the \
                     first's merged counts (a bug: both count the same fields)"
                )));
            }
            Err(err) => {
                return Err(self
                    .quarantine(&source, dataset, version, &err, dir.path())
                    .await);
            }
        };
        let published = Published {
            source: &source,
            dataset,
            version,
            size: plan.bytes,
            sha: &plan.sha256,
            format: Format::Csv,
        };
        let manifest: DatasetManifest = self.publish(&published, &output).await?;
        let specs = self.specs_for(dataset).await?;
        let models = self
            .request_preprocess(&specs, dataset, version, plan.model_only.as_deref())
            .await?;
        let seconds = started.elapsed().as_secs_f64();
        info!(%dataset, %version, rows = manifest.rows, rejected = manifest.rejected, partitions = plan.parts.len(), seconds, "ingested in partitions (seconds: the merge)");
        let mut outcome = self.partitioned_outcome(plan, round, Some(index), "written")?;
        outcome.created = true;
        outcome.rows = manifest.rows;
        outcome.rejected = manifest.rejected;
        outcome.models = models;
        Ok(outcome)
    }

    /// Writes round 2's schema (first writer wins) and sends every partition again.
    async fn second_round(
        &self,
        plan: &IngestPlan,
        decided: Vec<ColumnSchema>,
        index: usize,
    ) -> Result<IngestOutcome, StageError> {
        let own = self.own.clone().ok_or_else(|| {
            StageError::permanent("a partitioned ingest needs ingest's own queue")
        })?;
        let key = layout::ingest_round(&plan.dataset, &plan.version, 2)?;
        match self
            .store
            .put_if_absent(&key, to_json_bytes(&decided))
            .await
        {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        for i in 0..plan.parts.len() {
            send_partition(own.as_ref(), plan, 2, i).await?;
        }
        info!(dataset = %plan.dataset, version = %plan.version, "the whole file's schema differs from the first rows' guess: partitions checked again");
        self.partitioned_outcome(plan, 1, Some(index), "recheck")
    }

    /// A partition's file as a local path: the store's own file when it keeps one (no
    /// copy), else streamed into `path`. The second value keeps a snapshot alive.
    async fn fetch(
        &self,
        key: &ObjectKey,
        path: PathBuf,
    ) -> Result<(PathBuf, Option<tempfile::TempPath>), StageError> {
        if let Some(snapshot) = self.store.local_snapshot(key).await? {
            return Ok((snapshot.to_path_buf(), Some(snapshot)));
        }
        let stream = self.store.get_stream(key).await?;
        crate::write_stream(stream, &path, None).await?;
        Ok((path, None))
    }
}

pub(crate) async fn send_partition(
    queue: &dyn lambdaml::queue::Queue,
    plan: &IngestPlan,
    round: u32,
    partition: usize,
) -> Result<(), StageError> {
    let run = lambdaml::recorder::run_or(|| {
        lambdaml::record::new_run_id(lambdaml::record::TriggerKind::Direct)
    });
    let message = Message::new(
        run,
        plan.model_only.clone(),
        StageMessage::IngestPartition(IngestPartitionRequest {
            dataset: plan.dataset.clone(),
            dataset_version: plan.version.clone(),
            round,
            partition,
        }),
    );
    queue
        .send(&message.to_body())
        .await
        .map_err(|e| StageError::context("sending an ingest partition message", e))?;
    Ok(())
}

fn write_part(path: &PathBuf, header: &Bytes, body: &Bytes) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(header)?;
    f.write_all(body)?;
    f.flush()
}
