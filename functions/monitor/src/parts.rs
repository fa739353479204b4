//! The monitor's fan-out: a window whose captures exceed [`PARTITION_MIB_VAR`] (256 MiB by
//! default) is aggregated in parts, one message each on the monitor's own queue, so a
//! window of a billion captured rows is many invocations of the same size, not a bigger
//! one.
//!
//! 1. **Plan.** The invocation that was asked for the window lists its capture files, packs
//!    consecutive capture hours into parts of at most the part size (an hour is never
//!    split), writes `monitor-parts/<model>/<run>/plan.json` (the request, the resolved
//!    window, the production version, each part's files) and sends one
//!    [`MonitorPartRequest`] per part.
//! 2. **Parts.** Each part reads the window's labels, folds its files with the one-pass code
//!    ([`crate::scan`]) and writes its summary ([`crate::scan::partial`]): counts, sums
//!    and histograms, its joined labelled rows, and its samples as rows sorted by row key;
//!    the summary is written last.
//! 3. **Merge.** The part that finds every summary present claims the merge
//!    (`put_if_absent` of `merger`; its own redelivery merges again), adds the summaries up
//!    in window order, reads each part's sample rows only as far as the smallest keys of all
//!    parts reach, and writes the report as one invocation would — at the key one
//!    invocation would have written.
//!
//! Exact where the one-pass report is exact: every count, histogram and category table, the
//! drift tests' sample (the same rows: the smallest [`row_key`](crate::window::row_key)s),
//! the labelled rows and so every live metric. Floating-point sums (the estimators' CBPE,
//! reconstruction and loss sums) are added per part and may differ in the last bits. Named
//! categories past 10,000 distinct per feature and the ten unseen examples may name other
//! newcomers than one pass would (their totals do not change).

use chrono::{DateTime, Utc};
use lambdaml::layout;
use lambdaml::message::{Message, MonitorPartRequest, StageMessage};
use lambdaml::queue::Queue;
use lambdaml::record::{TriggerKind, stable_run_id};
use lambdaml::registry::RolloutSlot;
use lambdaml::stage::StageError;
use lambdaml::store::{ObjectKey, ObjectStoreExt, StoreError, to_json_bytes};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::interval::Interval;
use crate::scan::Scan;
use crate::scan::partial::{Partial, SampleMeta, decode, prefixes};
use crate::{Monitor, MonitorOutcome, MonitorRequest, Timings, run_keys};

/// The capture bytes (MiB, fractions allowed) above which a window is aggregated in parts,
/// and the most a part holds; 0 turns parts off.
pub const PARTITION_MIB_VAR: &str = "LAMBDAML_MONITOR_PARTITION_MIB";
/// Its default.
pub const DEFAULT_PARTITION_MIB: f64 = 256.0;

/// The part size [`PARTITION_MIB_VAR`]'s value asks for, in bytes (`None`: the default).
pub fn part_bytes(setting: Option<&str>) -> Result<u64, String> {
    let text = match setting.map(str::trim) {
        None | Some("") => return Ok((DEFAULT_PARTITION_MIB * 1_048_576.0) as u64),
        Some(t) => t,
    };
    match text.parse::<f64>() {
        Ok(mib) if mib.is_finite() && mib >= 0.0 => {
            let bytes = (mib * 1_048_576.0).round() as u64;
            Ok(if mib > 0.0 { bytes.max(1) } else { 0 })
        }
        _ => Err(format!(
            "{PARTITION_MIB_VAR} must be a number of MiB (0 keeps every window in one invocation), got {text:?}"
        )),
    }
}

/// A window planned in parts (`monitor-parts/<model>/<run>/plan.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorPlan {
    /// The request as asked.
    pub request: MonitorRequest,
    /// The production version the parts compare with.
    pub version: String,
    /// The window's start.
    pub from: DateTime<Utc>,
    /// Its end (exclusive).
    pub to: DateTime<Utc>,
    /// The evaluation time.
    pub at: DateTime<Utc>,
    /// When the run began (names its report folder).
    pub generated: DateTime<Utc>,
    /// The feedback files read for the window's labels, listed once here so that every part
    /// and the merge join the same labels (files keep arriving while the parts run).
    pub feedback: Vec<String>,
    /// The shadow as the run began (the parts and the merge judge this rollout or none).
    #[serde(default)]
    pub shadow: Option<RolloutSlot>,
    /// The canary as the run began.
    #[serde(default)]
    pub canary: Option<RolloutSlot>,
    /// The parts, in window order.
    pub parts: Vec<PlannedPart>,
}

