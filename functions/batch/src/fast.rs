//! The numeric fast path for CSV partitions: a partition with no double quote (and no
//! carriage return but before a line feed) is split by hand, and a number field is parsed
//! where it lies, straight into the row's encoded slot, with no record, string or
//! [`RawValue`] in between.
//!
//! It gives exactly what the general path ([`crate::score`] with the `csv` reader) gives:
//! - without quotes a record is one line and its fields are what lies between commas, as
//!   the reader splits them; blank lines are skipped as it skips them;
//! - a number is taken here only when it is `-?digits[.digits]` with at most 19 digits,
//!   a mantissa within 2⁵³ and at most 22 decimals: then mantissa / 10^decimals is one
//!   correctly rounded division of two exact doubles (Clinger's fast path), the value
//!   Rust's `f64::from_str` gives. Anything else (an exponent, spaces, text, a field count
//!   other than the header's) sends the row down the general path, rejections included.

use lambdaml::batch::{PlannedPart, RejectReason, RejectedRow};
use lambdaml::dataset::ColumnType;
use lambdaml::features::{Encoder, RawValue};
use lambdaml::stage::StageError;

use crate::score::{BLOCK_ROWS, Scored, Scorer, record_problem, text_of};
use crate::write::Output;

/// Exact powers of ten as doubles.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The largest mantissa a double holds exactly.
const MAX_EXACT: u64 = 1 << 53;

/// Whether a partition's bytes can take the fast path.
pub(crate) fn eligible(bytes: &[u8]) -> bool {
    memchr::memchr(b'"', bytes).is_none()
        && memchr::memchr_iter(b'\r', bytes).all(|at| bytes.get(at + 1) == Some(&b'\n'))
}

/// What the fast path does with one column of the header.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Not a model input.
    Skip,
    /// A numeric input: `((x or impute) - center) / scale` into `out[offset]`.
    Number {
        offset: usize,
        impute: f64,
        center: f64,
        scale: f64,
    },
    /// Another input (a category, a boolean): feature `feature` encodes the text.
    Other { feature: usize },
}

/// A number field at the start of `field_and_rest`: `(value, bytes used)`, `Some(None)`
/// for an empty field, `None` when the fast path cannot tell (the general path will).
#[inline]
fn number(b: &[u8]) -> Option<(Option<f64>, usize)> {
    let mut i = 0;
    if b.first().is_none_or(|&c| c == b',') {
        return Some((None, 0));
    }
    let negative = b[0] == b'-';
    if negative {
        i = 1;
    }
    let mut mantissa: u64 = 0;
    let mut digits = 0u32;
    while let Some(d) = b.get(i).map(|c| c.wrapping_sub(b'0'))
        && d < 10
    {
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
        digits += 1;
        i += 1;
    }
    let mut decimals = 0usize;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while let Some(d) = b.get(i).map(|c| c.wrapping_sub(b'0'))
            && d < 10
        {
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
            digits += 1;
            decimals += 1;
            i += 1;
        }
    }
    if digits == 0
        || digits > 19
        || mantissa > MAX_EXACT
        || decimals >= POW10.len()
        || b.get(i).is_some_and(|&c| c != b',')
    {
        return None;
    }
    let magnitude = mantissa as f64 / POW10[decimals];
    Some((Some(if negative { -magnitude } else { magnitude }), i))
}

/// A partition's rows, encoded: what the scoring loop takes a block at a time.
pub(crate) struct FastRows<'a> {
    scorer: &'a Scorer,
    slots: Vec<Slot>,
    header: &'a [String],
    columns: &'a [usize],
    file: &'a str,
}

/// One row's outcome.
pub(crate) enum Row {
    /// Encoded into the slot given.
    Encoded,
    /// Refused, with its reasons.
    Rejected(RejectedRow),
}

impl<'a> FastRows<'a> {
    /// The fast path for `header` whose model inputs are at `columns`.
    pub(crate) fn new(
        scorer: &'a Scorer,
        header: &'a [String],
        columns: &'a [usize],
        file: &'a str,
    ) -> Self {
        let mut slots = vec![Slot::Skip; header.len()];
        for (feature, (&c, input)) in columns.iter().zip(&scorer.pipeline.inputs).enumerate() {
            slots[c] = match &input.encoder {
                Encoder::Numeric {
                    impute,
                    center,
                    scale,
                } if input.kind != ColumnType::Boolean => Slot::Number {
                    offset: input.offset,
                    impute: *impute,
                    center: *center,
                    scale: *scale,
                },
                _ => Slot::Other { feature },
            };
        }
        FastRows {
            scorer,
            slots,
            header,
            columns,
            file,
        }
    }

