//! A durable queue in a directory: the embedded default's SQS.
//!
//! Each message is one JSON file in `messages/`, named by a sortable send sequence so
//! delivery is first-in first-out among visible messages. Its file holds the body, the
//! receive count, the time it becomes visible again, the current receipt and the last
//! error. Every operation but sending holds an exclusive advisory lock on `.lock`, and
//! every write goes through a temporary file renamed into place, so the queue survives a
//! crash or restart of any process using it, and two processes can share it. A message received `max_receives` times without being deleted
//! moves to `dead/` with its last error.
//!
//! Crash safety: every file is synced before it is renamed into place, and the rename
//! that adds or moves a message (send, dead-lettering) is followed by an fsync of the
//! directory, so a message sent is on disk when `send` returns. A rename that only updates
//! a message's delivery state (received, released, extended) is not: after a crash the
//! message is either in its old state (visible again: delivered once more, as SQS may) or
//! its new one, never lost. Sending holds no lock (its file name is new); temporary files
//! a crash left behind are removed when the queue is opened, once they are older than any
//! write in progress could be. A message
//! file that cannot be parsed (truncated by a full disk, edited by hand) does not stop the
//! queue: it is moved to `dead/` with its raw bytes as the body and the parse error as the
//! reason.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{DeadLetter, Queue, QueueError, QueueStats, Received};

/// A durable on-disk queue. See the module docs.
#[derive(Debug, Clone)]
pub struct LocalQueue {
    dir: PathBuf,
    max_receives: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    id: String,
    body: String,
    receive_count: u32,
    visible_at_ms: u64,
    receipt: Option<String>,
    last_error: Option<String>,
}

