//! Ingest of one file in partitions, each its own invocation, merged into one version.
//!
//! The planner (the ingest function) splits a CSV file at record boundaries and guesses the
//! schema from its first rows ([`plan_guess`]), exactly as a one-pass ingest does. Each
//! partition then checks its rows against that schema ([`ingest_part`]): its valid rows go
//! to a Parquet file of its own, its rejected rows (with the file's line numbers) to a
//! rejected file, and its type counts and profile to a [`PartReport`] of mergeable
//! summaries. The last partition to report merges them ([`finish_parts`]): the whole file's
//! type counts decide the schema — when that differs from the guess every partition checks
//! its rows again, as a one-pass ingest reads the file a second time — then the partitions'
//! Parquet files are concatenated (column chunks copied, not decoded), their rejected rows
//! appended in order, and the histograms counted over the result. Counts, missing values,
//! min, max, mean, standard deviation (exact sums), category frequencies and histograms are
//! then those of a one-pass ingest of the same file; the quantiles come from merged KLL
//! sketches within [`super::super::sketch::KLL_RANK_ERROR`] of the true rank.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use serde::{Deserialize, Serialize};

pub use super::GUESS_ROWS;
use super::infer::{Inference, Nulls};
use super::{
    Acc, CategoryAcc, CheckedPass, IngestConfig, IngestOutput, NumericAcc, Placement, checked_pass,
    decide, finish_output, guess_schema, new_inference,
};
use crate::dataset::profile::{CategorySummary, NumericSummary};
use crate::dataset::{ColumnSchema, DatasetError, Format};

/// A field's type counts over part of a file (see the one-pass inference), as a partition
/// reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypeCounts {
    nulls: u64,
    values: u64,
    bools: u64,
    numbers: u64,
    integers: u64,
    min: Option<f64>,
    max: Option<f64>,
}

impl From<&Inference> for TypeCounts {
    fn from(s: &Inference) -> Self {
        TypeCounts {
            nulls: s.nulls,
            values: s.values,
            bools: s.bools,
            numbers: s.numbers,
            integers: s.integers,
            min: s.min.is_finite().then_some(s.min),
            max: s.max.is_finite().then_some(s.max),
        }
    }
}

impl From<&TypeCounts> for Inference {
    fn from(t: &TypeCounts) -> Self {
        Inference {
            nulls: t.nulls,
            values: t.values,
            bools: t.bools,
            numbers: t.numbers,
            integers: t.integers,
            min: t.min.unwrap_or(f64::INFINITY),
            max: t.max.unwrap_or(f64::NEG_INFINITY),
        }
    }
}

/// A column's profile summary as a partition reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "summary", rename_all = "snake_case")]
pub enum ColumnSummary {
    /// Integer or float.
    Numeric(NumericSummary),
    /// Categorical or boolean.
    Category(CategorySummary),
}

/// What one partition learned: everything the finisher merges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartReport {
    /// Rows that passed.
    pub accepted: u64,
    /// Rows quarantined.
    pub rejected: u64,
    /// The first rejected row: its line in the whole file, and why.
    pub first_rejection: Option<(u64, String)>,
    /// Each column's type counts, in file column order.
    pub types: Vec<TypeCounts>,
    /// Each column's profile summary, in file column order.
    pub columns: Vec<ColumnSummary>,
}

/// A partition's outputs, in local files.
#[derive(Debug)]
pub struct PartOutput {
    /// What it reports.
    pub report: PartReport,
    /// Its valid rows, as Parquet (the round's schema).
    pub data_path: PathBuf,
    /// Its rejected rows, as JSON lines.
    pub rejected_path: PathBuf,
}

/// The schema a partitioned ingest starts from: the first rows' guess, read from `path`
/// (the whole file, or at least its first rows). Errors are a one-pass ingest's (no label,
/// a declared column missing, no rows).
pub fn plan_guess(
    path: &Path,
    format: Format,
    config: &IngestConfig,
) -> Result<Vec<ColumnSchema>, DatasetError> {
    let nulls = Nulls::new(&config.null_values);
    Ok(guess_schema(path, format, config, &nulls)?.columns)
}

