//! The object-storage port and its adapters.
//!
//! Every artifact lambdaml produces — datasets, fitted pipelines, models, captures, reports —
//! lives in an object store under a key such as `datasets/weather/3f2a…/data.parquet`. The
//! port is deliberately as narrow as S3's own contract so that the embedded default (files
//! on disk), the in-memory store used by unit tests and S3 behave the same way:
//!
//! * whole-object `put` and `get` (plus a streaming `get_stream` and file upload
//!   `put_file` so large inputs never have to fit in memory),
//! * two conditional writes, `put_if_absent` and `put_if_match`, which are all the registry
//!   needs for compare-and-swap and all a stage needs to write an artifact exactly once,
//! * `head` and a paginated `list_page`.
//!
//! The adapter is chosen by URL (`file://…`, `memory://…`, `s3://bucket/prefix`) with
//! [`open_store`].

mod aligned;
mod fs;
mod memory;
#[cfg(feature = "s3")]
mod s3;

use std::fmt::Debug;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::error::{BackendKind, Cause, Classify, Retry};

#[cfg(any(feature = "s3", feature = "sqs", feature = "eventbridge"))]
pub use crate::ports::aws::sdk_config;
pub use aligned::{AlignedBuf, read_aligned, sha256_file};
pub use fs::FileStore;
pub use memory::MemoryStore;
#[cfg(feature = "s3")]
pub use s3::S3Store;

/// Errors of the object store port.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The key breaks the key rules (see [`ObjectKey::new`]).
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The rejected key.
        key: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// No object under this key.
    #[error("object not found: {0}")]
    NotFound(String),
    /// `put_if_absent` found an object already there.
    #[error("object already exists: {0}")]
    AlreadyExists(String),
    /// `put_if_match` found a different version than the caller read.
    #[error(
        "precondition failed for {key}: the object changed since it was read (expected etag {expected})"
    )]
    PreconditionFailed {
        /// The contended key.
        key: String,
        /// The etag the caller expected.
        expected: String,
    },
    /// The store URL could not be understood.
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl {
        /// The rejected URL.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A local I/O failure.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A failure talking to a remote backend: throttled, timed out, unavailable (network,
    /// 5xx) — worth a retry — or refused (4xx), which is not.
    #[error("backend error on {key} ({kind}): {message}")]
    Backend {
        /// The key involved.
        key: String,
        /// What kind of failure, for retrying.
        kind: BackendKind,
        /// What the backend said, in one line.
        message: String,
        /// The backend's own error.
        #[source]
        source: Cause,
    },
}

impl Classify for StoreError {
    /// Throttling, timeouts, network faults, 5xx and local I/O are retryable; a bad key, a
    /// missing object, a lost conditional write and a refused request are not.
    fn retry(&self) -> Retry {
        match self {
            StoreError::Backend { kind, .. } => kind.retry(),
            StoreError::Io { .. } => Retry::Retryable,
            _ => Retry::Permanent,
        }
    }
}

impl StoreError {
    /// Whether trying again later may succeed ([`Classify`]).
    pub fn is_retryable(&self) -> bool {
        self.retry() == Retry::Retryable
    }

