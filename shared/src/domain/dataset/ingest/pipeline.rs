//! The parallel row pipeline of ingest: one thread reads rows (the CSV guard and parser,
//! or Parquet), parsing threads check them in batches, and the caller consumes the
//! results in file order — so what it accumulates is the same as one thread reading row by
//! row, whatever the number of threads.

use csv::ByteRecord;

use crate::dataset::{DatasetError, RowReader};

/// Rows per batch handed from the reading thread to the parsing threads...
pub(super) const BATCH_ROWS: usize = 4096;
/// ...or fewer: a batch is closed once its records hold this many bytes, so wide rows do not
/// make batches (and the Arrow arrays made of them) bigger.
const BATCH_BYTES: usize = 1 << 20;
/// A slot whose last record was longer than this gets a fresh record before it is reused,
/// so one long row does not leave its buffer behind in every batch.
const KEEP_RECORD_BYTES: usize = 4 << 10;
/// Batches in flight (read, being parsed, or waiting to be consumed in order): bounds the
/// memory of the pipeline to this many batches of rows and their results — a few MB, or a
/// few record-limit rows ([`crate::dataset::MAX_RECORD_BYTES`]) at worst.
const BATCHES_IN_FLIGHT: usize = 8;

/// One row as read, kept for a parsing thread.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) record: ByteRecord,
    pub(super) line: u64,
    /// Cut at the record limit ([`super::RowReader::cut`]).
    pub(super) cut: bool,
}

/// Rows read in file order; the slots (and their records' buffers) are reused.
#[derive(Default)]
pub(super) struct Batch {
    seq: u64,
    slots: Vec<Slot>,
    pub(super) len: usize,
    /// The reader failed after these rows (the file is refused there).
    error: Option<DatasetError>,
}

impl Batch {
    pub(super) fn rows(&self) -> &[Slot] {
        &self.slots[..self.len]
    }
}

/// Threads that parse batches beside the reading thread.
pub(super) fn parse_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
}

/// Reads `reader`'s rows on one thread, hands them in batches to [`parse_threads`] threads
/// running `work`, and gives each batch's result to `consume` on the calling thread in file
/// order — so whatever `consume` accumulates is the same as one thread reading row by row,
/// whatever the number of threads. A reader error is returned after the rows before it were
/// consumed, as a sequential reader would. Returns the rows read.
pub(super) fn pipeline<R: Send>(
    reader: &mut dyn RowReader,
    work: &(dyn Fn(&Batch) -> R + Sync),
    consume: &mut dyn FnMut(R, u64) -> Result<(), DatasetError>,
) -> Result<u64, DatasetError> {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex, mpsc};

    let (free_tx, free_rx) = mpsc::channel::<Batch>();
    let (todo_tx, todo_rx) = mpsc::sync_channel::<Batch>(BATCHES_IN_FLIGHT);
    let (done_tx, done_rx) = mpsc::channel::<(Batch, R)>();
    for _ in 0..BATCHES_IN_FLIGHT {
        // Cannot fail: the receiver is alive.
        let _ = free_tx.send(Batch::default());
    }
    // Shared by the parsing threads; dropped with the last of them, which frees a reader
    // blocked on a full queue when the consumer has stopped early.
    let todo_rx = Arc::new(Mutex::new(todo_rx));
    std::thread::scope(|scope| {
        // Owned here: when this returns (an error included), the reader waiting for a free
        // batch stops.
        let free_tx = free_tx;
        scope.spawn(move || {
            let mut seq = 0;
            // Stops when the consumer has gone (it returns the batches) or at the end.
            while let Ok(mut batch) = free_rx.recv() {
                batch.seq = seq;
                batch.len = 0;
                batch.error = None;
                let (mut end, mut bytes) = (false, 0);
                while batch.len < BATCH_ROWS && bytes < BATCH_BYTES {
                    if batch.len == batch.slots.len() {
                        batch.slots.push(Slot::default());
                    }
                    let slot = &mut batch.slots[batch.len];
                    if slot.record.as_slice().len() > KEEP_RECORD_BYTES {
                        slot.record = ByteRecord::new();
                    }
                    match reader.next_row(&mut slot.record) {
                        Ok(Some(line)) => {
                            slot.line = line;
                            slot.cut = reader.cut();
                            bytes += slot.record.as_slice().len();
                            batch.len += 1;
                        }
                        Ok(None) => {
                            end = true;
                            break;
                        }
                        Err(e) => {
                            batch.error = Some(e);
                            end = true;
                            break;
                        }
                    }
                }
                if todo_tx.send(batch).is_err() || end {
                    break;
                }
                seq += 1;
            }
        });
        for _ in 0..parse_threads() {
            let (todo_rx, done_tx) = (todo_rx.clone(), done_tx.clone());
            scope.spawn(move || {
                loop {
                    let next = todo_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(batch) = next else { break };
                    let result = work(&batch);
                    if done_tx.send((batch, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop((done_tx, todo_rx));
        let mut waiting: BTreeMap<u64, (Batch, R)> = BTreeMap::new();
        let (mut next, mut rows) = (0u64, 0u64);
        for (batch, result) in done_rx.iter() {
            waiting.insert(batch.seq, (batch, result));
            while let Some((mut batch, result)) = waiting.remove(&next) {
                next += 1;
                rows += batch.len as u64;
                consume(result, rows)?;
                if let Some(e) = batch.error.take() {
                    return Err(e);
                }
                // The reader may have stopped already (the end of the file).
                let _ = free_tx.send(batch);
            }
        }
        Ok(rows)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rows` records of `width` bytes each, numbered by their line.
    struct Rows {
        next: u64,
        rows: u64,
        width: usize,
        headers: Vec<String>,
    }

    impl RowReader for Rows {
        fn headers(&self) -> &[String] {
            &self.headers
        }

        fn next_row(&mut self, record: &mut ByteRecord) -> Result<Option<u64>, DatasetError> {
            if self.next == self.rows {
                return Ok(None);
            }
            self.next += 1;
            record.clear();
            record.push_field(self.next.to_string().as_bytes());
            record.push_field(&vec![b'x'; self.width]);
            Ok(Some(self.next))
        }
    }

    #[test]
    fn batches_are_bounded_by_bytes_and_consumed_in_file_order() {
        for (rows, width) in [(10_000, 10), (3_000, 3_000), (20, 200_000)] {
            let mut reader = Rows {
                next: 0,
                rows,
                width,
                headers: vec!["n".into(), "pad".into()],
            };
            let work = |batch: &Batch| {
                let bytes: usize = batch.rows().iter().map(|s| s.record.as_slice().len()).sum();
                let first = batch.rows().first().map(|s| s.line);
                (batch.len, bytes, first)
            };
            let (mut seen, mut batches) = (0u64, 0);
            let read = pipeline(&mut reader, &work, &mut |(len, bytes, first), _| {
                // Closed at the row that reached the byte bound, or at the row bound.
                assert!(len <= BATCH_ROWS);
                assert!(
                    bytes < BATCH_BYTES + width + 10,
                    "{bytes} bytes in {len} rows"
                );
                assert_eq!(first, (len > 0).then_some(seen + 1), "file order");
                seen += len as u64;
                batches += 1;
                Ok(())
            })
            .expect("no reader error");
            assert_eq!((read, seen), (rows, rows));
            assert!(batches as u64 >= rows * width as u64 / BATCH_BYTES as u64);
        }
    }
}
