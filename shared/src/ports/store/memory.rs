//! An in-process object store for unit tests: the same contract, no I/O.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    ByteStream, ListPage, Object, ObjectKey, ObjectMeta, ObjectStore, StoreError, content_etag,
};

/// Objects in a map behind a mutex; conditional writes check and write under the one lock.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Object>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Object>) -> T) -> T {
        // A poisoned lock only means another test thread panicked mid-write; the map itself
        // is always in a consistent state because every write is a single insert.
        let mut guard = self
            .objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    fn write(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
        check: impl FnOnce(Option<&Object>) -> Result<(), StoreError>,
    ) -> Result<ObjectMeta, StoreError> {
        self.with(|map| {
            check(map.get(key.as_str()))?;
            let etag = content_etag(&bytes);
            let size = bytes.len() as u64;
            map.insert(
                key.to_string(),
                Object {
                    bytes,
                    etag: etag.clone(),
                },
            );
            Ok(ObjectMeta {
                key: key.clone(),
                size,
                etag,
            })
        })
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn get(&self, key: &ObjectKey) -> Result<Object, StoreError> {
        self.with(|map| map.get(key.as_str()).cloned())
            .ok_or_else(|| StoreError::NotFound(key.to_string()))
    }

    async fn get_stream(&self, key: &ObjectKey) -> Result<ByteStream, StoreError> {
        let object = self.get(key).await?;
        let chunks: Vec<Result<Bytes, StoreError>> = object
            .bytes
            .chunks(1 << 16)
            .map(|c| Ok(object.bytes.slice_ref(c)))
            .collect();
        Ok(Box::pin(futures::stream::iter(chunks)))
    }

    async fn put(&self, key: &ObjectKey, bytes: Bytes) -> Result<ObjectMeta, StoreError> {
        self.write(key, bytes, |_| Ok(()))
    }

    async fn put_file(&self, key: &ObjectKey, path: &Path) -> Result<ObjectMeta, StoreError> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| StoreError::io(path, e))?;
        self.put(key, Bytes::from(bytes)).await
    }

    async fn put_if_absent(&self, key: &ObjectKey, bytes: Bytes) -> Result<ObjectMeta, StoreError> {
        self.write(key, bytes, |current| match current {
            Some(_) => Err(StoreError::AlreadyExists(key.to_string())),
            None => Ok(()),
        })
    }

    async fn put_if_match(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
        etag: &str,
    ) -> Result<ObjectMeta, StoreError> {
        self.write(key, bytes, |current| match current {
            None => Err(StoreError::NotFound(key.to_string())),
            Some(object) if object.etag != etag => Err(StoreError::PreconditionFailed {
                key: key.to_string(),
                expected: etag.to_string(),
            }),
            Some(_) => Ok(()),
        })
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StoreError> {
        Ok(self.with(|map| {
            map.get(key.as_str()).map(|o| ObjectMeta {
                key: key.clone(),
                size: o.bytes.len() as u64,
                etag: o.etag.clone(),
            })
        }))
    }

    async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let limit = limit.max(1);
        self.with(|map| {
            let mut objects = Vec::new();
            let start = token.unwrap_or_default();
            for (k, o) in map.range::<String, _>((
                std::ops::Bound::Excluded(&start),
                std::ops::Bound::Unbounded,
            )) {
                if !k.starts_with(prefix) {
                    if k.as_str() > prefix && !objects.is_empty() {
                        break;
                    }
                    continue;
                }
                if objects.len() == limit {
                    let next = objects.last().map(|m: &ObjectMeta| m.key.to_string());
                    return Ok(ListPage {
                        objects,
                        next,
                        skipped: 0,
                    });
                }
                objects.push(ObjectMeta {
                    key: ObjectKey::new(k.clone())?,
                    size: o.bytes.len() as u64,
                    etag: o.etag.clone(),
                });
            }
            Ok(ListPage {
                objects,
                next: None,
                skipped: 0,
            })
        })
    }

    fn url(&self) -> String {
        "memory://".to_string()
    }
}
