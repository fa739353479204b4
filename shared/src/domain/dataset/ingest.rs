//! Ingest of one raw file: infer or check the schema, quarantine bad rows, write Parquet,
//! profile.
//!
//! Types: boolean when every value of an undeclared column is a boolean word, integer or
//! float when at least 99 % of its non-missing values are numbers (the rest are then bad
//! rows), categorical otherwise — counted over the whole file.
//!
//! One pass over the bytes in the common case. The schema is guessed from the first
//! [`GUESS_ROWS`] rows (every undeclared feature nullable); then one pass
//! ([`pipeline`]: a reading thread, parsing threads, results consumed in file order)
//! checks every row against the guess while counting every field for the real inference,
//! writes the valid rows to Parquet in bounded row groups, appends the rejected ones to
//! `rejected.jsonl` with their line number and reasons, and feeds the profile. When the
//! whole file's counts give a column another type than the guess (integers that later
//! have decimals, numbers that later turn to words), the rows are checked a second time
//! against the real schema, so every rule is as if the schema had been known first. The
//! histograms, whose range is the whole file's, are counted from the Parquet file at the
//! end ([`histogram`]).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema as ArrowSchema};
use csv::ByteRecord;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use super::profile::{CategoryAcc, ColumnProfile, NumericAcc};
use super::{
    ColumnSchema, ColumnType, DatasetError, Format, MAX_DOMAIN, Profile, RowReader, Schema,
    open_rows,
};
use crate::spec::{ColumnDecl, ModelSpec, TaskKind};
use check::{RejectReason, Row, Value, check_row, write_rejected};
use histogram::histograms;
use infer::{Inference, Nulls, decide, is_bool_word, trim_field};
use pipeline::{Batch, pipeline};

/// Rows per Parquet row group (and per Arrow batch): bounds the writer's memory.
const CHUNK_ROWS: usize = 65_536;
/// Fields longer than this are refused: no feature is a megabyte of text.
pub const MAX_FIELD_BYTES: usize = 65_536;
/// Share of non-numeric values up to which a column is still read as numeric.
const NUMERIC_TOLERANCE: f64 = 0.01;

/// The settings ingest takes from the model spec(s) of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestConfig {
    /// The label column.
    pub label: String,
    /// The task (decides the label's type).
    pub task: TaskKind,
    /// CSV delimiter.
    pub delimiter: u8,
    /// Missing-value words.
    pub null_values: Vec<String>,
    /// Declared columns.
    pub columns: BTreeMap<String, ColumnDecl>,
}

impl IngestConfig {
    /// The ingest settings of a spec.
    pub fn from_spec(spec: &ModelSpec) -> Self {
        IngestConfig {
            label: spec.dataset.label.clone(),
            task: spec.task.kind,
            delimiter: spec
                .dataset
                .delimiter
                .as_bytes()
                .first()
                .copied()
                .unwrap_or(b','),
            null_values: spec.dataset.null_values.clone(),
            columns: spec.dataset.columns.clone(),
        }
    }
}

/// What ingest produced, in local files ready to upload.
#[derive(Debug)]
pub struct IngestOutput {
    /// The schema in force.
    pub schema: Schema,
    /// The profile of the valid rows.
    pub profile: Profile,
    /// The valid rows, as Parquet.
    pub data_path: PathBuf,
    /// The rejected rows, as JSON lines.
    pub rejected_path: PathBuf,
}

enum Builder {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
}

