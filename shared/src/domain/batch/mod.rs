//! Batch scoring jobs: the plan that splits a job's inputs into partitions, what each
//! partition's worker reports, and the job's manifest.
//!
//! A job is everything under `batch/<model>/<job>/input/` (see [`crate::layout`]). The
//! planner writes `plan.json` first — one entry per partition: a row-aligned byte range of
//! a CSV file (found by one quote-aware pass over it, [`CsvSplitter`]), a chunk of a gzip
//! CSV staged as plain CSV (gzip cannot be read from the middle), or consecutive row groups
//! of a Parquet file — then sends one queue message per partition. Each worker writes its
//! output, its rejected rows and, last, its partition manifest; the worker that finds every
//! partition manifest written writes the job's manifest (`put_if_absent`: exactly one
//! does). Partition outputs are immutable and deterministic, so a redelivered partition
//! writes nothing twice.

mod split;

use serde::{Deserialize, Serialize};

use crate::store::ObjectKey;

pub use split::{CsvPart, CsvSplitter, LineCounter, SplitError};

/// Rows per partition unless the job says otherwise: with [`MAX_PARTITION_BYTES`], what
/// keeps a worker within 256 MB (172–249 MB measured on 30-feature rows, against 227–342 MB
/// with 100,000 rows and 16 MiB; BENCHMARKS.md "Batch scoring").
pub const DEFAULT_PARTITION_ROWS: u64 = 50_000;

/// The most bytes of input one partition reads, whatever its row count: this, not the
/// file's size, bounds a worker's memory.
pub const MAX_PARTITION_BYTES: u64 = 10 << 20;

/// The most partitions a job may have (`part-NNNNN`).
pub const MAX_PARTITIONS: usize = 99_999;

/// The longest CSV header line read.
pub const MAX_HEADER_BYTES: usize = 1 << 20;

/// How much of a rejected record's text is kept with it.
pub const MAX_REJECTED_TEXT: usize = 1024;

/// A job's options, put at `batch/<model>/<job>/job.json` before its inputs: what a job
/// started by an input's S3 notification is planned with, and the inputs it waits for (so
/// a job of several files is planned once they are all there, not at the first).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobOptions {
    /// The version to score with (default: production when planned).
    #[serde(
        default,
        rename = "model_version",
        skip_serializing_if = "Option::is_none"
    )]
    pub version: Option<String>,
    /// Rows per partition (default [`DEFAULT_PARTITION_ROWS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_rows: Option<u64>,
    /// Whether outputs carry the input columns.
    #[serde(default)]
    pub include_inputs: bool,
    /// The names (under `input/`) the job waits for before it is planned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
}

/// The format of one input file, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    /// `.csv`: a header line, then records.
    Csv,
    /// `.csv.gz` / `.gz`: gzip-compressed CSV.
    CsvGzip,
    /// `.parquet`.
    Parquet,
}

impl InputFormat {
    /// The format a file name says, or `None` for a name batch scoring does not read.
    pub fn of(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".parquet") {
            Some(InputFormat::Parquet)
        } else if lower.ends_with(".csv.gz") || lower.ends_with(".gz") {
            Some(InputFormat::CsvGzip)
        } else if lower.ends_with(".csv") {
            Some(InputFormat::Csv)
        } else {
            None
        }
    }
}

/// One input file of a job, as it was when the job was planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedInput {
    /// The object.
    pub key: ObjectKey,
    /// Its name under the job's input folder (the `file` column of the outputs).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its etag at planning: a worker that finds another refuses the job.
    pub etag: String,
    /// Its format.
    pub format: InputFormat,
    /// The header line of a CSV file (without its line end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Where a Parquet file's footer (metadata and its length) starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub footer_start: Option<u64>,
}

/// Where a partition's rows are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PartSource {
    /// Bytes `start..end` of a CSV input: whole records.
    CsvRange {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// A staged object holding whole records of a gzip CSV input (no header).
    CsvObject {
        /// The staged object.
        key: ObjectKey,
    },
    /// Row groups of a Parquet input.
    RowGroups {
        /// The row groups, in order.
        groups: Vec<usize>,
        /// The first byte of their column chunks.
        start: u64,
        /// One past the last byte of their column chunks.
        end: u64,
    },
}

