//! Request parsers: every accepted request form becomes a [`Frame`] — rows of raw values in
//! the model's input order — or an [`ApiError`] naming the row and field at fault.
//!
//! - Open Inference Protocol (KServe V2) `infer` requests: one tensor per feature (shape
//!   `[N]` or `[N, 1]`), or one `[N, F]` tensor holding every feature in input order;
//!   JSON `data`, or the binary tensor extension (`Inference-Header-Content-Length`) that
//!   tritonclient uses by default.
//! - MLflow scoring: `dataframe_split`, `dataframe_records`, `instances` / `inputs` (records,
//!   rows in input order, or columns), and `text/csv` with a header.
//!
//! Parsers allocate per request, never per value where a borrow will do, and never panic on
//! any input (property tests feed them arbitrary bytes and JSON).

use std::collections::BTreeSet;

use axum::http::StatusCode;
use lambdaml::features::RawValue;
use lambdaml::spec::UnknownFeature;
use serde_json::{Map, Value};

use crate::error::{ApiError, Errors};
use crate::loader::LoadedModel;

/// Rows of raw values, `width` per row, in the model's input order.
#[derive(Debug)]
pub struct Frame<'a> {
    /// Row count.
    pub rows: usize,
    /// `rows × width` values.
    pub values: Vec<RawValue<'a>>,
    /// Unknown fields dropped (the spec says `features.unknown = "ignore"`).
    pub ignored: Vec<String>,
}

/// What a request may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Rows per request.
    pub max_rows: usize,
}

const HINT: &str = "the model's inputs are listed by GET /v2/models/<model>";

pub(crate) enum Col {
    Input(usize),
    Skip,
}

/// The most unknown names whose reason is remembered, and the most ignored names listed: a
/// body of distinct unknown keys must not grow either set past what its rows could hold.
const MAX_NAMES: usize = 1024;

pub(crate) struct Builder<'m, 'a> {
    pub(crate) model: &'m LoadedModel,
    pub(crate) rows: usize,
    pub(crate) values: Vec<RawValue<'a>>,
    set: Vec<bool>,
    pub(crate) errors: Errors,
    ignored: BTreeSet<String>,
    /// The reason given for each unknown name, computed once per name (a did-you-mean is
    /// an edit distance to every input; a request repeats its unknown names on every row).
    unknown: std::collections::HashMap<String, String>,
}

pub(crate) fn check_rows(rows: usize, limits: Limits) -> Result<(), ApiError> {
    if rows == 0 {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            None,
            "the request has no rows",
        ));
    }
    if rows > limits.max_rows {
        return Err(ApiError::field(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            format!(
                "{rows} rows is over this server's limit of {} rows per request; split the batch",
                limits.max_rows
            ),
        ));
    }
    Ok(())
}

impl<'m, 'a> Builder<'m, 'a> {
    fn new(model: &'m LoadedModel, rows: usize, limits: Limits) -> Result<Self, ApiError> {
        check_rows(rows, limits)?;
        let n = rows * model.width();
        Ok(Builder {
            model,
            rows,
            values: vec![RawValue::Missing; n],
            set: vec![false; n],
            errors: Errors::default(),
            ignored: BTreeSet::new(),
            unknown: std::collections::HashMap::new(),
        })
    }

    /// A builder with no rows yet, for parsers that learn the row count as they read
    /// ([`Builder::add_row`]).
    pub(crate) fn growing(model: &'m LoadedModel) -> Self {
        Builder {
            model,
            rows: 0,
            values: Vec::new(),
            set: Vec::new(),
            errors: Errors::default(),
            ignored: BTreeSet::new(),
            unknown: std::collections::HashMap::new(),
        }
    }

    /// Appends one row of missing values and returns its index.
    pub(crate) fn add_row(&mut self) -> usize {
        let width = self.model.width();
        self.values
            .resize(self.values.len() + width, RawValue::Missing);
        self.set.resize(self.set.len() + width, false);
        self.rows += 1;
        self.rows - 1
    }