impl Builder {
    fn new(kind: ColumnType, rows: usize) -> Self {
        match kind {
            ColumnType::Integer => Builder::Int(Int64Builder::with_capacity(rows)),
            ColumnType::Float => Builder::Float(Float64Builder::with_capacity(rows)),
            ColumnType::Boolean => Builder::Bool(BooleanBuilder::with_capacity(rows)),
            ColumnType::Categorical => Builder::Str(StringBuilder::with_capacity(rows, rows * 8)),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Float(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Str(b) => Arc::new(b.finish()),
        }
    }
}

fn arrow_type(kind: ColumnType) -> DataType {
    match kind {
        ColumnType::Integer => DataType::Int64,
        ColumnType::Float => DataType::Float64,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Categorical => DataType::Utf8,
    }
}

enum Acc {
    Numeric(Box<NumericAcc>),
    Category(CategoryAcc),
}

/// Ingests `path` (as `format`) into `out_dir`: see the module docs. `progress` is called
/// with the rows read so far, every few tens of thousands of rows.
pub fn ingest_file(
    path: &Path,
    format: Format,
    config: &IngestConfig,
    out_dir: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<IngestOutput, DatasetError> {
    let started = std::time::Instant::now();
    let phase = |what: &str| {
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "ingest: {what}");
    };
    let nulls = Nulls::new(&config.null_values);
    let Guess {
        headers,
        columns: guess,
        label_index,
    } = guess_schema(path, format, config, &nulls)?;
    phase("schema guessed from the first rows");
    let mut pass = checked_pass(
        path,
        format,
        config,
        &guess,
        &nulls,
        label_index,
        out_dir,
        &Placement::default(),
        progress,
    )?;
    let columns: Vec<ColumnSchema> = headers
        .iter()
        .zip(&pass.inference)
        .map(|(name, s)| decide(name, s, config))
        .collect();
    phase("rows checked and written");
    if columns.iter().zip(&guess).any(|(c, g)| c.kind != g.kind) {
        // The first rows misled the guess (say, integers that later have decimals): the
        // rows are checked again against the whole file's schema.
        let inference = std::mem::take(&mut pass.inference);
        pass = checked_pass(
            path,
            format,
            config,
            &columns,
            &nulls,
            label_index,
            out_dir,
            &Placement::default(),
            progress,
        )?;
        pass.inference = inference;
    }
    let CheckedPass {
        inference,
        accs,
        accepted,
        rejected,
        first_rejection,
        data_path,
        rejected_path,
    } = pass;

    if accepted == 0 {
        let (first_line, first_reason) = first_rejection.unwrap_or((0, String::new()));
        return Err(DatasetError::NoValidRows {
            rejected,
            first_line,
            first_reason,
        });
    }

    let output = finish_output(
        config,
        columns,
        &inference,
        accs,
        (accepted, rejected),
        (data_path, rejected_path),
    )?;
    phase("histograms and profile finished");
    Ok(output)
}

/// The version once every row was checked against `columns` (the decided schema): the
/// histograms counted over the written rows, the profile finished (undeclared columns learn
/// their bounds and values from it), the label's classes checked.
fn finish_output(
    config: &IngestConfig,
    mut columns: Vec<ColumnSchema>,
    inference: &[Inference],
    mut accs: Vec<Acc>,
    (accepted, rejected): (u64, u64),
    (data_path, rejected_path): (PathBuf, PathBuf),
) -> Result<IngestOutput, DatasetError> {
    histograms(&data_path, &columns, inference, &mut accs)?;
    let profile_columns = finish_profile(&mut columns, accs);
    check_label_classes(config, &profile_columns)?;
    Ok(IngestOutput {
        schema: Schema {
            columns,
            label: config.label.clone(),
        },
        profile: Profile {
            rows: accepted,
            rejected,
            columns: profile_columns,
        },
        data_path,
        rejected_path,
    })
}

/// The schema the first rows suggest, before the whole file is read.
pub(crate) struct Guess {
    /// The column names, in file order.
    pub(crate) headers: Vec<String>,
    /// Every undeclared feature nullable (a missing value further down must not refuse its
    /// row before the whole file has been counted).
    pub(crate) columns: Vec<ColumnSchema>,
    /// Where the label is.
    pub(crate) label_index: usize,
}

/// Reads the first [`GUESS_ROWS`] rows: the column names (the label and every declared
/// column must be there) and the schema they suggest.
fn guess_schema(
    path: &Path,
    format: Format,
    config: &IngestConfig,
    nulls: &Nulls,
) -> Result<Guess, DatasetError> {
    let (headers, first_rows) = infer_prefix(path, format, config, nulls)?;
    let available = headers.join(", ");
    if !headers.contains(&config.label) {
        return Err(DatasetError::MissingLabel {
            label: config.label.clone(),
            available,
        });
    }
    if let Some(missing) = config.columns.keys().find(|c| !headers.contains(c)) {
        return Err(DatasetError::MissingColumn {
            column: missing.clone(),
            available,
        });
    }
    let label_index = headers.iter().position(|h| *h == config.label).unwrap_or(0);
    let columns = headers
        .iter()
        .zip(&first_rows)
        .map(|(name, s)| {
            let mut c = decide(name, s, config);
            c.nullable |= !c.declared && *name != config.label;
            c
        })
        .collect();
    Ok(Guess {
        headers,
        columns,
        label_index,
    })
}

/// Where a pass's rows sit in the whole file, for a partition of it ([`parts`]).
#[derive(Debug, Default, Clone, Copy)]
struct Placement {
    /// Added to every line number the reader reports.
    line_offset: u64,
    /// Profile the numeric columns with mergeable KLL sketches seeded from this (else a
    /// reservoir sample).
    sketch_seed: Option<u64>,
}

/// What one pass over the rows learned.
struct CheckedPass {
    /// The type counts of every field, over the whole file.
    inference: Vec<Inference>,
    /// The profile of the accepted rows, histograms still empty.
    accs: Vec<Acc>,
    accepted: u64,
    rejected: u64,
    first_rejection: Option<(u64, String)>,
    /// The files written.
    data_path: PathBuf,
    rejected_path: PathBuf,
}

/// One pass over the file: every row counted for type inference and checked against
/// `columns`; the accepted rows written to `data.parquet` and profiled, the rejected ones to
/// `rejected.jsonl`. A file the reader refuses leaves no `rejected.jsonl` behind (its rows
/// were never all read).
#[allow(clippy::too_many_arguments)]
fn checked_pass(
    path: &Path,
    format: Format,
    config: &IngestConfig,
    columns: &[ColumnSchema],
    nulls: &Nulls,
    label_index: usize,
    out_dir: &Path,
    placement: &Placement,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<CheckedPass, DatasetError> {
    let (mut writer, arrow_schema, data_path) = parquet_writer(columns, out_dir)?;
    let rejected_path = out_dir.join("rejected.jsonl");
    let mut rejected_out = BufWriter::new(File::create(&rejected_path)?);
    let domains: Vec<Option<HashSet<&str>>> = columns
        .iter()
        .map(|c| {
            c.values
                .as_ref()
                .map(|v| v.iter().map(String::as_str).collect())
        })
        .collect();
    let mut accs = accumulators(columns, placement.sketch_seed);
    let reader = open_rows(path, format, config.delimiter)?;
    let result = validate(
        reader,
        &Validation {
            columns,
            nulls,
            domains: &domains,
            label_index,
            line_offset: placement.line_offset,
        },
        &mut accs,
        &mut |arrays| {
            writer.write(&RecordBatch::try_new(arrow_schema.clone(), arrays)?)?;
            Ok(())
        },
        &mut rejected_out,
        progress,
    );
    let Tally {
        inference,
        accepted,
        rejected,
        first_rejection,
    } = match result {
        Ok(done) => done,
        Err(e) => {
            drop(rejected_out);
            let _ = std::fs::remove_file(&rejected_path);
            return Err(e);
        }
    };
    writer.close()?;
    rejected_out.flush()?;
    Ok(CheckedPass {
        inference,
        accs,
        accepted,
        rejected,
        first_rejection,
        data_path,
        rejected_path,
    })
}

/// Rows read to guess the schema before the pass over the whole file.
pub const GUESS_ROWS: u64 = 65_536;

/// The column names and the type counts of the first [`GUESS_ROWS`] rows.
fn infer_prefix(
    path: &Path,
    format: Format,
    config: &IngestConfig,
    nulls: &Nulls,
) -> Result<(Vec<String>, Vec<Inference>), DatasetError> {
    let mut reader = open_rows(path, format, config.delimiter)?;
    let headers = reader.headers().to_vec();
    let mut stats = new_inference(headers.len());
    let mut record = ByteRecord::new();
    let mut rows = 0u64;
    while rows < GUESS_ROWS && reader.next_row(&mut record)?.is_some() {
        rows += 1;
        if record.len() != headers.len() || reader.cut() {
            continue;
        }
        for (field, s) in record.iter().zip(stats.iter_mut()) {
            s.observe(field, nulls);
        }
    }
    if rows == 0 {
        return Err(DatasetError::NoRows);
    }
    Ok((headers, stats))
}

fn new_inference(columns: usize) -> Vec<Inference> {
    (0..columns)
        .map(|_| Inference {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            ..Inference::default()
        })
        .collect()
}

/// The Parquet writer of `data.parquet`: one column per schema column, Snappy, a row
/// group per chunk.
fn parquet_writer(
    columns: &[ColumnSchema],
    out_dir: &Path,
) -> Result<(ArrowWriter<File>, Arc<ArrowSchema>, PathBuf), DatasetError> {
    let arrow_schema = Arc::new(ArrowSchema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, arrow_type(c.kind), c.nullable))
            .collect::<Vec<_>>(),
    ));
    let data_path = out_dir.join("data.parquet");
    let mut props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(CHUNK_ROWS))
        .set_created_by(format!("lambdaml {}", env!("CARGO_PKG_VERSION")));
    // A row group's float column rarely repeats a value: a dictionary page would be as big
    // as the values and its indices extra (and building it was a tenth of ingest's time).
    for c in columns.iter().filter(|c| c.kind == ColumnType::Float) {
        props = props.set_column_dictionary_enabled(ColumnPath::from(c.name.as_str()), false);
    }
    let props = props.build();
    let writer =
        ArrowWriter::try_new(File::create(&data_path)?, arrow_schema.clone(), Some(props))?;
    Ok((writer, arrow_schema, data_path))
}

