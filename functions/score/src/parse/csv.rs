//! `text/csv` bodies with a header row.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use lambdaml::features::RawValue;

use crate::error::ApiError;
use crate::loader::LoadedModel;

use super::{Builder, Col, Frame, Limits};

/// A CSV body read whole: the header and the records.
#[derive(Debug)]
pub struct CsvBody {
    pub(crate) header: csv::StringRecord,
    pub(crate) records: Vec<csv::StringRecord>,
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
