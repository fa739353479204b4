//! Datasets: reading raw files, inferring and checking schemas, quarantining bad rows,
//! profiling, and the versioned artifacts ingest writes.
//!
//! A dataset version lives under `datasets/<name>/<version>/`:
//! `data.parquet` (the validated rows), `schema.json`, `profile.json` (the baseline the
//! monitor compares live traffic with), `rejected.jsonl` (every refused row with its line
//! number and reasons) and `manifest.json`, written last. The version is a content hash of
//! the raw bytes and the ingest settings, so the same file ingested twice is the same
//! version.

mod ingest;
mod profile;
mod read;
pub mod sketch;
mod table;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use ingest::{IngestConfig, IngestOutput, ingest_file, parts};
pub use profile::{
    CategorySummary, ColumnProfile, Histogram, Mt19937, NumericSummary, Profile, SplitMix64,
    quantile_sorted,
};
pub use read::{Format, MAX_RECORD_BYTES, RowReader, open_rows};
pub use table::{Column, MISSING_CODE, Table, read_parquet};

use crate::spec::DeclaredType;

/// Why a file or a dataset could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// The file has no bytes (or no header line).
    #[error("the file is empty: no header line")]
    EmptyFile,
    /// A header and no data rows.
    #[error("the file has a header but no data rows")]
    NoRows,
    /// The label column is not in the header.
    #[error("the label column {label:?} is not in the file; its columns are: {available}")]
    MissingLabel {
        /// The label the spec names.
        label: String,
        /// The columns found, comma-separated.
        available: String,
    },
    /// A declared column is not in the header.
    #[error("the declared column {column:?} is not in the file; its columns are: {available}")]
    MissingColumn {
        /// The missing column.
        column: String,
        /// The columns found, comma-separated.
        available: String,
    },
    /// Two columns share a name.
    #[error("the header names column {0:?} twice")]
    DuplicateColumn(String),
    /// The header is not UTF-8 or has an empty name.
    #[error("invalid header: {0}")]
    BadHeader(String),
    /// Every row was rejected.
    #[error(
        "no valid rows: all {rejected} data rows were rejected (first: line {first_line}: {first_reason}); see rejected.jsonl"
    )]
    NoValidRows {
        /// How many rows were rejected.
        rejected: u64,
        /// The first rejected row's line.
        first_line: u64,
        /// Why it was rejected.
        first_reason: String,
    },
    /// A classification label with the wrong number of classes.
    #[error(
        "the label {label:?} has {found} distinct values ({values}); a {task} task needs {needed}"
    )]
    LabelClasses {
        /// The label column.
        label: String,
        /// How many distinct values it has.
        found: usize,
        /// Some of them.
        values: String,
        /// The task.
        task: &'static str,
        /// What the task needs.
        needed: &'static str,
    },
    /// Not a format lambdaml reads.
    #[error("unsupported file format: {0}")]
    UnsupportedFormat(String),
    /// The CSV reader failed (an I/O fault, not a bad row).
    #[error("cannot read CSV: {0}")]
    Csv(#[from] csv::Error),
    /// Parquet reading or writing failed.
    #[error("parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow failed.
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// Local I/O failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A column lambdaml does not read (parquet input).
    #[error("column {column:?} has unsupported type {kind}")]
    UnsupportedColumn {
        /// The column.
        column: String,
        /// Its type.
        kind: String,
    },
    /// A column the caller asked for is not in the table.
    #[error("column {0:?} is not in the dataset")]
    UnknownColumn(String),
    /// One record runs on past the record limit: a quote never closed, or not a CSV file.
    #[error(
        "the record starting at line {line} runs on past {limit} bytes (an unclosed quote, or not a CSV file); the file is refused"
    )]
    RecordTooLong {
        /// The line the record started on.
        line: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// A compressed file expands past the decompression limit.
    #[error(
        "the file decompresses to more than {limit} bytes ({ratio}x its compressed size at most); refused as a likely decompression bomb"
    )]
    TooMuchDecompressed {
        /// The limit in bytes.
        limit: u64,
        /// The largest expansion accepted.
        ratio: u64,
    },
}

/// A column's type as lambdaml stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// 64-bit integers.
    Integer,
    /// 64-bit floats.
    Float,
    /// true/false.
    Boolean,
    /// Strings from a domain.
    Categorical,
}

impl ColumnType {
    /// Integer and float.
    pub fn is_numeric(self) -> bool {
        matches!(self, ColumnType::Integer | ColumnType::Float)
    }
}

impl From<DeclaredType> for ColumnType {
    fn from(d: DeclaredType) -> Self {
        match d {
            DeclaredType::Integer => ColumnType::Integer,
            DeclaredType::Float => ColumnType::Float,
            DeclaredType::Boolean => ColumnType::Boolean,
            DeclaredType::Categorical => ColumnType::Categorical,
        }
    }
}

/// One column of a schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnSchema {
    /// The column name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// Whether it may be missing.
    pub nullable: bool,
    /// Whether the spec declared it (else inferred).
    pub declared: bool,
    /// Smallest value seen (or allowed, when declared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest value seen (or allowed, when declared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The category domain (declared, or the values seen when there are at most
    /// [`MAX_DOMAIN`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

/// Categorical domains larger than this are not recorded in the schema.
pub const MAX_DOMAIN: usize = 1000;

/// A dataset's schema: its columns in file order and its label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// The columns, in file order.
    pub columns: Vec<ColumnSchema>,
    /// The label column.
    pub label: String,
}

impl Schema {
    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Where the bytes of a dataset version came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// The raw object's key.
    pub key: String,
    /// Its size.
    pub bytes: u64,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// The format it was read as.
    pub format: Format,
}

/// `datasets/<name>/<version>/manifest.json`, written last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetManifest {
    /// The dataset name.
    pub dataset: String,
    /// The version (content hash).
    pub version: String,
    /// The raw file.
    pub source: SourceInfo,
    /// Valid rows written to `data.parquet`.
    pub rows: u64,
    /// Rows quarantined to `rejected.jsonl`.
    pub rejected: u64,
    /// Column names in order.
    pub columns: Vec<String>,
    /// The label column.
    pub label: String,
    /// Artifact keys by name (`data`, `schema`, `profile`, `rejected`).
    pub artifacts: BTreeMap<String, String>,
    /// The pipeline run that wrote it (`runs/<run>/record.json`), when it ran in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_run: Option<String>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// The lambdaml version that wrote it.
    pub lambdaml_version: String,
}
