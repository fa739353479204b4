//! The ingest function: validates and versions one raw file.
//!
//! Given a raw object (`raw/<dataset>/<file>`, by direct invocation, an S3 notification or
//! an SQS-wrapped one), ingest finds the model specs of that dataset (`specs/*.toml`),
//! streams the object to local disk while hashing it, and derives the dataset version from
//! the bytes and the ingest settings. If that version already exists it writes nothing new;
//! otherwise it infers or checks the schema, quarantines bad rows, and writes
//! `datasets/<dataset>/<version>/{data.parquet, rejected.jsonl, schema.json, profile.json}`
//! and `manifest.json` last. Either way it then asks preprocess to run each model spec
//! on that version (preprocess is idempotent, so a redelivery is harmless). A file that
//! cannot be ingested at all leaves `quarantine/<dataset>/<version>/error.json` (and its
//! rejected rows) and fails permanently.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use lambdaml::dataset::{DatasetManifest, Format, IngestConfig, SourceInfo, ingest_file};
use lambdaml::lambda::S3Object;
use lambdaml::layout;
use lambdaml::message::{
    DirectRequest, Envelope, IngestInput, IngestRequest, Message, PreprocessRequest,
    RetrainRequest, StageMessage,
};
use lambdaml::pipeline::{Function, NoQueue, Wire, Wired};
use lambdaml::queue::Queue;
use lambdaml::record::TriggerKind;
use lambdaml::spec::{ModelSpec, is_valid_name};
use lambdaml::stage::{Handler, StageError};
use lambdaml::store::{ObjectKey, ObjectStore, ObjectStoreExt, StoreError, to_json_bytes};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{info, instrument, warn};

mod parts;
mod plan;
mod retrain;

pub use parts::{DEFAULT_PARTITION_BYTES, IngestPlan, Partitioned, PlannedPart};

/// Progress callback: rows read so far.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// The ingest handler. It needs the object store and the preprocess queue.
#[derive(Clone)]
pub struct Ingest {
    store: Arc<dyn ObjectStore>,
    preprocess: Arc<dyn Queue>,
    progress: Option<Progress>,
    /// Ingest's own queue, for partition messages: partitioning is off without it.
    own: Option<Arc<dyn Queue>>,
    /// Files over this size are ingested in partitions of at most this size.
    partition_bytes: u64,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("store", &self.store.url())
            .field("preprocess", &self.preprocess.name())
            .finish()
    }
}

/// What one ingest did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestOutcome {
    /// The dataset.
    pub dataset: String,
    /// The version.
    pub version: String,
    /// False when this version already existed and nothing was written.
    pub created: bool,
    /// Valid rows.
    pub rows: u64,
    /// Quarantined rows.
    pub rejected: u64,
    /// The manifest key.
    pub manifest: String,
    /// Models asked to preprocess this version.
    pub models: Vec<String>,
    /// Set when the file is ingested in partitions: this step's part in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitioned: Option<Partitioned>,
}

/// Where a version's files come from, for its manifest.
#[derive(Debug, Clone, Copy)]
struct Published<'a> {
    source: &'a ObjectKey,
    dataset: &'a str,
    version: &'a str,
    size: u64,
    sha: &'a str,
    format: Format,
}

/// A model spec found for a dataset.
#[derive(Debug, Clone)]
struct FoundSpec {
    key: String,
    spec: ModelSpec,
    bytes: Bytes,
}

impl Ingest {
    /// A handler over `store`, sending to the `preprocess` queue.
    pub fn new(store: Arc<dyn ObjectStore>, preprocess: Arc<dyn Queue>) -> Self {
        Ingest {
            store,
            preprocess,
            progress: None,
            own: None,
            partition_bytes: DEFAULT_PARTITION_BYTES,
        }
    }

    /// Partitions as a [`PARTITION_MIB_VAR`] value says ([`partition_bytes`]), over `own`
    /// (ingest's own queue; none: no partitions).
    pub fn with_partition_setting(
        mut self,
        own: Option<Arc<dyn Queue>>,
        value: Option<&str>,
    ) -> Self {
        match (own, partition_bytes(value)) {
            (Some(own), Some(bytes)) => self.with_partitions(own, bytes),
            _ => {
                self.own = None;
                self
            }
        }
    }

