//! `lambdaml captures export`: a model's capture records as one CSV or Parquet table — a
//! row per scored row (a refused request is one row with its error), each input under its
//! feature name, the answer next to it — for people and tools that do not read JSON lines.
//!
//! The records are read one capture file at a time (memory bounded by a file, 4 MB by
//! default), in time order. The columns are the union of every registered version's inputs
//! and classes, so traffic answered by different versions lands in one table.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use arrow_array::builder::{Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use lambdaml::capture::{CaptureRecord, CapturedValue};
use lambdaml::dataset::ColumnType;
use lambdaml::features::{LabelEncoding, format_number};
use lambdaml::layout;
use lambdaml::model::ModelManifest;
use lambdaml::registry::RegistryStore;
use lambdaml::store::ObjectStoreExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::Serialize;

use crate::ctx::Ctx;
use crate::output::emit;

/// `lambdaml captures …`.
#[derive(Debug, Subcommand)]
pub enum CapturesCommand {
    /// Write a model's captured requests and answers as CSV or Parquet: one row per scored
    /// row (a refused request is one row with its error), each input under its feature name.
    Export(ExportArgs),
}

/// `lambdaml captures export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The model.
    #[arg(long)]
    pub model: String,
    /// The file to write: .csv or .parquet (or say which with --format).
    #[arg(long)]
    pub out: PathBuf,
    /// The format, when --out's extension does not say it.
    #[arg(long, value_enum)]
    pub format: Option<ExportFormat>,
    /// Only requests at or after this time (RFC 3339).
    #[arg(long)]
    pub from: Option<String>,
    /// Only requests before this time (RFC 3339).
    #[arg(long)]
    pub to: Option<String>,
}

/// What `captures export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// Comma-separated, with a header.
    Csv,
    /// Apache Parquet (snappy); numeric inputs and outputs as doubles.
    Parquet,
}

/// What an export did.
#[derive(Debug, Serialize)]
struct Exported {
    out: String,
    format: ExportFormat,
    /// Capture files read.
    files: usize,
    /// Requests written (accepted and refused).
    requests: u64,
    /// Table rows written.
    rows: u64,
    /// Refused requests among them.
    refused: u64,
    /// Lines that were not capture records (left out, counted).
    unreadable_lines: u64,
    /// A shadow version's copies of requests (left out: not traffic; `lambdaml monitor`
    /// compares them with production).
    shadow_records: u64,
    /// Values a numeric column could not hold (text that is not a number; empty in
    /// Parquet, kept in CSV).
    non_numeric_values: u64,
}

/// The table's columns: fixed ones, then the union of the versions' inputs and outputs.
struct Columns {
    inputs: Vec<(String, ColumnType)>,
    classes: Option<Vec<String>>,
    /// Per version: where its inputs and classes go.
    versions: BTreeMap<String, (Vec<usize>, Vec<usize>)>,
}

const FIXED: [&str; 6] = [
    "request_id",
    "timestamp",
    "version",
    "status",
    "latency_us",
    "row",
];

impl Columns {
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = FIXED.iter().map(|s| s.to_string()).collect();
        names.extend(self.inputs.iter().map(|(n, _)| n.clone()));
        match &self.classes {
            Some(classes) => {
                names.push("label".to_string());
                names.extend(classes.iter().map(|c| format!("p({c})")));
            }
            None => names.push("prediction".to_string()),
        }
        names.push("error".to_string());
        names
    }

    /// Whether each column holds numbers (`Some(true)` integers, `Some(false)` doubles) or
    /// text (`None`).
    fn numeric(&self) -> Vec<Option<bool>> {
        let mut kinds = vec![None, None, None, Some(true), Some(true), Some(true)];
        kinds.extend(
            self.inputs
                .iter()
                .map(|(_, k)| k.is_numeric().then_some(false)),
        );
        match &self.classes {
            Some(classes) => {
                kinds.push(None);
                kinds.extend(classes.iter().map(|_| Some(false)));
            }
            None => kinds.push(Some(false)),
        }
        kinds.push(None);
        kinds
    }
}

/// One cell of the table.
#[derive(Debug, Clone)]
enum Cell {
    Null,
    Int(i64),
    Num(f64),
    Text(String),
}