/// One partition of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedPart {
    /// Its number (`part-NNNNN`).
    pub index: usize,
    /// The input it reads ([`Plan::inputs`]).
    pub input: usize,
    /// Where its rows are.
    pub source: PartSource,
    /// The physical line its first record starts on (1 is the header), for CSV inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_line: Option<u64>,
    /// The 0-based data row of its first record within its input.
    pub first_row: u64,
    /// The records it holds, as the planner counted them.
    pub rows: u64,
    /// Its bytes of input.
    pub bytes: u64,
}

/// A job's plan, written before any partition message is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The model.
    pub model: String,
    /// The version every partition scores with (production when the job was planned,
    /// unless the job named one).
    pub version: String,
    /// The job.
    pub job: String,
    /// When it was planned (RFC 3339).
    pub planned_at: String,
    /// Seconds the planning took.
    pub plan_seconds: f64,
    /// Rows per partition asked for.
    pub partition_rows: u64,
    /// Whether outputs carry the input columns.
    pub include_inputs: bool,
    /// The inputs.
    pub inputs: Vec<PlannedInput>,
    /// The partitions.
    pub partitions: Vec<PlannedPart>,
}

impl Plan {
    /// Rows over every partition, as planned.
    pub fn rows(&self) -> u64 {
        self.partitions.iter().map(|p| p.rows).sum()
    }
}

/// Why one input row was not scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedRow {
    /// The input file's name.
    pub file: String,
    /// The 0-based data row within the file.
    pub row: u64,
    /// The physical line (CSV; 1 is the header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// What was wrong, per column where one is to blame.
    pub reasons: Vec<RejectReason>,
    /// The record's text (CSV), cut at [`MAX_REJECTED_TEXT`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
}

/// One reason a row was rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectReason {
    /// The column, when one is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Why.
    pub reason: String,
}

/// What a partition's worker wrote, written after its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartManifest {
    /// The partition.
    pub index: usize,
    /// Records read.
    pub rows_in: u64,
    /// Rows scored (in the output).
    pub rows_out: u64,
    /// Rows rejected (in its rejected file).
    pub rejected: u64,
    /// The output object.
    pub output: ObjectKey,
    /// The rejected rows' object, when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_key: Option<ObjectKey>,
    /// When the worker started and finished (RFC 3339).
    pub started_at: String,
    /// When it finished.
    pub finished_at: String,
    /// Seconds reading the input.
    pub read_seconds: f64,
    /// Seconds validating, encoding and predicting.
    pub score_seconds: f64,
    /// Seconds writing the output.
    pub write_seconds: f64,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Every partition was scored.
    Succeeded,
    /// The job stopped: see the reason.
    Failed,
}

/// The job's manifest: written once, by the last partition to finish (or by the worker
/// that found the job cannot go on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobManifest {
    /// The model.
    pub model: String,
    /// The version scored with.
    pub version: String,
    /// The job.
    pub job: String,
    /// How it ended.
    pub status: JobStatus,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Partitions planned.
    pub partitions: usize,
    /// Partitions finished.
    pub partitions_done: usize,
    /// Records read.
    pub rows_in: u64,
    /// Rows scored.
    pub rows_out: u64,
    /// Rows rejected.
    pub rejected: u64,
    /// The most frequent rejection reasons (reason → rows), at most 20.
    pub rejected_reasons: std::collections::BTreeMap<String, u64>,
    /// The merged rejected rows (`rejected.jsonl`), when there are any and they fit
    /// [`MAX_MERGED_REJECTED_BYTES`]; otherwise they stay in `rejected/part-*.jsonl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_key: Option<ObjectKey>,
    /// The partition outputs, in order.
    pub outputs: Vec<ObjectKey>,
    /// When the job was planned.
    pub planned_at: String,
    /// When this manifest was written.
    pub finished_at: String,
    /// Wall seconds from planning to this manifest.
    pub wall_seconds: f64,
    /// Seconds planning.
    pub plan_seconds: f64,
    /// Worker seconds over every partition (read + score + write).
    pub worker_seconds: f64,
    /// The slowest partition's seconds.
    pub slowest_partition_seconds: f64,
}

/// The largest merged `rejected.jsonl` the finishing worker writes (it holds it in memory).
pub const MAX_MERGED_REJECTED_BYTES: usize = 32 << 20;

/// Whether `name` may name a job (the same rule as model and version names): ASCII
/// letters, digits, `.`, `_` and `-`, at most 128, not starting with `.`.
pub fn valid_job_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A new job name: the UTC time and a random suffix (`20261130-101500-3f9a`).
pub fn new_job_name() -> String {
    let now = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    format!("{now}-{suffix}")
}

#[cfg(test)]
mod tests;
