//! What every command works with: the store, the stage queues and the output mode, and the
//! stage handlers built over them as every deployment wires them.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use indicatif::ProgressBar;
use lambdaml::layout;
use lambdaml::message::{IngestRequest, Message, Stage, StageMessage};
use lambdaml::pipeline::{Wire, Wired};
use lambdaml::queue::{QueueStats, Queues, open_queues};
use lambdaml::record::{TriggerKind, new_run_id};
use lambdaml::spec::ModelSpec;
use lambdaml::stage::{DrainOptions, Handled, StageHandler, drain};
use lambdaml::store::{ObjectKey, ObjectStore, ObjectStoreExt, open_store};
use lambdaml_deploy::Deploy;
use lambdaml_evaluate::Evaluate;
use lambdaml_ingest::{Ingest, IngestOutcome};
use lambdaml_preprocess::Preprocess;
use lambdaml_train::Train;

use crate::output::spinner;

/// Local queues give up on a message after this many receives.
const MAX_RECEIVES: u32 = 5;

/// What every command works with.
pub struct Ctx {
    pub store: Arc<dyn ObjectStore>,
    pub queues: Queues,
    pub json: bool,
    /// Batch partitions scored at once by [`Ctx::drain`] (`--workers`; the core count).
    pub workers: usize,
}

impl Ctx {
    pub async fn open(store_url: &str, queues_url: Option<&str>, json: bool) -> Result<Self> {
        let var = lambdaml_ingest::PARTITION_MIB_VAR;
        lambdaml_ingest::parse_partition_mib(std::env::var(var).ok().as_deref())
            .map_err(|e| anyhow!(e))?;
        let var = lambdaml_monitor::parts::PARTITION_MIB_VAR;
        lambdaml_monitor::parts::part_bytes(std::env::var(var).ok().as_deref())
            .map_err(|e| anyhow!(e))?;
        let store = open_store(store_url)
            .await
            .with_context(|| format!("opening the store {store_url}"))?;
        let queues_url = match queues_url {
            Some(url) => url.to_string(),
            None => match store_url.strip_prefix("file://") {
                Some(path) => format!("file://{}/.queues", path.trim_end_matches('/')),
                None => bail!(
                    "--queues (or LAMBDAML_QUEUES) is required with a non-file store, \
                     e.g. --queues sqs://lambdaml-"
                ),
            },
        };
        let queues = open_queues(&queues_url, MAX_RECEIVES)
            .await
            .with_context(|| format!("opening the queues {queues_url}"))?;
        Ok(Ctx {
            store,
            queues,
            json,
            workers: lambdaml_cli::default_workers(),
        })
    }

    /// Handler `H` over this context's store and queues, wired as everywhere
    /// ([`lambdaml::pipeline`]).
    /// Registry events also go to EventBridge when `LAMBDAML_EVENT_BUS` names a bus.
    pub async fn wire<H: Wire>(&self) -> Result<H> {
        let bus = lambdaml::events::bus_from_env().await?;
        let wired = Wired::open(H::FUNCTION, self.store.clone(), &self.queues)
            .await?
            .with_bus(bus);
        Ok(H::wire(&wired)?)
    }

