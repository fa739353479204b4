//! Capture records and ground-truth feedback: what the score function saw and answered,
//! and what the truth turned out to be. The monitor reads both.
//!
//! Every scoring request, accepted or rejected, becomes one [`CaptureRecord`] (a JSON line).
//! A [`CaptureWriter`] buffers the lines per model and hour and writes them as
//! `captures/<model>/<YYYY-MM-DD>/<HH>/<time>-<id>.jsonl` when a buffer reaches its size
//! limit, when it is older than its age limit, or when [`CaptureWriter::flush`] is called —
//! which the score function does at the end of every Lambda invocation and when the local
//! server shuts down, so nothing captured is lost. A failed write keeps the lines for the
//! next attempt.
//!
//! Feedback ([`FeedbackRecord`]) names a request id and a row, and is written at once to
//! `feedback/<model>/<YYYY-MM-DD>/<HH>/<time>-<id>.jsonl`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::{ObjectKey, ObjectStore, StoreError};

/// One rejected value, row or request: where and why. The 4xx bodies carry the same shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The row (0-based), when the problem is in one row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<usize>,
    /// The field (feature, tensor or JSON key), when one is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl FieldError {
    /// An error in `field` of `row`.
    pub fn new(row: Option<usize>, field: Option<&str>, reason: impl Into<String>) -> Self {
        FieldError {
            row,
            field: field.map(str::to_string),
            reason: reason.into(),
        }
    }
}

/// One input value as the client sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CapturedValue {
    /// Null or absent.
    Null,
    /// A number.
    Number(f64),
    /// Text.
    Text(String),
}

/// One scoring request, as captured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureRecord {
    /// The request id (also in the response and its `x-request-id` header).
    pub request_id: String,
    /// The client's own id (the Open Inference Protocol's `id`), when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// RFC 3339 time the request arrived, milliseconds, UTC.
    pub timestamp: String,
    /// The model.
    pub model: String,
    /// The version that answered (or would have), when one was resolved.
    pub version: Option<String>,
    /// The version's rollout role: `canary` (it answered a canary's share) or `shadow`
    /// (a copy of a production request, never returned, under the same `request_id`; its
    /// record holds the shadow's outputs, not the inputs, which are production's record's);
    /// absent for production and explicitly requested versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::registry::Role>,
    /// `v2` or `mlflow`.
    pub protocol: String,
    /// The HTTP status answered.
    pub status: u16,
    /// Time from request to response body, microseconds.
    pub latency_us: u64,
    /// The rows scored (0 for a rejected request).
    pub rows: usize,
    /// The input rows as sent (numbers, text, nulls), each in the order of the version's
    /// pipeline inputs (`pipeline.inputs` in its manifest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Vec<CapturedValue>>,
    /// The predicted labels (classification).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Class probabilities row-major (classification; `classes` wide) or values
    /// (regression).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<f64>,
    /// What was wrong with a rejected request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The body of a request that could not be parsed (the first 64 KiB, lossy UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The size of the request body in bytes.
    pub body_bytes: usize,
}

/// Ground truth for one row of one scored request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackRecord {
    /// The request id the score function returned.
    pub request_id: String,
    /// The row of that request (0 for one-row requests).
    pub row: usize,
    /// The true label (a class name) or value (regression, as text).
    pub label: String,
    /// RFC 3339 time it was received.
    pub received_at: String,
    /// Where it came from (`http`, `cli`).
    pub source: String,
}

/// When capture buffers are written.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureConfig {
    /// The share of accepted requests captured, in [0, 1]. Rejected requests are always
    /// captured.
    pub sample_rate: f64,
    /// Write a buffer once it holds this many bytes.
    pub max_bytes: usize,
    /// Write a buffer once its oldest line is this old.
    pub max_age: Duration,
    /// At most this many bytes wait in memory across every buffer. When the store cannot
    /// keep up (or fails), records beyond it are dropped and counted
    /// ([`CaptureStats::dropped`], a metric and an error log) rather than growing memory
    /// until the process dies and loses every buffer.
    pub max_buffered_bytes: usize,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            sample_rate: 1.0,
            max_bytes: 4 << 20,
            max_age: Duration::from_secs(60),
            max_buffered_bytes: 32 << 20,
        }
    }
}

