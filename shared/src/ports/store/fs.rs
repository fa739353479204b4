//! The embedded default: objects as files under a root directory.
//!
//! Writes go to a temporary file in the same filesystem and are renamed into place, so a
//! reader sees the old or the new object, never half of one. Conditional writes take an
//! exclusive advisory lock on `<root>/.lock` for the check and the rename, which makes
//! compare-and-swap hold between processes as well as threads.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio_util::io::ReaderStream;

use super::{
    ByteStream, ListPage, Object, ObjectKey, ObjectMeta, ObjectStore, StoreError, content_etag,
    etag_of_digest,
};

const TMP_DIR: &str = ".tmp";
const LOCK_FILE: &str = ".lock";

/// Objects as files under a root directory. See the module docs.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
    /// Etags of large objects already hashed, by path and file identity: a reader of many
    /// ranges of one object (batch partitions) hashes it once per process, not per range.
    /// Objects are replaced by a rename (a new inode), so an unchanged identity is an
    /// unchanged object.
    etags: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<PathBuf, (Identity, String)>>>,
}

/// What tells two versions of a file apart without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    inode: u64,
    size: u64,
    modified_ns: i128,
}

impl Identity {
    fn of(meta: &fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(-1, |d| d.as_nanos() as i128);
        Identity {
            inode,
            size: meta.len(),
            modified_ns,
        }
    }
}

/// The most remembered etags: past it the memo starts over.
const MAX_REMEMBERED_ETAGS: usize = 4096;

/// Where the etags of large objects are remembered across processes (see
/// [`FileStore::etag_of_open`]).
const ETAG_DIR: &str = ".etags";

/// Objects at least this large have their etag remembered on disk: hashing one costs more
/// than reading a small file (a 2 GB input took over a second per process to hash, once
/// for the planner and again in every batch worker).
const REMEMBER_ON_DISK_BYTES: u64 = 8 << 20;

/// What a conditional write requires of the current object.
#[derive(Debug, Clone, Copy)]
enum Condition<'a> {
    None,
    Absent,
    Matches(&'a str),
}

