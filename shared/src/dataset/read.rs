//! Row-by-row readers over CSV, gzip-compressed CSV and Parquet files.
//!
//! Every reader hands out rows as `csv::ByteRecord`s with the line they started on, reusing
//! one record, so memory stays bounded by one row (CSV) or one record batch (Parquet)
//! whatever the file's size. Fields stay bytes until validation so that a row with
//! non-UTF-8 bytes is a rejected row, not a failed file.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use csv::ByteRecord;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde::{Deserialize, Serialize};

use super::DatasetError;

/// Raw file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Delimited text.
    Csv,
    /// Gzip-compressed delimited text.
    CsvGzip,
    /// Apache Parquet.
    Parquet,
}

impl Format {
    /// Detects the format from the file's first bytes, falling back to its name.
    pub fn detect(path: &Path, name: &str) -> Result<Format, DatasetError> {
        let mut magic = [0u8; 4];
        let mut file = File::open(path)?;
        let n = file.read(&mut magic)?;
        if n >= 2 && magic[..2] == [0x1f, 0x8b] {
            return Ok(Format::CsvGzip);
        }
        if n == 4 && &magic == b"PAR1" {
            return Ok(Format::Parquet);
        }
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".parquet") || lower.ends_with(".gz") {
            return Err(DatasetError::UnsupportedFormat(format!(
                "{name} is named like {} but its bytes are not",
                if lower.ends_with(".gz") {
                    "gzip"
                } else {
                    "Parquet"
                }
            )));
        }
        Ok(Format::Csv)
    }
}

/// A source of rows.
pub trait RowReader: Send {
    /// The column names.
    fn headers(&self) -> &[String];
    /// Reads the next row into `record`, returning the line it started on, or `None` at
    /// the end.
    fn next_row(&mut self, record: &mut ByteRecord) -> Result<Option<u64>, DatasetError>;
}

/// The longest CSV record read (a row of 256 fields at the 64 KiB field limit). A record
/// that runs on past it (an unclosed quote, a binary file) refuses the file instead of being
/// buffered whole: the csv reader holds a record in memory until it ends.
pub const MAX_RECORD_BYTES: u64 = 16 << 20;

/// A gzip file may expand at most this many times its compressed size...
pub const MAX_GZIP_RATIO: u64 = 1_000;
/// ...and never past this many bytes, whatever its size.
pub const MAX_DECOMPRESSED_BYTES: u64 = 64 << 30;

/// What the record guard shares with the row reader.
#[derive(Debug, Default)]
struct GuardState {
    /// Bytes handed to the csv reader since the last complete record.
    since_record: AtomicU64,
    /// Bytes handed to the csv reader in all.
    total: AtomicU64,
}

/// Counts the bytes the csv reader takes and stops it (an I/O error it passes up) once a
/// record or the whole input runs past its limit. The csv reader reads ahead at most its
/// buffer, so a record is cut within `MAX_RECORD_BYTES` plus one buffer.
struct Guard {
    inner: Box<dyn Read + Send>,
    state: Arc<GuardState>,
    total_limit: u64,
}

/// The error a tripped guard returns (recognised by the row reader).
#[derive(Debug)]
enum Tripped {
    Record,
    Total,
}

impl std::fmt::Display for Tripped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tripped::Record => "record limit",
            Tripped::Total => "decompression limit",
        })
    }
}

impl std::error::Error for Tripped {}

impl Read for Guard {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let since = self
            .state
            .since_record
            .fetch_add(n as u64, Ordering::Relaxed)
            + n as u64;
        let total = self.state.total.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if total > self.total_limit {
            return Err(std::io::Error::other(Tripped::Total));
        }
        if since > MAX_RECORD_BYTES + (1 << 16) {
            return Err(std::io::Error::other(Tripped::Record));
        }
        Ok(n)
    }
}

/// Opens `path` as `format`. `delimiter` applies to CSV.
pub fn open_rows(
    path: &Path,
    format: Format,
    delimiter: u8,
) -> Result<Box<dyn RowReader>, DatasetError> {
    match format {
        Format::Csv => CsvRows::open(Box::new(File::open(path)?), u64::MAX, delimiter),
        Format::CsvGzip => {
            let compressed = std::fs::metadata(path)?.len();
            let limit = compressed
                .saturating_mul(MAX_GZIP_RATIO)
                .clamp(1 << 20, MAX_DECOMPRESSED_BYTES);
            CsvRows::open(
                Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(
                    File::open(path)?,
                ))),
                limit,
                delimiter,
            )
        }
        Format::Parquet => ParquetRows::open(path),
    }
}

struct CsvRows {
    reader: csv::Reader<BufReader<Guard>>,
    guard: Arc<GuardState>,
    total_limit: u64,
    headers: Vec<String>,
    /// The csv crate reports record lines one too low in CRLF files (it counts the `\n`
    /// of a record's terminator after taking the next record's position).
    line_offset: u64,
}

