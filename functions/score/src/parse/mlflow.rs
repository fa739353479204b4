//! MLflow scoring bodies: `dataframe_split`, `dataframe_records`, `instances` / `inputs`
//! (records, rows in input order, or columns).

use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::loader::LoadedModel;

use super::{Builder, Col, Frame, Limits, bad, kind, scalar};

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

pub(crate) fn single_column<'a>(
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

pub(crate) fn dataframe_split<'a>(
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

pub(crate) fn records<'a>(
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

pub(crate) fn record<'a>(b: &mut Builder<'_, 'a>, row: usize, fields: &'a Map<String, Value>) {
    for (name, v) in fields {
        if let Col::Input(i) = b.column(name, Some(row)) {
            match scalar(v) {
                Ok(raw) => b.put(row, i, raw),
                Err(reason) => b.errors.push(Some(row), Some(name), reason),
            }
        }
    }
}

pub(crate) fn positional<'a>(
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

pub(super) fn input_names(model: &LoadedModel) -> String {
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

pub(crate) fn columnar<'a>(
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
