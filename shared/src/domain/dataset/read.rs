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

    /// Whether the row just read was cut at [`MAX_RECORD_BYTES`] (a rejected row: `record`
    /// holds only its start).
    fn cut(&self) -> bool {
        false
    }
}

/// The longest CSV record read (a row of 256 fields at the 64 KiB field limit). A longer
/// record is cut there and handed on as a rejected row ([`RowReader::cut`]); the rest of it
/// is skipped unread. A record that never ends (an unclosed quote, a binary file) refuses the
/// file: the reader never holds more than this of one record.
pub const MAX_RECORD_BYTES: u64 = 16 << 20;

/// A gzip file may expand at most this many times its compressed size...
pub const MAX_GZIP_RATIO: u64 = 1_000;
/// ...and never past this many bytes, whatever its size.
pub const MAX_DECOMPRESSED_BYTES: u64 = 64 << 30;

/// Where the csv reader stands within a record, followed byte by byte the way `csv_core`
/// reads (a quote opens a quoted field only at the start of a field; `""` inside one is a
/// quote; `\r` and `\n` end a record outside quotes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// At the start of a field.
    Start,
    /// In an unquoted field.
    Field,
    /// In a quoted field.
    Quoted,
    /// A quote seen in a quoted field: its end, or the first of `""`.
    QuoteInQuoted,
}

/// What the record guard shares with the row reader.
#[derive(Debug)]
struct GuardState {
    /// Where records were cut (the offset in the bytes the csv reader reads), in order,
    /// each with the line breaks skipped with the rest of its record.
    cuts: std::sync::Mutex<std::collections::VecDeque<(u64, u64)>>,
    /// The first offset in `cuts`, or `u64::MAX` (read on every row without the lock).
    next_cut: AtomicU64,
    /// The first record (the header) was cut.
    header_cut: std::sync::atomic::AtomicBool,
}

impl GuardState {
    fn new() -> Self {
        GuardState {
            cuts: Default::default(),
            next_cut: AtomicU64::new(u64::MAX),
            header_cut: Default::default(),
        }
    }

    fn cuts(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(u64, u64)>> {
        self.cuts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, at: u64) {
        let mut cuts = self.cuts();
        cuts.push_back((at, 0));
        self.next_cut
            .store(cuts.front().map_or(u64::MAX, |c| c.0), Ordering::Relaxed);
    }

    /// Counts line breaks skipped with the latest cut record.
    fn skipped_lines(&self, n: u64) {
        if let Some(last) = self.cuts().back_mut() {
            last.1 += n;
        }
    }

    /// The line breaks skipped when a cut lies in `[start, end)` (the record there was
    /// cut); forgets every cut before `end`.
    fn take(&self, start: u64, end: u64) -> Option<u64> {
        if self.next_cut.load(Ordering::Relaxed) >= end {
            return None;
        }
        let mut cuts = self.cuts();
        let mut hit = None;
        while let Some(&(at, lines)) = cuts.front() {
            if at >= end {
                break;
            }
            if at >= start {
                hit = Some(lines);
            }
            cuts.pop_front();
        }
        self.next_cut
            .store(cuts.front().map_or(u64::MAX, |c| c.0), Ordering::Relaxed);
        hit
    }
}

/// Sits between the input and the csv reader. It follows the record structure of the bytes
/// it passes (one table lookup per byte), and when a record runs past `record_limit` it
/// hands on the record up to the limit, closes it (a quote when it was cut inside one),
/// skips the rest of it and marks the cut for the row reader — so the csv reader never holds
/// more than the limit of one record, and one long row is a rejected row rather than a lost
/// file. A record that never ends, or an input past `total_limit` bytes (decompression),
/// stops the reader with an I/O error it passes up.
struct Guard {
    inner: Box<dyn Read + Send>,
    state: Arc<GuardState>,
    delimiter: u8,
    record_limit: u64,
    total_limit: u64,
    /// Bytes read from `inner`.
    total: u64,
    /// Bytes handed to the csv reader.
    out: u64,
    scan: Scan,
    /// Bytes of the current record so far.
    in_record: u64,
    /// A record has ended (the header is behind).
    past_header: bool,
    /// Read but not yet handed on (the rest of a read that crossed the limit).
    pending: Vec<u8>,
    pending_at: usize,
    /// Skipping the rest of a cut record.
    skipping: bool,
    /// The record was cut inside quotes: a closing quote is owed.
    close_quote: bool,
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

impl Guard {
    fn new(
        inner: Box<dyn Read + Send>,
        state: Arc<GuardState>,
        delimiter: u8,
        record_limit: u64,
        total_limit: u64,
    ) -> Self {
        Guard {
            inner,
            state,
            delimiter,
            record_limit,
            total_limit,
            total: 0,
            out: 0,
            scan: Scan::Start,
            in_record: 0,
            past_header: false,
            pending: Vec::new(),
            pending_at: 0,
            skipping: false,
            close_quote: false,
        }
    }