/// How old a temporary file must be before opening the queue removes it as a crash's leftover.
const STALE_TMP: Duration = Duration::from_secs(600);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl LocalQueue {
    /// Opens (creating if needed) the queue in `dir`.
    pub fn open(dir: impl AsRef<Path>, max_receives: u32) -> Result<Self, QueueError> {
        let dir = dir.as_ref().to_path_buf();
        for sub in ["messages", "dead", "tmp"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(|e| QueueError::io(&path, e))?;
        }
        let queue = LocalQueue {
            dir,
            max_receives: max_receives.max(1),
        };
        queue.locked(|| queue.clear_tmp())?;
        Ok(queue)
    }

    /// Removes temporary files a crash left behind: those older than [`STALE_TMP`] (a
    /// sender writes its temporary file without the lock, and renames it within
    /// milliseconds).
    fn clear_tmp(&self) -> Result<(), QueueError> {
        let tmp = self.dir.join("tmp");
        let entries = fs::read_dir(&tmp).map_err(|e| QueueError::io(&tmp, e))?;
        for entry in entries.flatten() {
            // An age that cannot be read (a clock stepped back) may be a send in progress.
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= STALE_TMP);
            if stale {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Runs `f` while holding the queue's lock.
    fn locked<T>(&self, f: impl FnOnce() -> Result<T, QueueError>) -> Result<T, QueueError> {
        let path = self.dir.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| QueueError::io(&path, e))?;
        lock.lock().map_err(|e| QueueError::io(&path, e))?;
        let out = f();
        let _ = lock.unlock();
        out
    }

    /// Writes `entry` to `path` (synced, then renamed into place) and syncs the directory.
    fn write_entry(&self, path: &Path, entry: &Entry) -> Result<(), QueueError> {
        self.replace_entry(path, entry)?;
        sync_dir(path)
    }

    /// Writes `entry` to `path`, synced, then renamed into place; the rename itself is not
    /// made durable (for updates whose loss leaves the message in its previous state).
    fn replace_entry(&self, path: &Path, entry: &Entry) -> Result<(), QueueError> {
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("{}.json", uuid::Uuid::new_v4()));
        let bytes = serde_json::to_vec(entry).map_err(|e| QueueError::Corrupt {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut file = File::create(&tmp).map_err(|e| QueueError::io(&tmp, e))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| QueueError::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| QueueError::io(path, e))
    }

    /// Reads an entry; a file that exists but cannot be parsed is moved to `dead/` (raw
    /// bytes as the body, the parse error as the reason) and reads as absent, so one bad
    /// file never stops the queue.
    fn read_or_bury(&self, path: &Path) -> Result<Option<Entry>, QueueError> {
        match Self::read_entry(path) {
            Err(QueueError::Corrupt { reason, .. }) => {
                let raw = fs::read(path).unwrap_or_default();
                let entry = Entry {
                    id: path
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    body: String::from_utf8_lossy(&raw).into_owned(),
                    receive_count: 0,
                    visible_at_ms: 0,
                    receipt: None,
                    last_error: None,
                };
                tracing::warn!(path = %path.display(), %reason, "unreadable message file moved to the dead-letter folder");
                self.move_to_dead(
                    path,
                    entry,
                    &format!("the message file was unreadable: {reason}"),
                )?;
                Ok(None)
            }
            other => other,
        }
    }

    fn read_entry(path: &Path) -> Result<Option<Entry>, QueueError> {
        match fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| QueueError::Corrupt {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(QueueError::io(path, e)),
        }
    }

    fn sorted_files(&self, sub: &str) -> Result<Vec<PathBuf>, QueueError> {
        let dir = self.dir.join(sub);
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(|e| QueueError::io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        Ok(files)
    }

    fn move_to_dead(&self, path: &Path, mut entry: Entry, reason: &str) -> Result<(), QueueError> {
        entry.last_error = Some(reason.to_string());
        entry.receipt = None;
        let dead = self
            .dir
            .join("dead")
            .join(path.file_name().unwrap_or_default());
        self.write_entry(&dead, &entry)?;
        fs::remove_file(path).map_err(|e| QueueError::io(path, e))?;
        sync_dir(path)
    }

    /// Splits a receipt `FILE#TOKEN` into the message path and token.
    fn parse_receipt(&self, receipt: &str) -> Result<(PathBuf, String), QueueError> {
        let (file, token) = receipt
            .split_once('#')
            .ok_or_else(|| QueueError::InvalidReceipt(receipt.to_string()))?;
        if file.contains('/') || file.contains("..") || !file.ends_with(".json") {
            return Err(QueueError::InvalidReceipt(receipt.to_string()));
        }
        Ok((self.dir.join("messages").join(file), token.to_string()))
    }

    fn send_sync(&self, body: &str) -> Result<String, QueueError> {
        let id = uuid::Uuid::new_v4().to_string();
        // Nanoseconds since the epoch keep files in send order; the id breaks ties.
        let seq = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path = self
            .dir
            .join("messages")
            .join(format!("{seq:024}-{id}.json"));
        let entry = Entry {
            id: id.clone(),
            body: body.to_string(),
            receive_count: 0,
            visible_at_ms: 0,
            receipt: None,
            last_error: None,
        };
        self.write_entry(&path, &entry)?;
        Ok(id)
    }

    fn receive_sync(&self, max: usize, visibility: Duration) -> Result<Vec<Received>, QueueError> {
        self.locked(|| {
            let now = now_ms();
            let mut out = Vec::new();
            for path in self.sorted_files("messages")? {
                if out.len() >= max {
                    break;
                }
                let Some(mut entry) = self.read_or_bury(&path)? else {
                    continue;
                };
                if entry.visible_at_ms > now {
                    continue;
                }
                if entry.receive_count >= self.max_receives {
                    let reason = format!(
                        "received {} times without success; last error: {}",
                        entry.receive_count,
                        entry
                            .last_error
                            .as_deref()
                            .unwrap_or("none recorded (timed out)")
                    );
                    self.move_to_dead(&path, entry, &reason)?;
                    continue;
                }
                entry.receive_count += 1;
                entry.visible_at_ms = now + visibility.as_millis() as u64;
                let token = uuid::Uuid::new_v4().simple().to_string();
                entry.receipt = Some(token.clone());
                self.replace_entry(&path, &entry)?;
                let file = path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.push(Received {
                    id: entry.id,
                    receipt: format!("{file}#{token}"),
                    body: entry.body,
                    receive_count: entry.receive_count,
                });
            }
            Ok(out)
        })
    }

    /// Loads the entry a receipt names, checking the receipt is still current.
    fn current(&self, receipt: &str) -> Result<Option<(PathBuf, Entry)>, QueueError> {
        let (path, token) = self.parse_receipt(receipt)?;
        match Self::read_entry(&path)? {
            None => Ok(None),
            Some(entry) if entry.receipt.as_deref() == Some(token.as_str()) => {
                Ok(Some((path, entry)))
            }
            Some(_) => Err(QueueError::StaleReceipt(receipt.to_string())),
        }
    }
}

/// Makes a rename or removal in `path`'s directory durable.
fn sync_dir(path: &Path) -> Result<(), QueueError> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| QueueError::io(dir, e))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QueueError> + Send + 'static,
) -> Result<T, QueueError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| QueueError::unavailable("", format!("local queue task failed: {e}")))?
}