pub async fn captures(ctx: &Ctx, command: CapturesCommand) -> Result<()> {
    match command {
        CapturesCommand::Export(args) => export(ctx, args).await,
    }
}

fn parse_time(what: &str, text: &Option<String>) -> Result<Option<DateTime<Utc>>> {
    text.as_deref()
        .map(|t| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| anyhow!("--{what} {t:?} is not an RFC 3339 time ({e})"))
        })
        .transpose()
}

async fn export(ctx: &Ctx, args: ExportArgs) -> Result<()> {
    let format = match args.format {
        Some(f) => f,
        None => match args.out.extension().and_then(|e| e.to_str()) {
            Some("csv") => ExportFormat::Csv,
            Some("parquet") => ExportFormat::Parquet,
            _ => bail!(
                "{}: name it .csv or .parquet, or say --format csv|parquet",
                args.out.display()
            ),
        },
    };
    let from = parse_time("from", &args.from)?;
    let to = parse_time("to", &args.to)?;
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        bail!("--from {f} is not before --to {t}");
    }
    let columns = columns(ctx, &args.model).await?;
    let prefix = layout::records_of(layout::CAPTURES, &args.model);
    let mut keys: Vec<_> = ctx
        .store
        .list_all(&prefix)
        .await?
        .into_iter()
        .filter(|m| hour_in(m.key.as_str(), from, to))
        .map(|m| m.key)
        .collect();
    keys.sort();
    let mut sink = Sink::create(&args.out, format, &columns)?;
    let mut done = Exported {
        out: args.out.display().to_string(),
        format,
        files: keys.len(),
        requests: 0,
        rows: 0,
        refused: 0,
        unreadable_lines: 0,
        shadow_records: 0,
        non_numeric_values: 0,
    };
    for key in &keys {
        let object = ctx.store.get(key).await?;
        let mut rows = Vec::new();
        for line in object
            .bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
        {
            let Ok(record) = serde_json::from_slice::<CaptureRecord>(line) else {
                done.unreadable_lines += 1;
                continue;
            };
            let at = DateTime::parse_from_rfc3339(&record.timestamp)
                .map(|t| t.with_timezone(&Utc))
                .ok();
            let inside =
                at.is_some_and(|at| from.is_none_or(|f| at >= f) && to.is_none_or(|t| at < t));
            if !inside {
                continue;
            }
            if record.role == Some(lambdaml::registry::Role::Shadow) {
                done.shadow_records += 1;
                continue;
            }
            done.requests += 1;
            if record.rows == 0 || record.inputs.is_empty() {
                done.refused += 1;
            }
            table_rows(&record, &columns, &mut rows);
        }
        done.rows += rows.len() as u64;
        done.non_numeric_values += sink.write(&rows)?;
    }
    sink.finish()?;
    emit(ctx.json, &done, |d| {
        format!(
            "{} rows ({} requests, {} refused) from {} capture files written to {}{}\n",
            d.rows,
            d.requests,
            d.refused,
            d.files,
            d.out,
            if d.unreadable_lines > 0 {
                format!("; {} lines were not capture records", d.unreadable_lines)
            } else {
                String::new()
            }
        ) + &if d.shadow_records > 0 {
            format!(
                "{} shadow records left out (a shadow's copies of requests, not traffic)\n",
                d.shadow_records
            )
        } else {
            String::new()
        }
    });
    Ok(())
}

