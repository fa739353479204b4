//! Planning a job: its inputs listed and split into partitions, `plan.json` written, one
//! message per partition sent.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use lambdaml::batch::{
    CsvPart, CsvSplitter, DEFAULT_PARTITION_ROWS, InputFormat, MAX_PARTITION_BYTES, MAX_PARTITIONS,
    PartSource, Plan, PlannedInput, PlannedPart, valid_job_name,
};
use lambdaml::layout;
use lambdaml::message::BatchJobRequest;
use lambdaml::stage::{StageError, run_blocking};
use lambdaml::store::{ObjectKey, ObjectMeta, ObjectStore, ObjectStoreExt, StoreError};

use crate::{Batch, BatchOutcome};

/// The most rows a partition may be asked to hold.
pub const MAX_PARTITION_ROWS: u64 = 1_000_000;

/// How many partition messages are in flight at once while sending.
const SEND_CONCURRENCY: usize = 16;

pub(crate) async fn plan_job(
    batch: &Batch,
    request: &BatchJobRequest,
    trigger: Option<&ObjectKey>,
) -> Result<BatchOutcome, StageError> {
    let started = Instant::now();
    let (model, job) = (request.model.as_str(), request.job.as_str());
    for (what, name) in [("model", model), ("job", job)] {
        if !valid_job_name(name) {
            return Err(StageError::permanent(format!(
                "invalid {what} name {name:?}: use ASCII letters, digits, `.`, `_` and `-` \
                 (at most 128, not starting with `.`)"
            )));
        }
    }
    let partition_rows = request.partition_rows.unwrap_or(DEFAULT_PARTITION_ROWS);
    if !(1..=MAX_PARTITION_ROWS).contains(&partition_rows) {
        return Err(StageError::permanent(format!(
            "partition_rows = {partition_rows}: it must be between 1 and {MAX_PARTITION_ROWS}"
        )));
    }
    let plan_key = layout::batch_plan(model, job).map_err(StageError::invalid)?;
    if batch.store.exists(&plan_key).await? {
        return resend(batch, model, job, trigger).await;
    }
    let version = crate::score::resolve_version(batch, model, request.version.as_deref()).await?;
    let scorer = crate::score::load_scorer(batch, model, &version).await?;
    let prefix = layout::batch_input(model, job);
    let mut listed = batch.store.list_all(&prefix).await?;
    listed.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
    if listed.is_empty() {
        return Err(StageError::permanent(format!(
            "batch job {job} has no input: put CSV, gzip CSV or Parquet files under {prefix}"
        )));
    }
    let mut inputs = Vec::new();
    let mut partitions = Vec::new();
    for meta in listed {
        let name = meta.key.as_str()[prefix.len()..].to_string();
        let Some(format) = InputFormat::of(&name) else {
            return Err(StageError::permanent(format!(
                "{}: batch scoring reads .csv, .csv.gz and .parquet files; move other files \
                 out of {prefix}",
                meta.key
            )));
        };
        // Listings from the file store leave the etag empty: ask for it.
        let meta = match batch.store.head(&meta.key).await? {
            Some(meta) => meta,
            None => continue,
        };
        let index = inputs.len();
        let (input, parts) = match format {
            InputFormat::Csv => plan_csv(batch, meta, name, index, partition_rows).await?,
            InputFormat::CsvGzip => {
                let first = partitions.len();
                plan_gzip(batch, model, job, meta, name, index, first, partition_rows).await?
            }
            InputFormat::Parquet => plan_parquet(batch, meta, name, index, partition_rows).await?,
        };
        check_columns(&input, &scorer)?;
        inputs.push(input);
        for mut part in parts {
            part.index = partitions.len();
            partitions.push(part);
        }
        if partitions.len() > MAX_PARTITIONS {
            return Err(StageError::permanent(format!(
                "batch job {job} would have more than {MAX_PARTITIONS} partitions: raise \
                 partition_rows (now {partition_rows})"
            )));
        }
    }
    let plan = Plan {
        model: model.to_string(),
        version,
        job: job.to_string(),
        planned_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        plan_seconds: started.elapsed().as_secs_f64(),
        partition_rows,
        include_inputs: request.include_inputs,
        inputs,
        partitions,
    };
    match batch
        .store
        .put_if_absent(&plan_key, lambdaml::store::to_json_bytes(&plan))
        .await
    {
        Ok(_) => {}
        // Another planner (a duplicated notification) got there first: go on with its plan.
        Err(StoreError::AlreadyExists(_)) => return resend(batch, model, job, trigger).await,
        Err(e) => return Err(StageError::context(format!("writing {plan_key}"), e)),
    }
    tracing::info!(
        model,
        job,
        partitions = plan.partitions.len(),
        rows = plan.rows(),
        "batch job planned"
    );
    let indices: Vec<usize> = (0..plan.partitions.len()).collect();
    let sent = send_all(batch, &plan, &indices).await?;
    if plan.partitions.is_empty() {
        // Nothing to score: the job ends here.
        crate::finish::maybe_finish(batch, &plan).await?;
    }
    Ok(planned(&plan, plan_key, sent, false))
}