    /// Ingests plain CSV files over `partition_bytes` in partitions of at most that size,
    /// one message each on `own` (ingest's own queue).
    pub fn with_partitions(mut self, own: Arc<dyn Queue>, partition_bytes: u64) -> Self {
        self.own = Some(own);
        self.partition_bytes = partition_bytes.max(1);
        self
    }

    /// Reports rows read as ingest goes (the CLI's progress bar).
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// The dataset a raw key belongs to: `raw/<dataset>/…`.
    pub fn dataset_of(key: &str) -> Result<String, StageError> {
        let mut parts = key.split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("raw"), Some(dataset), Some(_)) if is_valid_name(dataset) => {
                Ok(dataset.to_string())
            }
            (Some("raw"), Some(dataset), Some(_)) => Err(StageError::permanent(format!(
                "dataset name {dataset:?} in {key:?} must be 1-64 characters of a-z, 0-9, '-' or '_'"
            ))),
            _ => Err(StageError::permanent(format!(
                "{key:?} is outside raw/: raw files go under raw/<dataset>/<file>"
            ))),
        }
    }

    /// The specs (`specs/*.toml`) whose `dataset.name` is `dataset`. A spec for this
    /// dataset that does not parse is an error naming the file; other specs are not read
    /// beyond their dataset name.
    async fn specs_for(&self, dataset: &str) -> Result<Vec<FoundSpec>, StageError> {
        let mut found = Vec::new();
        for meta in self.store.list_all(layout::SPECS).await? {
            let key = meta.key.as_str();
            // Only the top level: specs/history/ holds snapshots.
            if key.matches('/').count() != 1 || !key.ends_with(".toml") {
                continue;
            }
            let object = self.store.get(&meta.key).await?;
            let text = String::from_utf8_lossy(&object.bytes);
            let names_dataset = toml::from_str::<toml::Value>(&text)
                .ok()
                .and_then(|v| {
                    v.get("dataset")?
                        .get("name")?
                        .as_str()
                        .map(|n| n == dataset)
                })
                .unwrap_or(false);
            if !names_dataset {
                continue;
            }
            let spec = ModelSpec::parse(&text)
                .map_err(|e| StageError::permanent(format!("{key}: {e}")))?;
            found.push(FoundSpec {
                key: key.to_string(),
                spec,
                bytes: object.bytes,
            });
        }
        if found.is_empty() {
            return Err(StageError::permanent(format!(
                "no model spec names dataset {dataset:?}: put one at specs/<model>.toml \
                 with [dataset] name = {dataset:?}"
            )));
        }
        let first = IngestConfig::from_spec(&found[0].spec);
        if let Some(other) = found[1..]
            .iter()
            .find(|f| IngestConfig::from_spec(&f.spec) != first)
        {
            return Err(StageError::permanent(format!(
                "{} and {} disagree on how to read dataset {dataset:?} \
                 (label, delimiter, missing values or declared columns)",
                found[0].key, other.key
            )));
        }
        Ok(found)
    }

    /// Streams `key` into `path`, returning (size, sha256 hex).
    async fn download(&self, key: &ObjectKey, path: &Path) -> Result<(u64, String), StageError> {
        let stream = self
            .store
            .get_stream(key)
            .await
            .map_err(|e| missing_raw(key, e))?;
        let mut hasher = Sha256::new();
        let size = write_stream(stream, path, Some(&mut hasher)).await?;
        Ok((size, hex::encode(hasher.finalize())))
    }

    /// The raw object as a local file, with its size and sha256 hex: the store's own file
    /// when it keeps one ([`ObjectStore::local_snapshot`], no copy), else a download into
    /// `dir`. The second value keeps a snapshot alive.
    async fn local_raw(
        &self,
        key: &ObjectKey,
        dir: &Path,
    ) -> Result<(PathBuf, Option<tempfile::TempPath>, u64, String), StageError> {
        let snapshot = self
            .store
            .local_snapshot(key)
            .await
            .map_err(|e| missing_raw(key, e))?;
        if let Some(snapshot) = snapshot {
            let path = snapshot.to_path_buf();
            let hashed = path.clone();
            let (size, sha) =
                lambdaml::stage::run_blocking("hashing the raw file", move || hash_file(&hashed))
                    .await?
                    .map_err(|e| {
                        StageError::retryable(format!("reading {}: {e}", path.display()))
                    })?;
            return Ok((path, Some(snapshot), size, sha));
        }
        let path = dir.join("raw");
        let (size, sha) = self.download(key, &path).await?;
        Ok((path, None, size, sha))
    }

    /// Ingests one raw object. See the crate docs.
    #[instrument(skip(self), fields(key = %request.key))]
    pub async fn ingest(&self, request: &IngestRequest) -> Result<IngestOutcome, StageError> {
        self.ingest_for(request, None).await
    }

    /// Ingests, then asks preprocess for every spec of the dataset — or only `model`'s (a
    /// retrain of one model does not retrain the others, which have their own cooldowns).
    async fn ingest_for(
        &self,
        request: &IngestRequest,
        model_only: Option<&str>,
    ) -> Result<IngestOutcome, StageError> {
        let dataset = match &request.dataset {
            Some(d) if is_valid_name(d) => d.clone(),
            Some(d) => return Err(StageError::permanent(format!("invalid dataset name {d:?}"))),
            None => Self::dataset_of(request.key.as_str())?,
        };
        let specs = self.specs_for(&dataset).await?;
        let config = IngestConfig::from_spec(&specs[0].spec);

        match self
            .plan_streaming(&request.key, &dataset, &config, model_only)
            .await?
        {
            Some(plan::Streamed::Planned(outcome)) => return Ok(outcome),
            Some(plan::Streamed::Exists { version, manifest }) => {
                info!(%dataset, %version, "dataset version exists; nothing written");
                let models = self
                    .request_preprocess(&specs, &dataset, &version, model_only)
                    .await?;
                return Ok(IngestOutcome {
                    manifest: layout::dataset_file(&dataset, &version, "manifest.json")?
                        .to_string(),
                    dataset,
                    version,
                    created: false,
                    rows: manifest.rows,
                    rejected: manifest.rejected,
                    models,
                    partitioned: None,
                });
            }
            None => {}
        }
        let dir = tempfile::tempdir().map_err(StageError::from)?;
        // `_snapshot` keeps the store's own file (when it is one) until the version is written.
        let (raw_path, _snapshot, size, sha) = self.local_raw(&request.key, dir.path()).await?;
        let config_json = serde_json::to_string(&config).map_err(StageError::invalid)?;
        let version =
            lambdaml::sha256_hex(format!("{sha}\n{config_json}").as_bytes())[..16].to_string();
        let key = |name: &str| layout::dataset_file(&dataset, &version, name);
        let manifest_key = key("manifest.json")?;

        let (manifest, created) = match self.store.get_json::<DatasetManifest>(&manifest_key).await
        {
            Ok(existing) => {
                info!(%dataset, %version, "dataset version exists; nothing written");
                (existing, false)
            }
            Err(lambdaml::store::JsonError::Store(StoreError::NotFound(_))) => {
                let manifest = self
                    .write_version(
                        &request.key,
                        &dataset,
                        &version,
                        &config,
                        &raw_path,
                        size,
                        &sha,
                        dir.path(),
                    )
                    .await?;
                (manifest, true)
            }
            Err(e) => return Err(e.into()),
        };

        let models = self
            .request_preprocess(&specs, &dataset, &version, model_only)
            .await?;
        info!(%dataset, %version, rows = manifest.rows, rejected = manifest.rejected, created, "ingested");
        Ok(IngestOutcome {
            dataset,
            version,
            created,
            rows: manifest.rows,
            rejected: manifest.rejected,
            manifest: manifest_key.to_string(),
            models,
            partitioned: None,
        })
    }

    /// Asks preprocess to run every spec of the dataset (or only `model_only`'s) on a
    /// version; returns the models asked.
    async fn request_preprocess(
        &self,
        specs: &[FoundSpec],
        dataset: &str,
        version: &str,
        model_only: Option<&str>,
    ) -> Result<Vec<String>, StageError> {
        let mut models = Vec::new();
        for found in specs
            .iter()
            .filter(|f| model_only.is_none_or(|m| m == f.spec.model.name))
        {
            let spec_sha = lambdaml::sha256_hex(&found.bytes);
            let model = found.spec.model.name.clone();
            let snapshot = layout::spec_snapshot(&model, &spec_sha)?;
            self.store
                .put_immutable(&snapshot, found.bytes.clone())
                .await?;
            let run = lambdaml::recorder::run_or(|| {
                lambdaml::record::new_run_id(lambdaml::record::TriggerKind::Direct)
            });
            let message = Message::new(
                run,
                Some(model.clone()),
                StageMessage::Preprocess(PreprocessRequest {
                    dataset: dataset.to_string(),
                    dataset_version: version.to_string(),
                    spec: snapshot,
                    salt: None,
                }),
            );
            lambdaml::recorder::forward(self.store.as_ref(), self.preprocess.as_ref(), &message)
                .await?;
            models.push(model);
        }
        Ok(models)
    }

    /// Builds a retraining dataset version (see [`RetrainRequest`]): the base version's rows,
    /// then the labelled captured rows, cut to the most recent `window_rows` for a sliding
    /// window, written as `retrain/<dataset>/<model>-<hash>.csv` (outside `raw/`, so no
    /// bucket notification ingests it a second time) and ingested as any raw file. The key
    /// is a content hash: a redelivered message makes the same file and the same version.
    #[instrument(skip(self), fields(model = %request.model, reason = %request.reason))]
    pub async fn retrain(&self, request: &RetrainRequest) -> Result<IngestOutcome, StageError> {
        let base = |name: &str| {
            layout::dataset_file(&request.dataset, &request.base_dataset_version, name)
        };
        let data_key = base("data.parquet")?;
        let dir = tempfile::tempdir().map_err(StageError::from)?;
        let base_path = dir.path().join("base.parquet");
        self.download(&data_key, &base_path).await?;
        let labelled = match &request.labelled {
            Some(k) => Some(self.store.get(k).await.map_err(|e| match e {
                StoreError::NotFound(_) => {
                    StageError::permanent(format!("labelled rows {k} do not exist"))
                }
                other => other.into(),
            })?),
            None => None,
        };
        let out_path = dir.path().join("retrain.csv");
        let (data, window) = (request.data, request.window_rows);
        let out = out_path.clone();
        // Written as ingest will read it back: the spec's delimiter, and each value in the
        // form its column's type infers to (booleans as words, floats with a point).
        let specs = self.specs_for(&request.dataset).await?;
        let delimiter = IngestConfig::from_spec(&specs[0].spec).delimiter;
        let schema: lambdaml::dataset::Schema = self.store.get_json(&base("schema.json")?).await?;
        let (rows, sha) =
            lambdaml::stage::run_blocking("building the retraining data", move || {
                retrain::build_retrain_csv(
                    &base_path,
                    &schema,
                    labelled.as_ref().map(|o| o.bytes.as_ref()),
                    data,
                    window,
                    delimiter,
                    &out,
                )
            })
            .await??;
        let key = layout::retrain_data(&request.dataset, &request.model, &sha)?;
        self.store.put_file(&key, &out_path).await?;
        info!(%key, rows, "retraining data built");
        self.ingest_for(
            &IngestRequest {
                key,
                dataset: Some(request.dataset.clone()),
            },
            Some(&request.model),
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_version(
        &self,
        source: &ObjectKey,
        dataset: &str,
        version: &str,
        config: &IngestConfig,
        raw_path: &Path,
        size: u64,
        sha: &str,
        work: &Path,
    ) -> Result<DatasetManifest, StageError> {
        let format = Format::detect(raw_path, source.file_name()).map_err(StageError::invalid)?;
        let progress = self.progress.clone();
        let (path, cfg, out) = (raw_path.to_path_buf(), config.clone(), work.to_path_buf());
        let result = lambdaml::stage::run_blocking("ingest", move || {
            let report = |rows: u64| {
                if let Some(p) = &progress {
                    p(rows);
                }
            };
            ingest_file(&path, format, &cfg, &out, &report)
        })
        .await?;
        let output = match result {
            Ok(output) => output,
            Err(err) => return Err(self.quarantine(source, dataset, version, &err, work).await),
        };
        self.publish(
            &Published {
                source,
                dataset,
                version,
                size,
                sha,
                format,
            },
            &output,
        )
        .await
    }

    /// Keeps what a refused file taught: the error and any rejected rows (`work` holds
    /// `rejected.jsonl` when some were written), for a person to see. Returns the
    /// permanent error to fail with.
    async fn quarantine(
        &self,
        source: &ObjectKey,
        dataset: &str,
        version: &str,
        err: &lambdaml::dataset::DatasetError,
        work: &Path,
    ) -> StageError {
        let qkey = |name: &str| layout::quarantine_file(dataset, version, name);
        let record = serde_json::json!({
            "source": source.as_str(),
            "dataset": dataset,
            "version": version,
            "error": err.to_string(),
            "at": lambdaml::now_rfc3339(),
        });
        let kept = async {
            self.store
                .put(&qkey("error.json")?, to_json_bytes(&record))
                .await?;
            let rejected = work.join("rejected.jsonl");
            if rejected.exists() {
                self.store
                    .put_file(&qkey("rejected.jsonl")?, &rejected)
                    .await?;
            }
            Ok::<(), StageError>(())
        }
        .await;
        if let Err(e) = kept {
            return e;
        }
        warn!(%dataset, error = %err, "file rejected as a whole");
        StageError::permanent(format!("{source}: {err}"))
    }

    /// Writes a version's files: artifacts first (deterministic bytes, so a retried write
    /// is a same-bytes write), the manifest last.
    async fn publish(
        &self,
        at: &Published<'_>,
        output: &lambdaml::dataset::IngestOutput,
    ) -> Result<DatasetManifest, StageError> {
        let Published {
            source,
            dataset,
            version,
            size,
            sha,
            format,
        } = *at;
        let key = |name: &str| layout::dataset_file(dataset, version, name);
        self.store
            .put_file(&key("data.parquet")?, &output.data_path)
            .await?;
        self.store
            .put_file(&key("rejected.jsonl")?, &output.rejected_path)
            .await?;
        self.store
            .put_immutable(&key("schema.json")?, to_json_bytes(&output.schema))
            .await?;
        self.store
            .put_immutable(&key("profile.json")?, to_json_bytes(&output.profile))
            .await?;
        let artifacts: BTreeMap<String, String> = [
            ("data", "data.parquet"),
            ("schema", "schema.json"),
            ("profile", "profile.json"),
            ("rejected", "rejected.jsonl"),
        ]
        .into_iter()
        .map(|(name, file)| Ok((name.to_string(), key(file)?.to_string())))
        .collect::<Result<_, StageError>>()?;
        let manifest = DatasetManifest {
            dataset: dataset.to_string(),
            version: version.to_string(),
            source: SourceInfo {
                key: source.to_string(),
                bytes: size,
                sha256: sha.to_string(),
                format,
            },
            rows: output.profile.rows,
            rejected: output.profile.rejected,
            columns: output
                .schema
                .columns
                .iter()
                .map(|c| c.name.clone())
                .collect(),
            label: output.schema.label.clone(),
            artifacts,
            pipeline_run: lambdaml::recorder::current_run(),
            created_at: lambdaml::now_rfc3339(),
            lambdaml_version: lambdaml::VERSION.to_string(),
        };
        match self
            .store
            .put_if_absent(&key("manifest.json")?, to_json_bytes(&manifest))
            .await
        {
            // A concurrent delivery of the same file finished first: same version, fine.
            Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(manifest),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait]
impl Handler for Ingest {
    type Request = IngestInput;
    /// `{"key": "raw/<dataset>/<file>", "dataset": optional}`.
    type Direct = IngestRequest;
    type Outcome = IngestOutcome;

    async fn handle_request(
        &self,
        _envelope: &Envelope,
        request: IngestInput,
    ) -> Result<IngestOutcome, StageError> {
        match request {
            IngestInput::File(r) => self.ingest(&r).await,
            IngestInput::Retrain(r) => self.retrain(&r).await,
            IngestInput::Partition(r) => self.partition(&r).await,
        }
    }

    /// A notification is run `s3-<hash of bucket, key, etag, sequencer>`: redelivered, it
    /// is the same run; the same key uploaded again is a new one.
    fn s3_message(&self, object: &S3Object) -> Result<Message, StageError> {
        let key = ObjectKey::new(object.key.clone()).map_err(StageError::invalid)?;
        Self::dataset_of(key.as_str())?;
        let seed = format!("{}/{}/{}", object.bucket, object.key, object.version);
        let mut message = IngestRequest { key, dataset: None }.into_message();
        message.run_id = lambdaml::record::stable_run_id(TriggerKind::S3Object, &seed);
        Ok(message)
    }

    fn run_records(&self) -> Option<&dyn ObjectStore> {
        Some(self.store.as_ref())
    }
}

impl Wire for Ingest {
    const FUNCTION: Function = Function::Ingest;
    fn wire(wired: &Wired) -> Result<Self, NoQueue> {
        let ingest = Ingest::new(wired.store.clone(), wired.next()?);
        let setting = std::env::var(PARTITION_MIB_VAR).ok();
        Ok(ingest.with_partition_setting(wired.own_queue(), setting.as_deref()))
    }
}

/// The environment variable holding the partition size in MiB.
pub const PARTITION_MIB_VAR: &str = "LAMBDAML_INGEST_PARTITION_MIB";

/// The partition size a [`PARTITION_MIB_VAR`] value asks for: MiB, fractions allowed
/// (`0.5`); `0` turns partitioning off (`None`); unset, [`DEFAULT_PARTITION_BYTES`]; a value
/// that is not a number is logged and the default used.
pub fn partition_bytes(value: Option<&str>) -> Option<u64> {
    parse_partition_mib(value).unwrap_or_else(|e| {
        warn!("{e}; using the default");
        Some(DEFAULT_PARTITION_BYTES)
    })
}

/// [`partition_bytes`], with an error naming a value that is not a size in MiB (what a
/// command checks before it starts).
pub fn parse_partition_mib(value: Option<&str>) -> Result<Option<u64>, String> {
    let Some(v) = value else {
        return Ok(Some(DEFAULT_PARTITION_BYTES));
    };
    match v.trim().parse::<f64>() {
        Ok(0.0) => Ok(None),
        Ok(mib) if mib.is_finite() && mib > 0.0 => Ok(Some(((mib * 1_048_576.0) as u64).max(1))),
        _ => Err(format!(
            "{PARTITION_MIB_VAR}={v:?} is not a size in MiB (a positive number such as 256 or \
             0.5; 0 ingests every file in one pass)"
        )),
    }
}

/// A raw object that is not there can never be ingested; other store errors keep their
/// class.
fn missing_raw(key: &ObjectKey, e: StoreError) -> StageError {
    match e {
        StoreError::NotFound(_) => {
            StageError::permanent(format!("raw object {key} does not exist"))
        }
        other => other.into(),
    }
}

/// Writes `stream` into `path`, feeding `hasher` when given; returns the size.
async fn write_stream(
    mut stream: lambdaml::store::ByteStream,
    path: &Path,
    mut hasher: Option<&mut Sha256>,
) -> Result<u64, StageError> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(StageError::from)?);
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if let Some(h) = hasher.as_mut() {
            h.update(&chunk);
        }
        size += chunk.len() as u64;
        file.write_all(&chunk)
            .map_err(|e| StageError::retryable(format!("writing {}: {e}", path.display())))?;
    }
    file.flush().map_err(StageError::from)?;
    Ok(size)
}

/// The size and sha256 hex of a local file.
fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let (size, digest) = lambdaml::store::sha256_file(path)?;
    Ok((size, hex::encode(digest)))
}
