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
use serde_json::Value;

use crate::error::{ApiError, Errors};
use crate::loader::LoadedModel;

mod csv;
mod mlflow;
mod v2;

pub use csv::{CsvBody, MAX_CSV_COLUMNS, csv_frame, read_csv};
pub use mlflow::{MLFLOW_KEYS, mlflow_json};
pub use v2::{V2Request, output_names, split_binary, v2_request};

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
    let target = name.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for k in known {
        let d = strsim::levenshtein(&target, &k.to_lowercase());
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, k));
        }
    }
    best.filter(|(d, _)| *d <= 2.max(target.chars().count() / 4))
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

#[cfg(test)]
mod tests;