    pub(crate) fn column(&mut self, name: &str, row: Option<usize>) -> Col {
        if let Some(&i) = self.model.index.get(name) {
            return Col::Input(i);
        }
        if !self.model.ignorable.contains(name) {
            match self.model.manifest.pipeline.unknown_features {
                UnknownFeature::Reject => {
                    if let Some(reason) = self.unknown.get(name) {
                        self.errors.push(row, Some(name), reason.clone());
                    } else {
                        // Past MAX_NAMES distinct names no did-you-mean is computed: an
                        // edit distance per name would make a body of distinct keys cost
                        // CPU in proportion to its size times the model's width.
                        if self.unknown.len() < MAX_NAMES {
                            let reason = match closest(name, self.model.index.keys()) {
                                Some(near) => format!("unknown feature; did you mean {near:?}?"),
                                None => format!("unknown feature ({HINT})"),
                            };
                            self.errors.push(row, Some(name), reason.clone());
                            self.unknown.insert(name.to_string(), reason);
                        } else {
                            self.errors
                                .push(row, Some(name), format!("unknown feature ({HINT})"));
                        }
                    }
                }
                UnknownFeature::Ignore => {
                    if self.ignored.len() < MAX_NAMES {
                        self.ignored.insert(name.to_string());
                    }
                }
            }
        }
        Col::Skip
    }

    pub(crate) fn put(&mut self, row: usize, input: usize, value: RawValue<'a>) {
        let at = row * self.model.width() + input;
        if self.set[at] {
            let name = &self.model.manifest.pipeline.inputs[input].name;
            self.errors.push(Some(row), Some(name), "given twice");
            return;
        }
        self.set[at] = true;
        self.values[at] = value;
    }

    /// Checks every input was given: per row (records), or per column (columnar forms,
    /// reported once).
    pub(crate) fn finish(mut self, per_row: bool) -> Result<Frame<'a>, ApiError> {
        let width = self.model.width();
        let inputs = &self.model.manifest.pipeline.inputs;
        if per_row {
            for row in 0..self.rows {
                for (i, feature) in inputs.iter().enumerate() {
                    if !self.set[row * width + i] {
                        self.errors.push(
                            Some(row),
                            Some(&feature.name),
                            "missing feature (send null to use the training imputation)",
                        );
                    }
                }
            }
        } else {
            for (i, feature) in inputs.iter().enumerate() {
                if self.rows > 0 && !self.set[i] {
                    self.errors.push(
                        None,
                        Some(&feature.name),
                        "missing feature (send null to use the training imputation)",
                    );
                }
            }
        }
        if !self.errors.is_empty() {
            return Err(ApiError::invalid(self.errors));
        }
        Ok(Frame {
            rows: self.rows,
            values: self.values,
            ignored: self.ignored.into_iter().collect(),
        })
    }
}

/// The known name nearest to `name` by edit distance, when it is close enough to be a typo.
fn closest<'n>(name: &str, known: impl Iterator<Item = &'n String>) -> Option<&'n str> {
    if name.len() > 256 {
        return None;
    }
    let target: Vec<char> = name.to_lowercase().chars().collect();
    let mut best: Option<(usize, &str)> = None;
    for k in known {
        let cand: Vec<char> = k.to_lowercase().chars().collect();
        let mut prev: Vec<usize> = (0..=cand.len()).collect();
        for (i, a) in target.iter().enumerate() {
            let mut cur = vec![i + 1; cand.len() + 1];
            for (j, b) in cand.iter().enumerate() {
                cur[j + 1] = (prev[j] + usize::from(a != b))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1);
            }
            prev = cur;
        }
        let d = prev[cand.len()];
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, k));
        }
    }
    best.filter(|(d, _)| *d <= 2.max(target.len() / 4))
        .map(|(_, k)| k)
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON scalar as a raw value.
fn scalar(v: &Value) -> Result<RawValue<'_>, String> {
    match v {
        Value::Null => Ok(RawValue::Missing),
        Value::Bool(b) => Ok(RawValue::Number(if *b { 1.0 } else { 0.0 })),
        Value::Number(n) => n
            .as_f64()
            .map(RawValue::Number)
            .ok_or_else(|| format!("number {n} is out of range")),
        Value::String(s) => Ok(RawValue::Text(s)),
        other => Err(format!("expected a single value, got {}", kind(other))),
    }
}

fn bad(field: &str, reason: impl Into<String>) -> ApiError {
    ApiError::field(StatusCode::BAD_REQUEST, Some(field), reason)
}

// ---------------------------------------------------------------------------------------
// MLflow

/// The keys an MLflow scoring body may have (one of the first four, plus `params`).
pub const MLFLOW_KEYS: [&str; 4] = [
    "dataframe_split",
    "dataframe_records",
    "instances",
    "inputs",
];