fn check_headers(headers: Vec<String>) -> Result<Vec<String>, DatasetError> {
    if headers.is_empty() {
        return Err(DatasetError::EmptyFile);
    }
    for (i, h) in headers.iter().enumerate() {
        if h.trim().is_empty() {
            return Err(DatasetError::BadHeader(format!(
                "column {} has an empty name",
                i + 1
            )));
        }
        if headers[..i].contains(h) {
            return Err(DatasetError::DuplicateColumn(h.clone()));
        }
    }
    Ok(headers)
}

impl CsvRows {
    fn open(
        input: Box<dyn Read + Send>,
        total_limit: u64,
        delimiter: u8,
    ) -> Result<Box<dyn RowReader>, DatasetError> {
        let guard = Arc::new(GuardState::default());
        let mut input = BufReader::with_capacity(
            1 << 16,
            Guard {
                inner: input,
                state: guard.clone(),
                total_limit,
            },
        );
        let head = input
            .fill_buf()
            .map_err(|e| Self::tripped(&e, 1, total_limit).unwrap_or(DatasetError::Io(e)))?;
        let crlf = head
            .iter()
            .position(|&b| b == b'\n')
            .is_some_and(|i| i > 0 && head[i - 1] == b'\r');
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .has_headers(true)
            .from_reader(input);
        let raw = match reader.byte_headers() {
            Ok(raw) => raw.clone(),
            Err(e) => return Err(Self::csv_error(e, 1, total_limit)),
        };
        if raw.is_empty() || (raw.len() == 1 && raw[0].is_empty()) {
            return Err(DatasetError::EmptyFile);
        }
        let mut headers = Vec::with_capacity(raw.len());
        for (i, field) in raw.iter().enumerate() {
            let text = std::str::from_utf8(field).map_err(|_| {
                DatasetError::BadHeader(format!("column {} name is not valid UTF-8", i + 1))
            })?;
            let text = if i == 0 {
                text.trim_start_matches('\u{feff}')
            } else {
                text
            };
            headers.push(text.trim().to_string());
        }
        guard.since_record.store(0, Ordering::Relaxed);
        Ok(Box::new(CsvRows {
            reader,
            guard,
            total_limit,
            headers: check_headers(headers)?,
            line_offset: u64::from(crlf),
        }))
    }

    /// The dataset error for an I/O error that is a tripped guard.
    fn tripped(e: &std::io::Error, line: u64, total_limit: u64) -> Option<DatasetError> {
        match e.get_ref()?.downcast_ref::<Tripped>()? {
            Tripped::Record => Some(DatasetError::RecordTooLong {
                line,
                limit: MAX_RECORD_BYTES,
            }),
            Tripped::Total => Some(DatasetError::TooMuchDecompressed {
                limit: total_limit,
                ratio: MAX_GZIP_RATIO,
            }),
        }
    }

    fn csv_error(e: csv::Error, line: u64, total_limit: u64) -> DatasetError {
        if let csv::ErrorKind::Io(io) = e.kind()
            && let Some(tripped) = Self::tripped(io, line, total_limit)
        {
            return tripped;
        }
        DatasetError::Csv(e)
    }
}

impl RowReader for CsvRows {
    fn headers(&self) -> &[String] {
        &self.headers
    }

    fn next_row(&mut self, record: &mut ByteRecord) -> Result<Option<u64>, DatasetError> {
        loop {
            // The line the next record starts on, for the error if it never ends.
            let start = self.reader.position().line() + self.line_offset;
            match self.reader.read_byte_record(record) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) => return Err(Self::csv_error(e, start, self.total_limit)),
            }
            // What the csv reader holds now is at most its read-ahead.
            let ahead = self.reader.get_ref().buffer().len() as u64;
            self.guard.since_record.store(ahead, Ordering::Relaxed);
            // A blank line is not a row (the csv crate yields it as one empty field).
            if record.len() == 1 && record[0].is_empty() {
                continue;
            }
            let line = record.position().map(|p| p.line()).unwrap_or(0);
            return Ok(Some(line + self.line_offset));
        }
    }
}

struct ParquetRows {
    reader: ParquetRecordBatchReader,
    headers: Vec<String>,
    batch: Option<RecordBatch>,
    row_in_batch: usize,
    row_number: u64,
    text: String,
}

impl ParquetRows {
    fn open(path: &Path) -> Result<Box<dyn RowReader>, DatasetError> {
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?.with_batch_size(8192);
        let schema = builder.schema().clone();
        for field in schema.fields() {
            let ok = matches!(
                field.data_type(),
                DataType::Boolean
                    | DataType::Int8
                    | DataType::Int16
                    | DataType::Int32
                    | DataType::Int64
                    | DataType::UInt8
                    | DataType::UInt16
                    | DataType::UInt32
                    | DataType::UInt64
                    | DataType::Float32
                    | DataType::Float64
                    | DataType::Utf8
                    | DataType::LargeUtf8
                    | DataType::Utf8View
            );
            if !ok {
                return Err(DatasetError::UnsupportedColumn {
                    column: field.name().clone(),
                    kind: field.data_type().to_string(),
                });
            }
        }
        let headers = check_headers(schema.fields().iter().map(|f| f.name().clone()).collect())?;
        Ok(Box::new(ParquetRows {
            reader: builder.build()?,
            headers,
            batch: None,
            row_in_batch: 0,
            row_number: 0,
            text: String::new(),
        }))
    }
}