    /// A backend failure with only a message as its cause (a task that died, a body that
    /// stopped): treated as the backend being unavailable.
    pub(crate) fn unavailable(key: impl Into<String>, message: impl Into<String>) -> Self {
        let message = message.into();
        StoreError::Backend {
            key: key.into(),
            kind: BackendKind::Unavailable,
            source: std::sync::Arc::new(crate::error::Message(message.clone())),
            message,
        }
    }

    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// A validated object key: relative, `/`-separated, with no empty, `.` or `..` segments.
///
/// The file store maps keys onto paths, so a key must never be able to name a file outside
/// the store's root; the same rules apply to every adapter so a key valid locally is valid
/// on S3 too.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Checks `key` against the key rules.
    pub fn new(key: impl Into<String>) -> Result<Self, StoreError> {
        let key = key.into();
        let bad = |reason| {
            Err(StoreError::InvalidKey {
                key: key.clone(),
                reason,
            })
        };
        if key.is_empty() {
            return bad("empty key");
        }
        if key.len() > 1024 {
            return bad("longer than 1024 bytes");
        }
        if key.starts_with('/') {
            return bad("absolute keys are not allowed");
        }
        if key.contains('\\') || key.contains('\0') || key.chars().any(char::is_control) {
            return bad("contains a backslash or a control character");
        }
        for segment in key.split('/') {
            match segment {
                "" => return bad("empty path segment"),
                "." | ".." => return bad("`.` and `..` segments are not allowed"),
                _ => {}
            }
        }
        Ok(ObjectKey(key))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A key below this one: `self/child`.
    pub fn join(&self, child: &str) -> Result<Self, StoreError> {
        ObjectKey::new(format!("{}/{}", self.0, child))
    }

    /// The last segment (the "file name").
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl TryFrom<String> for ObjectKey {
    type Error = StoreError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ObjectKey::new(value)
    }
}

impl From<ObjectKey> for String {
    fn from(value: ObjectKey) -> Self {
        value.0
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `head` and `list` know about an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Its key.
    pub key: ObjectKey,
    /// Its size in bytes.
    pub size: u64,
    /// An opaque version tag; pass it to `put_if_match`. Listings from the file store leave
    /// it empty (they do not hash every object); `head` and `get` always fill it.
    pub etag: String,
}

/// An object read whole, with the etag of the version read.
#[derive(Debug, Clone)]
pub struct Object {
    /// The contents.
    pub bytes: Bytes,
    /// The version tag of these contents.
    pub etag: String,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Objects in key order.
    pub objects: Vec<ObjectMeta>,
    /// Pass back to get the next page; `None` on the last page.
    pub next: Option<String>,
    /// Objects left out because their keys break the key rules (a console's folder marker
    /// `specs/`, a `//` in a key written by another tool): one odd object must not make a
    /// whole listing fail. Each is logged as a warning.
    pub skipped: usize,
}

/// The key of a listed object, or `None` (logged) when it breaks the key rules.
pub(crate) fn listed_key(store: &str, raw: &str) -> Option<ObjectKey> {
    match ObjectKey::new(raw) {
        Ok(key) => Some(key),
        Err(e) => {
            tracing::warn!(store, key = raw, error = %e, "listing skips an object whose key lambdaml cannot use");
            None
        }
    }
}

/// A stream of chunks, for reading objects larger than memory.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send>>;

/// The object-storage port. See the module docs for why it has this shape.
#[async_trait]
pub trait ObjectStore: Send + Sync + Debug {
    /// Reads a whole object.
    async fn get(&self, key: &ObjectKey) -> Result<Object, StoreError>;

    /// Reads an object as a stream of chunks, so memory stays bounded by a chunk.
    async fn get_stream(&self, key: &ObjectKey) -> Result<ByteStream, StoreError>;

    /// Bytes `range` of an object (clamped to its size), only while its etag is still
    /// `etag` when one is given — [`StoreError::PreconditionFailed`] otherwise — so a reader
    /// of one part of a large object never mixes two versions of it (batch partitions).
    /// The default reads the whole object; the file store and S3 read only the range.
    async fn get_range(
        &self,
        key: &ObjectKey,
        range: std::ops::Range<u64>,
        etag: Option<&str>,
    ) -> Result<Bytes, StoreError> {
        let object = self.get(key).await?;
        if let Some(expected) = etag
            && object.etag != expected
        {
            return Err(StoreError::PreconditionFailed {
                key: key.to_string(),
                expected: expected.to_string(),
            });
        }
        Ok(slice_range(&object.bytes, range))
    }

    /// Writes an object, replacing any previous one. Readers see the old or the new
    /// contents, never a mix.
    async fn put(&self, key: &ObjectKey, bytes: Bytes) -> Result<ObjectMeta, StoreError>;