#[async_trait]
impl Queue for LocalQueue {
    async fn send(&self, body: &str) -> Result<String, QueueError> {
        let (q, body) = (self.clone(), body.to_string());
        blocking(move || q.send_sync(&body)).await
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Received>, QueueError> {
        let q = self.clone();
        blocking(move || q.receive_sync(max, visibility)).await
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        let (q, receipt) = (self.clone(), receipt.to_string());
        blocking(move || {
            q.locked(|| match q.current(&receipt)? {
                None => Ok(()),
                Some((path, _)) => fs::remove_file(&path).map_err(|e| QueueError::io(&path, e)),
            })
        })
        .await
    }

    async fn release(&self, receipt: &str, error: &str, delay: Duration) -> Result<(), QueueError> {
        let (q, receipt, error) = (self.clone(), receipt.to_string(), error.to_string());
        blocking(move || {
            q.locked(|| match q.current(&receipt)? {
                None => Ok(()),
                Some((path, mut entry)) => {
                    entry.last_error = Some(error);
                    entry.visible_at_ms = now_ms() + delay.as_millis() as u64;
                    entry.receipt = None;
                    q.replace_entry(&path, &entry)
                }
            })
        })
        .await
    }

    async fn extend(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        let (q, receipt) = (self.clone(), receipt.to_string());
        blocking(move || {
            q.locked(|| match q.current(&receipt)? {
                None => Err(QueueError::StaleReceipt(receipt.clone())),
                Some((path, mut entry)) => {
                    entry.visible_at_ms = now_ms() + timeout.as_millis() as u64;
                    q.replace_entry(&path, &entry)
                }
            })
        })
        .await
    }

    async fn dead_letter(&self, message: &Received, reason: &str) -> Result<(), QueueError> {
        let (q, receipt, reason) = (self.clone(), message.receipt.clone(), reason.to_string());
        blocking(move || {
            q.locked(|| match q.current(&receipt)? {
                None => Ok(()),
                Some((path, entry)) => q.move_to_dead(&path, entry, &reason),
            })
        })
        .await
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let q = self.clone();
        blocking(move || {
            q.locked(|| {
                let mut out = Vec::new();
                for path in q.sorted_files("dead")?.into_iter().take(max) {
                    match Self::read_entry(&path) {
                        Ok(Some(entry)) => out.push(DeadLetter {
                            id: entry.id,
                            body: entry.body,
                            receive_count: entry.receive_count,
                            reason: entry.last_error.unwrap_or_default(),
                        }),
                        Ok(None) => {}
                        // Shown as it is rather than hiding every other dead letter.
                        Err(QueueError::Corrupt { reason, .. }) => out.push(DeadLetter {
                            id: path
                                .file_stem()
                                .map(|s| s.to_string_lossy().into_owned())
                                .unwrap_or_default(),
                            body: String::from_utf8_lossy(&fs::read(&path).unwrap_or_default())
                                .into_owned(),
                            receive_count: 0,
                            reason: format!("the dead-letter file is unreadable: {reason}"),
                        }),
                        Err(e) => return Err(e),
                    }
                }
                Ok(out)
            })
        })
        .await
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let q = self.clone();
        blocking(move || {
            q.locked(|| {
                let now = now_ms();
                let mut stats = QueueStats::default();
                for path in q.sorted_files("messages")? {
                    if let Some(entry) = q.read_or_bury(&path)? {
                        if entry.visible_at_ms > now {
                            stats.in_flight += 1;
                        } else {
                            stats.visible += 1;
                        }
                    }
                }
                stats.dead = q.sorted_files("dead")?.len() as u64;
                Ok(stats)
            })
        })
        .await
    }

    fn name(&self) -> String {
        self.dir.display().to_string()
    }

    fn max_receives(&self) -> Option<u32> {
        Some(self.max_receives)
    }
}