    /// One byte of the record structure: whether it ended a record.
    #[inline]
    fn step(&mut self, b: u8) -> bool {
        let end = matches!(b, b'\n' | b'\r');
        self.scan = match (self.scan, b) {
            (Scan::Quoted, b'"') => Scan::QuoteInQuoted,
            (Scan::Quoted, _) => Scan::Quoted,
            (Scan::QuoteInQuoted, b'"') | (Scan::Start, b'"') => Scan::Quoted,
            (_, _) if end => Scan::Start,
            (_, d) if d == self.delimiter => Scan::Start,
            _ => Scan::Field,
        };
        end && self.scan == Scan::Start
    }

    /// Follows `bytes` as they are handed on; answers how many may go before the current
    /// record passes the limit (all of them when it does not).
    fn pass(&mut self, bytes: &[u8]) -> usize {
        // The common case, without a byte-by-byte walk: outside quotes, no quote in `bytes`
        // and no way for the record to pass the limit within them. Then every byte moves the
        // scan to `Start` (a line break or the delimiter) or `Field` (any other), so the
        // state after `bytes` is the last byte's, and the record so far is what follows the
        // last line break.
        if self.scan != Scan::Quoted
            && self.in_record + bytes.len() as u64 <= self.record_limit
            && memchr::memchr(b'"', bytes).is_none()
        {
            let Some(&last) = bytes.last() else {
                return 0;
            };
            match memchr::memrchr2(b'\n', b'\r', bytes) {
                Some(i) => {
                    self.in_record = (bytes.len() - 1 - i) as u64;
                    self.past_header = true;
                }
                None => self.in_record += bytes.len() as u64,
            }
            self.scan = if matches!(last, b'\n' | b'\r') || last == self.delimiter {
                Scan::Start
            } else {
                Scan::Field
            };
            return bytes.len();
        }
        for (i, &b) in bytes.iter().enumerate() {
            if self.step(b) {
                self.in_record = 0;
                self.past_header = true;
            } else {
                self.in_record += 1;
                if self.in_record > self.record_limit {
                    // Cut before this byte; it is the first skipped one.
                    self.cut_before(b, self.out + i as u64);
                    return i;
                }
            }
        }
        bytes.len()
    }

    /// The record is cut before byte `b` (already stepped over), at offset `at` of what the
    /// csv reader reads: skip from here.
    fn cut_before(&mut self, b: u8, at: u64) {
        // The csv reader has seen everything before `b`: what it owes to close the record
        // is what the scan said before `b`, recovered from the state after it.
        let before_quoted = match (self.scan, b) {
            // `"` moved Quoted → QuoteInQuoted, or QuoteInQuoted → Quoted: either way the
            // reader was inside quotes (in QuoteInQuoted it needs no closing quote).
            (Scan::QuoteInQuoted, b'"') => true,
            (Scan::Quoted, b'"') => false,
            (Scan::Quoted, _) => true,
            _ => false,
        };
        self.close_quote = before_quoted;
        self.skipping = true;
        if !self.past_header {
            self.state.header_cut.store(true, Ordering::Relaxed);
        }
        self.state.push(at);
        if b == b'\n' {
            // A quoted line break is the first byte skipped.
            self.state.skipped_lines(1);
        }
    }

    /// Skips `bytes` up to the end of the cut record: the index of its terminator.
    fn skip(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut lines = 0;
        let mut end = None;
        for (i, &b) in bytes.iter().enumerate() {
            // The terminator itself is handed on (and stepped over) by `pass`.
            if matches!(b, b'\n' | b'\r') && self.scan != Scan::Quoted {
                self.skipping = false;
                self.in_record = 0;
                end = Some(i);
                break;
            }
            lines += u64::from(b == b'\n');
            self.step(b);
        }
        if lines > 0 {
            self.state.skipped_lines(lines);
        }
        end
    }

    /// Reads more from `inner` into `pending`, counting it against the total limit.
    fn refill(&mut self) -> std::io::Result<bool> {
        self.pending.resize(1 << 16, 0);
        self.pending_at = 0;
        let n = self.inner.read(&mut self.pending)?;
        self.pending.truncate(n);
        self.count(n)?;
        Ok(n > 0)
    }