/// Ingests one partition: `path` holds the file's header line(s) then the partition's
/// records; `line_offset` turns its line numbers into the whole file's. `columns` is the
/// round's schema (the guess, or the decided schema of a second round); `seed` seeds its
/// quantile sketches. Writes `data.parquet` and `rejected.jsonl` in `out_dir`.
pub fn ingest_part(
    path: &Path,
    config: &IngestConfig,
    columns: &[ColumnSchema],
    line_offset: u64,
    seed: u64,
    out_dir: &Path,
) -> Result<PartOutput, DatasetError> {
    let nulls = Nulls::new(&config.null_values);
    let label_index = columns
        .iter()
        .position(|c| c.name == config.label)
        .unwrap_or(0);
    let placement = Placement {
        line_offset,
        sketch_seed: Some(seed),
    };
    let pass = checked_pass(
        path,
        Format::Csv,
        config,
        columns,
        &nulls,
        label_index,
        out_dir,
        &placement,
        &|_| {},
    )
    .map_err(|e| match e {
        DatasetError::RecordTooLong { line, limit } => DatasetError::RecordTooLong {
            line: line + line_offset,
            limit,
        },
        other => other,
    })?;
    let CheckedPass {
        inference,
        accs,
        accepted,
        rejected,
        first_rejection,
        data_path,
        rejected_path,
    } = pass;
    if inference.len() != columns.len() {
        return Err(DatasetError::BadHeader(format!(
            "the partition has {} columns where the plan has {}",
            inference.len(),
            columns.len()
        )));
    }
    let columns = accs
        .iter()
        .map(|acc| match acc {
            Acc::Numeric(a) => a.summary().map(ColumnSummary::Numeric),
            Acc::Category(a) => Some(ColumnSummary::Category(a.summary())),
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| DatasetError::BadHeader("a partition's profile is not mergeable".into()))?;
    Ok(PartOutput {
        report: PartReport {
            accepted,
            rejected,
            first_rejection,
            types: inference.iter().map(TypeCounts::from).collect(),
            columns,
        },
        data_path,
        rejected_path,
    })
}

/// What the finisher decided.
#[derive(Debug)]
pub enum Finished {
    /// The whole file's type counts give this schema, not the round's: every partition
    /// checks its rows again against it.
    Recheck(Vec<ColumnSchema>),
    /// The version's files, ready to upload.
    Done(IngestOutput),
}

/// One finished partition's files, in local paths.
#[derive(Debug, Clone)]
pub struct FinishedPart {
    /// What it reported.
    pub report: PartReport,
    /// Its Parquet file.
    pub data_path: PathBuf,
    /// Its rejected rows.
    pub rejected_path: PathBuf,
}

/// Merges the partitions of one round (in file order) checked against `columns`: see the
/// module docs. Writes `data.parquet` and `rejected.jsonl` in `out_dir` when done.
pub fn finish_parts(
    config: &IngestConfig,
    columns: &[ColumnSchema],
    parts: &[FinishedPart],
    out_dir: &Path,
) -> Result<Finished, DatasetError> {
    let mut inference = new_inference(columns.len());
    for part in parts {
        if part.report.types.len() != columns.len() || part.report.columns.len() != columns.len() {
            return Err(DatasetError::BadHeader(
                "a partition reported another number of columns than the plan has".into(),
            ));
        }
        for (s, t) in inference.iter_mut().zip(&part.report.types) {
            s.merge(Inference::from(t));
        }
    }
    let decided: Vec<ColumnSchema> = columns
        .iter()
        .zip(&inference)
        .map(|(c, s)| decide(&c.name, s, config))
        .collect();
    if decided.iter().zip(columns).any(|(d, c)| d.kind != c.kind) {
        return Ok(Finished::Recheck(decided));
    }
    let accepted: u64 = parts.iter().map(|p| p.report.accepted).sum();
    let rejected: u64 = parts.iter().map(|p| p.report.rejected).sum();
    if accepted == 0 {
        let (first_line, first_reason) = parts
            .iter()
            .find_map(|p| p.report.first_rejection.clone())
            .unwrap_or((0, String::new()));
        return Err(DatasetError::NoValidRows {
            rejected,
            first_line,
            first_reason,
        });
    }
    let data_path = out_dir.join("data.parquet");
    concat_parquet(
        &parts
            .iter()
            .map(|p| p.data_path.clone())
            .collect::<Vec<_>>(),
        &data_path,
    )?;
    let rejected_path = out_dir.join("rejected.jsonl");
    let mut out = BufWriter::new(File::create(&rejected_path)?);
    for part in parts {
        std::io::copy(&mut File::open(&part.rejected_path)?, &mut out)?;
    }
    out.flush()?;
    let accs = merged_accumulators(columns, parts)?;
    finish_output(
        config,
        decided,
        &inference,
        accs,
        (accepted, rejected),
        (data_path, rejected_path),
    )
    .map(Finished::Done)
}

/// The partitions' profile summaries merged, column by column, in file order.
fn merged_accumulators(
    columns: &[ColumnSchema],
    parts: &[FinishedPart],
) -> Result<Vec<Acc>, DatasetError> {
    let mut accs = Vec::with_capacity(columns.len());
    for (i, c) in columns.iter().enumerate() {
        let mut acc = if c.kind.is_numeric() {
            Acc::Numeric(Box::new(NumericAcc::sketched(c.kind, 0x5EED + i as u64)))
        } else {
            Acc::Category(CategoryAcc::new(c.kind))
        };
        for part in parts {
            match (&mut acc, &part.report.columns[i]) {
                (Acc::Numeric(a), ColumnSummary::Numeric(s)) => a.merge(s),
                (Acc::Category(a), ColumnSummary::Category(s)) => a.merge(s),
                _ => {
                    return Err(DatasetError::BadHeader(format!(
                        "partitions disagree on the type of column {:?}",
                        c.name
                    )));
                }
            }
        }
        accs.push(acc);
    }
    Ok(accs)
}

/// Concatenates Parquet files of one schema into `out`: their row groups in order, column
/// chunks copied as they are (no decoding), the first file's key-value metadata (the Arrow
/// schema) kept.
pub fn concat_parquet(inputs: &[PathBuf], out: &Path) -> Result<(), DatasetError> {
    let opened = inputs
        .iter()
        .map(|path| {
            let file = File::open(path)?;
            let metadata = ParquetMetaDataReader::new().parse_and_finish(&file)?;
            Ok((file, metadata))
        })
        .collect::<Result<Vec<_>, DatasetError>>()?;
    let Some((_, first)) = opened.first() else {
        return Err(DatasetError::NoRows);
    };
    let schema = first.file_metadata().schema_descr().root_schema_ptr();
    for (_, metadata) in &opened[1..] {
        if metadata.file_metadata().schema() != first.file_metadata().schema() {
            return Err(DatasetError::BadHeader(
                "partitions were written with different schemas".into(),
            ));
        }
    }
    let props = WriterProperties::builder()
        .set_key_value_metadata(first.file_metadata().key_value_metadata().cloned())
        .set_created_by(format!("lambdaml {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut writer = SerializedFileWriter::new(File::create(out)?, schema, Arc::new(props))?;
    for (file, metadata) in &opened {
        for group in metadata.row_groups() {
            let mut out_group = writer.next_row_group()?;
            for column in group.columns() {
                out_group.append_column(
                    file,
                    ColumnCloseResult {
                        bytes_written: column.compressed_size() as u64,
                        rows_written: group.num_rows() as u64,
                        metadata: column.clone(),
                        bloom_filter: None,
                        column_index: None,
                        offset_index: None,
                    },
                )?;
            }
            out_group.close()?;
        }
    }
    writer.close()?;
    Ok(())
}
