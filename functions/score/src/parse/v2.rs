//! Open Inference Protocol (KServe V2) `infer` requests: one tensor per feature or one
//! `[N, F]` tensor, JSON `data` or the binary tensor extension.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use lambdaml::features::RawValue;
use serde_json::Value;

use crate::error::ApiError;
use crate::loader::LoadedModel;

use super::mlflow::input_names;
use super::{Builder, Col, Frame, Limits, bad, check_rows, kind};

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
pub(crate) enum DType {
    Bool,
    Int(usize, bool),
    F32,
    F64,
    Bytes,
}

pub(crate) fn dtype(name: &str) -> Option<DType> {
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

pub(crate) struct Tensor<'a> {
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

pub(crate) fn tensor<'a>(
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
    let shape = tensor_shape(name, t.get("shape"))?;
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

/// A tensor's shape: one or two dimensions, each a non-negative integer up to 2^32.
pub(crate) fn tensor_shape(name: &str, shape: Option<&Value>) -> Result<Vec<usize>, ApiError> {
    match shape {
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
            Ok(shape)
        }
        Some(Value::Array(dims)) => Err(bad(
            name,
            format!("shape must have 1 or 2 dimensions, got {}", dims.len()),
        )),
        _ => Err(bad(name, "shape is missing or not an array")),
    }
}

pub(crate) fn flatten<'a>(
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

pub(crate) fn dt_name(dt: DType) -> &'static str {
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

pub(crate) fn decode_binary<'a>(
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

pub(crate) fn frame_of_tensors<'a>(
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
