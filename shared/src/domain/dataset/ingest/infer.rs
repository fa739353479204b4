//! Type inference: what each undeclared column's values say it is (counted over the whole
//! file), the missing-value words, and the field trimming every check shares.

use std::collections::HashSet;

use super::{IngestConfig, NUMERIC_TOLERANCE};
use crate::dataset::{ColumnSchema, ColumnType};
use crate::spec::TaskKind;

#[derive(Debug, Default)]
pub(super) struct Inference {
    pub(super) nulls: u64,
    pub(super) values: u64,
    pub(super) bools: u64,
    pub(super) numbers: u64,
    pub(super) integers: u64,
    pub(super) min: f64,
    pub(super) max: f64,
}

pub(super) fn is_bool_word(v: &str) -> Option<bool> {
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
pub(super) struct Nulls {
    pub(super) words: HashSet<String>,
    pub(super) numeric_words: bool,
}

pub(super) fn starts_numeric(v: &str) -> bool {
    v.as_bytes()
        .first()
        .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.'))
}

impl Nulls {
    pub(super) fn new(words: &[String]) -> Self {
        Nulls {
            numeric_words: words.iter().any(|w| starts_numeric(w)),
            words: words.iter().cloned().collect(),
        }
    }

    pub(super) fn is_null(&self, v: &str) -> bool {
        if v.is_empty() {
            return true;
        }
        if !self.numeric_words && starts_numeric(v) {
            return false;
        }
        self.words.contains(v)
    }
}

/// `text.trim()`, without its scan for Unicode spaces when the field starts and ends with a
/// visible ASCII character (the common case: no Unicode space is a single byte above `' '`).
#[inline]
pub(super) fn trim_field(text: &str) -> &str {
    match (text.as_bytes().first(), text.as_bytes().last()) {
        (Some(&first), Some(&last))
            if (b'!'..=b'~').contains(&first) && (b'!'..=b'~').contains(&last) =>
        {
            text
        }
        _ => text.trim(),
    }
}

/// Whether `v` is written as a whole number (optional sign, then digits).
pub(super) fn is_integer_text(v: &str) -> bool {
    let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
    !digits.is_empty() && digits.len() <= 18 && digits.bytes().all(|b| b.is_ascii_digit())
}

impl Inference {
    /// Counts one field of a row of the right length.
    pub(super) fn observe(&mut self, field: &[u8], nulls: &Nulls) {
        if let Ok(text) = std::str::from_utf8(field) {
            let v = trim_field(text);
            self.observe_text(v, nulls.is_null(v));
        }
    }

    /// Counts a field's trimmed text `v` (a missing value when `null`); returns its value
    /// when it reads as a number.
    #[inline]
    pub(super) fn observe_text(&mut self, v: &str, null: bool) -> Option<f64> {
        if null {
            self.nulls += 1;
            return None;
        }
        self.values += 1;
        if !starts_numeric(v) && is_bool_word(v).is_some() {
            self.bools += 1;
        }
        let x = v.parse::<f64>().ok()?;
        self.numbers += 1;
        if is_integer_text(v) {
            self.integers += 1;
        }
        if x.is_finite() {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        Some(x)
    }

    /// Adds the counts of a later part of the file.
    pub(super) fn merge(&mut self, other: Inference) {
        self.nulls += other.nulls;
        self.values += other.values;
        self.bools += other.bools;
        self.numbers += other.numbers;
        self.integers += other.integers;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

pub(super) fn decide(name: &str, s: &Inference, config: &IngestConfig) -> ColumnSchema {
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