/// An MLflow JSON body.
pub fn mlflow_json<'a>(
    model: &LoadedModel,
    body: &'a Value,
    limits: Limits,
) -> Result<Frame<'a>, ApiError> {
    let Value::Object(obj) = body else {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            None,
            format!(
                "expected a JSON object with one of {}, got {}",
                MLFLOW_KEYS.join(", "),
                kind(body)
            ),
        ));
    };
    for key in obj.keys() {
        if !MLFLOW_KEYS.contains(&key.as_str()) && key != "params" {
            return Err(bad(
                key,
                format!("unknown key; expected one of {}", MLFLOW_KEYS.join(", ")),
            ));
        }
    }
    let present: Vec<&str> = MLFLOW_KEYS
        .iter()
        .copied()
        .filter(|k| obj.contains_key(*k))
        .collect();
    let [key] = present.as_slice() else {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            None,
            format!(
                "expected exactly one of {}, got {}",
                MLFLOW_KEYS.join(", "),
                if present.is_empty() {
                    "none".to_string()
                } else {
                    present.join(", ")
                }
            ),
        ));
    };
    let value = &obj[*key];
    match *key {
        "dataframe_split" => dataframe_split(model, key, value, limits),
        "dataframe_records" => match value {
            Value::Array(items) => records(model, key, items, limits),
            other => Err(bad(
                key,
                format!("expected an array of records, got {}", kind(other)),
            )),
        },
        _ => match value {
            Value::Array(items) => match items.first() {
                Some(Value::Object(_)) => records(model, key, items, limits),
                Some(Value::Array(_)) => positional(model, key, items, limits),
                Some(_) if model.width() == 1 => single_column(model, key, items, limits),
                Some(other) => Err(bad(
                    key,
                    format!(
                        "expected records (objects) or rows (arrays of {} values), got {}",
                        model.width(),
                        kind(other)
                    ),
                )),
                None => Err(ApiError::field(
                    StatusCode::BAD_REQUEST,
                    Some(key),
                    "the request has no rows",
                )),
            },
            Value::Object(columns) => columnar(model, key, columns, limits),
            other => Err(bad(
                key,
                format!("expected records, rows or columns, got {}", kind(other)),
            )),
        },
    }
}

fn single_column<'a>(
    model: &LoadedModel,
    key: &str,
    items: &'a [Value],
    limits: Limits,
) -> Result<Frame<'a>, ApiError> {
    let mut b = Builder::new(model, items.len(), limits)?;
    for (row, v) in items.iter().enumerate() {
        match scalar(v) {
            Ok(raw) => b.put(row, 0, raw),
            Err(reason) => b.errors.push(Some(row), Some(key), reason),
        }
    }
    b.finish(false)
}

fn dataframe_split<'a>(
    model: &LoadedModel,
    key: &str,
    value: &'a Value,
    limits: Limits,
) -> Result<Frame<'a>, ApiError> {
    let Value::Object(split) = value else {
        return Err(bad(
            key,
            format!(
                "expected an object with columns and data, got {}",
                kind(value)
            ),
        ));
    };
    for k in split.keys() {
        if !matches!(k.as_str(), "columns" | "data" | "index") {
            return Err(bad(
                &format!("{key}.{k}"),
                "unknown key; expected columns, data, index",
            ));
        }
    }
    let array = |name: &str, what: &str| match split.get(name) {
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(bad(
            &format!("{key}.{name}"),
            format!("expected an array of {what}, got {}", kind(other)),
        )),
        None => Err(bad(&format!("{key}.{name}"), "missing")),
    };
    let columns = array("columns", "column names")?;
    let data = array("data", "rows")?;
    let mut b = Builder::new(model, data.len(), limits)?;
    let mut cols = Vec::with_capacity(columns.len());
    let mut seen = BTreeSet::new();
    for c in columns {
        let Value::String(name) = c else {
            return Err(bad(
                &format!("{key}.columns"),
                format!("column names must be strings, got {}", kind(c)),
            ));
        };
        if !seen.insert(name.as_str()) {
            b.errors.push(None, Some(name), "column given twice");
        }
        cols.push(b.column(name, None));
    }
    for (row, r) in data.iter().enumerate() {
        let Value::Array(values) = r else {
            b.errors.push(
                Some(row),
                None,
                format!(
                    "expected an array of {} values, got {}",
                    cols.len(),
                    kind(r)
                ),
            );
            continue;
        };
        if values.len() != cols.len() {
            b.errors.push(
                Some(row),
                None,
                format!("has {} values for {} columns", values.len(), cols.len()),
            );
            continue;
        }
        for ((col, v), name) in cols.iter().zip(values).zip(columns) {
            if let Col::Input(i) = col {
                match scalar(v) {
                    Ok(raw) => b.put(row, *i, raw),
                    Err(reason) => b.errors.push(Some(row), name.as_str(), reason),
                }
            }
        }
    }
    if !b.errors.is_empty() {
        return Err(ApiError::invalid(b.errors));
    }
    b.finish(false)
}