    /// Encodes `line` (a record without its line end) into `out` (the row's slots), or
    /// rejects it as the general path would.
    pub(crate) fn row(&self, line: &[u8], row: u64, line_no: u64, out: &mut [f32]) -> Row {
        if self.encode(line, out) {
            return Row::Encoded;
        }
        self.general(line, row, line_no, out)
    }

    /// The fast encoding; `false` when the general path must look.
    #[inline]
    fn encode(&self, line: &[u8], out: &mut [f32]) -> bool {
        let mut at = 0;
        let last = self.slots.len() - 1;
        for (c, slot) in self.slots.iter().enumerate() {
            let rest = &line[at.min(line.len())..];
            let used = match *slot {
                Slot::Number {
                    offset,
                    impute,
                    center,
                    scale,
                } => {
                    let Some((x, used)) = number(rest) else {
                        return false;
                    };
                    out[offset] = ((x.unwrap_or(impute) - center) / scale) as f32;
                    used
                }
                Slot::Skip => memchr::memchr(b',', rest).unwrap_or(rest.len()),
                Slot::Other { feature } => {
                    let used = memchr::memchr(b',', rest).unwrap_or(rest.len());
                    let Ok(text) = std::str::from_utf8(&rest[..used]) else {
                        return false;
                    };
                    let text = text.trim();
                    let value = if text.is_empty() {
                        RawValue::Missing
                    } else {
                        RawValue::Text(text)
                    };
                    if self.scorer.pipeline.inputs[feature]
                        .encode(value, out)
                        .is_err()
                    {
                        return false;
                    }
                    used
                }
            };
            at += used;
            // A field ends at a comma (more fields follow) or at the line's end (the last).
            let more = at < line.len();
            if more != (c < last) {
                return false;
            }
            at += 1;
        }
        true
    }

    /// The general path for one line: the checks and encoding of [`crate::score`].
    fn general(&self, line: &[u8], row: u64, line_no: u64, out: &mut [f32]) -> Row {
        let record = csv::ByteRecord::from(line.split(|&b| b == b',').collect::<Vec<_>>());
        let reject = |reasons| RejectedRow {
            file: self.file.to_string(),
            row,
            line: Some(line_no),
            reasons,
            record: Some(text_of(&record)),
        };
        if let Some(reason) = record_problem(&record, self.header, self.columns) {
            return Row::Rejected(reject(vec![reason]));
        }
        let values: Vec<RawValue<'_>> = self
            .columns
            .iter()
            .map(|&c| {
                // Checked to be UTF-8 by `record_problem`.
                let field = std::str::from_utf8(record.get(c).unwrap_or_default())
                    .unwrap_or_default()
                    .trim();
                if field.is_empty() {
                    RawValue::Missing
                } else {
                    RawValue::Text(field)
                }
            })
            .collect();
        let mut reasons = Vec::new();
        let ok = self.scorer.pipeline.transform_checked(&values, out, |e| {
            reasons.push(RejectReason {
                column: Some(e.field),
                reason: e.reason,
            });
        });
        if ok {
            Row::Encoded
        } else {
            Row::Rejected(reject(reasons))
        }
    }
}

/// The records of a fast-path partition: `(line bytes without its end, physical line)`,
/// blank lines skipped as the `csv` reader skips them.
pub(crate) fn records(bytes: &[u8], first_line: u64) -> impl Iterator<Item = (&[u8], u64)> {
    let mut at = 0;
    let mut line = first_line;
    std::iter::from_fn(move || {
        while at < bytes.len() {
            let end = memchr::memchr(b'\n', &bytes[at..]).map_or(bytes.len(), |n| at + n);
            let mut record = &bytes[at..end];
            if let Some(stripped) = record.strip_suffix(b"\r") {
                record = stripped;
            }
            let this = line;
            at = end + 1;
            line += 1;
            if !record.is_empty() {
                return Some((record, this));
            }
        }
        None
    })
}