impl FileStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, StoreError> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(root.join(TMP_DIR)).map_err(|e| StoreError::io(&root, e))?;
        Ok(FileStore {
            root,
            etags: Default::default(),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &ObjectKey) -> Result<PathBuf, StoreError> {
        let first = key.as_str().split('/').next().unwrap_or_default();
        if first.starts_with('.') {
            return Err(StoreError::InvalidKey {
                key: key.to_string(),
                reason: "top-level names starting with `.` are reserved by the file store",
            });
        }
        Ok(self.root.join(key.as_str()))
    }

    fn temp_path(&self) -> PathBuf {
        self.root
            .join(TMP_DIR)
            .join(format!("{}.tmp", uuid::Uuid::new_v4()))
    }

    /// Writes `bytes` to a temporary file and returns its path; synced unless `sync` is
    /// false.
    fn write_temp(&self, bytes: &[u8], sync: bool) -> Result<PathBuf, StoreError> {
        let tmp = self.temp_path();
        let mut file = File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        file.write_all(bytes)
            .and_then(|()| if sync { file.sync_all() } else { Ok(()) })
            .map_err(|e| StoreError::io(&tmp, e))?;
        Ok(tmp)
    }

    /// Moves a finished temporary file into place under `key`, if `condition` holds.
    fn commit(
        &self,
        key: &ObjectKey,
        tmp: &Path,
        etag: String,
        size: u64,
        condition: Condition<'_>,
    ) -> Result<ObjectMeta, StoreError> {
        // The version written, known before the rename (which keeps inode and times): after
        // it, another writer may already have replaced the object.
        let written = (size >= REMEMBER_ON_DISK_BYTES)
            .then(|| fs::metadata(tmp).ok())
            .flatten()
            .map(|meta| Identity::of(&meta));
        let result = self.commit_inner(key, tmp, condition);
        if result.is_err() {
            let _ = fs::remove_file(tmp);
        }
        result?;
        if let (Some(identity), Ok(path)) = (written, self.path_of(key)) {
            self.remember_etag(&path, identity, &etag);
        }
        Ok(ObjectMeta {
            key: key.clone(),
            size,
            etag,
        })
    }

    fn commit_inner(
        &self,
        key: &ObjectKey,
        tmp: &Path,
        condition: Condition<'_>,
    ) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
        }
        if path.is_dir() {
            return Err(StoreError::InvalidKey {
                key: key.to_string(),
                reason: "a prefix of other objects cannot also be an object in the file store",
            });
        }
        let lock_path = self.root.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io(&lock_path, e))?;
        lock.lock().map_err(|e| StoreError::io(&lock_path, e))?;
        let outcome = (|| {
            match condition {
                Condition::None => {}
                Condition::Absent => {
                    if path.exists() {
                        return Err(StoreError::AlreadyExists(key.to_string()));
                    }
                }
                Condition::Matches(expected) => {
                    let current = match File::open(&path) {
                        Ok(file) => self.etag_of_open(&path, &file)?,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            return Err(StoreError::NotFound(key.to_string()));
                        }
                        Err(e) => return Err(StoreError::io(&path, e)),
                    };
                    if current != expected {
                        return Err(StoreError::PreconditionFailed {
                            key: key.to_string(),
                            expected: expected.to_string(),
                        });
                    }
                }
            }
            fs::rename(tmp, &path).map_err(|e| StoreError::io(&path, e))
        })();
        let _ = lock.unlock();
        outcome
    }

    fn put_bytes(
        &self,
        key: &ObjectKey,
        bytes: &[u8],
        condition: Condition<'_>,
    ) -> Result<ObjectMeta, StoreError> {
        self.path_of(key)?;
        // Capture records already wait up to a minute in memory before they are written, so
        // a crash can lose the newest ones whatever happens here; an fsync per hour folder
        // (milliseconds each on many disks) would buy them nothing. Everything else is synced.
        let sync = !key
            .as_str()
            .strip_prefix(crate::layout::CAPTURES)
            .is_some_and(|rest| rest.starts_with('/'));
        let tmp = self.write_temp(bytes, sync)?;
        self.commit(
            key,
            &tmp,
            content_etag(bytes),
            bytes.len() as u64,
            condition,
        )
    }

    /// The etag of the file at `path` as it is now (`file`, open), hashed at most once
    /// per version of the file.
    fn etag_of_open(&self, path: &Path, file: &File) -> Result<String, StoreError> {
        let identity = Identity::of(&file.metadata().map_err(|e| StoreError::io(path, e))?);
        let memo = self
            .etags
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((known, etag)) = memo.get(path)
            && *known == identity
        {
            return Ok(etag.clone());
        }
        drop(memo);
        let remembered = (identity.size >= REMEMBER_ON_DISK_BYTES)
            .then(|| self.remembered_etag(path, identity))
            .flatten();
        let hashed = remembered.is_none();
        let etag = match remembered {
            Some(etag) => etag,
            None => Self::hash_file(path)?,
        };
        // The file hashed may be a newer version than `identity` if it was replaced in
        // between: remember it only if the identity still holds.
        let now = Identity::of(&fs::metadata(path).map_err(|e| StoreError::io(path, e))?);
        if now == identity {
            let mut memo = self
                .etags
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if memo.len() >= MAX_REMEMBERED_ETAGS {
                memo.clear();
            }
            memo.insert(path.to_path_buf(), (identity, etag.clone()));
            drop(memo);
            if hashed {
                self.remember_etag(path, identity, &etag);
            }
        }
        Ok(etag)
    }

    /// The file that remembers the etag of the object at `path`.
    fn etag_file(&self, path: &Path) -> PathBuf {
        let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
        self.root.join(ETAG_DIR).join(hex::encode(&digest[..16]))
    }

    /// The etag remembered for the object at `path` if it is still the version
    /// `identity` (inode, size and modification time: objects are replaced by a rename).
    fn remembered_etag(&self, path: &Path, identity: Identity) -> Option<String> {
        let text = fs::read_to_string(self.etag_file(path)).ok()?;
        let mut words = text.split_whitespace();
        let known = Identity {
            inode: words.next()?.parse().ok()?,
            size: words.next()?.parse().ok()?,
            modified_ns: words.next()?.parse().ok()?,
        };
        let etag = words.next()?;
        (known == identity && words.next().is_none()).then(|| etag.to_string())
    }

    /// Remembers a large object's etag for other processes (best effort: a failure only
    /// means the next process hashes the object again).
    fn remember_etag(&self, path: &Path, identity: Identity, etag: &str) {
        if identity.size < REMEMBER_ON_DISK_BYTES {
            return;
        }
        let file = self.etag_file(path);
        let text = format!(
            "{} {} {} {etag}\n",
            identity.inode, identity.size, identity.modified_ns
        );
        let tmp = self.temp_path();
        let written = file
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| fs::write(&tmp, text))
            .and_then(|()| fs::rename(&tmp, &file));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }

    fn read_range(
        &self,
        key: &ObjectKey,
        range: std::ops::Range<u64>,
        etag: Option<&str>,
    ) -> Result<Bytes, StoreError> {
        use std::io::{Seek, SeekFrom};
        let path = self.path_of(key)?;
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(key.to_string()));
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        if let Some(expected) = etag
            && self.etag_of_open(&path, &file)? != expected
        {
            return Err(StoreError::PreconditionFailed {
                key: key.to_string(),
                expected: expected.to_string(),
            });
        }
        let size = file.metadata().map_err(|e| StoreError::io(&path, e))?.len();
        let (start, end) = (range.start.min(size), range.end.min(size));
        let len = end.saturating_sub(start) as usize;
        file.seek(SeekFrom::Start(start))
            .and_then(|_| super::read_aligned(&mut file, len))
            .map_err(|e| StoreError::io(&path, e))
    }

    /// The content etag of the file at `path`.
    fn hash_file(path: &Path) -> Result<String, StoreError> {
        let (_, digest) = super::sha256_file(path).map_err(|e| StoreError::io(path, e))?;
        Ok(etag_of_digest(&digest))
    }

    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), StoreError> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io(dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Top-level dot entries are the store's own (temporary files, the lock, the
            // local queues), never objects.
            if rel.is_empty() && name.starts_with('.') {
                continue;
            }
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let kind = entry.file_type().map_err(|e| StoreError::io(dir, e))?;
            if kind.is_dir() {
                Self::walk(&entry.path(), &child, out)?;
            } else if kind.is_file() {
                out.push(child);
            }
        }
        Ok(())
    }

    fn list_sync(
        &self,
        prefix: &str,
        token: Option<String>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        // Walk only the deepest directory the prefix names completely.
        let base = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        if base.split('/').any(|s| s == "..") {
            return Err(StoreError::InvalidKey {
                key: prefix.to_string(),
                reason: "`.` and `..` segments are not allowed",
            });
        }
        let mut keys = Vec::new();
        Self::walk(&self.root.join(base), base, &mut keys)?;
        keys.retain(|k| k.starts_with(prefix));
        if let Some(after) = &token {
            keys.retain(|k| k > after);
        }
        keys.sort();
        let limit = limit.max(1);
        let more = keys.len() > limit;
        keys.truncate(limit);
        let mut objects = Vec::with_capacity(keys.len());
        let mut skipped = 0;
        for k in keys {
            let path = self.root.join(&k);
            let size = match fs::metadata(&path) {
                Ok(m) => m.len(),
                // Deleted between the walk and now: leave it out.
                Err(_) => continue,
            };
            // Listing does not hash every object's contents, so the etag stays empty here;
            // callers that need one for compare-and-swap use `head` or `get`.
            let Some(key) = super::listed_key(&self.url(), &k) else {
                skipped += 1;
                continue;
            };
            objects.push(ObjectMeta {
                key,
                size,
                etag: String::new(),
            });
        }
        let next = if more {
            objects.last().map(|o| o.key.to_string())
        } else {
            None
        };
        Ok(ListPage {
            objects,
            next,
            skipped,
        })
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::unavailable("", format!("file store task failed: {e}")))?
}

