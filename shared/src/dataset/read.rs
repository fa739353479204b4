//! Row-by-row readers over CSV, gzip-compressed CSV and Parquet files.
//!
//! Every reader hands out rows as `csv::ByteRecord`s with the line they started on, reusing
//! one record, so memory stays bounded by one row (CSV) or one record batch (Parquet)
//! whatever the file's size. Fields stay bytes until validation so that a row with
//! non-UTF-8 bytes is a rejected row, not a failed file.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

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

/// Opens `path` as `format`. `delimiter` applies to CSV.
pub fn open_rows(
    path: &Path,
    format: Format,
    delimiter: u8,
) -> Result<Box<dyn RowReader>, DatasetError> {
    match format {
        Format::Csv => CsvRows::open(
            BufReader::with_capacity(1 << 16, Box::new(File::open(path)?) as Box<dyn Read + Send>),
            delimiter,
        ),
        Format::CsvGzip => CsvRows::open(
            BufReader::with_capacity(
                1 << 16,
                Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(
                    File::open(path)?,
                ))) as Box<dyn Read + Send>,
            ),
            delimiter,
        ),
        Format::Parquet => ParquetRows::open(path),
    }
}

struct CsvRows {
    reader: csv::Reader<BufReader<Box<dyn Read + Send>>>,
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
        mut input: BufReader<Box<dyn Read + Send>>,
        delimiter: u8,
    ) -> Result<Box<dyn RowReader>, DatasetError> {
        let head = input.fill_buf()?;
        let crlf = head
            .iter()
            .position(|&b| b == b'\n')
            .is_some_and(|i| i > 0 && head[i - 1] == b'\r');
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .has_headers(true)
            .from_reader(input);
        let raw = reader.byte_headers()?.clone();
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
        Ok(Box::new(CsvRows {
            reader,
            headers: check_headers(headers)?,
            line_offset: u64::from(crlf),
        }))
    }
}

impl RowReader for CsvRows {
    fn headers(&self) -> &[String] {
        &self.headers
    }

    fn next_row(&mut self, record: &mut ByteRecord) -> Result<Option<u64>, DatasetError> {
        loop {
            if !self.reader.read_byte_record(record)? {
                return Ok(None);
            }
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