fn records<'a>(
    model: &LoadedModel,
    key: &str,
    items: &'a [Value],
    limits: Limits,
) -> Result<Frame<'a>, ApiError> {
    let mut b = Builder::new(model, items.len(), limits)?;
    for (row, item) in items.iter().enumerate() {
        let Value::Object(fields) = item else {
            b.errors.push(
                Some(row),
                Some(key),
                format!("expected a record (object), got {}", kind(item)),
            );
            continue;
        };
        record(&mut b, row, fields);
    }
    b.finish(true)
}

fn record<'a>(b: &mut Builder<'_, 'a>, row: usize, fields: &'a Map<String, Value>) {
    for (name, v) in fields {
        if let Col::Input(i) = b.column(name, Some(row)) {
            match scalar(v) {
                Ok(raw) => b.put(row, i, raw),
                Err(reason) => b.errors.push(Some(row), Some(name), reason),
            }
        }
    }
}

fn positional<'a>(
    model: &LoadedModel,
    key: &str,
    items: &'a [Value],
    limits: Limits,
) -> Result<Frame<'a>, ApiError> {
    let width = model.width();
    let mut b = Builder::new(model, items.len(), limits)?;
    let inputs = &model.manifest.pipeline.inputs;
    for (row, item) in items.iter().enumerate() {
        let Value::Array(values) = item else {
            b.errors.push(
                Some(row),
                Some(key),
                format!("expected a row of {width} values, got {}", kind(item)),
            );
            continue;
        };
        if values.len() != width {
            b.errors.push(
                Some(row),
                Some(key),
                format!(
                    "has {} values; the model takes {width} in this order: {}",
                    values.len(),
                    input_names(model)
                ),
            );
            continue;
        }
        for (i, v) in values.iter().enumerate() {
            match scalar(v) {
                Ok(raw) => b.put(row, i, raw),
                Err(reason) => b.errors.push(Some(row), Some(&inputs[i].name), reason),
            }
        }
    }
    if !b.errors.is_empty() {
        return Err(ApiError::invalid(b.errors));
    }
    b.finish(true)
}

fn input_names(model: &LoadedModel) -> String {
    let names: Vec<&str> = model
        .manifest
        .pipeline
        .inputs
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    if names.len() > 12 {
        format!("{}, …", names[..12].join(", "))
    } else {
        names.join(", ")
    }
}

fn columnar<'a>(
    model: &LoadedModel,
    key: &str,
    columns: &'a Map<String, Value>,
    limits: Limits,
) -> Result<Frame<'a>, ApiError> {
    let mut rows = None;
    for (name, v) in columns {
        let n = match v {
            Value::Array(a) => a.len(),
            _ => 1,
        };
        match rows {
            None => rows = Some((n, name)),
            Some((m, first)) if m != n => {
                return Err(bad(
                    &format!("{key}.{name}"),
                    format!("has {n} values but {first} has {m}"),
                ));
            }
            Some(_) => {}
        }
    }
    let Some((rows, _)) = rows else {
        return Err(bad(key, "the request has no columns"));
    };
    let mut b = Builder::new(model, rows, limits)?;
    for (name, v) in columns {
        if let Col::Input(i) = b.column(name, None) {
            let one = std::slice::from_ref(v);
            let values = match v {
                Value::Array(a) => a.as_slice(),
                _ => one,
            };
            for (row, v) in values.iter().enumerate() {
                match scalar(v) {
                    Ok(raw) => b.put(row, i, raw),
                    Err(reason) => b.errors.push(Some(row), Some(name), reason),
                }
            }
        }
    }
    b.finish(false)
}

// ---------------------------------------------------------------------------------------
// CSV

/// A CSV body read whole: the header and the records.
#[derive(Debug)]
pub struct CsvBody {
    header: csv::StringRecord,
    records: Vec<csv::StringRecord>,
}