/// One accumulator per column, each numeric one with its own seed (their histograms are
/// made once the ranges are known: [`histograms`]); sketched ones when `sketch_seed` is set.
fn accumulators(columns: &[ColumnSchema], sketch_seed: Option<u64>) -> Vec<Acc> {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if c.kind.is_numeric() {
                Acc::Numeric(Box::new(match sketch_seed {
                    Some(seed) => NumericAcc::sketched(c.kind, seed.wrapping_add(i as u64)),
                    None => NumericAcc::new(c.kind, None, 0x5EED + i as u64),
                }))
            } else {
                Acc::Category(CategoryAcc::new(c.kind))
            }
        })
        .collect()
}

/// What [`validate`] counted.
struct Tally {
    inference: Vec<Inference>,
    accepted: u64,
    rejected: u64,
    first_rejection: Option<(u64, String)>,
}

/// What each row is checked against.
struct Validation<'a> {
    columns: &'a [ColumnSchema],
    nulls: &'a Nulls,
    domains: &'a [Option<HashSet<&'a str>>],
    label_index: usize,
    /// Added to the reader's line numbers (a partition of a file).
    line_offset: u64,
}

/// A checked batch: the type counts of its fields, the accepted rows as Arrow columns, the
/// rejected ones as lines of `rejected.jsonl`.
struct Checked {
    inference: Vec<Inference>,
    arrays: Result<Vec<ArrayRef>, DatasetError>,
    accepted: u64,
    rejected: u64,
    rejected_lines: Vec<u8>,
    first_rejection: Option<(u64, String)>,
}