struct Buffer {
    lines: Vec<u8>,
    records: u64,
    since: Instant,
}

/// Counters of a [`CaptureWriter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CaptureStats {
    /// Records offered to [`CaptureWriter::record`].
    pub offered: u64,
    /// Records buffered (offered and sampled).
    pub buffered: u64,
    /// Records written to the store.
    pub written: u64,
    /// Objects written.
    pub objects: u64,
    /// Writes that failed (their lines were kept for the next flush).
    pub failed_writes: u64,
    /// Records dropped because the buffers were at `max_buffered_bytes`.
    pub dropped: u64,
    /// Bytes waiting in memory now.
    pub pending_bytes: u64,
}

/// Buffers capture lines and writes them to the store. See the module docs.
pub struct CaptureWriter {
    store: Arc<dyn ObjectStore>,
    config: CaptureConfig,
    /// Model → hour (Unix hours) → lines.
    buffers: Mutex<HashMap<String, HashMap<i64, Buffer>>>,
    offered: AtomicU64,
    accepted_seen: AtomicU64,
    buffered: AtomicU64,
    written: AtomicU64,
    objects: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    /// Bytes in `buffers`; changed only while `buffers` is locked.
    pending: AtomicU64,
    flushing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for CaptureWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureWriter")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The capture folder of Unix hour `hour`.
fn capture_dir(model: &str, hour: i64) -> String {
    let at = DateTime::<Utc>::from_timestamp(hour * 3600, 0).unwrap_or_default();
    crate::layout::records_of_hour(crate::layout::CAPTURES, model, at)
}

/// A fresh object name under `dir` (time first, so listings sort by time).
fn object_key(dir: &str) -> Result<ObjectKey, StoreError> {
    let now = Utc::now();
    let id = uuid::Uuid::new_v4().simple().to_string();
    crate::layout::record_file(dir, now, &id[..12])
}

/// The current time, RFC 3339 with milliseconds.
pub fn now_millis() -> String {
    millis(Utc::now())
}

/// `at` as capture records write times: RFC 3339, milliseconds, UTC.
pub fn millis(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Where the score function reads the time from: the system clock, or a simulated one
/// (the demo replays fifty years of days).
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl Clock {
    /// A clock reading `now`.
    pub fn new(now: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        Clock(Arc::new(now))
    }

    /// The time.
    pub fn now(&self) -> DateTime<Utc> {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", millis(self.now()))
    }
}

/// The system clock.
pub fn system_clock() -> Clock {
    Clock::new(Utc::now)
}

/// The time an RFC 3339 string names, or now when it names none.
fn time_of(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|_| Utc::now())
}

impl CaptureWriter {
    /// A writer into `store`.
    pub fn new(store: Arc<dyn ObjectStore>, config: CaptureConfig) -> Self {
        CaptureWriter {
            store,
            config,
            buffers: Mutex::new(HashMap::new()),
            offered: AtomicU64::new(0),
            accepted_seen: AtomicU64::new(0),
            buffered: AtomicU64::new(0),
            written: AtomicU64::new(0),
            objects: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CaptureConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> CaptureStats {
        CaptureStats {
            offered: self.offered.load(Ordering::Relaxed),
            buffered: self.buffered.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            objects: self.objects.load(Ordering::Relaxed),
            failed_writes: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            pending_bytes: self.pending.load(Ordering::Relaxed),
        }
    }

    /// Counts `records` dropped; logs the first drop and every 1,000th after it.
    fn drop_records(&self, records: u64, why: &str) {
        let before = self.dropped.fetch_add(records, Ordering::Relaxed);
        if before == 0 || before / 1000 != (before + records) / 1000 {
            tracing::error!(
                dropped_total = before + records,
                limit_bytes = self.config.max_buffered_bytes,
                "capture records dropped: {why}"
            );
        }
    }

    /// Whether the next accepted request is sampled. Exact over any run of requests: of
    /// n accepted requests, floor(n × rate) are captured.
    fn sampled(&self) -> bool {
        let rate = self.config.sample_rate;
        if rate >= 1.0 {
            return true;
        }
        if rate <= 0.0 {
            return false;
        }
        let n = self.accepted_seen.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * rate).floor() > (n * rate).floor()
    }

    /// Buffers `record` (accepted requests subject to sampling). Returns whether a buffer
    /// is now over its size limit, so the caller can flush without waiting for the timer.
    pub fn record(&self, record: &CaptureRecord) -> bool {
        self.offered.fetch_add(1, Ordering::Relaxed);
        let accepted = record.status < 400;
        if accepted && !self.sampled() {
            return false;
        }
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!(error = %e, request_id = %record.request_id, "capture record did not serialize");
                return false;
            }
        };
        line.push(b'\n');
        // Partitioned by the record's own time, so a folder holds the records of its hour.
        let hour = time_of(&record.timestamp).timestamp().div_euclid(3600);
        let mut buffers = self
            .buffers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pending = self.pending.load(Ordering::Relaxed);
        if pending.saturating_add(line.len() as u64) > self.config.max_buffered_bytes as u64 {
            drop(buffers);
            self.drop_records(
                1,
                "the capture buffers are full (the store is failing or slow)",
            );
            return true;
        }
        // Looked up by `&str`: a String is made only for a model's first record.
        if !buffers.contains_key(&record.model) {
            buffers.insert(record.model.clone(), HashMap::new());
        }
        let Some(hours) = buffers.get_mut(&record.model) else {
            return false;
        };
        let buffer = hours.entry(hour).or_insert_with(|| Buffer {
            lines: Vec::with_capacity(64 << 10),
            records: 0,
            since: Instant::now(),
        });
        buffer.lines.extend_from_slice(&line);
        buffer.records += 1;
        self.pending.fetch_add(line.len() as u64, Ordering::Relaxed);
        self.buffered.fetch_add(1, Ordering::Relaxed);
        buffer.lines.len() >= self.config.max_bytes
    }