/// A job planned before: re-sends the messages of the partitions without a manifest (the
/// first planner may have stopped while sending them), unless the job has ended.
async fn resend(
    batch: &Batch,
    model: &str,
    job: &str,
    trigger: Option<&ObjectKey>,
) -> Result<BatchOutcome, StageError> {
    let plan = batch.load_plan(model, job).await?;
    if let Some(key) = trigger
        && !plan.inputs.iter().any(|i| &i.key == key)
    {
        return Err(StageError::permanent(format!(
            "{key} arrived after batch job {job} was planned over {} file(s); a job's inputs \
             are those present when it starts: put this file under a new job's input folder",
            plan.inputs.len()
        )));
    }
    let plan_key = layout::batch_plan(model, job).map_err(StageError::invalid)?;
    let mut sent = 0;
    if batch.job_manifest(model, job).await?.is_none() {
        let done = crate::finish::finished_parts(batch, &plan).await?;
        let missing: Vec<usize> = (0..plan.partitions.len())
            .filter(|i| !done.contains(i))
            .collect();
        sent = send_all(batch, &plan, &missing).await?;
        if missing.is_empty() {
            crate::finish::maybe_finish(batch, &plan).await?;
        }
    }
    Ok(planned(&plan, plan_key, sent, true))
}

fn planned(plan: &Plan, key: ObjectKey, sent: usize, existing: bool) -> BatchOutcome {
    BatchOutcome::Planned {
        model: plan.model.clone(),
        job: plan.job.clone(),
        version: plan.version.clone(),
        partitions: plan.partitions.len(),
        rows: plan.rows(),
        sent,
        existing,
        plan: key,
    }
}

async fn send_all(batch: &Batch, plan: &Plan, indices: &[usize]) -> Result<usize, StageError> {
    let results: Vec<Result<(), StageError>> = futures::stream::iter(indices.iter().copied())
        .map(|i| batch.send_partition(plan, i))
        .buffer_unordered(SEND_CONCURRENCY)
        .collect()
        .await;
    let mut sent = 0;
    for r in results {
        r?;
        sent += 1;
    }
    Ok(sent)
}

/// A local file with the object's bytes: the file store's own (a link), or a download.
async fn local_copy(
    store: &Arc<dyn ObjectStore>,
    key: &ObjectKey,
) -> Result<tempfile::TempPath, StageError> {
    if let Some(path) = store.local_snapshot(key).await? {
        return Ok(path);
    }
    let file = tempfile::NamedTempFile::new().map_err(StageError::transient)?;
    let (file, path) = file.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let mut stream = store.get_stream(key).await?;
    while let Some(chunk) = stream.next().await {
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk?)
            .await
            .map_err(StageError::transient)?;
    }
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(StageError::transient)?;
    Ok(path)
}

fn split_error(key: &ObjectKey, e: impl std::fmt::Display) -> StageError {
    StageError::permanent(format!("{key}: {e}"))
}

/// Splits `reader`'s CSV; calls `on_part` with each partition and its bytes when `keep`.
/// The reading (a page-cache copy, or gzip's inflating) runs on a thread of its own, a
/// few chunks ahead of the splitter.
fn split_csv(
    key: &ObjectKey,
    reader: impl Read + Send,
    partition_rows: u64,
    keep: bool,
    mut on_part: impl FnMut(CsvPart, Option<Vec<u8>>) -> Result<(), StageError>,
) -> Result<String, StageError> {
    let mut splitter = CsvSplitter::new(partition_rows, MAX_PARTITION_BYTES);
    // The bytes since the current partition's start (kept only for staging).
    let mut pending: Vec<u8> = Vec::new();
    let mut pending_start = 0u64;
    read_ahead(reader, |chunk| {
        let chunk = chunk.map_err(|e| split_error(key, format!("reading: {e}")))?;
        if keep {
            pending.extend_from_slice(chunk);
            if pending.len() as u64 > 2 * MAX_PARTITION_BYTES + (1 << 20) {
                return Err(StageError::permanent(format!(
                    "{key}: a record longer than {} MiB (an unclosed quote?)",
                    (2 * MAX_PARTITION_BYTES) >> 20
                )));
            }
        }
        for part in splitter.feed(chunk).map_err(|e| split_error(key, e))? {
            let bytes = keep.then(|| take_part(&mut pending, &mut pending_start, &part));
            on_part(part, bytes)?;
        }
        Ok(())
    })?;
    let (header, rest) = splitter.finish().map_err(|e| split_error(key, e))?;
    for part in rest {
        let bytes = keep.then(|| take_part(&mut pending, &mut pending_start, &part));
        on_part(part, bytes)?;
    }
    Ok(header.unwrap_or_default())
}

