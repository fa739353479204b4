//! The planner of a partitioned ingest: one streamed pass over the raw object — its sha256
//! (the version id, as a one-pass ingest hashes it), its record boundaries (partitions of at
//! most the partition size) and its first rows kept on disk for the schema guess — so a
//! file larger than the function's disk can be planned. The plan is written before any
//! partition message is sent (see `parts`).

use std::io::Write;
use std::path::Path;

use futures::StreamExt;
use lambdaml::batch::CsvSplitter;
use lambdaml::dataset::parts::{GUESS_ROWS, plan_guess};
use lambdaml::dataset::{DatasetManifest, Format, IngestConfig};
use lambdaml::layout;
use lambdaml::stage::StageError;
use lambdaml::store::{ObjectKey, ObjectStoreExt, StoreError, to_json_bytes};
use sha2::{Digest, Sha256};
use tracing::info;

use crate::parts::{IngestPlan, MAX_PARTITIONS, PlannedPart, send_partition};
use crate::{Ingest, IngestOutcome, missing_raw};

/// What the planner did with a large file.
pub(crate) enum Streamed {
    /// Partitions planned and sent.
    Planned(IngestOutcome),
    /// The file's version exists already.
    Exists {
        version: String,
        manifest: DatasetManifest,
    },
}

/// One streamed pass over a raw CSV object.
struct Scan {
    size: u64,
    sha256: String,
    header_end: u64,
    header_lines: u64,
    parts: Vec<PlannedPart>,
}

impl Ingest {
    /// Plans `key` in partitions when partitioning is on and it is a plain CSV file over the
    /// partition size that splits in two or more; `None` to ingest it in one pass (which
    /// also reports what the planner will not: no header, no label, a record that never
    /// ends).
    pub(crate) async fn plan_streaming(
        &self,
        key: &ObjectKey,
        dataset: &str,
        config: &IngestConfig,
        model_only: Option<&str>,
    ) -> Result<Option<Streamed>, StageError> {
        let Some(own) = self.own.clone() else {
            return Ok(None);
        };
        if !key.file_name().to_ascii_lowercase().ends_with(".csv") {
            return Ok(None);
        }
        let meta = self
            .store
            .head(key)
            .await?
            .ok_or_else(|| missing_raw(key, StoreError::NotFound(key.to_string())))?;
        if meta.size <= self.partition_bytes {
            return Ok(None);
        }
        let dir = tempfile::tempdir().map_err(StageError::from)?;
        let head = dir.path().join("head.csv");
        let Some(scan) = self.scan(key, &head).await? else {
            return Ok(None);
        };
        let config_json = serde_json::to_string(config).map_err(StageError::invalid)?;
        let version = lambdaml::sha256_hex(format!("{}\n{config_json}", scan.sha256).as_bytes())
            [..16]
            .to_string();
        let manifest_key = layout::dataset_file(dataset, &version, "manifest.json")?;
        match self.store.get_json::<DatasetManifest>(&manifest_key).await {
            Ok(manifest) => return Ok(Some(Streamed::Exists { version, manifest })),
            Err(lambdaml::store::JsonError::Store(StoreError::NotFound(_))) => {}
            Err(e) => return Err(e.into()),
        }
        let (path, cfg) = (head.clone(), config.clone());
        let guess = lambdaml::stage::run_blocking("guessing the schema", move || {
            plan_guess(&path, Format::Csv, &cfg)
        })
        .await?;
        let Ok(columns) = guess else {
            return Ok(None);
        };
        // A partition far over the size holds a record that never ends (an unclosed quote):
        // one pass refuses such a file with its line, reading it with bounded memory.
        let longest = scan
            .parts
            .iter()
            .map(|p| p.end - p.start)
            .max()
            .unwrap_or(0);
        let record_limit = lambdaml::dataset::MAX_RECORD_BYTES;
        if scan.parts.len() < 2 || longest > self.partition_bytes.saturating_add(record_limit) {
            return Ok(None);
        }
        if scan.parts.len() > MAX_PARTITIONS {
            return Err(StageError::permanent(format!(
                "{key} would make {} partitions, more than {MAX_PARTITIONS}: raise \
                 LAMBDAML_INGEST_PARTITION_MIB",
                scan.parts.len()
            )));
        }
        let plan = IngestPlan {
            dataset: dataset.to_string(),
            version: version.clone(),
            source: key.to_string(),
            etag: meta.etag,
            bytes: scan.size,
            sha256: scan.sha256,
            config: config.clone(),
            columns,
            header_end: scan.header_end,
            header_lines: scan.header_lines,
            parts: scan.parts,
            model_only: model_only.map(str::to_string),
            created_at: lambdaml::now_rfc3339(),
        };
        let plan_key = layout::ingest_plan(dataset, &version)?;
        let plan = match self
            .store
            .put_if_absent(&plan_key, to_json_bytes(&plan))
            .await
        {
            Ok(_) => plan,
            // Planned before (a redelivery): its messages are sent again; partitions that
            // reported already do nothing twice.
            Err(StoreError::AlreadyExists(_)) => self.store.get_json(&plan_key).await?,
            Err(e) => return Err(e.into()),
        };
        for index in 0..plan.parts.len() {
            send_partition(own.as_ref(), &plan, 1, index).await?;
        }
        info!(dataset = %plan.dataset, version = %plan.version, partitions = plan.parts.len(), "ingest planned in partitions");
        let outcome = self.partitioned_outcome(&plan, 1, None, "planned")?;
        Ok(Some(Streamed::Planned(outcome)))
    }

