//! Ingest of one raw file: infer or check the schema, quarantine bad rows, write Parquet,
//! profile.
//!
//! Two streaming passes over the (local) file. The first infers each undeclared column's
//! type: boolean when every value is a boolean word, integer or float when at least 99 %
//! of its non-missing values are numbers (the rest are then bad rows), categorical
//! otherwise. The second validates every row against the resulting schema, writes the
//! valid rows to Parquet in bounded row groups, appends the rejected ones to
//! `rejected.jsonl` with their line number and reasons, and feeds the profile.

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
use serde::{Deserialize, Serialize};

use super::profile::{CategoryAcc, ColumnProfile, NumericAcc};
use super::{
    ColumnSchema, ColumnType, DatasetError, Format, MAX_DOMAIN, Profile, Schema, open_rows,
};
use crate::spec::{ColumnDecl, ModelSpec, TaskKind};

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

#[derive(Debug, Default)]
struct Inference {
    nulls: u64,
    values: u64,
    bools: u64,
    numbers: u64,
    integers: u64,
    min: f64,
    max: f64,
    distinct: HashSet<String>,
}

fn is_bool_word(v: &str) -> Option<bool> {
    // No allocation: this runs for every field of the inference pass.
    if v.len() > 5 {
        return None;
    }
    if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("yes") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") || v.eq_ignore_ascii_case("no") {
        Some(false)
    } else {
        None
    }
}

/// The missing-value words, with a fast path: when no word starts like a number, a field
/// that does is never looked up.
struct Nulls {
    words: HashSet<String>,
    numeric_words: bool,
}

fn starts_numeric(v: &str) -> bool {
    v.as_bytes()
        .first()
        .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.'))
}

impl Nulls {
    fn new(words: &[String]) -> Self {
        Nulls {
            numeric_words: words.iter().any(|w| starts_numeric(w)),
            words: words.iter().cloned().collect(),
        }
    }

    fn is_null(&self, v: &str) -> bool {
        if v.is_empty() {
            return true;
        }
        if !self.numeric_words && starts_numeric(v) {
            return false;
        }
        self.words.contains(v)
    }
}