/// One pass over `reader`: every row counted for type inference and checked against `check`
/// on the parsing threads; in file order, the accepted rows go to `write` (one Arrow batch
/// per batch of rows) and the profile, the rejected ones to `rejected_out`.
fn validate(
    mut reader: Box<dyn RowReader>,
    check: &Validation<'_>,
    accs: &mut [Acc],
    write: &mut dyn FnMut(Vec<ArrayRef>) -> Result<(), DatasetError>,
    rejected_out: &mut dyn Write,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Tally, DatasetError> {
    let work = |batch: &Batch| {
        let mut builders: Vec<Builder> = check
            .columns
            .iter()
            .map(|c| Builder::new(c.kind, batch.len))
            .collect();
        let mut parsed: Vec<Value> = Vec::with_capacity(check.columns.len());
        let mut reasons: Vec<RejectReason> = Vec::new();
        let mut out = Checked {
            inference: new_inference(check.columns.len()),
            arrays: Ok(Vec::new()),
            accepted: 0,
            rejected: 0,
            rejected_lines: Vec::new(),
            first_rejection: None,
        };
        for slot in batch.rows() {
            parsed.clear();
            reasons.clear();
            check_row(
                &Row {
                    record: &slot.record,
                    cut: slot.cut,
                    label_index: check.label_index,
                },
                check.columns,
                check.nulls,
                check.domains,
                &mut parsed,
                &mut reasons,
                &mut out.inference,
            );
            if reasons.is_empty() {
                out.accepted += 1;
                append(&mut builders, &parsed, &slot.record);
                continue;
            }
            out.rejected += 1;
            let line = slot.line + check.line_offset;
            if out.first_rejection.is_none() {
                out.first_rejection = Some((line, reasons[0].to_string()));
            }
            if let Err(e) = write_rejected(
                &mut out.rejected_lines,
                line,
                &reasons,
                &slot.record,
                slot.cut,
            ) {
                out.arrays = Err(e.into());
                return out;
            }
        }
        out.arrays = Ok(builders.iter_mut().map(Builder::finish).collect());
        out
    };
    let (mut accepted, mut rejected, mut first_rejection) = (0u64, 0u64, None);
    let mut inference = new_inference(check.columns.len());
    let mut reported = 0u64;
    // The profile is fed on a thread of its own, in file order, while this one writes
    // Parquet (both are serial and were this thread's whole work).
    let (to_profile, profiled) = std::sync::mpsc::sync_channel::<Vec<ArrayRef>>(4);
    let rows = std::thread::scope(|scope| {
        scope.spawn(move || {
            for arrays in profiled {
                for (array, acc) in arrays.iter().zip(accs.iter_mut()) {
                    profile_array(array.as_ref(), acc);
                }
            }
        });
        let to_profile = to_profile;
        pipeline(reader.as_mut(), &work, &mut |part, rows| {
            for (s, p) in inference.iter_mut().zip(part.inference) {
                s.merge(p);
            }
            rejected_out.write_all(&part.rejected_lines)?;
            rejected += part.rejected;
            if first_rejection.is_none() {
                first_rejection = part.first_rejection;
            }
            let arrays = part.arrays?;
            if part.accepted > 0 {
                accepted += part.accepted;
                // Cannot fail: the profile thread reads until this sender is dropped.
                let _ = to_profile.send(arrays.clone());
                write(arrays)?;
            }
            if rows / CHUNK_ROWS as u64 > reported {
                reported = rows / CHUNK_ROWS as u64;
                progress(rows);
            }
            Ok(())
        })
    })?;
    if rows == 0 {
        return Err(DatasetError::NoRows);
    }
    Ok(Tally {
        inference,
        accepted,
        rejected,
        first_rejection,
    })
}

/// Appends an accepted row's values to the column builders.
fn append(builders: &mut [Builder], parsed: &[Value], record: &ByteRecord) {
    for (i, value) in parsed.iter().enumerate() {
        match (&mut builders[i], *value) {
            (Builder::Int(b), Value::Int(x)) => b.append_value(x),
            (Builder::Float(b), Value::Float(x)) => b.append_value(x),
            (Builder::Bool(b), Value::Bool(x)) => b.append_value(x),
            (Builder::Str(b), Value::Str) => {
                // Validated as UTF-8 by parse_field.
                let text = trim_field(std::str::from_utf8(&record[i]).unwrap_or_default());
                b.append_value(text);
            }
            (Builder::Int(b), _) => b.append_null(),
            (Builder::Float(b), _) => b.append_null(),
            (Builder::Bool(b), _) => b.append_null(),
            (Builder::Str(b), _) => b.append_null(),
        }
    }
}

/// Feeds a column of accepted rows to its profile, in row order (the same values, in the
/// same order, as feeding it row by row).
fn profile_array(array: &dyn arrow_array::Array, acc: &mut Acc) {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};
    match (array.data_type(), acc) {
        (DataType::Int64, Acc::Numeric(a)) => {
            for x in array.as_primitive::<Int64Type>() {
                a.push(x.map(|x| x as f64));
            }
        }
        (DataType::Float64, Acc::Numeric(a)) => {
            for x in array.as_primitive::<Float64Type>() {
                a.push(x);
            }
        }
        (DataType::Boolean, Acc::Category(a)) => {
            for x in array.as_boolean() {
                a.push(x.map(|x| if x { "true" } else { "false" }));
            }
        }
        (DataType::Utf8, Acc::Category(a)) => {
            for x in array.as_string::<i32>() {
                a.push(x);
            }
        }
        // The builders and accumulators are made from the same column types.
        _ => {}
    }
}