#[async_trait]
impl ObjectStore for FileStore {
    async fn get(&self, key: &ObjectKey) -> Result<Object, StoreError> {
        let path = self.path_of(key)?;
        let (store, k) = (self.clone(), key.to_string());
        blocking(move || {
            let read = File::open(&path).and_then(|mut file| {
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes)?;
                Ok((file, bytes))
            });
            match read {
                Ok((file, bytes)) => {
                    // A large object's etag may be remembered (an adopted file's is not its
                    // content's hash): head and get agree.
                    let remembered = (bytes.len() as u64 >= REMEMBER_ON_DISK_BYTES)
                        .then(|| file.metadata().ok())
                        .flatten()
                        .and_then(|meta| store.remembered_etag(&path, Identity::of(&meta)));
                    Ok(Object {
                        etag: remembered.unwrap_or_else(|| content_etag(&bytes)),
                        bytes: Bytes::from(bytes),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound(k)),
                Err(e) if path.is_dir() => Err(StoreError::NotFound(format!("{k} ({e})"))),
                Err(e) => Err(StoreError::io(&path, e)),
            }
        })
        .await
    }

    async fn adopt_file(&self, key: &ObjectKey, path: &Path) -> Result<ObjectMeta, StoreError> {
        let (store, k, src) = (self.clone(), key.clone(), path.to_path_buf());
        let adopted = blocking(move || {
            store.path_of(&k)?;
            let tmp = store.temp_path();
            if fs::hard_link(&src, &tmp).is_err() {
                // Another file system (or none with links): copy.
                return Ok(None);
            }
            let identity = Identity::of(&fs::metadata(&tmp).map_err(|e| StoreError::io(&tmp, e))?);
            let etag = if identity.size >= REMEMBER_ON_DISK_BYTES {
                // Not the content's hash (hashing gigabytes is what adopting avoids): this
                // version's name, remembered by `commit` for as long as the file is it.
                let name = format!(
                    "adopted {} {} {} {k}",
                    identity.inode, identity.size, identity.modified_ns
                );
                etag_of_digest(&Sha256::digest(name.as_bytes()))
            } else {
                Self::hash_file(&tmp)?
            };
            store
                .commit(&k, &tmp, etag, identity.size, Condition::None)
                .map(Some)
        })
        .await?;
        match adopted {
            Some(meta) => Ok(meta),
            None => self.put_file(key, path).await,
        }
    }

    async fn get_range(
        &self,
        key: &ObjectKey,
        range: std::ops::Range<u64>,
        etag: Option<&str>,
    ) -> Result<Bytes, StoreError> {
        let (store, key, etag) = (self.clone(), key.clone(), etag.map(str::to_string));
        blocking(move || store.read_range(&key, range, etag.as_deref())).await
    }

    async fn get_stream(&self, key: &ObjectKey) -> Result<ByteStream, StoreError> {
        let path = self.path_of(key)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(key.to_string()));
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        let shown = path.display().to_string();
        let stream = ReaderStream::with_capacity(file, 1 << 16).map(move |chunk| {
            chunk.map_err(|source| StoreError::Io {
                path: shown.clone(),
                source,
            })
        });
        Ok(Box::pin(stream))
    }