    /// Writes the buffers that are over their size or age limit.
    pub async fn flush_due(&self) {
        self.flush_where(false).await;
    }

    /// Writes every buffer now (end of an invocation, shutdown).
    pub async fn flush(&self) {
        self.flush_where(true).await;
    }

    async fn flush_where(&self, all: bool) {
        let _one_at_a_time = self.flushing.lock().await;
        let due: Vec<(String, i64, Buffer)> = {
            let mut buffers = self
                .buffers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut due = Vec::new();
            for (model, hours) in buffers.iter_mut() {
                let keys: Vec<i64> = hours
                    .iter()
                    .filter(|(_, b)| {
                        all || b.lines.len() >= self.config.max_bytes
                            || b.since.elapsed() >= self.config.max_age
                    })
                    .map(|(h, _)| *h)
                    .collect();
                for h in keys {
                    if let Some(b) = hours.remove(&h) {
                        self.pending
                            .fetch_sub(b.lines.len() as u64, Ordering::Relaxed);
                        due.push((model.clone(), h, b));
                    }
                }
            }
            due
        };
        for (model, hour, buffer) in due {
            let dir = capture_dir(&model, hour);
            let Buffer {
                lines,
                records,
                since,
            } = buffer;
            let bytes = Bytes::from(lines);
            let written = match object_key(&dir) {
                Ok(key) => self.store.put(&key, bytes.clone()).await,
                Err(e) => Err(e),
            };
            match written {
                Ok(_) => {
                    self.written.fetch_add(records, Ordering::Relaxed);
                    self.objects.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, records, dir = %dir, "capture write failed; keeping the lines for the next flush");
                    let mut buffers = self
                        .buffers
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    // Kept for the next flush while they fit under the bound; beyond it
                    // the failed batch is dropped (counted) rather than memory growing.
                    let pending = self.pending.load(Ordering::Relaxed);
                    if pending.saturating_add(bytes.len() as u64)
                        > self.config.max_buffered_bytes as u64
                    {
                        drop(buffers);
                        self.drop_records(
                            records,
                            "a failed capture write could not be kept under the buffer limit",
                        );
                        continue;
                    }
                    self.pending
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    let entry = buffers
                        .entry(model)
                        .or_default()
                        .entry(hour)
                        .or_insert_with(|| Buffer {
                            lines: Vec::new(),
                            records: 0,
                            since,
                        });
                    let mut lines = bytes.to_vec();
                    lines.extend_from_slice(&entry.lines);
                    entry.lines = lines;
                    entry.records += records;
                    entry.since = entry.since.min(since);
                }
            }
        }
    }

    /// Runs [`flush_due`](Self::flush_due) every `every` until the writer is dropped
    /// elsewhere (the task holds only a weak reference).
    pub fn spawn_flusher(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(writer) => writer.flush_due().await,
                    None => return,
                }
            }
        })
    }
}