/// The profile of every column; undeclared columns learn their bounds (numeric) or values
/// (categorical, when few) from it.
fn finish_profile(columns: &mut [ColumnSchema], accs: Vec<Acc>) -> BTreeMap<String, ColumnProfile> {
    let mut profile_columns = BTreeMap::new();
    for (column, acc) in columns.iter_mut().zip(accs) {
        let p = match acc {
            Acc::Numeric(a) => a.finish(),
            Acc::Category(a) => a.finish(),
        };
        if !column.declared {
            if column.kind.is_numeric() {
                column.min = p.min;
                column.max = p.max;
            } else if column.kind == ColumnType::Categorical && p.frequencies.len() <= MAX_DOMAIN {
                column.values = Some(p.frequencies.keys().cloned().collect());
            }
        }
        profile_columns.insert(column.name.clone(), p);
    }
    profile_columns
}

/// A classification label needs its classes: exactly two for binary, two or more else.
fn check_label_classes(
    config: &IngestConfig,
    profile_columns: &BTreeMap<String, ColumnProfile>,
) -> Result<(), DatasetError> {
    if config.task != TaskKind::Regression {
        let classes = &profile_columns[&config.label].frequencies;
        let (ok, needed) = match config.task {
            TaskKind::Binary => (classes.len() == 2, "exactly 2"),
            _ => (classes.len() >= 2, "at least 2"),
        };
        if !ok {
            return Err(DatasetError::LabelClasses {
                label: config.label.clone(),
                found: classes.len(),
                values: classes
                    .keys()
                    .take(10)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                task: match config.task {
                    TaskKind::Binary => "binary",
                    _ => "multiclass",
                },
                needed,
            });
        }
    }
    Ok(())
}

mod check;
mod histogram;
mod infer;
pub mod parts;
mod pipeline;
#[cfg(test)]
mod tests;