    async fn put(&self, key: &ObjectKey, bytes: Bytes) -> Result<ObjectMeta, StoreError> {
        let (store, key) = (self.clone(), key.clone());
        blocking(move || store.put_bytes(&key, &bytes, Condition::None)).await
    }

    async fn put_file(&self, key: &ObjectKey, path: &Path) -> Result<ObjectMeta, StoreError> {
        let (store, key, src) = (self.clone(), key.clone(), path.to_path_buf());
        blocking(move || {
            store.path_of(&key)?;
            let tmp = store.temp_path();
            // Copy and hash in one read of the source.
            let mut input = File::open(&src).map_err(|e| StoreError::io(&src, e))?;
            let mut output = File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
            let mut hasher = Sha256::new();
            let mut buf = super::AlignedBuf::new(1 << 20);
            let mut size = 0u64;
            loop {
                let n = input
                    .read(buf.as_mut_slice())
                    .map_err(|e| StoreError::io(&src, e))?;
                if n == 0 {
                    break;
                }
                let read = &buf.as_slice()[..n];
                hasher.update(read);
                output
                    .write_all(read)
                    .map_err(|e| StoreError::io(&tmp, e))?;
                size += n as u64;
            }
            output.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
            let etag = etag_of_digest(&hasher.finalize());
            store.commit(&key, &tmp, etag, size, Condition::None)
        })
        .await
    }