    /// Uploads a local file without reading it whole into memory.
    async fn put_file(&self, key: &ObjectKey, path: &Path) -> Result<ObjectMeta, StoreError>;

    /// Stores the local file at `path` as `key`, without copying it where the store can:
    /// the file store hard-links it when both are on one file system, so the object *is*
    /// that file from then on. A change made to the file in place is then a new version of
    /// the object (another etag), which a reader that passes the etag it planned with
    /// refuses; replacing the file by a rename (what editors do) leaves the object as it
    /// was. Elsewhere (and where a link cannot be made) this is [`ObjectStore::put_file`].
    async fn adopt_file(&self, key: &ObjectKey, path: &Path) -> Result<ObjectMeta, StoreError> {
        self.put_file(key, path).await
    }

    /// Writes only if no object exists under `key`; otherwise [`StoreError::AlreadyExists`].
    async fn put_if_absent(&self, key: &ObjectKey, bytes: Bytes) -> Result<ObjectMeta, StoreError>;

    /// Writes only if the current object's etag is `etag`; otherwise
    /// [`StoreError::PreconditionFailed`] (or [`StoreError::NotFound`] when it is gone).
    async fn put_if_match(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
        etag: &str,
    ) -> Result<ObjectMeta, StoreError>;

    /// Size and etag of an object, or `None` when there is none.
    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StoreError>;

    /// A local file with the object's current bytes that a later write of `key` leaves
    /// alone, removed when dropped — for a store that keeps objects as files, so a reader
    /// need not copy them (the file store: a hard link). `None` where the object has to be
    /// downloaded ([`ObjectStore::get_stream`]) or the store cannot link it.
    async fn local_snapshot(
        &self,
        _key: &ObjectKey,
    ) -> Result<Option<tempfile::TempPath>, StoreError> {
        Ok(None)
    }

    /// One page (at most `limit` objects, in key order) of the objects whose keys start
    /// with `prefix`. Pass the returned `next` back as `token` for the following page.
    async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
        limit: usize,
    ) -> Result<ListPage, StoreError>;

