//! Row-aligned partitions of a CSV stream, found in one pass.
//!
//! A record ends at a line feed outside double quotes (RFC 4180: a quote inside a quoted
//! field is doubled, which toggles the state twice and so changes nothing), so a quoted
//! field may hold line feeds and a partition boundary never falls inside a record. Lines
//! are counted as well (a record with a quoted line feed spans two), so a worker can name
//! the physical line of a row it rejects. Lines holding nothing but an optional `\r` are
//! not records (the CSV reader skips them too).

use super::MAX_HEADER_BYTES;

/// One partition of a CSV stream: bytes `start..end` hold `rows` whole records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvPart {
    /// First byte (offset in the stream).
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// The physical line its first byte is on (the header is line 1).
    pub first_line: u64,
    /// The 0-based data row of its first record.
    pub first_row: u64,
    /// Records in it.
    pub rows: u64,
}

/// Why a stream cannot be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SplitError {
    /// No line end within [`MAX_HEADER_BYTES`].
    #[error("the header line is longer than {MAX_HEADER_BYTES} bytes (is this a CSV file?)")]
    HeaderTooLong,
    /// Nothing at all.
    #[error("the file is empty: a CSV file needs a header line naming its columns")]
    Empty,
    /// The header is not UTF-8.
    #[error("the header line is not UTF-8")]
    HeaderNotUtf8,
}

/// The bytes [`CsvSplitter`] counts at a time where records need no look of their own.
const BLOCK: usize = 64 << 10;

/// Splits a CSV stream fed in chunks into partitions of at most `rows_per_part` records
/// and about `max_bytes` bytes (a partition ends at the first record end at or past it).
#[derive(Debug)]
pub struct CsvSplitter {
    rows_per_part: u64,
    max_bytes: u64,
    /// Bytes fed so far.
    offset: u64,
    in_quotes: bool,
    /// Whether the current record has anything but `\r`.
    content: bool,
    /// The header's bytes until it ends.
    header: Option<Vec<u8>>,
    header_done: bool,
    /// One past the header's last byte (its line end included).
    header_end: u64,
    /// Line feeds seen.
    lines: u64,
    rows: u64,
    part_start: u64,
    part_first_line: u64,
    part_rows: u64,
}

impl CsvSplitter {
    /// A splitter for parts of at most `rows_per_part` records (at least 1).
    pub fn new(rows_per_part: u64, max_bytes: u64) -> Self {
        CsvSplitter {
            rows_per_part: rows_per_part.max(1),
            max_bytes: max_bytes.max(1),
            offset: 0,
            in_quotes: false,
            content: false,
            header: Some(Vec::new()),
            header_done: false,
            header_end: 0,
            lines: 0,
            rows: 0,
            part_start: 0,
            part_first_line: 2,
            part_rows: 0,
        }
    }

    /// The header line (without its line end), once it has been read.
    pub fn header(&self) -> Option<Result<String, SplitError>> {
        if !self.header_done {
            return None;
        }
        let bytes = self.header.as_deref().unwrap_or_default();
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        Some(
            std::str::from_utf8(bytes)
                .map(str::to_string)
                .map_err(|_| SplitError::HeaderNotUtf8),
        )
    }

    /// One past the header line's last byte (its line end included), once it has been
    /// read: bytes `0..header_end()` are what a partition puts before its own records.
    pub fn header_end(&self) -> Option<u64> {
        self.header_done.then_some(self.header_end)
    }