    async fn local_snapshot(
        &self,
        key: &ObjectKey,
    ) -> Result<Option<tempfile::TempPath>, StoreError> {
        let (store, key) = (self.clone(), key.clone());
        blocking(move || {
            // Objects are only ever replaced by a rename (`commit`), never written in place,
            // so a second name for the file keeps today's bytes.
            let path = store.path_of(&key)?;
            let link = store.temp_path();
            match fs::hard_link(&path, &link) {
                Ok(()) => match tempfile::TempPath::try_from_path(&link) {
                    Ok(snapshot) => Ok(Some(snapshot)),
                    // A relative store root: no snapshot rather than a link nobody removes.
                    Err(_) => {
                        let _ = fs::remove_file(&link);
                        Ok(None)
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !path.exists() => {
                    Err(StoreError::NotFound(key.to_string()))
                }
                // A file system without hard links: the caller reads a copy instead.
                Err(_) => Ok(None),
            }
        })
        .await
    }

    async fn put_if_absent(&self, key: &ObjectKey, bytes: Bytes) -> Result<ObjectMeta, StoreError> {
        let (store, key) = (self.clone(), key.clone());
        blocking(move || store.put_bytes(&key, &bytes, Condition::Absent)).await
    }

    async fn put_if_match(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
        etag: &str,
    ) -> Result<ObjectMeta, StoreError> {
        let (store, key, etag) = (self.clone(), key.clone(), etag.to_string());
        blocking(move || store.put_bytes(&key, &bytes, Condition::Matches(&etag))).await
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StoreError> {
        let path = self.path_of(key)?;
        let (store, key) = (self.clone(), key.clone());
        blocking(move || {
            if !path.is_file() {
                return Ok(None);
            }
            let hashed = File::open(&path)
                .map_err(|e| StoreError::io(&path, e))
                .and_then(|file| {
                    let size = file.metadata().map_err(|e| StoreError::io(&path, e))?.len();
                    Ok((store.etag_of_open(&path, &file)?, size))
                });
            match hashed {
                Ok((etag, size)) => Ok(Some(ObjectMeta { key, size, etag })),
                Err(StoreError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let (store, prefix) = (self.clone(), prefix.to_string());
        blocking(move || store.list_sync(&prefix, token, limit)).await
    }

    /// One walk of the tree, however many objects (paging would walk it once a page).
    async fn list_all(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let (store, prefix) = (self.clone(), prefix.to_string());
        blocking(move || store.list_sync(&prefix, None, usize::MAX - 1))
            .await
            .map(|page| page.objects)
    }

    fn url(&self) -> String {
        format!("file://{}", self.root.display())
    }
}