/// Whether a capture key's hour folder can hold requests in `[from, to)`.
fn hour_in(key: &str, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> bool {
    layout::record_hour(key).is_some_and(|hour| {
        from.is_none_or(|f| hour + chrono::Duration::hours(1) > f) && to.is_none_or(|t| hour < t)
    })
}

/// The columns from every registered version's manifest (production's first).
async fn columns(ctx: &Ctx, model: &str) -> Result<Columns> {
    let Some((registry, _)) = RegistryStore::new(ctx.store.clone())
        .load(model)
        .await
        .with_context(|| format!("reading the registry of {model}"))?
    else {
        bail!("no model {model:?} in the registry of {}", ctx.store.url());
    };
    let mut order: Vec<&String> = registry.production.iter().collect();
    order.extend(
        registry
            .versions
            .keys()
            .filter(|v| Some(*v) != registry.production.as_ref()),
    );
    let mut columns = Columns {
        inputs: Vec::new(),
        classes: None,
        versions: BTreeMap::new(),
    };
    let mut regression = false;
    let mut manifests = Vec::new();
    for version in order {
        let manifest: ModelManifest = ctx
            .store
            .get_json(&layout::model_manifest(model, version)?)
            .await
            .with_context(|| format!("reading the manifest of {model} version {version}"))?;
        for input in &manifest.pipeline.inputs {
            if !columns.inputs.iter().any(|(n, _)| *n == input.name) {
                columns.inputs.push((input.name.clone(), input.kind));
            }
        }
        match &manifest.pipeline.label {
            LabelEncoding::Classes { classes, .. } => {
                let all = columns.classes.get_or_insert_with(Vec::new);
                for c in classes {
                    if !all.contains(c) {
                        all.push(c.clone());
                    }
                }
            }
            LabelEncoding::Regression { .. } => regression = true,
        }
        manifests.push(manifest);
    }
    if regression && columns.classes.is_some() {
        bail!("the versions of {model} mix classification and regression; export them separately");
    }
    for manifest in manifests {
        let inputs = manifest
            .pipeline
            .inputs
            .iter()
            .map(|i| {
                columns
                    .inputs
                    .iter()
                    .position(|(n, _)| *n == i.name)
                    .unwrap_or_default()
            })
            .collect();
        let classes = match (&manifest.pipeline.label, &columns.classes) {
            (LabelEncoding::Classes { classes, .. }, Some(all)) => classes
                .iter()
                .map(|c| all.iter().position(|a| a == c).unwrap_or_default())
                .collect(),
            _ => Vec::new(),
        };
        columns.versions.insert(manifest.version, (inputs, classes));
    }
    Ok(columns)
}

/// The table rows of one record: one per scored row, or one carrying the error.
fn table_rows(record: &CaptureRecord, columns: &Columns, out: &mut Vec<Vec<Cell>>) {
    let width = FIXED.len()
        + columns.inputs.len()
        + columns.classes.as_ref().map_or(1, |c| c.len() + 1)
        + 1;
    let fixed = |row: Option<usize>| {
        let mut cells = vec![Cell::Null; width];
        cells[0] = Cell::Text(record.request_id.clone());
        cells[1] = Cell::Text(record.timestamp.clone());
        cells[2] = record.version.clone().map_or(Cell::Null, Cell::Text);
        cells[3] = Cell::Int(i64::from(record.status));
        cells[4] = Cell::Int(record.latency_us as i64);
        cells[5] = row.map_or(Cell::Null, |r| Cell::Int(r as i64));
        cells
    };
    let mapping = record
        .version
        .as_ref()
        .and_then(|v| columns.versions.get(v));
    let (Some((input_at, class_at)), false) = (mapping, record.inputs.is_empty()) else {
        let mut cells = fixed(None);
        let reasons: Vec<String> = record
            .errors
            .iter()
            .map(|e| match &e.field {
                Some(f) => format!("{f}: {}", e.reason),
                None => e.reason.clone(),
            })
            .collect();
        cells[width - 1] = Cell::Text(if reasons.is_empty() && record.status == 200 {
            "answered by a version no longer in the registry".to_string()
        } else {
            reasons.join("; ")
        });
        out.push(cells);
        return;
    };
    let first_input = FIXED.len();
    let first_output = first_input + columns.inputs.len();
    let outputs_per_row = if columns.classes.is_some() {
        class_at.len()
    } else {
        1
    };
    for (r, values) in record.inputs.iter().enumerate() {
        let mut cells = fixed(Some(r));
        for (value, &at) in values.iter().zip(input_at) {
            cells[first_input + at] = match value {
                CapturedValue::Null => Cell::Null,
                CapturedValue::Number(x) => Cell::Num(*x),
                CapturedValue::Text(t) => Cell::Text(t.clone()),
            };
        }
        let outputs = record
            .outputs
            .get(r * outputs_per_row..(r + 1) * outputs_per_row)
            .unwrap_or_default();
        if columns.classes.is_some() {
            cells[first_output] = record
                .labels
                .get(r)
                .map_or(Cell::Null, |l| Cell::Text(l.clone()));
            for (p, &at) in outputs.iter().zip(class_at) {
                cells[first_output + 1 + at] = Cell::Num(*p);
            }
        } else if let Some(&y) = outputs.first() {
            cells[first_output] = Cell::Num(y);
        }
        out.push(cells);
    }
}

/// Where the rows go.
enum Sink {
    Csv(csv::Writer<File>),
    Parquet {
        writer: ArrowWriter<File>,
        schema: Arc<Schema>,
        numeric: Vec<Option<bool>>,
    },
}

impl Sink {
    fn create(path: &Path, format: ExportFormat, columns: &Columns) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let names = columns.names();
        Ok(match format {
            ExportFormat::Csv => {
                let mut writer = csv::Writer::from_writer(file);
                writer.write_record(&names)?;
                Sink::Csv(writer)
            }
            ExportFormat::Parquet => {
                let numeric = columns.numeric();
                let schema = Arc::new(Schema::new(
                    names
                        .iter()
                        .zip(&numeric)
                        .map(|(name, kind)| {
                            let t = match kind {
                                Some(true) => DataType::Int64,
                                Some(false) => DataType::Float64,
                                None => DataType::Utf8,
                            };
                            Field::new(name, t, true)
                        })
                        .collect::<Vec<_>>(),
                ));
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .build();
                let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
                Sink::Parquet {
                    writer,
                    schema,
                    numeric,
                }
            }
        })
    }

    /// Writes rows; returns how many text values numeric columns could not hold.
    fn write(&mut self, rows: &[Vec<Cell>]) -> Result<u64> {
        match self {
            Sink::Csv(writer) => {
                let mut text = Vec::new();
                for row in rows {
                    text.clear();
                    text.extend(row.iter().map(|c| match c {
                        Cell::Null => String::new(),
                        Cell::Int(i) => i.to_string(),
                        Cell::Num(x) => format_number(*x),
                        Cell::Text(t) => t.clone(),
                    }));
                    writer.write_record(&text)?;
                }
                Ok(0)
            }
            Sink::Parquet {
                writer,
                schema,
                numeric,
            } => {
                if rows.is_empty() {
                    return Ok(0);
                }
                let mut lost = 0;
                let arrays: Vec<ArrayRef> = numeric
                    .iter()
                    .enumerate()
                    .map(|(i, kind)| -> ArrayRef {
                        match kind {
                            Some(true) => {
                                let mut b = Int64Builder::with_capacity(rows.len());
                                for row in rows {
                                    b.append_option(match row[i] {
                                        Cell::Int(v) => Some(v),
                                        _ => None,
                                    });
                                }
                                Arc::new(b.finish())
                            }
                            Some(false) => {
                                let mut b = Float64Builder::with_capacity(rows.len());
                                for row in rows {
                                    b.append_option(match &row[i] {
                                        Cell::Num(x) => Some(*x),
                                        Cell::Int(v) => Some(*v as f64),
                                        // CSV requests are captured as the text sent.
                                        Cell::Text(t) => {
                                            let x = t.trim().parse::<f64>().ok();
                                            lost += u64::from(x.is_none());
                                            x
                                        }
                                        Cell::Null => None,
                                    });
                                }
                                Arc::new(b.finish())
                            }
                            None => {
                                let mut b = StringBuilder::new();
                                for row in rows {
                                    match &row[i] {
                                        Cell::Null => b.append_null(),
                                        Cell::Int(v) => b.append_value(v.to_string()),
                                        Cell::Num(x) => b.append_value(format_number(*x)),
                                        Cell::Text(t) => b.append_value(t),
                                    }
                                }
                                Arc::new(b.finish())
                            }
                        }
                    })
                    .collect();
                writer.write(&RecordBatch::try_new(schema.clone(), arrays)?)?;
                Ok(lost)
            }
        }
    }

    fn finish(self) -> Result<()> {
        match self {
            Sink::Csv(mut writer) => writer.flush()?,
            Sink::Parquet { writer, .. } => {
                writer.close()?;
            }
        }
        Ok(())
    }
}
