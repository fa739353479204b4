//! Reading a partition's rows: a byte range of a CSV file (or a staged object), or row
//! groups of a Parquet file read from their byte ranges and the footer alone.

use std::sync::Arc;

use bytes::{Buf, Bytes};
use lambdaml::batch::{PartSource, Plan, PlannedInput, PlannedPart};
use lambdaml::stage::StageError;
use lambdaml::store::{ObjectMeta, StoreError};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::reader::{ChunkReader, Length};

use crate::Batch;

/// The longest Parquet footer read.
const MAX_FOOTER_BYTES: u64 = 64 << 20;

/// A partition's bytes, ready to parse.
#[derive(Debug)]
pub(crate) enum PartData {
    /// Whole CSV records (no header).
    Csv(Bytes),
    /// A Parquet file's footer and the partition's column chunks.
    Parquet(Sparse),
}

/// Why a partition's input cannot be read, when the job must stop for it.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The job cannot go on (the input changed or is gone): the reason.
    Job(String),
    /// Anything else, retried or dead-lettered as its kind says.
    Stage(StageError),
}

impl From<StageError> for ReadError {
    fn from(e: StageError) -> Self {
        ReadError::Stage(e)
    }
}

fn input_error(input: &PlannedInput, what: &str, e: StoreError) -> ReadError {
    match e {
        StoreError::PreconditionFailed { .. } => ReadError::Job(format!(
            "the input {} changed while the job ran (its etag is no longer {}); a job reads \
             its inputs as they were when it was planned: start a new job",
            input.key, input.etag
        )),
        StoreError::NotFound(_) => ReadError::Job(format!(
            "the input {} was deleted while the job ran ({what})",
            input.key
        )),
        e => ReadError::Stage(StageError::context(format!("reading {what}"), e)),
    }
}

/// Reads partition `part` of `plan`, refusing an input whose etag is not the planned one.
pub(crate) async fn read_part(
    batch: &Batch,
    plan: &Plan,
    part: &PlannedPart,
) -> Result<PartData, ReadError> {
    let input = plan.inputs.get(part.input).ok_or_else(|| {
        ReadError::Stage(StageError::permanent(format!(
            "partition {} names input {} that the plan does not have",
            part.index, part.input
        )))
    })?;
    let store = &batch.store;
    match &part.source {
        PartSource::CsvRange { start, end } => {
            let what = format!("{} bytes {start}..{end}", input.key);
            let bytes = store
                .get_range(&input.key, *start..*end, Some(&input.etag))
                .await
                .map_err(|e| input_error(input, &what, e))?;
            Ok(PartData::Csv(bytes))
        }
        PartSource::CsvObject { key } => {
            // The staged object was cut from the input as planned; the input itself must
            // still be that version.
            if let Some(now) = store.head(&input.key).await.map_err(StageError::from)?
                && now.etag != input.etag
            {
                return Err(input_error(
                    input,
                    "",
                    StoreError::PreconditionFailed {
                        key: input.key.to_string(),
                        expected: input.etag.clone(),
                    },
                ));
            }
            let object = store.get(key).await.map_err(|e| match e {
                StoreError::NotFound(_) => ReadError::Job(format!(
                    "the staged partition {key} of input {} is gone",
                    input.key
                )),
                e => ReadError::Stage(StageError::context(format!("reading {key}"), e)),
            })?;
            Ok(PartData::Csv(object.bytes))
        }
        PartSource::RowGroups { start, end, .. } => {
            let footer_start = input.footer_start.unwrap_or(0);
            let what = format!("{} footer", input.key);
            let footer = store
                .get_range(&input.key, footer_start..input.size, Some(&input.etag))
                .await
                .map_err(|e| input_error(input, &what, e))?;
            let what = format!("{} bytes {start}..{end}", input.key);
            let chunks = store
                .get_range(&input.key, *start..*end, Some(&input.etag))
                .await
                .map_err(|e| input_error(input, &what, e))?;
            Ok(PartData::Parquet(Sparse {
                len: input.size,
                pieces: vec![(*start, chunks), (footer_start, footer)],
            }))
        }
    }
}

/// A Parquet file of which only some byte ranges were read.
#[derive(Debug, Clone)]
pub(crate) struct Sparse {
    len: u64,
    pieces: Vec<(u64, Bytes)>,
}

impl Sparse {
    fn find(&self, start: u64, length: u64) -> parquet::errors::Result<Bytes> {
        for (at, bytes) in &self.pieces {
            let end = at + bytes.len() as u64;
            if start >= *at && start + length <= end {
                let from = (start - at) as usize;
                return Ok(bytes.slice(from..from + length as usize));
            }
        }
        Err(parquet::errors::ParquetError::General(format!(
            "bytes {start}..{} of the file were not read for this partition",
            start + length
        )))
    }
}

impl Length for Sparse {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for Sparse {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        for (at, bytes) in &self.pieces {
            let end = at + bytes.len() as u64;
            if start >= *at && start < end {
                return Ok(bytes.slice((start - at) as usize..).reader());
            }
        }
        Err(parquet::errors::ParquetError::General(format!(
            "byte {start} of the file was not read for this partition"
        )))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.find(start, length as u64)
    }
}

/// A Parquet file's footer: where it starts, and the metadata it holds.
pub(crate) async fn parquet_footer(
    batch: &Batch,
    meta: &ObjectMeta,
) -> Result<(u64, Arc<ParquetMetaData>), StageError> {
    let bad =
        |why: String| StageError::permanent(format!("{}: not a Parquet file: {why}", meta.key));
    if meta.size < 12 {
        return Err(bad(format!("{} bytes", meta.size)));
    }
    let tail = batch
        .store
        .get_range(&meta.key, meta.size - 8..meta.size, Some(&meta.etag))
        .await?;
    if tail.len() != 8 || &tail[4..] != b"PAR1" {
        return Err(bad("it does not end with PAR1".into()));
    }
    let len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if len + 8 > meta.size - 4 || len > MAX_FOOTER_BYTES {
        return Err(bad(format!("its footer says {len} bytes of metadata")));
    }
    let footer_start = meta.size - 8 - len;
    let footer = batch
        .store
        .get_range(&meta.key, footer_start..meta.size - 8, Some(&meta.etag))
        .await?;
    let metadata =
        ParquetMetaDataReader::decode_metadata(&footer).map_err(|e| bad(e.to_string()))?;
    Ok((footer_start, Arc::new(metadata)))
}

/// The top-level column names of a Parquet file.
pub(crate) fn parquet_columns(metadata: &ParquetMetaData) -> Vec<String> {
    metadata
        .file_metadata()
        .schema_descr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect()
}

/// The column names of a CSV header line, trimmed.
pub(crate) fn header_names(header: &str) -> Result<Vec<String>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(header.as_bytes());
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => Ok(record.iter().map(|s| s.trim().to_string()).collect()),
        Ok(false) => Err("the header line is empty".to_string()),
        Err(e) => Err(format!("malformed header line: {e}")),
    }
}