impl MonitorPlan {
    fn interval(&self) -> Interval {
        Interval {
            from: self.from,
            to: self.to,
            at: self.at,
        }
    }

    /// The planned feedback files.
    fn feedback_keys(&self) -> Result<Vec<ObjectKey>, StageError> {
        self.feedback
            .iter()
            .map(|k| ObjectKey::new(k.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StageError::invalid)
    }
}

/// One part: consecutive capture hours.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedPart {
    /// Its capture files, in order.
    pub keys: Vec<String>,
    /// Their bytes.
    pub bytes: u64,
    /// The capture hours they cover.
    pub hours: usize,
}

/// A run planned in parts.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedRun {
    /// The model.
    pub model: String,
    /// The run (its report folder's name).
    pub run: String,
    /// Parts sent.
    pub parts: usize,
    /// Capture bytes in the window.
    pub bytes: u64,
    /// The plan's key.
    pub plan: String,
    /// Where the report will be.
    pub report: String,
}

/// What handling one part did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum PartOutcome {
    /// The part's summary is written; others are still running.
    Aggregated {
        /// The model.
        model: String,
        /// The run.
        run: String,
        /// The part.
        part: usize,
        /// Parts whose summary is written.
        done: usize,
        /// Parts in all.
        parts: usize,
    },
    /// This part merged the window and wrote the report.
    Reported {
        /// The model.
        model: String,
        /// The run.
        run: String,
        /// Parts merged.
        parts: usize,
        /// The report's key.
        report: String,
        /// Its HTML key.
        html: String,
        /// Whether it breached.
        breach: bool,
        /// The retrain decision.
        retrain: String,
        /// The run's CloudWatch EMF lines.
        #[serde(skip)]
        emf: Vec<String>,
    },
    /// The report was written already (a redelivered message).
    AlreadyReported {
        /// The model.
        model: String,
        /// The run.
        run: String,
        /// The report's key.
        report: String,
    },
}

/// The window's capture files grouped by hour, then packed into parts of at most `limit`
/// bytes (an hour larger than `limit` is a part of its own).
fn pack(metas: Vec<lambdaml::store::ObjectMeta>, limit: u64) -> Vec<PlannedPart> {
    let mut parts: Vec<PlannedPart> = Vec::new();
    let mut hours: Vec<(Option<DateTime<Utc>>, Vec<lambdaml::store::ObjectMeta>)> = Vec::new();
    for m in metas {
        let hour = layout::record_hour(m.key.as_str());
        match hours.last_mut() {
            Some((h, files)) if *h == hour => files.push(m),
            _ => hours.push((hour, vec![m])),
        }
    }
    for (_, files) in hours {
        let bytes: u64 = files.iter().map(|m| m.size).sum();
        let keys = files.into_iter().map(|m| m.key.to_string());
        match parts.last_mut() {
            Some(p) if p.bytes + bytes <= limit => {
                p.keys.extend(keys);
                p.bytes += bytes;
                p.hours += 1;
            }
            _ => parts.push(PlannedPart {
                keys: keys.collect(),
                bytes,
                hours: 1,
            }),
        }
    }
    parts
}

impl Monitor {
    /// Plans `interval` in parts when its captures are over the part size and fill more
    /// than one part; `None`: it runs in this invocation.
    pub(crate) async fn plan(
        &self,
        request: &MonitorRequest,
        found: &crate::found::Found,
        interval: &Interval,
        generated: DateTime<Utc>,
    ) -> Result<Option<PlannedRun>, StageError> {
        let Some((queue, limit)) = &self.parts else {
            return Ok(None);
        };
        let model = request.model.as_str();
        let metas = self
            .metas_between(layout::CAPTURES, model, interval.from, interval.to)
            .await?;
        let bytes: u64 = metas.iter().map(|m| m.size).sum();
        if bytes <= *limit {
            return Ok(None);
        }
        let parts = pack(metas, *limit);
        if parts.len() < 2 {
            return Ok(None);
        }
        let (run_prefix, report_key, _) = run_keys(model, interval, generated)?;
        let run = run_prefix
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let feedback = self.feedback_keys(model, interval).await?;
        let plan = MonitorPlan {
            request: request.clone(),
            version: found.manifest.version.clone(),
            from: interval.from,
            to: interval.to,
            at: interval.at,
            generated,
            feedback: feedback.iter().map(ToString::to_string).collect(),
            shadow: found.registry.shadow.clone(),
            canary: found.registry.canary.clone(),
            parts,
        };
        let plan_key = layout::monitor_plan(model, &run)?;
        self.store.put(&plan_key, to_json_bytes(&plan)).await?;
        send_parts(queue.as_ref(), model, &run, plan.parts.len()).await?;
        info!(%model, %run, parts = plan.parts.len(), bytes, "window planned in parts");
        Ok(Some(PlannedRun {
            model: model.to_string(),
            run,
            parts: plan.parts.len(),
            bytes,
            plan: plan_key.to_string(),
            report: report_key.to_string(),
        }))
    }