    /// Every object under `prefix`, following pagination.
    /// Adapters that can list everything in one go (the file store walks its tree once)
    /// override this; the default pages through [`ObjectStore::list_page`].
    async fn list_all(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self.list_page(prefix, token, 1000).await?;
            out.extend(page.objects);
            match page.next {
                Some(next) => token = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// The URL this store was opened from, for messages and logs.
    fn url(&self) -> String;
}

/// Conveniences built from the port's primitives.
#[async_trait]
pub trait ObjectStoreExt: ObjectStore {
    /// Writes an immutable artifact: succeeds when the object is new, or when the same
    /// bytes are already there (a redelivered message rewrites nothing); fails when
    /// different bytes are there, since artifacts are never overwritten.
    async fn put_immutable(&self, key: &ObjectKey, bytes: Bytes) -> Result<bool, StoreError> {
        match self.put_if_absent(key, bytes.clone()).await {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists(_)) => {
                let existing = self.get(key).await?;
                if existing.bytes == bytes {
                    Ok(false)
                } else {
                    Err(StoreError::AlreadyExists(key.to_string()))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Reads and parses a JSON object.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &ObjectKey,
    ) -> Result<T, JsonError> {
        let object = self.get(key).await?;
        serde_json::from_slice(&object.bytes).map_err(|source| JsonError::Parse {
            key: key.to_string(),
            source,
        })
    }

    /// Whether an object exists.
    async fn exists(&self, key: &ObjectKey) -> Result<bool, StoreError> {
        Ok(self.head(key).await?.is_some())
    }
}

impl<T: ObjectStore + ?Sized> ObjectStoreExt for T {}

/// Reading a JSON document from the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The object is not the JSON document expected.
    #[error("{key} is not a valid document: {source}")]
    Parse {
        /// The object's key.
        key: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
}

impl Classify for JsonError {
    /// As the store's error; a document that does not parse is permanent.
    fn retry(&self) -> Retry {
        match self {
            JsonError::Store(e) => e.retry(),
            JsonError::Parse { .. } => Retry::Permanent,
        }
    }
}

/// Serializes `value` as pretty JSON bytes (the form every JSON artifact is written in).
pub fn to_json_bytes<T: Serialize>(value: &T) -> Bytes {
    // Serializing our own plain data types cannot fail (no maps with non-string keys).
    Bytes::from(serde_json::to_vec_pretty(value).unwrap_or_default())
}

/// Opens the store named by `url`:
/// - `file:///abs/path` or `file://./relative` — the embedded default, files on disk;
/// - `memory://name` — in-process, for tests (each call gets a fresh empty store);
/// - `s3://bucket[/prefix]` — S3, or an emulator when `AWS_ENDPOINT_URL` is set.
pub async fn open_store(url: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let bad = |reason: &str| StoreError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    if let Some(path) = url.strip_prefix("file://") {
        if path.is_empty() {
            return Err(bad("file:// needs a path, e.g. file://./.lambdaml"));
        }
        Ok(Arc::new(FileStore::open(path)?))
    } else if url.starts_with("memory://") {
        Ok(Arc::new(MemoryStore::new()))
    } else if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("s3:// needs a bucket, e.g. s3://my-bucket/prefix"));
        }
        #[cfg(feature = "s3")]
        return Ok(Arc::new(S3Store::from_env(bucket, prefix).await));
        #[cfg(not(feature = "s3"))]
        return Err(bad(&format!(
            "this build has no S3 adapter (bucket {bucket:?}, prefix {prefix:?}): \
             build lambdaml-shared with the `s3` feature"
        )));
    } else {
        Err(bad(
            "unknown scheme; use file://PATH, memory:// or s3://BUCKET[/PREFIX]",
        ))
    }
}

/// The etag the file and memory stores give to contents: a content hash, as S3 does for a
/// single-part upload, so an unchanged rewrite keeps its etag.
/// `range` of `bytes`, clamped to its length.
pub(crate) fn slice_range(bytes: &Bytes, range: std::ops::Range<u64>) -> Bytes {
    let len = bytes.len() as u64;
    let (start, end) = (range.start.min(len), range.end.min(len));
    bytes.slice(start as usize..end.max(start) as usize)
}

pub(crate) fn content_etag(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    etag_of_digest(&Sha256::digest(bytes))
}

/// The etag lambdaml's own adapters give a SHA-256 digest: its first 16 bytes in hex,
/// quoted as S3 quotes etags.
pub(crate) fn etag_of_digest(digest: &[u8]) -> String {
    format!("\"{}\"", hex::encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_with_dot_dot_or_absolute_paths_are_rejected() {
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "a//b",
            "a/./b",
            "a\\b",
            "a\nb",
            "trailing/",
        ] {
            assert!(ObjectKey::new(bad).is_err(), "{bad:?} was accepted");
        }
        let err = ObjectKey::new("datasets/../../x").unwrap_err().to_string();
        assert!(err.contains(".."), "{err}");
    }

    #[test]
    fn ordinary_keys_are_accepted() {
        for good in ["a", "raw/weather/file name.csv", "x/y/z.parquet", "a..b/c"] {
            assert!(ObjectKey::new(good).is_ok(), "{good:?} was rejected");
        }
        let key = ObjectKey::new("raw/weather/w.csv").unwrap();
        assert_eq!(key.file_name(), "w.csv");
        assert_eq!(key.join("x").unwrap().as_str(), "raw/weather/w.csv/x");
    }

    #[test]
    fn keys_deserialize_through_validation() {
        let err = serde_json::from_str::<ObjectKey>("\"../secret\"").unwrap_err();
        assert!(err.to_string().contains("not allowed"), "{err}");
    }

    #[tokio::test]
    async fn unknown_url_schemes_are_rejected_with_the_choices() {
        let err = open_store("ftp://x").await.unwrap_err().to_string();
        assert!(err.contains("file://"), "{err}");
    }
}