/// The most columns a CSV body may have.
pub const MAX_CSV_COLUMNS: usize = 4096;

/// Reads a CSV body (header first; every record as wide as the header).
pub fn read_csv(body: &[u8], limits: Limits) -> Result<CsvBody, ApiError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(body);
    let header = reader
        .headers()
        .map_err(|e| ApiError::bad_request(format!("malformed CSV header: {e}")))?
        .clone();
    if header.is_empty() || header.iter().all(str::is_empty) {
        return Err(ApiError::bad_request(
            "the CSV body has no header line (the first line must name the columns)",
        ));
    }
    // Every record has the header's field count (not flexible), so bounding the header
    // bounds what each row may cost.
    if header.len() > MAX_CSV_COLUMNS {
        return Err(ApiError::bad_request(format!(
            "the CSV header has {} columns; at most {MAX_CSV_COLUMNS} are read",
            header.len()
        )));
    }
    let mut records = Vec::new();
    for (row, record) in reader.records().enumerate() {
        let record = record.map_err(|e| {
            ApiError::field(
                StatusCode::BAD_REQUEST,
                None,
                format!("malformed CSV at data row {row}: {e}"),
            )
        })?;
        records.push(record);
        if records.len() > limits.max_rows {
            return Err(ApiError::field(
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                format!(
                    "over this server's limit of {} rows per request; split the batch",
                    limits.max_rows
                ),
            ));
        }
    }
    Ok(CsvBody { header, records })
}

/// The frame of a CSV body. Empty fields are missing values.
pub fn csv_frame<'a>(
    model: &LoadedModel,
    body: &'a CsvBody,
    limits: Limits,
) -> Result<Frame<'a>, ApiError> {
    let mut b = Builder::new(model, body.records.len(), limits)?;
    let mut seen = BTreeSet::new();
    let mut cols = Vec::with_capacity(body.header.len());
    for name in &body.header {
        let name = name.trim();
        if !seen.insert(name) {
            b.errors.push(None, Some(name), "column given twice");
        }
        cols.push(b.column(name, None));
    }
    for (row, record) in body.records.iter().enumerate() {
        for (col, field) in cols.iter().zip(record) {
            if let Col::Input(i) = col {
                let raw = if field.trim().is_empty() {
                    RawValue::Missing
                } else {
                    RawValue::Text(field)
                };
                b.put(row, *i, raw);
            }
        }
    }
    b.finish(false)
}

// ---------------------------------------------------------------------------------------
// Open Inference Protocol (KServe V2)

/// A parsed `infer` request.
#[derive(Debug)]
pub struct V2Request<'a> {
    /// The client's id.
    pub id: Option<&'a str>,
    /// The rows.
    pub frame: Frame<'a>,
    /// The outputs asked for (all when empty).
    pub outputs: Vec<&'a str>,
}

/// A V2 datatype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DType {
    Bool,
    Int(usize, bool),
    F32,
    F64,
    Bytes,
}

fn dtype(name: &str) -> Option<DType> {
    Some(match name {
        "BOOL" => DType::Bool,
        "INT8" => DType::Int(1, true),
        "INT16" => DType::Int(2, true),
        "INT32" => DType::Int(4, true),
        "INT64" => DType::Int(8, true),
        "UINT8" => DType::Int(1, false),
        "UINT16" => DType::Int(2, false),
        "UINT32" => DType::Int(4, false),
        "UINT64" => DType::Int(8, false),
        "FP32" => DType::F32,
        "FP64" => DType::F64,
        "BYTES" => DType::Bytes,
        _ => return None,
    })
}

struct Tensor<'a> {
    name: &'a str,
    shape: Vec<usize>,
    values: Vec<RawValue<'a>>,
}

/// The output names a model answers with.
pub fn output_names(model: &LoadedModel) -> &'static [&'static str] {
    if model.classes.is_some() {
        &["label", "probabilities"]
    } else {
        &["prediction"]
    }
}

/// Splits a body that uses the binary tensor extension into its JSON header and the
/// binary part. `header_len` is the `Inference-Header-Content-Length` header.
pub fn split_binary<'a>(
    body: &'a [u8],
    header_len: Option<&str>,
) -> Result<(&'a [u8], &'a [u8]), ApiError> {
    match header_len {
        None => Ok((body, &[])),
        Some(text) => {
            let n: usize = text.trim().parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "Inference-Header-Content-Length {text:?} is not a byte count"
                ))
            })?;
            if n > body.len() {
                return Err(ApiError::bad_request(format!(
                    "Inference-Header-Content-Length {n} is longer than the body ({} bytes)",
                    body.len()
                )));
            }
            Ok(body.split_at(n))
        }
    }
}