/// Writes feedback records for `model` as one object; returns its key.
pub async fn write_feedback(
    store: &dyn ObjectStore,
    model: &str,
    records: &[FeedbackRecord],
) -> Result<ObjectKey, StoreError> {
    let mut lines = Vec::new();
    for r in records {
        // A FeedbackRecord is strings and a number: serialization cannot fail.
        if let Ok(line) = serde_json::to_vec(r) {
            lines.extend_from_slice(&line);
            lines.push(b'\n');
        }
    }
    let at = records
        .first()
        .map(|r| time_of(&r.received_at))
        .unwrap_or_else(Utc::now);
    let key = object_key(&crate::layout::records_of_hour(
        crate::layout::FEEDBACK,
        model,
        at,
    ))?;
    store.put(&key, Bytes::from(lines)).await?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn record(id: usize, status: u16) -> CaptureRecord {
        CaptureRecord {
            request_id: format!("r{id}"),
            client_id: None,
            timestamp: now_millis(),
            model: "m".into(),
            version: Some("v".into()),
            role: None,
            protocol: "v2".into(),
            status,
            latency_us: 10,
            rows: 1,
            inputs: vec![vec![CapturedValue::Number(1.5)]],
            labels: vec!["1".into()],
            outputs: vec![0.2, 0.8],
            errors: vec![],
            body: None,
            body_bytes: 12,
        }
    }

    async fn lines(store: &dyn ObjectStore) -> Vec<CaptureRecord> {
        let mut out = Vec::new();
        for meta in store.list_all("captures/m/").await.unwrap() {
            let bytes = store.get(&meta.key).await.unwrap().bytes;
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                out.push(serde_json::from_slice(line).unwrap());
            }
        }
        out
    }

    #[tokio::test]
    async fn records_are_buffered_and_all_written_on_flush() {
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let writer = CaptureWriter::new(store.clone(), CaptureConfig::default());
        for i in 0..250 {
            writer.record(&record(i, if i % 10 == 0 { 422 } else { 200 }));
        }
        assert!(
            lines(store.as_ref()).await.is_empty(),
            "nothing written before a flush"
        );
        writer.flush_due().await;
        assert!(lines(store.as_ref()).await.is_empty(), "nothing is due yet");
        writer.flush().await;
        let got = lines(store.as_ref()).await;
        assert_eq!(got.len(), 250);
        assert_eq!(got[3], record(3, 200).clone_with_time(&got[3].timestamp));
        let keys = store.list_all("captures/m/").await.unwrap();
        assert_eq!(keys.len(), 1);
        let parts: Vec<&str> = keys[0].key.as_str().split('/').collect();
        assert_eq!(parts.len(), 5, "{keys:?}");
        assert_eq!(parts[2].len(), 10, "date folder");
        assert_eq!(parts[3].len(), 2, "hour folder");
        assert_eq!(writer.stats().written, 250);
    }

    /// The store fails (here: its root is replaced by a file) while requests keep coming:
    /// what waits in memory stays under `max_buffered_bytes`, what does not fit is counted
    /// as dropped, and once the store is back every kept record is written.
    #[tokio::test]
    async fn a_failing_store_cannot_grow_the_buffers_past_their_bound() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let store: Arc<dyn ObjectStore> = Arc::new(crate::store::FileStore::open(&root).unwrap());
        let limit = 20_000;
        let writer = CaptureWriter::new(
            store.clone(),
            CaptureConfig {
                max_buffered_bytes: limit,
                ..CaptureConfig::default()
            },
        );
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::write(&root, b"not a directory").unwrap();
        for i in 0..500 {
            writer.record(&record(i, 200));
            if i % 100 == 99 {
                writer.flush().await;
            }
            assert!(writer.stats().pending_bytes <= limit as u64);
        }
        let stats = writer.stats();
        assert!(stats.failed_writes >= 1, "{stats:?}");
        assert!(stats.dropped > 0, "{stats:?}");
        assert!(stats.pending_bytes > 0 && stats.pending_bytes <= limit as u64);
        // The store is back: everything still held is written, nothing is counted twice.
        std::fs::remove_file(&root).unwrap();
        crate::store::FileStore::open(&root).unwrap();
        writer.flush().await;
        let stats = writer.stats();
        assert_eq!(stats.pending_bytes, 0);
        assert_eq!(stats.written + stats.dropped, 500, "{stats:?}");
        assert_eq!(lines(store.as_ref()).await.len() as u64, stats.written);
    }

    #[tokio::test]
    async fn a_full_buffer_is_due_and_sampling_keeps_every_rejection() {
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let writer = CaptureWriter::new(
            store.clone(),
            CaptureConfig {
                sample_rate: 0.25,
                max_bytes: 2_000,
                max_age: Duration::from_secs(3600),
                ..CaptureConfig::default()
            },
        );
        let mut full = false;
        for i in 0..100 {
            full |= writer.record(&record(i, if i < 20 { 400 } else { 200 }));
        }
        assert!(full);
        writer.flush_due().await;
        writer.flush().await;
        let got = lines(store.as_ref()).await;
        let rejected = got.iter().filter(|r| r.status == 400).count();
        assert_eq!(rejected, 20, "rejections are never sampled away");
        assert_eq!(
            got.len() - rejected,
            20,
            "a quarter of 80 accepted requests"
        );
        assert_eq!(writer.stats().offered, 100);
    }

    #[tokio::test]
    async fn feedback_is_written_at_once() {
        let store = MemoryStore::new();
        let rec = FeedbackRecord {
            request_id: "r1".into(),
            row: 0,
            label: "1".into(),
            received_at: now_millis(),
            source: "http".into(),
        };
        let key = write_feedback(&store, "m", std::slice::from_ref(&rec))
            .await
            .unwrap();
        assert!(key.as_str().starts_with("feedback/m/"));
        let bytes = store.get(&key).await.unwrap().bytes;
        let back: FeedbackRecord = serde_json::from_slice(bytes.trim_ascii()).unwrap();
        assert_eq!(back, rec);
    }

    impl CaptureRecord {
        fn clone_with_time(&self, t: &str) -> Self {
            CaptureRecord {
                timestamp: t.to_string(),
                ..self.clone()
            }
        }
    }
}
