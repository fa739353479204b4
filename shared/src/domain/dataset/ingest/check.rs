//! Checking a row against the schema (every field parsed as its column, counted for type
//! inference on the way), and the lines of `rejected.jsonl` for the rows refused.

use std::collections::HashSet;
use std::io::Write;

use csv::ByteRecord;
use serde::Serialize;

use super::{Inference, MAX_FIELD_BYTES, Nulls, is_bool_word, trim_field};
use crate::dataset::{ColumnSchema, ColumnType};

/// A parsed, valid field.
#[derive(Debug, Clone, Copy)]
pub(super) enum Value {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str,
}

/// Checks one field against its column; `Err` is the reason it is refused.
pub(super) fn parse_field(
    column: &ColumnSchema,
    is_label: bool,
    field: &[u8],
    nulls: &Nulls,
    domain: Option<&HashSet<&str>>,
    count: &mut Inference,
) -> Result<Value, String> {
    // Counted for type inference first, whatever the checks below say; the text is read
    // (and a number parsed) once for both.
    let text = std::str::from_utf8(field).ok();
    let v = text.map(trim_field);
    let null = v.is_some_and(|v| nulls.is_null(v));
    let number = v.and_then(|v| count.observe_text(v, null));
    if field.len() > MAX_FIELD_BYTES {
        return Err(format!(
            "field is {} bytes, over the {MAX_FIELD_BYTES}-byte limit",
            field.len()
        ));
    }
    let v = v.ok_or_else(|| "not valid UTF-8".to_string())?;
    if null {
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
            let x = number.ok_or_else(|| format!("cannot read {:?} as a number", shorten(v)))?;
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

pub(super) fn shorten(v: &str) -> String {
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
pub(super) fn field_text(field: &[u8]) -> String {
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
pub(super) struct Rejected<'a> {
    line: u64,
    reasons: &'a [RejectReason],
    fields: Vec<String>,
}

/// Why one row was refused.
#[derive(Debug, Clone, Serialize)]
pub(super) struct RejectReason {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) column: Option<String>,
    pub(super) reason: String,
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.column {
            Some(c) => write!(f, "{c}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// A row as read.
pub(super) struct Row<'a> {
    pub(super) record: &'a ByteRecord,
    /// Whether the reader cut it short (longer than the record limit).
    pub(super) cut: bool,
    pub(super) label_index: usize,
}

/// Parses a row into `parsed`, or says why it is refused in `reasons`: a cut record, the
/// wrong field count, or every field that does not parse as its column.
pub(super) fn check_row(
    row: &Row<'_>,
    columns: &[ColumnSchema],
    nulls: &Nulls,
    domains: &[Option<HashSet<&str>>],
    parsed: &mut Vec<Value>,
    reasons: &mut Vec<RejectReason>,
    counts: &mut [Inference],
) {
    let (record, label_index) = (row.record, row.label_index);
    if row.cut {
        reasons.push(RejectReason {
            column: None,
            reason: format!(
                "the record is longer than {} bytes; it was skipped unread",
                crate::dataset::MAX_RECORD_BYTES
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
                &mut counts[i],
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
pub(super) fn write_rejected(
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