    fn count(&mut self, n: usize) -> std::io::Result<()> {
        self.total += n as u64;
        if self.total > self.total_limit {
            return Err(std::io::Error::other(Tripped::Total));
        }
        Ok(())
    }
}

impl Read for Guard {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.close_quote && !self.skipping {
                self.close_quote = false;
                buf[0] = b'"';
                self.out += 1;
                return Ok(1);
            }
            if self.pending_at < self.pending.len() {
                let mut pending = std::mem::take(&mut self.pending);
                let at = self.pending_at;
                if self.skipping {
                    match self.skip(&pending[at..]) {
                        Some(i) => self.pending_at = at + i,
                        None => self.pending_at = pending.len(),
                    }
                    self.pending = pending;
                    continue;
                }
                let take = (pending.len() - at).min(buf.len());
                let n = self.pass(&pending[at..at + take]);
                buf[..n].copy_from_slice(&pending[at..at + n]);
                // A cut consumed the byte it was cut before (`pass` stepped over it).
                self.pending_at = at + n + usize::from(self.skipping);
                std::mem::swap(&mut self.pending, &mut pending);
                if n > 0 {
                    self.out += n as u64;
                    return Ok(n);
                }
                continue;
            }
            if self.skipping {
                if !self.refill()? {
                    // The cut record never ends.
                    return Err(std::io::Error::other(Tripped::Record));
                }
                continue;
            }
            // The common path: read straight into the caller's buffer.
            let n = self.inner.read(buf)?;
            self.count(n)?;
            if n == 0 {
                return Ok(0);
            }
            let ok = self.pass(&buf[..n]);
            if ok < n {
                // Cut before `buf[ok]` (stepped over): the rest is skipped from `ok + 1`.
                self.pending.clear();
                self.pending.extend_from_slice(&buf[ok + 1..n]);
                self.pending_at = 0;
            }
            if ok > 0 {
                self.out += ok as u64;
                return Ok(ok);
            }
        }
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
    /// The row just read was cut at the record limit.
    cut: bool,
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
        Self::open_with(input, total_limit, delimiter, MAX_RECORD_BYTES)
    }

    fn open_with(
        input: Box<dyn Read + Send>,
        total_limit: u64,
        delimiter: u8,
        record_limit: u64,
    ) -> Result<Box<dyn RowReader>, DatasetError> {
        let guard = Arc::new(GuardState::new());
        let mut input = BufReader::with_capacity(
            1 << 16,
            Guard::new(input, guard.clone(), delimiter, record_limit, total_limit),
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
        if guard.header_cut.load(Ordering::Relaxed) {
            return Err(DatasetError::RecordTooLong {
                line: 1,
                limit: record_limit,
            });
        }
        Ok(Box::new(CsvRows {
            reader,
            guard,
            cut: false,
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

    fn cut(&self) -> bool {
        self.cut
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
            let begin = record.position().map_or(0, |p| p.byte());
            let cut = self.guard.take(begin, self.reader.position().byte());
            self.cut = cut.is_some();
            if let Some(skipped) = cut {
                let line = record.position().map(|p| p.line()).unwrap_or(0) + self.line_offset;
                // The csv reader never saw the line breaks skipped with the record.
                self.line_offset += skipped;
                return Ok(Some(line));
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
        // The parquet crate asserts (panics) on a column chunk whose offsets or size are
        // negative; a corrupt file must be an error instead (found by `make fuzz`).
        for (g, group) in builder.metadata().row_groups().iter().enumerate() {
            for column in group.columns() {
                let bad = column.data_page_offset() < 0
                    || column.compressed_size() < 0
                    || column.dictionary_page_offset().is_some_and(|o| o < 0)
                    || column.index_page_offset().is_some_and(|o| o < 0);
                if bad {
                    return Err(DatasetError::Parquet(
                        parquet::errors::ParquetError::General(format!(
                            "corrupt file: row group {g}, column {:?} has a negative offset or size",
                            column.column_path().string()
                        )),
                    ));
                }
            }
        }
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
            // A safety net for other assertions in the parquet crate on corrupt bytes.
            let next =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.reader.next()))
                    .map_err(|_| {
                        DatasetError::Parquet(parquet::errors::ParquetError::General(
                            "corrupt file: the Parquet reader failed on it".into(),
                        ))
                    })?;
            match next {
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
mod tests;