    /// Aggregates one part; the last part to finish merges them and writes the report.
    pub async fn handle_part(
        &self,
        request: &MonitorPartRequest,
    ) -> Result<PartOutcome, StageError> {
        let (model, run) = (request.model.as_str(), request.run.as_str());
        if !lambdaml::spec::is_valid_name(model) || !is_run_name(run) {
            return Err(StageError::permanent(format!(
                "invalid monitor part: model {model:?}, run {run:?}"
            )));
        }
        let plan: MonitorPlan = match self
            .store
            .get_json(&layout::monitor_plan(model, run)?)
            .await
        {
            Ok(p) => p,
            Err(lambdaml::store::JsonError::Store(StoreError::NotFound(k))) => {
                return Err(StageError::permanent(format!(
                    "no plan at {k}: the monitor run {run} of {model} was not planned in parts (or its parts expired)"
                )));
            }
            Err(e) => return Err(StageError::from(e)),
        };
        let Some(part) = plan.parts.get(request.part) else {
            return Err(StageError::permanent(format!(
                "the monitor run {run} of {model} has {} parts, not a part {}",
                plan.parts.len(),
                request.part
            )));
        };
        let (_, report_key, html_key) = run_keys(model, &plan.interval(), plan.generated)?;
        let reported = PartOutcome::AlreadyReported {
            model: model.into(),
            run: run.into(),
            report: report_key.to_string(),
        };
        if self.finish_publishing(&report_key, &html_key).await? {
            return Ok(reported);
        }
        let summary_key = layout::monitor_part_file(model, run, request.part, "json")?;
        if !self.store.exists(&summary_key).await? {
            self.aggregate(&plan, run, request.part, part).await?;
        }
        let done = self
            .store
            .list_all(&layout::monitor_parts(model, run))
            .await?
            .iter()
            .filter(|m| is_part_summary(m.key.as_str()))
            .count();
        if done < plan.parts.len() || !self.elected(model, run, request.part).await? {
            return Ok(PartOutcome::Aggregated {
                model: model.into(),
                run: run.into(),
                part: request.part,
                done,
                parts: plan.parts.len(),
            });
        }
        let outcome = match self.merge(&plan, run).await {
            Ok(outcome) => outcome,
            // Another delivery of this part merged meanwhile.
            Err(_) if self.finish_publishing(&report_key, &html_key).await? => {
                return Ok(reported);
            }
            Err(e) => return Err(e),
        };
        Ok(PartOutcome::Reported {
            model: model.into(),
            run: run.into(),
            parts: plan.parts.len(),
            report: outcome.report_key,
            html: outcome.html_key,
            breach: outcome.report.verdict.breach,
            retrain: outcome.report.retrain.decision,
            emf: outcome.emf,
        })
    }