/// Parses a V2 `infer` request body (`json` is its JSON part, `binary` the binary tensor
/// data after it, empty without the extension).
pub fn v2_request<'a>(
    model: &LoadedModel,
    json: &'a Value,
    binary: &'a [u8],
    limits: Limits,
) -> Result<V2Request<'a>, ApiError> {
    let Value::Object(obj) = json else {
        return Err(ApiError::bad_request(format!(
            "expected a JSON object with inputs, got {}",
            kind(json)
        )));
    };
    for (key, value) in obj {
        match key.as_str() {
            "id" | "parameters" | "inputs" | "outputs" => {}
            // The kserve SDK's InferenceRESTClient names the model in the body as well as
            // the path; the path decides, as it does on KServe's own server.
            "model_name" | "model_version" => {
                if !matches!(value, Value::String(_) | Value::Null) {
                    return Err(bad(key, format!("expected a string, got {}", kind(value))));
                }
            }
            _ => {
                return Err(bad(
                    key,
                    "unknown key; expected id, parameters, inputs, outputs (model_name and model_version are accepted and ignored)",
                ));
            }
        }
    }
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => return Err(bad("id", format!("expected a string, got {}", kind(other)))),
    };
    let inputs = match obj.get("inputs") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(bad("inputs", "no input tensors")),
        Some(other) => {
            return Err(bad(
                "inputs",
                format!("expected an array of tensors, got {}", kind(other)),
            ));
        }
        None => return Err(bad("inputs", "missing")),
    };
    let mut outputs = Vec::new();
    match obj.get("outputs") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            let known = output_names(model);
            for (i, o) in list.iter().enumerate() {
                let name = match o.get("name") {
                    Some(Value::String(s)) => s.as_str(),
                    _ => {
                        return Err(bad(
                            &format!("outputs[{i}].name"),
                            "missing or not a string",
                        ));
                    }
                };
                if !known.contains(&name) {
                    return Err(bad(
                        &format!("outputs[{i}].name"),
                        format!("no output {name:?}; this model has {}", known.join(", ")),
                    ));
                }
                outputs.push(name);
            }
        }
        Some(other) => {
            return Err(bad(
                "outputs",
                format!("expected an array, got {}", kind(other)),
            ));
        }
    }
    let mut cursor = binary;
    let mut tensors = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        tensors.push(tensor(i, input, &mut cursor, limits)?);
    }
    if !cursor.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} bytes of binary data are not claimed by any input's binary_data_size",
            cursor.len()
        )));
    }
    let frame = frame_of_tensors(model, tensors, limits)?;
    Ok(V2Request { id, frame, outputs })
}