/// Size of the read-ahead chunks (aligned: the kernel copies into them four times faster
/// than into malloc's 16-byte alignment on some machines; see [`lambdaml::store::AlignedBuf`]).
const READ_CHUNK: usize = 1 << 20;

/// Hands `reader`'s bytes to `consume` chunk by chunk, in order, while a scoped thread
/// reads the next ones (at most three chunks in memory). A read error is handed over as
/// such, and reading stops; an error from `consume` stops both.
fn read_ahead(
    mut reader: impl Read + Send,
    mut consume: impl FnMut(std::io::Result<&[u8]>) -> Result<(), StageError>,
) -> Result<(), StageError> {
    use std::sync::mpsc::sync_channel;
    const BUFFERS: usize = 3;
    std::thread::scope(|scope| {
        let (full_tx, full_rx) =
            sync_channel::<std::io::Result<(lambdaml::store::AlignedBuf, usize)>>(BUFFERS);
        let (empty_tx, empty_rx) = sync_channel::<lambdaml::store::AlignedBuf>(BUFFERS);
        for _ in 0..BUFFERS {
            let _ = empty_tx.send(lambdaml::store::AlignedBuf::new(READ_CHUNK));
        }
        scope.spawn(move || {
            // Ends when the file does, on a read error, or when the consumer has gone.
            while let Ok(mut buf) = empty_rx.recv() {
                let read = loop {
                    match reader.read(buf.as_mut_slice()) {
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        other => break other,
                    }
                };
                match read {
                    Ok(0) => return,
                    Ok(n) => {
                        if full_tx.send(Ok((buf, n))).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = full_tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        for chunk in full_rx {
            match chunk {
                Ok((buf, n)) => {
                    consume(Ok(&buf.as_slice()[..n]))?;
                    // The reader may have stopped already; then the buffer is not needed.
                    let _ = empty_tx.send(buf);
                }
                Err(e) => return consume(Err(e)),
            }
        }
        Ok(())
    })
}

/// Cuts `part`'s bytes off the front of `pending` (which starts at stream offset `start`).
fn take_part(pending: &mut Vec<u8>, start: &mut u64, part: &CsvPart) -> Vec<u8> {
    let from = (part.start.saturating_sub(*start) as usize).min(pending.len());
    let to = (part.end.saturating_sub(*start) as usize).min(pending.len());
    let bytes = pending[from..to].to_vec();
    pending.drain(..to);
    *start += to as u64;
    bytes
}

fn csv_part(input: usize, part: &CsvPart, source: PartSource) -> PlannedPart {
    PlannedPart {
        index: 0,
        input,
        source,
        first_line: Some(part.first_line),
        first_row: part.first_row,
        rows: part.rows,
        bytes: part.end - part.start,
    }
}

async fn plan_csv(
    batch: &Batch,
    meta: ObjectMeta,
    name: String,
    input: usize,
    partition_rows: u64,
) -> Result<(PlannedInput, Vec<PlannedPart>), StageError> {
    let key = meta.key.clone();
    let range = |part: &CsvPart| {
        check_part_size(&key, part)?;
        Ok(csv_part(
            input,
            part,
            PartSource::CsvRange {
                start: part.start,
                end: part.end,
            },
        ))
    };
    let (header, parts) = match batch.store.local_snapshot(&meta.key).await? {
        // A file of the file store: read it on a blocking thread.
        Some(path) => {
            let key = key.clone();
            run_blocking("splitting a CSV input", move || {
                let file = std::fs::File::open(&path).map_err(StageError::transient)?;
                let mut parts = Vec::new();
                let header = split_csv(&key, file, partition_rows, false, |part, _| {
                    parts.push(part);
                    Ok(())
                })?;
                Ok::<_, StageError>((header, parts))
            })
            .await??
        }
        // Elsewhere (S3), the object streams through the splitter: no copy on disk.
        None => {
            let mut splitter = CsvSplitter::new(partition_rows, MAX_PARTITION_BYTES);
            let mut parts = Vec::new();
            let mut stream = batch.store.get_stream(&meta.key).await?;
            while let Some(chunk) = stream.next().await {
                parts.extend(splitter.feed(&chunk?).map_err(|e| split_error(&key, e))?);
            }
            let (header, rest) = splitter.finish().map_err(|e| split_error(&key, e))?;
            parts.extend(rest);
            (header.unwrap_or_default(), parts)
        }
    };
    let parts = parts
        .iter()
        .map(range)
        .collect::<Result<Vec<_>, StageError>>()?;
    Ok((
        PlannedInput {
            key: meta.key,
            name,
            size: meta.size,
            etag: meta.etag,
            format: InputFormat::Csv,
            header: Some(header),
            footer_start: None,
        },
        parts,
    ))
}

/// A partition is at least one whole record: one record far larger than a partition's
/// bytes would make a worker hold it whole, so it is refused.
fn check_part_size(key: &ObjectKey, part: &CsvPart) -> Result<(), StageError> {
    if part.end - part.start > 2 * MAX_PARTITION_BYTES {
        return Err(StageError::permanent(format!(
            "{key}: the record on line {} is longer than {} MiB (an unclosed quote?)",
            part.first_line,
            (2 * MAX_PARTITION_BYTES) >> 20
        )));
    }
    Ok(())
}

/// A gzip CSV: decompressed once, its partitions staged as plain CSV objects (gzip cannot
/// be read from the middle).
#[allow(clippy::too_many_arguments)]
async fn plan_gzip(
    batch: &Batch,
    model: &str,
    job: &str,
    meta: ObjectMeta,
    name: String,
    input: usize,
    first: usize,
    partition_rows: u64,
) -> Result<(PlannedInput, Vec<PlannedPart>), StageError> {
    let path = local_copy(&batch.store, &meta.key).await?;
    let key = meta.key.clone();
    let store = batch.store.clone();
    let (model, job) = (model.to_string(), job.to_string());
    let runtime = tokio::runtime::Handle::current();
    let (header, parts) = run_blocking("staging a gzip CSV input", move || {
        let file = std::fs::File::open(&path).map_err(StageError::transient)?;
        let reader = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file));
        let mut parts = Vec::new();
        let header = split_csv(&key, reader, partition_rows, true, |part, bytes| {
            check_part_size(&key, &part)?;
            let staged = layout::batch_staged(&model, &job, first + parts.len())
                .map_err(StageError::invalid)?;
            let bytes = Bytes::from(bytes.unwrap_or_default());
            runtime
                .block_on(store.put_immutable(&staged, bytes))
                .map_err(|e| StageError::context(format!("writing {staged}"), e))?;
            parts.push(csv_part(
                input,
                &part,
                PartSource::CsvObject { key: staged },
            ));
            Ok(())
        })?;
        Ok::<_, StageError>((header, parts))
    })
    .await??;
    Ok((
        PlannedInput {
            key: meta.key,
            name,
            size: meta.size,
            etag: meta.etag,
            format: InputFormat::CsvGzip,
            header: Some(header),
            footer_start: None,
        },
        parts,
    ))
}

/// A Parquet file: consecutive row groups per partition, read from its footer alone.
async fn plan_parquet(
    batch: &Batch,
    meta: ObjectMeta,
    name: String,
    input: usize,
    partition_rows: u64,
) -> Result<(PlannedInput, Vec<PlannedPart>), StageError> {
    let (footer_start, metadata) = crate::read::parquet_footer(batch, &meta).await?;
    let mut parts = Vec::new();
    let mut groups: Vec<usize> = Vec::new();
    let (mut rows, mut start, mut end, mut first_row) = (0u64, u64::MAX, 0u64, 0);
    let mut flush = |groups: &mut Vec<usize>, rows: &mut u64, start: &mut u64, end: &mut u64| {
        if groups.is_empty() {
            return;
        }
        parts.push(PlannedPart {
            index: 0,
            input,
            source: PartSource::RowGroups {
                groups: std::mem::take(groups),
                start: *start,
                end: *end,
            },
            first_line: None,
            first_row,
            rows: *rows,
            bytes: *end - *start,
        });
        first_row += *rows;
        (*rows, *start, *end) = (0, u64::MAX, 0);
    };
    for (i, rg) in metadata.row_groups().iter().enumerate() {
        let n = rg.num_rows().max(0) as u64;
        let (mut s, mut e) = (u64::MAX, 0u64);
        for column in rg.columns() {
            let (cs, len) = column.byte_range();
            s = s.min(cs);
            e = e.max(cs + len);
        }
        if s == u64::MAX {
            (s, e) = (0, 0);
        }
        let too_big = !groups.is_empty()
            && (rows + n > partition_rows || e.max(end) - s.min(start) > MAX_PARTITION_BYTES);
        if too_big {
            flush(&mut groups, &mut rows, &mut start, &mut end);
        }
        groups.push(i);
        rows += n;
        start = start.min(s);
        end = end.max(e);
    }
    flush(&mut groups, &mut rows, &mut start, &mut end);
    let columns = crate::read::parquet_columns(&metadata);
    Ok((
        PlannedInput {
            key: meta.key,
            name,
            size: meta.size,
            etag: meta.etag,
            format: InputFormat::Parquet,
            header: Some(columns.join(",")),
            footer_start: Some(footer_start),
        },
        parts,
    ))
}

/// Every input the model takes must be a column of the file.
fn check_columns(input: &PlannedInput, scorer: &crate::Scorer) -> Result<(), StageError> {
    let columns = match input.format {
        InputFormat::Parquet => input
            .header
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::to_string)
            .collect(),
        _ => crate::read::header_names(input.header.as_deref().unwrap_or_default())
            .map_err(|e| StageError::permanent(format!("{}: {e}", input.key)))?,
    };
    let mut seen = std::collections::BTreeSet::new();
    for c in &columns {
        if !seen.insert(c.as_str()) {
            return Err(StageError::permanent(format!(
                "{}: the column {c:?} appears twice in the header",
                input.key
            )));
        }
    }
    let inputs: std::collections::BTreeSet<&str> = scorer.input_names().collect();
    let spare: Vec<&String> = columns
        .iter()
        .filter(|c| !inputs.contains(c.as_str()))
        .collect();
    let missing: Vec<String> = scorer
        .input_names()
        .filter(|name| !seen.contains(name))
        .map(|name| match closest(name, &spare) {
            Some(near) => format!("{name} (the file has {near:?})"),
            None => name.to_string(),
        })
        .collect();
    if !missing.is_empty() {
        return Err(StageError::permanent(format!(
            "{}: model {} version {} takes the column(s) {} that the file lacks",
            input.key,
            scorer.model,
            scorer.version,
            missing.join(", ")
        )));
    }
    Ok(())
}

/// The column name closest to `name` among `columns`, when one differs only by case or a
/// short typo.
fn closest<'a>(name: &str, columns: &[&'a String]) -> Option<&'a str> {
    columns
        .iter()
        .map(|c| {
            let d = if c.eq_ignore_ascii_case(name) {
                0
            } else {
                edit_distance(c, name)
            };
            (d, c.as_str())
        })
        .filter(|(d, _)| *d == 0 || (name.len() > 3 && *d <= 2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A reader that fails after `ok` bytes.
    struct Failing {
        ok: usize,
    }

    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.ok == 0 {
                return Err(std::io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.ok).min(1000);
            buf[..n].fill(b'x');
            self.ok -= n;
            Ok(n)
        }
    }

    #[test]
    fn reading_ahead_hands_over_every_byte_in_order_and_stops_on_errors() {
        let data: Vec<u8> = (0..(3 * READ_CHUNK + 12_345))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut seen = Vec::new();
        read_ahead(std::io::Cursor::new(&data), |chunk| {
            seen.extend_from_slice(chunk.unwrap());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, data);

        // The consumer's error stops the reading (and the thread: the scope would hang).
        let mut calls = 0;
        let stopped = read_ahead(std::io::Cursor::new(&data), |_| {
            calls += 1;
            Err(StageError::permanent("enough"))
        });
        assert!(stopped.is_err());
        assert_eq!(calls, 1);

        // A read error reaches the consumer after the bytes read before it.
        let mut got = 0;
        let failed = read_ahead(Failing { ok: 2500 }, |chunk| match chunk {
            Ok(c) => {
                got += c.len();
                Ok(())
            }
            Err(e) => Err(StageError::permanent(e.to_string())),
        });
        assert_eq!(got, 2500);
        assert!(failed.unwrap_err().to_string().contains("disk on fire"));
    }
}