    /// Whether the run's report is written: its HTML (written last) is there, or its JSON is
    /// and the HTML is then rendered from it (a merge that stopped between the two).
    async fn finish_publishing(
        &self,
        report_key: &ObjectKey,
        html_key: &ObjectKey,
    ) -> Result<bool, StageError> {
        if self.store.exists(html_key).await? {
            return Ok(true);
        }
        let report: crate::report::Report = match self.store.get_json(report_key).await {
            Ok(r) => r,
            Err(lambdaml::store::JsonError::Store(StoreError::NotFound(_))) => return Ok(false),
            Err(e) => return Err(StageError::from(e)),
        };
        let html = bytes::Bytes::from(crate::html::render(&report));
        match self.store.put_if_absent(html_key, html).await {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// The production version and rollout the plan was made for, as found now: a run whose
    /// production or rollout changed meanwhile (by a person, or by this run's own merge
    /// before a crash) is refused rather than judged on mixed evidence or applied twice.
    async fn found_for(&self, plan: &MonitorPlan) -> Result<crate::found::Found, StageError> {
        let model = plan.request.model.as_str();
        let found = self.find(model).await?;
        if found.manifest.version != plan.version {
            return Err(StageError::permanent(format!(
                "production of {model} changed from {} to {} while its window was aggregated in parts: run the monitor again",
                plan.version, found.manifest.version
            )));
        }
        if found.registry.shadow != plan.shadow || found.registry.canary != plan.canary {
            return Err(StageError::permanent(format!(
                "the rollout of {model} changed while its window was aggregated in parts: run the monitor again"
            )));
        }
        Ok(found)
    }

    /// Folds one part's files and writes its sample rows, then its summary.
    async fn aggregate(
        &self,
        plan: &MonitorPlan,
        run: &str,
        index: usize,
        part: &PlannedPart,
    ) -> Result<(), StageError> {
        let model = plan.request.model.as_str();
        let found = self.found_for(plan).await?;
        let interval = plan.interval();
        let labels = self.labels_of(&plan.feedback_keys()?).await?;
        let mut scan = Scan::new(&found, &self.config, labels, &interval)?.for_part();
        let keys = part
            .keys
            .iter()
            .map(|k| ObjectKey::new(k.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StageError::invalid)?;
        self.fold_keys(&mut scan, &keys).await?;
        let (summary, sample, estimation) = scan.into_partial()?;
        let file = |ext: &str| layout::monitor_part_file(model, run, index, ext);
        self.store.put_file(&file("sample")?, sample.path()).await?;
        self.store
            .put_file(&file("estimation")?, estimation.path())
            .await?;
        self.store
            .put(&file("json")?, summary.to_bytes()?.into())
            .await?;
        Ok(())
    }

    /// Whether part `index` merges: the first to see every summary claims it; its own
    /// redelivery, after a crash mid-merge, finds its claim and merges again.
    async fn elected(&self, model: &str, run: &str, index: usize) -> Result<bool, StageError> {
        let key = layout::monitor_merger(model, run)?;
        let claim = bytes::Bytes::from(index.to_string());
        match self.store.put_if_absent(&key, claim.clone()).await {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists(_)) => Ok(self.store.get(&key).await?.bytes == claim),
            Err(e) => Err(e.into()),
        }
    }

    /// Adds the parts' summaries up in window order and writes the report.
    async fn merge(&self, plan: &MonitorPlan, run: &str) -> Result<MonitorOutcome, StageError> {
        let mut timings = Timings::start();
        let model = plan.request.model.as_str();
        let found = self.found_for(plan).await?;
        timings.lap("baseline");
        let interval = plan.interval();
        let labels = self.labels_of(&plan.feedback_keys()?).await?;
        timings.lap("feedback");
        let mut scan = Scan::new(&found, &self.config, labels, &interval)?;
        let mut metas = Vec::with_capacity(plan.parts.len());
        for index in 0..plan.parts.len() {
            let key = layout::monitor_part_file(model, run, index, "json")?;
            let partial = Partial::from_bytes(&self.store.get(&key).await?.bytes)?;
            metas.push((partial.sample.clone(), partial.estimation_sample.clone()));
            scan.absorb(partial)?;
        }
        let (cap, estimation_cap) = scan.caps();
        let sample = self
            .merged_rows(model, run, "sample", metas.iter().map(|m| &m.0), cap)
            .await?;
        let estimation = self
            .merged_rows(
                model,
                run,
                "estimation",
                metas.iter().map(|m| &m.1),
                estimation_cap,
            )
            .await?;
        scan.set_samples(sample, estimation)?;
        let scanned = scan.finish()?;
        timings.lap("captures");
        self.conclude(
            &plan.request,
            &found,
            interval,
            plan.generated,
            scanned,
            timings,
        )
        .await
    }

    /// The `cap` rows with the smallest keys of every part's `ext` rows, in key order,
    /// reading each part only as far as those keys can reach.
    async fn merged_rows<'m>(
        &self,
        model: &str,
        run: &str,
        ext: &str,
        metas: impl Iterator<Item = &'m SampleMeta>,
        cap: usize,
    ) -> Result<Vec<(u64, Vec<f64>)>, StageError> {
        let metas: Vec<&SampleMeta> = metas.collect();
        let reach = prefixes(&metas, cap);
        let mut rows = Vec::new();
        for (index, (meta, n)) in metas.iter().zip(reach).enumerate() {
            if n == 0 {
                continue;
            }
            let key = layout::monitor_part_file(model, run, index, ext)?;
            let bytes = self
                .store
                .get_range(&key, 0..n * meta.row_bytes(), None)
                .await?;
            rows.extend(decode(&bytes, meta.width));
        }
        rows.sort_unstable_by_key(|(k, _)| *k);
        rows.truncate(cap);
        Ok(rows)
    }
}

/// Sends one message per part to the monitor's queue.
async fn send_parts(
    queue: &dyn Queue,
    model: &str,
    run: &str,
    parts: usize,
) -> Result<(), StageError> {
    let run_id = stable_run_id(TriggerKind::Direct, &format!("monitor-{model}-{run}"));
    for part in 0..parts {
        let message = Message::new(
            run_id.clone(),
            Some(model.to_string()),
            StageMessage::MonitorPart(MonitorPartRequest {
                model: model.to_string(),
                run: run.to_string(),
                part,
            }),
        );
        queue
            .send(&message.to_body())
            .await
            .map_err(|e| StageError::context("sending a monitor part message", e))?;
    }
    Ok(())
}

/// Whether `run` can be a run's name (`<stamp>-<salt>`): no separators, nothing odd.
fn is_run_name(run: &str) -> bool {
    !run.is_empty()
        && run.len() <= 64
        && run
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Whether `key` is a part's summary (`part-NNNNN.json`).
fn is_part_summary(key: &str) -> bool {
    key.rsplit('/')
        .next()
        .is_some_and(|f| f.starts_with("part-") && f.ends_with(".json"))
}

/// The monitor as the handler of its queue (the parts of planned windows).
#[async_trait::async_trait]
impl lambdaml::stage::Handler for Monitor {
    type Request = MonitorPartRequest;
    type Direct = MonitorPartRequest;
    type Outcome = PartOutcome;

    async fn handle_request(
        &self,
        _envelope: &lambdaml::message::Envelope,
        request: MonitorPartRequest,
    ) -> Result<PartOutcome, StageError> {
        let outcome = self.handle_part(&request).await?;
        if let (PartOutcome::Reported { emf, .. }, true) = (&outcome, self.emf_stdout) {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            for line in emf {
                let _ = writeln!(stdout, "{line}");
            }
        }
        Ok(outcome)
    }

    fn run_records(&self) -> Option<&dyn lambdaml::store::ObjectStore> {
        None
    }
}

impl lambdaml::pipeline::Wire for Monitor {
    const FUNCTION: lambdaml::pipeline::Function = lambdaml::pipeline::Function::Monitor;
    fn wire(wired: &lambdaml::pipeline::Wired) -> Result<Self, lambdaml::pipeline::NoQueue> {
        Ok(Monitor::from_wiring(wired))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str, size: u64) -> lambdaml::store::ObjectMeta {
        lambdaml::store::ObjectMeta {
            key: ObjectKey::new(key).unwrap_or_else(|e| panic!("{e}")),
            size,
            etag: String::new(),
        }
    }

    #[test]
    fn parts_pack_whole_hours_up_to_the_limit() {
        let h = |d: u32, h: u32, n: u32| format!("captures/m/2030-01-{d:02}/{h:02}/{n}.jsonl");
        let metas = vec![
            meta(&h(1, 0, 1), 40),
            meta(&h(1, 0, 2), 40),
            meta(&h(1, 1, 1), 30),
            meta(&h(1, 2, 1), 200),
            meta(&h(1, 3, 1), 10),
            meta(&h(1, 4, 1), 10),
        ];
        let parts = pack(metas, 100);
        let sizes: Vec<(u64, usize, usize)> = parts
            .iter()
            .map(|p| (p.bytes, p.hours, p.keys.len()))
            .collect();
        // 80 + 30 > 100: hour 1 starts a part; hour 2 is larger than a part alone.
        assert_eq!(sizes, vec![(80, 1, 2), (30, 1, 1), (200, 1, 1), (20, 2, 2)]);
    }

    #[test]
    fn part_sizes_are_read_as_mib_and_refused_when_not_numbers() {
        assert_eq!(part_bytes(None), Ok(256 * 1_048_576));
        assert_eq!(part_bytes(Some("0")), Ok(0));
        assert_eq!(part_bytes(Some("0.5")), Ok(524_288));
        for bad in ["-1", "lots", "NaN", "inf"] {
            let e = part_bytes(Some(bad)).unwrap_err();
            assert!(e.contains(PARTITION_MIB_VAR) && e.contains(bad), "{e}");
        }
    }
}