fn tensor<'a>(
    i: usize,
    input: &'a Value,
    binary: &mut &'a [u8],
    limits: Limits,
) -> Result<Tensor<'a>, ApiError> {
    let Value::Object(t) = input else {
        return Err(bad(
            &format!("inputs[{i}]"),
            format!("expected a tensor object, got {}", kind(input)),
        ));
    };
    let name = match t.get("name") {
        Some(Value::String(s)) => s.as_str(),
        _ => return Err(bad(&format!("inputs[{i}].name"), "missing or not a string")),
    };
    for key in t.keys() {
        if !matches!(
            key.as_str(),
            "name" | "shape" | "datatype" | "parameters" | "data"
        ) {
            return Err(bad(
                &format!("{name}.{key}"),
                "unknown key; a tensor has name, shape, datatype, parameters, data",
            ));
        }
    }
    let datatype = match t.get("datatype") {
        Some(Value::String(s)) => s.as_str(),
        _ => return Err(bad(name, "datatype is missing or not a string")),
    };
    let Some(dt) = dtype(datatype) else {
        return Err(bad(
            name,
            format!(
                "unsupported datatype {datatype:?}; use BOOL, INT8-64, UINT8-64, FP32, FP64 or BYTES"
            ),
        ));
    };
    let shape: Vec<usize> = match t.get("shape") {
        Some(Value::Array(dims)) if !dims.is_empty() && dims.len() <= 2 => {
            let mut shape = Vec::with_capacity(dims.len());
            for d in dims {
                match d.as_u64() {
                    Some(d) if d <= 1 << 32 => shape.push(d as usize),
                    _ => {
                        return Err(bad(
                            name,
                            format!("shape dimensions must be non-negative integers, got {d}"),
                        ));
                    }
                }
            }
            shape
        }
        Some(Value::Array(dims)) => {
            return Err(bad(
                name,
                format!("shape must have 1 or 2 dimensions, got {}", dims.len()),
            ));
        }
        _ => return Err(bad(name, "shape is missing or not an array")),
    };
    // The declared row count is held to the row limit before anything is read for it.
    if shape[0] > limits.max_rows {
        check_rows(shape[0], limits)?;
    }
    let count = shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d));
    let Some(count) = count else {
        return Err(bad(name, "shape is too large"));
    };
    let binary_size = match t.get("parameters").and_then(|p| p.get("binary_data_size")) {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n as usize),
            None => {
                return Err(bad(
                    name,
                    "parameters.binary_data_size must be a byte count",
                ));
            }
        },
    };
    let values = match (binary_size, t.get("data")) {
        (Some(_), Some(_)) => {
            return Err(bad(name, "has both data and parameters.binary_data_size"));
        }
        (Some(n), None) => {
            if n > binary.len() {
                return Err(bad(
                    name,
                    format!(
                        "binary_data_size {n} is more than the {} binary bytes left",
                        binary.len()
                    ),
                ));
            }
            let (mine, rest) = binary.split_at(n);
            *binary = rest;
            decode_binary(name, dt, mine, count)?
        }
        (None, Some(data)) => {
            let mut values = Vec::with_capacity(count.min(1 << 20));
            flatten(name, dt, data, &mut values, 0)?;
            values
        }
        (None, None) => return Err(bad(name, "has no data")),
    };
    if values.len() != count {
        return Err(bad(
            name,
            format!(
                "shape {shape:?} holds {count} values but the data has {}",
                values.len()
            ),
        ));
    }
    Ok(Tensor {
        name,
        shape,
        values,
    })
}

fn flatten<'a>(
    name: &str,
    dt: DType,
    data: &'a Value,
    out: &mut Vec<RawValue<'a>>,
    depth: usize,
) -> Result<(), ApiError> {
    match data {
        Value::Array(items) => {
            if depth > 2 {
                return Err(bad(name, "data is nested deeper than the shape allows"));
            }
            for item in items {
                flatten(name, dt, item, out, depth + 1)?;
            }
            Ok(())
        }
        Value::Null => {
            out.push(RawValue::Missing);
            Ok(())
        }
        Value::Bool(b) if dt == DType::Bool => {
            out.push(RawValue::Number(if *b { 1.0 } else { 0.0 }));
            Ok(())
        }
        Value::Number(n) if matches!(dt, DType::Int(..) | DType::F32 | DType::F64) => {
            let x = n
                .as_f64()
                .ok_or_else(|| bad(name, format!("number {n} is out of range")))?;
            out.push(RawValue::Number(x));
            Ok(())
        }
        Value::String(s) if dt == DType::Bytes => {
            out.push(RawValue::Text(s));
            Ok(())
        }
        other => Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(name),
            format!("{} in a tensor of datatype {}", kind(other), dt_name(dt)),
        )),
    }
}

fn dt_name(dt: DType) -> &'static str {
    match dt {
        DType::Bool => "BOOL",
        DType::Int(1, true) => "INT8",
        DType::Int(2, true) => "INT16",
        DType::Int(4, true) => "INT32",
        DType::Int(_, true) => "INT64",
        DType::Int(1, false) => "UINT8",
        DType::Int(2, false) => "UINT16",
        DType::Int(4, false) => "UINT32",
        DType::Int(_, false) => "UINT64",
        DType::F32 => "FP32",
        DType::F64 => "FP64",
        DType::Bytes => "BYTES",
    }
}