    /// Streams `key` once: its sha256, size and partitions, and its first [`GUESS_ROWS`]
    /// records written to `head`. `None` when it is not plain CSV (gzip or Parquet bytes) or
    /// cannot be split (no header line).
    async fn scan(&self, key: &ObjectKey, head: &Path) -> Result<Option<Scan>, StageError> {
        let mut stream = self
            .store
            .get_stream(key)
            .await
            .map_err(|e| missing_raw(key, e))?;
        let io = |e: std::io::Error| StageError::context("keeping the first rows for the guess", e);
        let mut file = Some(std::io::BufWriter::new(
            std::fs::File::create(head).map_err(io)?,
        ));
        let mut splitter = CsvSplitter::new(u64::MAX, self.partition_bytes);
        let mut head_splitter = CsvSplitter::new(GUESS_ROWS, u64::MAX);
        let (mut hasher, mut size, mut parts) = (Sha256::new(), 0u64, Vec::new());
        let (mut header_end, mut head_end) = (None, None);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if size == 0 && (chunk.starts_with(&[0x1f, 0x8b]) || chunk.starts_with(b"PAR1")) {
                return Ok(None);
            }
            hasher.update(&chunk);
            size += chunk.len() as u64;
            let Ok(done) = splitter.feed(&chunk) else {
                return Ok(None);
            };
            parts.extend(done);
            header_end = header_end.or(splitter.header_end());
            if let Some(f) = &mut file {
                f.write_all(&chunk).map_err(io)?;
                let Ok(first) = head_splitter.feed(&chunk) else {
                    return Ok(None);
                };
                if let Some(part) = first.first() {
                    head_end = Some(part.end);
                    f.flush().map_err(io)?;
                    file = None;
                }
            }
        }
        if let Some(mut f) = file {
            f.flush().map_err(io)?;
        }
        let Ok((_, last)) = splitter.finish() else {
            return Ok(None);
        };
        parts.extend(last);
        let Some(header_end) = header_end else {
            return Ok(None);
        };
        let head_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(head)
            .map_err(io)?;
        if let Some(end) = head_end {
            head_file.set_len(end).map_err(io)?;
        }
        let mut prefix = vec![0u8; header_end as usize];
        std::io::Read::read_exact(&mut &head_file, &mut prefix).map_err(io)?;
        let header_lines = prefix.iter().filter(|&&b| b == b'\n').count() as u64;
        Ok(Some(Scan {
            size,
            sha256: hex::encode(hasher.finalize()),
            header_end,
            header_lines,
            parts: parts
                .into_iter()
                .map(|p| PlannedPart {
                    start: p.start,
                    end: p.end,
                    first_line: p.first_line,
                    rows: p.rows,
                })
                .collect(),
        }))
    }
}