/// Scores a fast-path partition (see [`eligible`]) into `out`.
pub(crate) fn score_partition(
    scorer: &Scorer,
    part: &PlannedPart,
    header: &[String],
    columns: &[usize],
    file: &str,
    bytes: &[u8],
    mut out: Output,
) -> Result<Scored, StageError> {
    let rows = FastRows::new(scorer, header, columns, file);
    let dim = scorer.pipeline.output_dim;
    let mut x = vec![0f32; BLOCK_ROWS * dim];
    // The rows of the block: (row id, line) and, for the input columns, the line.
    let mut ids: Vec<u64> = Vec::with_capacity(BLOCK_ROWS);
    let mut lines: Vec<&[u8]> = Vec::with_capacity(BLOCK_ROWS);
    let mut outputs = Vec::new();
    let mut rejected = Vec::new();
    let mut rows_in = 0u64;
    let mut flush = |x: &[f32], ids: &mut Vec<u64>, lines: &mut Vec<&[u8]>, out: &mut Output| {
        outputs.clear();
        let n = ids.len();
        scorer
            .dense
            .predict_into(&x[..n * dim], n, &mut outputs)
            .map_err(|e| StageError::permanent(format!("prediction failed: {e}")))?;
        out.push_predictions(
            &outputs,
            scorer.dense.output_width(),
            scorer.classes().is_some(),
        );
        for &id in ids.iter() {
            out.push_row(id);
        }
        if let Some(inputs) = &mut out.inputs {
            for line in lines.iter() {
                let fields: Vec<&[u8]> = line.split(|&b| b == b',').collect();
                inputs.push_text(columns, |c| fields.get(c).copied().unwrap_or_default());
            }
        }
        ids.clear();
        lines.clear();
        Ok::<_, StageError>(())
    };
    for (line, line_no) in records(bytes, part.first_line.unwrap_or(2)) {
        let row = part.first_row + rows_in;
        rows_in += 1;
        let n = ids.len();
        match rows.row(line, row, line_no, &mut x[n * dim..(n + 1) * dim]) {
            Row::Encoded => {
                ids.push(row);
                lines.push(line);
            }
            Row::Rejected(r) => rejected.push(r),
        }
        if ids.len() == BLOCK_ROWS {
            flush(&x, &mut ids, &mut lines, &mut out)?;
        }
    }
    if !ids.is_empty() {
        flush(&x, &mut ids, &mut lines, &mut out)?;
    }
    Ok(Scored {
        rows_in,
        output: out,
        rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_as_from_str_does() {
        let cases = [
            "0",
            "-0",
            "1",
            "12.5",
            "0.1",
            "0.3",
            "3.14159",
            "-2.718281828",
            "1.",
            ".5",
            "123456789012345678",
            "0.0001234",
            "9007199254740992",
            "17.99",
            "1e5",
            "1.5e-3",
            "+1",
            " 1",
            "1 ",
            "abc",
            "-",
            ".",
            "1.2.3",
            "99999999999999999999",
            "9007199254740993",
            "0.00000000000000000000001",
            "12,3",
        ];
        for case in cases {
            let expected: Option<f64> = case.trim().parse::<f64>().ok();
            let expected = expected.filter(|_| !case.contains(' '));
            match number(case.as_bytes()) {
                Some((Some(x), used)) => {
                    let text = &case[..used];
                    assert_eq!(
                        x.to_bits(),
                        text.parse::<f64>().map(f64::to_bits).unwrap_or(u64::MAX),
                        "{case:?}"
                    );
                    if used == case.len() {
                        assert_eq!(Some(x.to_bits()), expected.map(f64::to_bits), "{case:?}");
                    }
                }
                Some((None, _)) => panic!("{case:?} is not empty"),
                None => {}
            }
        }
        assert!(matches!(number(b""), Some((None, 0))));
        assert!(matches!(number(b",1"), Some((None, 0))));
        assert!(number(b"1e5").is_none(), "an exponent goes the general way");
        assert!(number(b"9007199254740993").is_none(), "past 2^53");
    }

    #[test]
    fn random_decimals_parse_bit_exactly() {
        // A cheap generator: every decimal shape the fast path takes.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            // At most 15 digits: within 2^53 whatever they are.
            let int = next() % 10u64.pow((next() % 9) as u32);
            let decimals = (next() % 8) as usize;
            let frac = next() % 10u64.pow(decimals as u32);
            let text = if decimals == 0 {
                format!("{int}")
            } else {
                format!("{int}.{frac:0decimals$}")
            };
            let (x, used) = number(text.as_bytes())
                .and_then(|(x, u)| x.map(|x| (x, u)))
                .unwrap_or_else(|| panic!("{text} took the slow path"));
            assert_eq!(used, text.len());
            assert_eq!(
                x.to_bits(),
                text.parse::<f64>().map_or(0, f64::to_bits),
                "{text}"
            );
        }
    }

    #[test]
    fn records_skip_blank_lines_and_count_lines() {
        let bytes = b"1,2\n\n3,4\r\n\r\n5,6";
        let got: Vec<(&[u8], u64)> = records(bytes, 7).collect();
        assert_eq!(
            got,
            vec![(&b"1,2"[..], 7), (&b"3,4"[..], 9), (&b"5,6"[..], 11)]
        );
        assert!(eligible(bytes));
        assert!(!eligible(b"1,\"2\"\n"));
        assert!(!eligible(b"1,2\r3,4\n"));
    }
}