fn decode_binary<'a>(
    name: &str,
    dt: DType,
    bytes: &'a [u8],
    count: usize,
) -> Result<Vec<RawValue<'a>>, ApiError> {
    // `count` comes from the client's shape: it is checked against the bytes that actually
    // arrived before anything is allocated for it.
    let fixed = |size: usize| -> Result<std::slice::ChunksExact<'a, u8>, ApiError> {
        if count.checked_mul(size) != Some(bytes.len()) {
            return Err(bad(
                name,
                format!(
                    "{} binary bytes for {count} values of {} bytes",
                    bytes.len(),
                    size
                ),
            ));
        }
        Ok(bytes.chunks_exact(size))
    };
    // A BYTES element takes at least its 4-byte length; a fixed-size element exactly its size.
    let most = match dt {
        DType::Bool => bytes.len(),
        DType::Int(size, _) => bytes.len() / size.max(1),
        DType::F32 => bytes.len() / 4,
        DType::F64 => bytes.len() / 8,
        DType::Bytes => bytes.len() / 4,
    };
    let mut out = Vec::with_capacity(count.min(most));
    match dt {
        DType::Bool => {
            for c in fixed(1)? {
                out.push(RawValue::Number(if c[0] != 0 { 1.0 } else { 0.0 }));
            }
        }
        DType::Int(size, signed) => {
            for c in fixed(size)? {
                let mut buf = [0u8; 8];
                buf[..size].copy_from_slice(c);
                let x = if signed {
                    // Sign-extend from `size` bytes.
                    let shift = 64 - 8 * size as u32;
                    ((i64::from_le_bytes(buf) << shift) >> shift) as f64
                } else {
                    u64::from_le_bytes(buf) as f64
                };
                out.push(RawValue::Number(x));
            }
        }
        DType::F32 => {
            for c in fixed(4)? {
                let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                out.push(RawValue::Number(f64::from(x)));
            }
        }
        DType::F64 => {
            for c in fixed(8)? {
                let mut buf = [0u8; 8];
                buf.copy_from_slice(c);
                out.push(RawValue::Number(f64::from_le_bytes(buf)));
            }
        }
        DType::Bytes => {
            let mut rest = bytes;
            while !rest.is_empty() {
                if rest.len() < 4 {
                    return Err(bad(name, "truncated BYTES element length"));
                }
                let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                rest = &rest[4..];
                if n > rest.len() {
                    return Err(bad(name, "truncated BYTES element"));
                }
                let (s, tail) = rest.split_at(n);
                rest = tail;
                let text = std::str::from_utf8(s).map_err(|_| {
                    ApiError::field(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        Some(name),
                        "a BYTES element is not UTF-8 text",
                    )
                })?;
                out.push(RawValue::Text(text));
                if out.len() > count {
                    break;
                }
            }
        }
    }
    Ok(out)
}

fn frame_of_tensors<'a>(
    model: &LoadedModel,
    tensors: Vec<Tensor<'a>>,
    limits: Limits,
) -> Result<Frame<'a>, ApiError> {
    let width = model.width();
    // One [N, F] tensor that is not itself a feature: every feature, in input order.
    if let [t] = tensors.as_slice()
        && !model.index.contains_key(t.name)
        && t.shape.len() == 2
        && (t.shape[1] != 1 || width == 1)
    {
        if t.shape[1] != width {
            return Err(ApiError::field(
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(t.name),
                format!(
                    "shape {:?}: the model takes {width} features per row, in this order: {}",
                    t.shape,
                    input_names(model)
                ),
            ));
        }
        let rows = t.shape[0];
        check_rows(rows, limits)?;
        let Some(t) = tensors.into_iter().next() else {
            return Err(ApiError::bad_request("no input tensors"));
        };
        return Ok(Frame {
            rows,
            values: t.values,
            ignored: Vec::new(),
        });
    }
    // One tensor per feature, each [N] or [N, 1].
    let mut rows = None;
    for t in &tensors {
        if t.shape.len() == 2 && t.shape[1] != 1 {
            return Err(ApiError::field(
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(t.name),
                format!(
                    "shape {:?}: a feature's tensor is [N] or [N, 1] (or send one [N, {width}] tensor of every feature)",
                    t.shape
                ),
            ));
        }
        match rows {
            None => rows = Some((t.shape[0], t.name)),
            Some((n, first)) if n != t.shape[0] => {
                return Err(bad(
                    t.name,
                    format!("has {} rows but {first} has {n}", t.shape[0]),
                ));
            }
            Some(_) => {}
        }
    }
    let rows = rows.map(|(n, _)| n).unwrap_or(0);
    let mut b = Builder::new(model, rows, limits)?;
    let mut seen = BTreeSet::new();
    for t in tensors {
        if !seen.insert(t.name) {
            b.errors.push(None, Some(t.name), "tensor given twice");
            continue;
        }
        if let Col::Input(i) = b.column(t.name, None) {
            for (row, v) in t.values.into_iter().enumerate() {
                b.put(row, i, v);
            }
        }
    }
    b.finish(false)
}