    /// Records seen so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Feeds the next chunk; returns the partitions it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<CsvPart>, SplitError> {
        let mut done = Vec::new();
        let mut at = 0;
        while at < chunk.len() {
            if self.header_done && !self.in_quotes {
                at = self.unquoted(chunk, at, &mut done);
                continue;
            }
            let rest = &chunk[at..];
            let Some(found) = memchr::memchr2(b'"', b'\n', rest) else {
                self.note_content(rest);
                self.grow_header(rest)?;
                break;
            };
            let byte = rest[found];
            self.note_content(&rest[..found]);
            let end = at + found + 1;
            self.grow_header(&chunk[at..end])?;
            at = end;
            if byte == b'"' {
                self.in_quotes = !self.in_quotes;
                self.content = true;
                continue;
            }
            self.lines += 1;
            if self.in_quotes {
                continue;
            }
            let record_end = self.offset + at as u64;
            self.end_record(record_end, &mut done);
        }
        self.offset += chunk.len() as u64;
        Ok(done)
    }

    /// Ends the stream: the last partition (a final record without a line end counts).
    pub fn finish(mut self) -> Result<(Option<String>, Vec<CsvPart>), SplitError> {
        let mut done = Vec::new();
        if self.content || (!self.header_done && self.offset > 0) {
            let end = self.offset;
            self.end_record(end, &mut done);
        }
        if !self.header_done {
            return Err(SplitError::Empty);
        }
        if self.part_rows > 0 {
            done.push(self.part(self.offset));
        }
        let header = self.header().unwrap_or(Err(SplitError::Empty))?;
        Ok((Some(header), done))
    }

    /// Outside quotes after the header: every line feed before the next quote ends a
    /// record. The bytes up to the quote go in blocks of [`BLOCK`]: a block of whole
    /// records with no blank line that does not end the partition is only counted (one
    /// vectorised count of its line feeds); any other is walked record by record.
    /// Returns where the general loop goes on (past the quote, which opens a quoted field,
    /// or the chunk's end).
    fn unquoted(&mut self, chunk: &[u8], at: usize, done: &mut Vec<CsvPart>) -> usize {
        let rest = &chunk[at..];
        let quote = memchr::memchr(b'"', rest).unwrap_or(rest.len());
        let mut from = 0;
        while from < quote {
            let block = &rest[from..quote.min(from + BLOCK)];
            let Some(last) = memchr::memrchr(b'\n', block) else {
                // No record ends in it: a long record, or the chunk's last bytes.
                self.note_content(block);
                from += block.len();
                continue;
            };
            let block = &block[..=last];
            let block_end = self.offset + (at + from + block.len()) as u64;
            if !self.count_block(block, block_end) {
                let mut start = 0;
                for feed in memchr::memchr_iter(b'\n', block) {
                    self.note_content(&block[start..feed]);
                    self.lines += 1;
                    start = feed + 1;
                    self.end_record(self.offset + (at + from + start) as u64, done);
                }
            }
            from += block.len();
        }
        if quote < rest.len() {
            self.in_quotes = true;
            self.content = true;
            return at + quote + 1;
        }
        chunk.len()
    }

    /// Counts `block` (whole records ending at stream offset `block_end`) as records if
    /// nothing in it needs a look: no line that may be blank, and no partition ending in
    /// it. Returns whether it did.
    fn count_block(&mut self, block: &[u8], block_end: u64) -> bool {
        // Conservative: a line of nothing but `\r`s, or a line feed right after one, may
        // be a blank line (not a record); any such block is walked.
        let may_be_blank = (!self.content
            && (block[0] == b'\n' || block.starts_with(b"\r\n") || block.starts_with(b"\r\r")))
            || memchr::memmem::find(block, b"\n\n").is_some()
            || memchr::memmem::find(block, b"\n\r\n").is_some()
            || memchr::memmem::find(block, b"\n\r\r").is_some();
        if may_be_blank || block_end - self.part_start >= self.max_bytes {
            return false;
        }
        let records = memchr::memchr_iter(b'\n', block).count() as u64;
        if self.part_rows + records >= self.rows_per_part {
            return false;
        }
        self.lines += records;
        self.rows += records;
        self.part_rows += records;
        self.content = false;
        true
    }

    fn note_content(&mut self, bytes: &[u8]) {
        if !self.content && bytes.iter().any(|&b| b != b'\r') {
            self.content = true;
        }
    }

    fn grow_header(&mut self, bytes: &[u8]) -> Result<(), SplitError> {
        if self.header_done {
            return Ok(());
        }
        if let Some(header) = &mut self.header {
            header.extend_from_slice(bytes);
            if header.len() > MAX_HEADER_BYTES + 1 {
                return Err(SplitError::HeaderTooLong);
            }
        }
        Ok(())
    }

    /// A record (or the header) ended at `end` (one past its last byte).
    fn end_record(&mut self, end: u64, done: &mut Vec<CsvPart>) {
        let content = std::mem::replace(&mut self.content, false);
        if !self.header_done {
            if !content {
                // Blank lines before the header.
                if let Some(h) = &mut self.header {
                    h.clear();
                }
                return;
            }
            self.header_done = true;
            self.header_end = end;
            if let Some(h) = &mut self.header
                && h.last() == Some(&b'\n')
            {
                h.pop();
            }
            self.part_start = end;
            self.part_first_line = self.lines + 1;
            return;
        }
        if !content {
            if self.part_rows == 0 {
                // A blank line between partitions belongs to neither.
                self.part_start = end;
                self.part_first_line = self.lines + 1;
            }
            return;
        }
        self.rows += 1;
        self.part_rows += 1;
        if self.part_rows >= self.rows_per_part || end - self.part_start >= self.max_bytes {
            done.push(self.part(end));
            self.part_start = end;
            self.part_first_line = self.lines + 1;
            self.part_rows = 0;
        }
    }

    fn part(&self, end: u64) -> CsvPart {
        CsvPart {
            start: self.part_start,
            end,
            first_line: self.part_first_line,
            first_row: self.rows - self.part_rows,
            rows: self.part_rows,
        }
    }
}

/// The physical lines of records read from a buffer in order: where the CSV reader says a
/// record starts (it counts no line for a blank line it skipped, and may point at one), the
/// line of its first byte that is not a line end.
#[derive(Debug, Clone)]
pub struct LineCounter {
    line: u64,
    at: usize,
}

impl LineCounter {
    /// A counter over a buffer whose first byte is on line `first_line`.
    pub fn new(first_line: u64) -> Self {
        LineCounter {
            line: first_line,
            at: 0,
        }
    }

    /// The line of the record the reader says starts at byte `start` of `bytes`; records
    /// must be asked for in order.
    pub fn line_at(&mut self, bytes: &[u8], start: usize) -> u64 {
        let mut start = start.min(bytes.len()).max(self.at);
        while start < bytes.len() && matches!(bytes[start], b'\r' | b'\n') {
            start += 1;
        }
        self.line += memchr::memchr_iter(b'\n', &bytes[self.at..start]).count() as u64;
        self.at = start;
        self.line
    }
}