    /// Handler `H`, ready for [`drain`].
    async fn stage<H: Wire + StageHandler + 'static>(&self) -> Result<Arc<dyn StageHandler>> {
        Ok(Arc::new(self.wire::<H>().await?))
    }

    /// Every stage's handler; training reports its steps on `bar`.
    pub async fn handlers(&self, bar: ProgressBar) -> Result<Vec<Arc<dyn StageHandler>>> {
        let train = self
            .wire::<Train>()
            .await?
            .with_progress(Arc::new(move |p| {
                bar.set_message(format!(
                    "training: step {}/{} loss {:.5}{}; messages handled:",
                    p.step,
                    p.max_steps,
                    p.loss,
                    p.validation_loss
                        .map(|v| format!(" validation {v:.5}"))
                        .unwrap_or_default()
                ));
            }));
        Ok(vec![
            self.stage::<Ingest>().await?,
            self.stage::<Preprocess>().await?,
            Arc::new(train),
            self.stage::<Evaluate>().await?,
            self.stage::<Deploy>().await?,
            self.stage::<lambdaml_batch::Batch>().await?,
            self.stage::<lambdaml_monitor::Monitor>().await?,
        ])
    }

    /// Drains the queues with a progress spinner.
    pub async fn drain(&self) -> Result<Vec<Handled>> {
        let bar = spinner(self.json, "running stages; messages handled:");
        let handlers = self.handlers(bar.clone()).await?;
        let options = DrainOptions {
            workers: self.workers,
            ..DrainOptions::default()
        };
        let report = drain(&self.queues, &handlers, &options, &|h| {
            bar.inc(1);
            bar.set_message(format!(
                "running stages ({} {}); messages handled:",
                h.stage, h.outcome
            ));
        })
        .await?;
        bar.finish_and_clear();
        Ok(report)
    }

    pub async fn queue_stats(&self) -> Result<Vec<(Stage, QueueStats)>> {
        let mut out = Vec::new();
        for stage in Stage::ALL {
            out.push((stage, self.queues.get(stage).await?.stats().await?));
        }
        Ok(out)
    }

    /// Uploads a spec to `specs/<model>.toml`, checking it first.
    pub async fn put_spec(&self, text: &str, origin: &str) -> Result<ModelSpec> {
        let spec = ModelSpec::parse(text).with_context(|| format!("reading {origin}"))?;
        let key = layout::spec(&spec.model.name)?;
        self.store
            .put(&key, bytes::Bytes::from(text.to_string()))
            .await?;
        Ok(spec)
    }

    /// Ingests a raw object directly (not through the queue), with a progress spinner.
    pub async fn ingest_key(
        &self,
        key: ObjectKey,
        dataset: Option<String>,
    ) -> Result<IngestOutcome> {
        let bar = spinner(self.json, "ingesting; rows read:");
        let progress_bar = bar.clone();
        let handler = self
            .wire::<Ingest>()
            .await?
            .with_progress(Arc::new(move |rows| progress_bar.set_position(rows)));
        // A command is a run of its own, recorded like any other.
        let message = Message::new(
            new_run_id(TriggerKind::Manual),
            None,
            StageMessage::Ingest(IngestRequest { key, dataset }),
        );
        let outcome = StageHandler::handle(&handler, message)
            .await
            .map_err(|e| anyhow!("{}", e.reason()))
            .and_then(|v| Ok(serde_json::from_value::<IngestOutcome>(v)?));
        let outcome = match outcome {
            Ok(o) if o.partitioned.is_some() => {
                bar.set_message("ingesting in partitions; messages handled:");
                self.ingest_partitions(o, &bar).await
            }
            other => other,
        };
        bar.finish_and_clear();
        outcome
    }

    /// A large file was planned in partitions: handles the ingest queue (`workers` at a
    /// time) until the version is written, and answers what its last partition did.
    async fn ingest_partitions(
        &self,
        planned: IngestOutcome,
        bar: &indicatif::ProgressBar,
    ) -> Result<IngestOutcome> {
        let handlers: Vec<Arc<dyn StageHandler>> = vec![self.stage::<Ingest>().await?];
        let options = DrainOptions {
            workers: self.workers,
            ..DrainOptions::default()
        };
        let handled = drain(&self.queues, &handlers, &options, &|_| bar.inc(1)).await?;
        let mine = |h: &&Handled| {
            h.detail.get("dataset").and_then(|d| d.as_str()) == Some(planned.dataset.as_str())
                && h.detail.get("version").and_then(|v| v.as_str())
                    == Some(planned.version.as_str())
        };
        if let Some(written) = handled.iter().filter(mine).find(|h| {
            h.detail
                .pointer("/partitioned/step")
                .and_then(|s| s.as_str())
                == Some("written")
        }) {
            return Ok(serde_json::from_value(written.detail.clone())?);
        }
        if let Some(failed) = handled.iter().find(|h| h.outcome == "dead_letter") {
            bail!(
                "ingest in {} partitions failed: {}",
                planned.partitioned.as_ref().map_or(0, |p| p.partitions),
                failed
                    .detail
                    .as_str()
                    .map_or_else(|| failed.detail.to_string(), str::to_string)
            );
        }
        // Written by another runner sharing the queue: read the version.
        let manifest: lambdaml::dataset::DatasetManifest = self
            .store
            .get_json(&ObjectKey::new(planned.manifest.clone())?)
            .await
            .with_context(|| {
                format!(
                    "the partitions of {} version {} ended without writing it",
                    planned.dataset, planned.version
                )
            })?;
        Ok(IngestOutcome {
            created: true,
            rows: manifest.rows,
            rejected: manifest.rejected,
            ..planned
        })
    }
}
