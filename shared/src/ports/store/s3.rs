//! S3 (or an S3 emulator: moto, LocalStack) through `aws-sdk-s3`.
//!
//! Conditional writes map onto S3's own: `If-None-Match: *` for `put_if_absent` and
//! `If-Match: <etag>` for `put_if_match`; a 412 `PreconditionFailed` (or a 409
//! `ConditionalRequestConflict` while another conditional write is in flight) becomes the
//! port's conflict error. Retries of network faults and throttling are the SDK's standard
//! retry policy. When `AWS_ENDPOINT_URL` is set (an emulator), requests are path-style.

use std::path::Path;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use bytes::Bytes;
use tracing::instrument;

use crate::error::BackendKind;

use super::{ByteStream, ListPage, Object, ObjectKey, ObjectMeta, ObjectStore, StoreError};

/// An S3 bucket, optionally below a key prefix.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
}

impl S3Store {
    /// A store for `bucket` and `prefix` with credentials, region and endpoint from the
    /// standard AWS environment (`AWS_ENDPOINT_URL` points it at an emulator).
    pub async fn from_env(bucket: &str, prefix: &str) -> Self {
        let config = crate::ports::aws::sdk_config().await;
        let emulated = std::env::var_os("AWS_ENDPOINT_URL").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        let s3_config = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(emulated)
            .build();
        Self::new(Client::from_conf(s3_config), bucket, prefix)
    }

    /// A store over an existing client.
    pub fn new(client: Client, bucket: &str, prefix: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        S3Store {
            client,
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        }
    }

    /// The underlying client (tests use it to create buckets).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn full(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn strip<'a>(&self, full: &'a str) -> &'a str {
        full.strip_prefix(&self.prefix).unwrap_or(full)
    }

    async fn put_conditional(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
        if_none_match: Option<&str>,
        if_match: Option<&str>,
    ) -> Result<ObjectMeta, StoreError> {
        let size = bytes.len() as u64;
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key.as_str()))
            .body(SdkByteStream::from(bytes));
        if let Some(v) = if_none_match {
            request = request.if_none_match(v);
        }
        if let Some(v) = if_match {
            request = request.if_match(v);
        }
        match request.send().await {
            Ok(out) => Ok(ObjectMeta {
                key: key.clone(),
                size,
                etag: out.e_tag().unwrap_or_default().to_string(),
            }),
            Err(err) => {
                let code = err.code().unwrap_or_default().to_string();
                let status = err.raw_response().map(|r| r.status().as_u16());
                let conflict = code == "PreconditionFailed"
                    || code == "ConditionalRequestConflict"
                    || status == Some(412)
                    || status == Some(409);
                match (conflict, if_none_match, if_match) {
                    (true, Some(_), _) => Err(StoreError::AlreadyExists(key.to_string())),
                    (true, _, Some(expected)) => Err(StoreError::PreconditionFailed {
                        key: key.to_string(),
                        expected: expected.to_string(),
                    }),
                    _ if code == "NoSuchKey" || status == Some(404) => {
                        Err(StoreError::NotFound(key.to_string()))
                    }
                    _ => Err(backend(key.as_str(), err)),
                }
            }
        }
    }
}

/// A response body read whole; a body that stops is the backend being unavailable.
async fn collect_body(key: &ObjectKey, body: SdkByteStream) -> Result<Bytes, StoreError> {
    Ok(body
        .collect()
        .await
        .map_err(|e| StoreError::Backend {
            key: key.to_string(),
            kind: BackendKind::Unavailable,
            message: e.to_string(),
            source: std::sync::Arc::new(e),
        })?
        .into_bytes())
}