/// Whether `v` is written as a whole number (optional sign, then digits).
fn is_integer_text(v: &str) -> bool {
    let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
    !digits.is_empty() && digits.len() <= 18 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Pass one: the schema.
fn infer(
    path: &Path,
    format: Format,
    config: &IngestConfig,
    nulls: &Nulls,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Vec<String>, Vec<Inference>, u64), DatasetError> {
    let mut reader = open_rows(path, format, config.delimiter)?;
    let headers = reader.headers().to_vec();
    let mut stats: Vec<Inference> = headers
        .iter()
        .map(|_| Inference {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            ..Inference::default()
        })
        .collect();
    let mut record = ByteRecord::new();
    let mut rows = 0u64;
    while reader.next_row(&mut record)?.is_some() {
        rows += 1;
        if rows.is_multiple_of(CHUNK_ROWS as u64) {
            progress(rows);
        }
        if record.len() != headers.len() || reader.cut() {
            continue;
        }
        for (field, s) in record.iter().zip(stats.iter_mut()) {
            let Ok(text) = std::str::from_utf8(field) else {
                continue;
            };
            let v = text.trim();
            if nulls.is_null(v) {
                s.nulls += 1;
                continue;
            }
            s.values += 1;
            if !starts_numeric(v) && is_bool_word(v).is_some() {
                s.bools += 1;
            }
            if let Ok(x) = v.parse::<f64>() {
                s.numbers += 1;
                if is_integer_text(v) {
                    s.integers += 1;
                }
                if x.is_finite() {
                    s.min = s.min.min(x);
                    s.max = s.max.max(x);
                }
            } else if s.distinct.len() <= MAX_DOMAIN && v.len() <= MAX_FIELD_BYTES {
                s.distinct.insert(v.to_string());
            }
        }
    }
    if rows == 0 {
        return Err(DatasetError::NoRows);
    }
    Ok((headers, stats, rows))
}

fn decide(name: &str, s: &Inference, config: &IngestConfig) -> ColumnSchema {
    let is_label = name == config.label;
    if let Some(decl) = config.columns.get(name) {
        return ColumnSchema {
            name: name.to_string(),
            kind: decl.kind.into(),
            nullable: decl.nullable && !is_label,
            declared: true,
            min: decl.min,
            max: decl.max,
            values: decl.values.clone(),
        };
    }
    let kind = if is_label {
        match config.task {
            TaskKind::Regression => ColumnType::Float,
            _ => ColumnType::Categorical,
        }
    } else if s.values > 0 && s.bools == s.values {
        ColumnType::Boolean
    } else if s.numbers > 0 && (s.values - s.numbers) as f64 <= NUMERIC_TOLERANCE * s.values as f64
    {
        if s.integers == s.numbers {
            ColumnType::Integer
        } else {
            ColumnType::Float
        }
    } else if s.values == 0 {
        ColumnType::Float
    } else {
        ColumnType::Categorical
    };
    ColumnSchema {
        name: name.to_string(),
        kind,
        nullable: !is_label && s.nulls > 0,
        declared: false,
        min: None,
        max: None,
        values: None,
    }
}

enum Builder {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
}

impl Builder {
    fn new(kind: ColumnType) -> Self {
        match kind {
            ColumnType::Integer => Builder::Int(Int64Builder::with_capacity(CHUNK_ROWS)),
            ColumnType::Float => Builder::Float(Float64Builder::with_capacity(CHUNK_ROWS)),
            ColumnType::Boolean => Builder::Bool(BooleanBuilder::with_capacity(CHUNK_ROWS)),
            ColumnType::Categorical => Builder::Str(StringBuilder::new()),
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

/// A parsed, valid field.
#[derive(Debug, Clone, Copy)]
enum Value {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str,
}

/// Checks one field against its column; `Err` is the reason it is refused.
fn parse_field(
    column: &ColumnSchema,
    is_label: bool,
    field: &[u8],
    nulls: &Nulls,
    domain: Option<&HashSet<&str>>,
) -> Result<Value, String> {
    if field.len() > MAX_FIELD_BYTES {
        return Err(format!(
            "field is {} bytes, over the {MAX_FIELD_BYTES}-byte limit",
            field.len()
        ));
    }
    let text = std::str::from_utf8(field).map_err(|_| "not valid UTF-8".to_string())?;
    let v = text.trim();
    if nulls.is_null(v) {
        return if is_label {
            Err("missing label".to_string())
        } else if column.nullable {
            Ok(Value::Null)
        } else {
            Err("missing value in a non-nullable column".to_string())
        };
    }
    let in_range = |x: f64| -> Result<(), String> {
        if let Some(lo) = column.min
            && x < lo
        {
            return Err(format!("{v} is below the declared minimum {lo}"));
        }
        if let Some(hi) = column.max
            && x > hi
        {
            return Err(format!("{v} is above the declared maximum {hi}"));
        }
        Ok(())
    };
    match column.kind {
        ColumnType::Integer => {
            let x: i64 = v
                .parse()
                .map_err(|_| format!("cannot read {:?} as an integer", shorten(v)))?;
            in_range(x as f64)?;
            Ok(Value::Int(x))
        }
        ColumnType::Float => {
            let x: f64 = v
                .parse()
                .map_err(|_| format!("cannot read {:?} as a number", shorten(v)))?;
            if !x.is_finite() {
                return Err(format!("non-finite value {v:?}"));
            }
            in_range(x)?;
            Ok(Value::Float(x))
        }
        ColumnType::Boolean => is_bool_word(v)
            .or(match v {
                "1" => Some(true),
                "0" => Some(false),
                _ => None,
            })
            .map(Value::Bool)
            .ok_or_else(|| format!("cannot read {:?} as a boolean", shorten(v))),
        ColumnType::Categorical => match domain {
            Some(domain) if !domain.contains(v) => {
                Err(format!("{:?} is not in the declared domain", shorten(v)))
            }
            _ => Ok(Value::Str),
        },
    }
}

fn shorten(v: &str) -> String {
    if v.len() <= 64 {
        v.to_string()
    } else {
        let mut end = 64;
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &v[..end])
    }
}

/// A field as a JSON-safe string: valid UTF-8 as is, other bytes as `\xNN`, so a
/// quarantined row keeps every byte.
fn field_text(field: &[u8]) -> String {
    let mut out = String::with_capacity(field.len());
    for chunk in field.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

#[derive(Serialize)]
struct Rejected<'a> {
    line: u64,
    reasons: &'a [RejectReason],
    fields: Vec<String>,
}

/// Why one row was refused.
#[derive(Debug, Clone, Serialize)]
struct RejectReason {
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<String>,
    reason: String,
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.column {
            Some(c) => write!(f, "{c}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

enum Acc {
    Numeric(Box<NumericAcc>),
    Category(CategoryAcc),
}

/// Ingests `path` (as `format`) into `out_dir`: see the module docs. `progress` is called
/// with the rows read so far, every few tens of thousands of rows, in each pass.
pub fn ingest_file(
    path: &Path,
    format: Format,
    config: &IngestConfig,
    out_dir: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<IngestOutput, DatasetError> {
    let nulls = Nulls::new(&config.null_values);
    let (headers, inference, _) = infer(path, format, config, &nulls, progress)?;
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
    let mut columns: Vec<ColumnSchema> = headers
        .iter()
        .zip(&inference)
        .map(|(name, s)| decide(name, s, config))
        .collect();
    let label_index = headers.iter().position(|h| *h == config.label).unwrap_or(0);

    let (mut writer, arrow_schema, data_path) = parquet_writer(&columns, out_dir)?;
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
    let mut builders: Vec<Builder> = columns.iter().map(|c| Builder::new(c.kind)).collect();
    let mut accs = accumulators(&columns, &inference);

    let mut reader = open_rows(path, format, config.delimiter)?;
    let mut record = ByteRecord::new();
    let mut parsed: Vec<Value> = Vec::with_capacity(columns.len());
    let mut reasons: Vec<RejectReason> = Vec::new();
    let (mut rows, mut accepted, mut rejected) = (0u64, 0u64, 0u64);
    let mut first_rejection: Option<(u64, String)> = None;
    let mut in_chunk = 0usize;
    while let Some(line) = reader.next_row(&mut record)? {
        rows += 1;
        if rows.is_multiple_of(CHUNK_ROWS as u64) {
            progress(rows);
        }
        parsed.clear();
        reasons.clear();
        check_row(
            &Row {
                record: &record,
                cut: reader.cut(),
                label_index,
            },
            &columns,
            &nulls,
            &domains,
            &mut parsed,
            &mut reasons,
        );
        if !reasons.is_empty() {
            rejected += 1;
            if first_rejection.is_none() {
                first_rejection = Some((line, reasons[0].to_string()));
            }
            write_rejected(&mut rejected_out, line, &reasons, &record, reader.cut())?;
            continue;
        }
        accepted += 1;
        append(&mut builders, &mut accs, &parsed, &record);
        in_chunk += 1;
        if in_chunk == CHUNK_ROWS {
            let arrays = builders.iter_mut().map(Builder::finish).collect();
            writer.write(&RecordBatch::try_new(arrow_schema.clone(), arrays)?)?;
            in_chunk = 0;
        }
    }
    if in_chunk > 0 {
        let arrays = builders.iter_mut().map(Builder::finish).collect();
        writer.write(&RecordBatch::try_new(arrow_schema.clone(), arrays)?)?;
    }
    writer.close()?;
    rejected_out.flush()?;

    if accepted == 0 {
        let (first_line, first_reason) = first_rejection.unwrap_or((0, String::new()));
        return Err(DatasetError::NoValidRows {
            rejected,
            first_line,
            first_reason,
        });
    }

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

/// The Parquet writer of `data.parquet`: one column per schema column, Snappy, a row
/// group per chunk.
fn parquet_writer(
    columns: &[ColumnSchema],
    out_dir: &Path,
) -> Result<(ArrowWriter<File>, Arc<ArrowSchema>, std::path::PathBuf), DatasetError> {
    let arrow_schema = Arc::new(ArrowSchema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, arrow_type(c.kind), c.nullable))
            .collect::<Vec<_>>(),
    ));
    let data_path = out_dir.join("data.parquet");
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(CHUNK_ROWS))
        .set_created_by(format!("lambdaml {}", env!("CARGO_PKG_VERSION")))
        .build();
    let writer =
        ArrowWriter::try_new(File::create(&data_path)?, arrow_schema.clone(), Some(props))?;
    Ok((writer, arrow_schema, data_path))
}

/// A row as read.
struct Row<'a> {
    record: &'a ByteRecord,
    /// Whether the reader cut it short (longer than the record limit).
    cut: bool,
    label_index: usize,
}

/// Parses a row into `parsed`, or says why it is refused in `reasons`: a cut record, the
/// wrong field count, or every field that does not parse as its column.
fn check_row(
    row: &Row<'_>,
    columns: &[ColumnSchema],
    nulls: &Nulls,
    domains: &[Option<HashSet<&str>>],
    parsed: &mut Vec<Value>,
    reasons: &mut Vec<RejectReason>,
) {
    let (record, label_index) = (row.record, row.label_index);
    if row.cut {
        reasons.push(RejectReason {
            column: None,
            reason: format!(
                "the record is longer than {} bytes; it was skipped unread",
                super::read::MAX_RECORD_BYTES
            ),
        });
    } else if record.len() != columns.len() {
        reasons.push(RejectReason {
            column: None,
            reason: format!("expected {} fields, found {}", columns.len(), record.len()),
        });
    } else {
        for (i, field) in record.iter().enumerate() {
            match parse_field(
                &columns[i],
                i == label_index,
                field,
                nulls,
                domains[i].as_ref(),
            ) {
                Ok(v) => parsed.push(v),
                Err(reason) => reasons.push(RejectReason {
                    column: Some(columns[i].name.clone()),
                    reason,
                }),
            }
        }
    }
}

/// One line of `rejected.jsonl`: the row's line, why, and its fields (a cut record keeps
/// its first bytes only; the raw file holds the rest).
fn write_rejected(
    out: &mut impl Write,
    line: u64,
    reasons: &[RejectReason],
    record: &ByteRecord,
    cut: bool,
) -> std::io::Result<()> {
    let entry = Rejected {
        line,
        reasons,
        // A cut record keeps its first bytes only (the raw file holds the rest).
        fields: if cut {
            record
                .iter()
                .take(16)
                .map(|f| field_text(&f[..f.len().min(256)]))
                .collect()
        } else {
            record.iter().map(field_text).collect()
        },
    };
    serde_json::to_writer(&mut *out, &entry).map_err(std::io::Error::other)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// One accumulator per column: numeric ones know the column's range (its declared bounds
/// within the inferred ones) for their histogram, each with its own seed.
fn accumulators(columns: &[ColumnSchema], inference: &[Inference]) -> Vec<Acc> {
    columns
        .iter()
        .zip(inference)
        .enumerate()
        .map(|(i, (c, s))| {
            if c.kind.is_numeric() {
                let mut lo = s.min;
                let mut hi = s.max;
                if let Some(m) = c.min {
                    lo = lo.max(m);
                }
                if let Some(m) = c.max {
                    hi = hi.min(m);
                }
                let range = (lo.is_finite() && hi.is_finite() && lo <= hi).then_some((lo, hi));
                Acc::Numeric(Box::new(NumericAcc::new(c.kind, range, 0x5EED + i as u64)))
            } else {
                Acc::Category(CategoryAcc::new(c.kind))
            }
        })
        .collect()
}

/// Appends an accepted row's values to the column builders and the profile.
fn append(builders: &mut [Builder], accs: &mut [Acc], parsed: &[Value], record: &ByteRecord) {
    for (i, value) in parsed.iter().enumerate() {
        match (&mut builders[i], *value, &mut accs[i]) {
            (Builder::Int(b), Value::Int(x), Acc::Numeric(a)) => {
                b.append_value(x);
                a.push(Some(x as f64));
            }
            (Builder::Float(b), Value::Float(x), Acc::Numeric(a)) => {
                b.append_value(x);
                a.push(Some(x));
            }
            (Builder::Bool(b), Value::Bool(x), Acc::Category(a)) => {
                b.append_value(x);
                a.push(Some(if x { "true" } else { "false" }));
            }
            (Builder::Str(b), Value::Str, Acc::Category(a)) => {
                // Validated as UTF-8 by parse_field.
                let text = std::str::from_utf8(&record[i]).unwrap_or_default().trim();
                b.append_value(text);
                a.push(Some(text));
            }
            (b, _, a) => {
                match b {
                    Builder::Int(b) => b.append_null(),
                    Builder::Float(b) => b.append_null(),
                    Builder::Bool(b) => b.append_null(),
                    Builder::Str(b) => b.append_null(),
                }
                match a {
                    Acc::Numeric(a) => a.push(None),
                    Acc::Category(a) => a.push(None),
                }
            }
        }
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

#[cfg(test)]
mod tests;