/// Appends the text form of `array[row]` (empty when null) to `out`.
fn value_text(array: &dyn Array, row: usize, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    if array.is_null(row) {
        return;
    }
    let _ = match array.data_type() {
        DataType::Boolean => write!(out, "{}", array.as_boolean().value(row)),
        DataType::Int8 => write!(out, "{}", array.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => write!(out, "{}", array.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => write!(out, "{}", array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => write!(out, "{}", array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => write!(out, "{}", array.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => write!(out, "{}", array.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => write!(out, "{}", array.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => write!(out, "{}", array.as_primitive::<UInt64Type>().value(row)),
        DataType::Float32 => write!(out, "{}", array.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => write!(out, "{}", array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => write!(out, "{}", array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => write!(out, "{}", array.as_string::<i64>().value(row)),
        DataType::Utf8View => write!(out, "{}", array.as_string_view().value(row)),
        // Other types were refused when the file was opened.
        _ => Ok(()),
    };
}

impl RowReader for ParquetRows {
    fn headers(&self) -> &[String] {
        &self.headers
    }

    fn next_row(&mut self, record: &mut ByteRecord) -> Result<Option<u64>, DatasetError> {
        loop {
            if let Some(batch) = &self.batch
                && self.row_in_batch < batch.num_rows()
            {
                record.clear();
                for column in batch.columns() {
                    value_text(column.as_ref(), self.row_in_batch, &mut self.text);
                    record.push_field(self.text.as_bytes());
                }
                self.row_in_batch += 1;
                self.row_number += 1;
                // Parquet has no lines; row N is reported as "line" N + 1 (the header being
                // line 1 in the CSV convention).
                return Ok(Some(self.row_number + 1));
            }
            match self.reader.next() {
                None => return Ok(None),
                Some(batch) => {
                    self.batch = Some(batch?);
                    self.row_in_batch = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    /// A 1 MB gzip file that expands to one endless line: refused at the record limit with
    /// the line it started on, having held at most about the limit in memory.
    #[test]
    fn a_record_that_never_ends_refuses_the_file_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("endless.csv.gz");
        let mut gz = flate2::write::GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::best(),
        );
        gz.write_all(b"a,b\n1,2\n3,\"").unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..40 {
            gz.write_all(&chunk).unwrap();
        }
        gz.finish().unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() < 1 << 20);
        let mut rows = open_rows(&path, Format::CsvGzip, b',').unwrap();
        let mut record = ByteRecord::new();
        assert_eq!(rows.next_row(&mut record).unwrap(), Some(2));
        match rows.next_row(&mut record) {
            Err(DatasetError::RecordTooLong { line, limit }) => {
                assert_eq!((line, limit), (3, MAX_RECORD_BYTES));
            }
            other => panic!("{other:?}"),
        }
        assert!(record.as_slice().len() as u64 <= MAX_RECORD_BYTES + (1 << 17));
    }

    /// Long records below the limit still read; the count restarts at every record.
    #[test]
    fn many_records_add_up_past_the_record_limit_without_tripping_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.csv");
        let mut f = std::io::BufWriter::new(File::create(&path).unwrap());
        f.write_all(b"a,b\n").unwrap();
        let field = "y".repeat(60_000);
        for i in 0..400 {
            writeln!(f, "{i},{field}").unwrap();
        }
        drop(f);
        let mut rows = open_rows(&path, Format::Csv, b',').unwrap();
        let mut record = ByteRecord::new();
        let mut n = 0;
        while rows.next_row(&mut record).unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 400);
    }

    /// A decompression past its limit (here 1 MiB) refuses the file as a likely bomb.
    #[test]
    fn a_decompression_past_the_limit_is_refused() {
        let mut data = b"a,b\n".to_vec();
        while data.len() < 3 << 20 {
            data.extend_from_slice(b"1,2\n");
        }
        let mut rows = CsvRows::open(Box::new(std::io::Cursor::new(data)), 1 << 20, b',').unwrap();
        let mut record = ByteRecord::new();
        let err = loop {
            match rows.next_row(&mut record) {
                Ok(Some(_)) => {}
                Ok(None) => panic!("read past the limit"),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(
                err,
                DatasetError::TooMuchDecompressed {
                    limit: 1_048_576,
                    ..
                }
            ),
            "{err}"
        );
    }
}