fn backend<E>(key: &str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let failure = crate::ports::aws::failure(err);
    StoreError::Backend {
        key: key.to_string(),
        kind: failure.kind,
        message: failure.summary,
        source: failure.cause,
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    #[instrument(skip(self), fields(bucket = %self.bucket))]
    async fn get(&self, key: &ObjectKey) -> Result<Object, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key.as_str()))
            .send()
            .await
            .map_err(|err| {
                if err.as_service_error().is_some_and(|e| e.is_no_such_key()) {
                    StoreError::NotFound(key.to_string())
                } else {
                    backend(key.as_str(), err)
                }
            })?;
        let etag = out.e_tag().unwrap_or_default().to_string();
        let bytes = collect_body(key, out.body).await?;
        Ok(Object { bytes, etag })
    }

    async fn get_range(
        &self,
        key: &ObjectKey,
        range: std::ops::Range<u64>,
        etag: Option<&str>,
    ) -> Result<Bytes, StoreError> {
        if range.end <= range.start {
            return Ok(Bytes::new());
        }
        let mut request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key.as_str()))
            .range(format!("bytes={}-{}", range.start, range.end - 1));
        if let Some(etag) = etag {
            request = request.if_match(etag);
        }
        let out = match request.send().await {
            Ok(out) => out,
            Err(err) => {
                let status = err.raw_response().map(|r| r.status().as_u16());
                return Err(match (status, etag) {
                    (Some(412), Some(expected)) => StoreError::PreconditionFailed {
                        key: key.to_string(),
                        expected: expected.to_string(),
                    },
                    // A range that starts past the end: nothing there, as `get` would slice.
                    (Some(416), _) => return Ok(Bytes::new()),
                    (Some(404), _) => StoreError::NotFound(key.to_string()),
                    _ if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                        StoreError::NotFound(key.to_string())
                    }
                    _ => backend(key.as_str(), err),
                });
            }
        };
        let bytes = collect_body(key, out.body).await?;
        Ok(bytes)
    }

    async fn get_stream(&self, key: &ObjectKey) -> Result<ByteStream, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key.as_str()))
            .send()
            .await
            .map_err(|err| {
                if err.as_service_error().is_some_and(|e| e.is_no_such_key()) {
                    StoreError::NotFound(key.to_string())
                } else {
                    backend(key.as_str(), err)
                }
            })?;
        let shown = key.to_string();
        let stream = futures::stream::unfold((out.body, shown), |(mut body, shown)| async move {
            match body.try_next().await {
                Ok(Some(chunk)) => Some((Ok(chunk), (body, shown))),
                Ok(None) => None,
                Err(e) => Some((
                    Err(StoreError::Backend {
                        key: shown.clone(),
                        kind: BackendKind::Unavailable,
                        message: e.to_string(),
                        source: std::sync::Arc::new(e),
                    }),
                    (body, shown),
                )),
            }
        });
        Ok(Box::pin(stream))
    }

    #[instrument(skip(self, bytes), fields(bucket = %self.bucket, size = bytes.len()))]
    async fn put(&self, key: &ObjectKey, bytes: Bytes) -> Result<ObjectMeta, StoreError> {
        self.put_conditional(key, bytes, None, None).await
    }

    #[instrument(skip(self), fields(bucket = %self.bucket))]
    async fn put_file(&self, key: &ObjectKey, path: &Path) -> Result<ObjectMeta, StoreError> {
        let size = std::fs::metadata(path)
            .map_err(|e| StoreError::io(path, e))?
            .len();
        let body = SdkByteStream::from_path(path)
            .await
            .map_err(|e| StoreError::Backend {
                key: key.to_string(),
                kind: BackendKind::Unavailable,
                message: format!("cannot read {}: {e}", path.display()),
                source: std::sync::Arc::new(e),
            })?;
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key.as_str()))
            .body(body)
            .send()
            .await
            .map_err(|err| backend(key.as_str(), err))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size,
            etag: out.e_tag().unwrap_or_default().to_string(),
        })
    }

    async fn put_if_absent(&self, key: &ObjectKey, bytes: Bytes) -> Result<ObjectMeta, StoreError> {
        self.put_conditional(key, bytes, Some("*"), None).await
    }

    async fn put_if_match(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
        etag: &str,
    ) -> Result<ObjectMeta, StoreError> {
        self.put_conditional(key, bytes, None, Some(etag)).await
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full(key.as_str()))
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.clone(),
                size: out.content_length().unwrap_or_default().max(0) as u64,
                etag: out.e_tag().unwrap_or_default().to_string(),
            })),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
            Err(err) if err.raw_response().map(|r| r.status().as_u16()) == Some(404) => Ok(None),
            Err(err) => Err(backend(key.as_str(), err)),
        }
    }

    async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full(prefix))
            .set_continuation_token(token)
            .max_keys(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|err| backend(prefix, err))?;
        let mut objects = Vec::new();
        let mut skipped = 0;
        for o in out.contents() {
            let Some(full) = o.key() else { continue };
            let Some(key) = super::listed_key(&self.url(), self.strip(full)) else {
                skipped += 1;
                continue;
            };
            objects.push(ObjectMeta {
                key,
                size: o.size().unwrap_or_default().max(0) as u64,
                etag: o.e_tag().unwrap_or_default().to_string(),
            });
        }
        let next = if out.is_truncated().unwrap_or(false) {
            out.next_continuation_token().map(str::to_string)
        } else {
            None
        };
        Ok(ListPage {
            objects,
            next,
            skipped,
        })
    }

    fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}
