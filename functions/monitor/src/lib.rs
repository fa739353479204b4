//! The monitor function: how is the production model doing, and does it need retraining?
//!
//! For one model and a window of time, the monitor streams the window's capture records
//! (memory bounded by a row sample, never by the window), joins the feedback labels by
//! request id and row, and compares it all with the production version's baseline
//! (`models/<model>/<version>/baseline.json`): data drift per feature and for the dataset,
//! prediction drift, data quality, live predictive performance and processing performance.
//! It writes `monitoring/<model>/<run>/report.json` (schema in [`report`]) and a
//! self-contained `report.html`, returns CloudWatch EMF lines for the drift scores and
//! verdicts, and on a breach (dataset drift, a performance drop, or a changed spec) sends
//! the ingest queue a retrain message — unless the spec's cooldown, the daily cap or an
//! earlier retrain for an overlapping window says no, which the report states.
//!
//! Invoked directly with `{"model", "window"?, "from"?, "to"?, "at"?, "retrain"?}`, or by a
//! schedule (every model in the registry, the window since the previous run's length).

pub mod analysis;
pub mod html;
pub mod report;
pub mod window;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use lambdaml::baseline::Baseline;
use lambdaml::capture::FeedbackRecord;
use lambdaml::dataset::ColumnType;
use lambdaml::layout;
use lambdaml::message::{Message, RetrainRequest, StageMessage};
use lambdaml::model::ModelManifest;
use lambdaml::queue::Queue;
use lambdaml::registry::RegistryStore;
use lambdaml::run::RunManifest;
use lambdaml::spec::{ModelSpec, parse_duration_secs};
use lambdaml::stage::StageError;
use lambdaml::store::{ObjectKey, ObjectStore, ObjectStoreExt, StoreError, to_json_bytes};
use serde::{Deserialize, Serialize};
use tracing::{info, instrument, warn};

use crate::report::{CaptureSummary, FeedbackSummary, Report, RetrainDecision, Verdict, Window};
use crate::window::{Labelled, Line, Val, VersionMaps, WindowAcc};

/// Rows kept for the drift tests per window (all rows of smaller windows).
pub const DEFAULT_SAMPLE_ROWS: usize = 1_000_000;
/// Values kept for the drift tests across all numeric features (160 MB): a model with many
/// features keeps fewer rows.
pub const DEFAULT_SAMPLE_VALUES: usize = 20_000_000;
/// The longest window a request may ask for: ten years.
pub const MAX_WINDOW_SECS: u64 = 3650 * 86_400;
/// Scheduled runs start a little early or late; cooldowns, daily caps and window overlaps
/// allow this much so a daily schedule with a 24 h cooldown retrains daily, not every other
/// day.
pub const SCHEDULE_SLACK_SECS: i64 = 15 * 60;

/// A monitoring request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorRequest {
    /// The model.
    pub model: String,
    /// The window's length before `at` (`"24h"`, `"7d"`); default: the spec's schedule rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Explicit window start (RFC 3339); with `to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Explicit window end (RFC 3339), exclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The evaluation time (default: now, or `to`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Whether a breach may send a retrain message (false: report only).
    #[serde(default = "yes")]
    pub retrain: bool,
}

fn yes() -> bool {
    true
}

impl MonitorRequest {
    /// A request for `model` over the default window ending now.
    pub fn new(model: impl Into<String>) -> Self {
        MonitorRequest {
            model: model.into(),
            window: None,
            from: None,
            to: None,
            at: None,
            retrain: true,
        }
    }
}

/// Limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MonitorConfig {
    /// Rows kept for the drift tests.
    pub sample_rows: usize,
    /// Values kept across all numeric features (fewer rows for wide models).
    pub sample_values: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            sample_rows: DEFAULT_SAMPLE_ROWS,
            sample_values: DEFAULT_SAMPLE_VALUES,
        }
    }
}

/// What one run produced.
#[derive(Debug, Clone)]
pub struct MonitorOutcome {
    /// The report.
    pub report: Report,
    /// Its JSON key.
    pub report_key: String,
    /// Its HTML key.
    pub html_key: String,
    /// CloudWatch EMF lines (one per run, one per feature).
    pub emf: Vec<String>,
}

/// The monitor handler. It needs the store and, to retrain, the ingest queue.
#[derive(Clone)]
pub struct Monitor {
    store: Arc<dyn ObjectStore>,
    ingest: Option<Arc<dyn Queue>>,
    config: MonitorConfig,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("store", &self.store.url())
            .field("ingest", &self.ingest.as_ref().map(|q| q.name()))
            .finish()
    }
}

fn key(k: impl Into<String>) -> Result<ObjectKey, StageError> {
    ObjectKey::new(k).map_err(StageError::invalid)
}

fn parse_time(name: &str, text: &str) -> Result<DateTime<Utc>, StageError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            StageError::permanent(format!("{name}: {text:?} is not an RFC 3339 time ({e})"))
        })
}

/// The length of a schedule expression's period: `rate(1 day)`, `rate(6 hours)`; a cron
/// expression counts as a day.
pub fn schedule_period(expr: &str) -> Duration {
    let inner = expr
        .trim()
        .strip_prefix("rate(")
        .and_then(|s| s.strip_suffix(')'));
    let Some(inner) = inner else {
        return Duration::days(1);
    };
    let mut parts = inner.split_whitespace();
    let n: i64 = parts
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
        .clamp(1, 3650);
    match parts.next().unwrap_or("day").trim_end_matches('s') {
        "minute" => Duration::minutes(n),
        "hour" => Duration::hours(n),
        _ => Duration::days(n),
    }
}

/// The retrain bookkeeping: `monitoring/<model>/retrain-state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrainState {
    /// Retrains sent, oldest first (the last 200).
    pub retrains: Vec<RetrainEntry>,
}

/// One retrain sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrainEntry {
    /// Evaluation time of the run that sent it.
    pub at: String,
    /// Its window.
    pub from: String,
    /// Its window's end.
    pub to: String,
    /// Why.
    pub reason: String,
    /// The production version then.
    pub version: String,
    /// The report.
    pub report: String,
    /// True while the run that reserved this entry has not yet confirmed sending the message
    /// (see [`RetrainEntry::in_force`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sending: bool,
    /// Wall-clock time of the reservation (the monitor's `at` may be a replayed clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_at: Option<String>,
}

/// How long a reservation whose run never confirmed the send holds: a monitor invocation's
/// timeout (template.yaml: 900 s). After it the run is taken to have died before sending,
/// and the rules ignore its entry so the retrain is not lost.
const RESERVATION_SECS: i64 = 900;

impl RetrainEntry {
    /// Whether the entry counts for the rules at wall-clock `now`: sent, or reserved by a run
    /// that may still be sending.
    pub fn in_force(&self, now: DateTime<Utc>) -> bool {
        if !self.sending {
            return true;
        }
        self.reserved_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| (now - t.with_timezone(&Utc)).num_seconds() < RESERVATION_SECS)
    }

    fn same(&self, other: &RetrainEntry) -> bool {
        self.at == other.at
            && self.from == other.from
            && self.to == other.to
            && self.reserved_at == other.reserved_at
    }
}

/// Why an edit of the retrain state was refused.
enum StateEdit {
    /// A rule says no.
    Refused(String),
    /// The state cannot be read.
    Failed(StageError),
}

struct Found {
    manifest: ModelManifest,
    baseline: Baseline,
    spec: ModelSpec,
    spec_changed: bool,
    /// Every version the registry knows.
    versions: HashSet<String>,
}

/// Where each baseline feature sits in a version's capture rows (its pipeline's input order).
fn input_map(
    baseline: &Baseline,
    pipeline: &lambdaml::features::FeaturePipeline,
) -> Vec<Option<usize>> {
    baseline
        .features
        .iter()
        .map(|f| pipeline.inputs.iter().position(|i| i.name == f.name))
        .collect()
}

impl Monitor {
    /// A handler over `store`; retrain messages go to `ingest` when given.
    pub fn new(store: Arc<dyn ObjectStore>, ingest: Option<Arc<dyn Queue>>) -> Self {
        Monitor {
            store,
            ingest,
            config: MonitorConfig::default(),
        }
    }

    /// The same handler with other limits.
    pub fn with_config(mut self, config: MonitorConfig) -> Self {
        self.config = config;
        self
    }

    async fn find(&self, model: &str) -> Result<Found, StageError> {
        let registry = RegistryStore::new(self.store.clone())
            .load(model)
            .await
            .map_err(StageError::invalid)?
            .map(|(r, _)| r)
            .ok_or_else(|| {
                StageError::permanent(format!("model {model:?} is not in the registry"))
            })?;
        let version = registry.production.clone().ok_or_else(|| {
            StageError::permanent(format!(
                "model {model:?} has no production version to monitor"
            ))
        })?;
        let manifest: ModelManifest = self
            .store
            .get_json(&layout::model_manifest(model, &version)?)
            .await?;
        let baseline = match self.store.get(&layout::baseline(model, &version)?).await {
            Ok(json) => {
                let samples = self
                    .store
                    .get(&layout::baseline_samples(model, &version)?)
                    .await?;
                Baseline::decode(&json.bytes, &samples.bytes).map_err(StageError::invalid)?
            }
            Err(StoreError::NotFound(_)) => {
                return Err(StageError::permanent(format!(
                    "{model} version {version} has no baseline.json (evaluated before monitoring existed?); \
                     evaluate it again to make one"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let run: RunManifest = self
            .store
            .get_json(&layout::run_manifest(&manifest.run_id)?)
            .await?;
        let spec_key = run.artifacts.get("spec").cloned().unwrap_or_default();
        let spec_bytes = self.store.get(&key(spec_key)?).await?.bytes;
        let trained =
            ModelSpec::parse(&String::from_utf8_lossy(&spec_bytes)).map_err(StageError::invalid)?;
        // The live spec's monitoring and retraining settings apply at once (an operator may
        // switch retraining off); a change anywhere that shapes the model — data, features,
        // split, preprocessing, training — means "rebuild with new features".
        let (spec, spec_changed) = match self.store.get(&layout::spec(model)?).await {
            Ok(o) => match ModelSpec::parse(&String::from_utf8_lossy(&o.bytes)) {
                Ok(live) => {
                    let changed = live.dataset != trained.dataset
                        || live.task != trained.task
                        || live.features != trained.features
                        || live.split != trained.split
                        || live.preprocess != trained.preprocess
                        || live.train != trained.train;
                    let mut spec = trained.clone();
                    spec.monitor = live.monitor;
                    spec.retrain = live.retrain;
                    (spec, changed)
                }
                Err(e) => {
                    warn!(%model, error = %e, "the live spec does not parse; using the trained one");
                    (trained, false)
                }
            },
            Err(StoreError::NotFound(_)) => (trained, false),
            Err(e) => return Err(e.into()),
        };
        Ok(Found {
            manifest,
            baseline,
            spec,
            spec_changed,
            versions: registry.versions.keys().cloned().collect(),
        })
    }

    /// Keys under `root/<model>/` whose hour folder starts in `[from, to]`.
    async fn keys_between(
        &self,
        root: &str,
        model: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ObjectKey>, StageError> {
        let first_hour = from.timestamp().div_euclid(3600);
        // `to` is exclusive: a window ending on the hour does not read the next hour.
        let last_hour = (to.timestamp_millis() - 1).div_euclid(3_600_000);
        let days = (to - from).num_days();
        let mut metas = Vec::new();
        if days > 31 {
            metas = self
                .store
                .list_all(&layout::records_of(root, model))
                .await?;
        } else {
            let mut day = from.date_naive();
            let last = to.date_naive();
            while day <= last {
                metas.extend(
                    self.store
                        .list_all(&layout::records_of_day(root, model, day))
                        .await?,
                );
                match day.succ_opt() {
                    Some(next) => day = next,
                    None => break,
                }
            }
        }
        let mut keys: Vec<ObjectKey> = metas
            .into_iter()
            .filter(|m| {
                let parts: Vec<&str> = m.key.as_str().split('/').collect();
                if parts.len() != 5 {
                    return false;
                }
                let stamp = format!("{}T{}:00:00Z", parts[2], parts[3]);
                match DateTime::parse_from_rfc3339(&stamp) {
                    Ok(t) => {
                        let h = t.timestamp().div_euclid(3600);
                        h >= first_hour && h <= last_hour
                    }
                    Err(_) => false,
                }
            })
            .map(|m| m.key)
            .collect();
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Runs the monitor. See the crate docs.
    #[instrument(skip(self), fields(model = %request.model))]
    pub async fn run(&self, request: &MonitorRequest) -> Result<MonitorOutcome, StageError> {
        let model = request.model.as_str();
        if !lambdaml::spec::is_valid_name(model) {
            return Err(StageError::permanent(format!(
                "invalid model name {model:?}"
            )));
        }
        let clock = std::time::Instant::now();
        let mut timings = std::collections::BTreeMap::new();
        let found = self.find(model).await?;
        timings.insert("baseline".to_string(), clock.elapsed().as_secs_f64() * 1e3);
        let mark = std::time::Instant::now();
        let version = found.manifest.version.clone();
        let generated = Utc::now();
        let (from, to) = match (&request.from, &request.to) {
            (Some(f), Some(t)) => (parse_time("from", f)?, parse_time("to", t)?),
            (None, None) => {
                let at = match &request.at {
                    Some(a) => parse_time("at", a)?,
                    None => generated,
                };
                let length = match &request.window {
                    Some(w) => parse_duration_secs(w)
                        .filter(|s| *s <= MAX_WINDOW_SECS)
                        .map(|s| Duration::seconds(s as i64))
                        .ok_or_else(|| {
                            StageError::permanent(format!(
                                "window: {w:?} is not a duration like \"30m\", \"24h\" or \"7d\" (at most 10 years)"
                            ))
                        })?,
                    None => schedule_period(&found.spec.monitor.schedule),
                };
                let from = at.checked_sub_signed(length).ok_or_else(|| {
                    StageError::permanent("the window starts before any representable time")
                })?;
                (from, at)
            }
            _ => {
                return Err(StageError::permanent(
                    "give both `from` and `to`, or neither",
                ));
            }
        };
        if from >= to {
            return Err(StageError::permanent(format!(
                "the window is empty: from {from} is not before to {to}"
            )));
        }
        let at = match &request.at {
            Some(a) => parse_time("at", a)?,
            None if request.to.is_some() => to,
            None => generated,
        };
        let mut notes = Vec::new();

        // Feedback first: its size is the number of labels, not the window's traffic.
        let mut feedback = FeedbackSummary::default();
        let mut labels: HashMap<(String, usize), String> = HashMap::new();
        for k in self
            // Labels received up to the evaluation time, its own hour included.
            .keys_between(
                "feedback",
                model,
                from,
                at.max(to) + Duration::milliseconds(1),
            )
            .await?
        {
            let bytes = self.store.get(&k).await?.bytes;
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                match serde_json::from_slice::<FeedbackRecord>(line) {
                    Ok(r) => {
                        feedback.records += 1;
                        match labels.entry((r.request_id, r.row)) {
                            std::collections::hash_map::Entry::Occupied(_) => {
                                feedback.duplicates += 1
                            }
                            std::collections::hash_map::Entry::Vacant(v) => {
                                v.insert(r.label);
                            }
                        }
                    }
                    Err(_) => feedback.malformed_lines += 1,
                }
            }
        }

        timings.insert("feedback".to_string(), mark.elapsed().as_secs_f64() * 1e3);
        let mark = std::time::Instant::now();
        let baseline = &found.baseline;
        let types: Vec<ColumnType> = baseline
            .features
            .iter()
            .map(|f| {
                found
                    .manifest
                    .pipeline
                    .inputs
                    .iter()
                    .find(|i| i.name == f.name)
                    .map_or(ColumnType::Float, |i| i.kind)
            })
            .collect();
        let numeric = baseline
            .features
            .iter()
            .filter(|f| f.kind == lambdaml::baseline::FeatureKind::Numeric)
            .count();
        let sample_rows = self
            .config
            .sample_rows
            .min(self.config.sample_values / (numeric + 1))
            .max(1);
        let mut acc = WindowAcc::new(baseline, types, sample_rows);
        let classes: Option<Vec<String>> = acc.classes().map(<[String]>::to_vec);
        let label_name = found.manifest.pipeline.label.name().to_string();
        let mut maps: VersionMaps = HashMap::new();
        maps.insert(
            version.clone(),
            Some((input_map(baseline, &found.manifest.pipeline), true)),
        );

        // The labelled rows, streamed to a temporary CSV for a possible retrain.
        let tmp = tempfile::NamedTempFile::new().map_err(StageError::from)?;
        let mut labelled_csv = csv::Writer::from_writer(std::io::BufWriter::new(
            tmp.reopen().map_err(StageError::from)?,
        ));
        let header: Vec<&str> = baseline
            .features
            .iter()
            .map(|f| f.name.as_str())
            .chain(std::iter::once(label_name.as_str()))
            .collect();
        let csv_err = StageError::transient::<csv::Error>;
        labelled_csv.write_record(&header).map_err(csv_err)?;
        let mut labelled_rows = 0u64;
        let mut joined: HashSet<(String, usize)> = HashSet::new();

        let mut captures = CaptureSummary::default();
        let (from_ms, to_ms) = (from.timestamp_millis(), to.timestamp_millis());
        // Files are parsed a few at a time on every core (parsing is most of the work),
        // then folded in order; memory holds only that many files.
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, 8);
        let capture_keys = self.keys_between("captures", model, from, to).await?;
        for batch in capture_keys.chunks(threads) {
            let mut files = Vec::with_capacity(batch.len());
            for k in batch {
                match self.store.get(k).await {
                    Ok(o) => files.push(o.bytes),
                    Err(StoreError::NotFound(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            captures.files += files.len() as u64;
            let parsed: Vec<Vec<Option<Line<'_>>>> = std::thread::scope(|scope| {
                let handles: Vec<_> = files
                    .iter()
                    .map(|bytes| {
                        scope.spawn(move || {
                            bytes
                                .split(|b| *b == b'\n')
                                .filter(|l| !l.is_empty())
                                .map(|l| serde_json::from_slice::<Line<'_>>(l).ok())
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_default())
                    .collect()
            });
            for record in parsed.into_iter().flatten() {
                let Some(record) = record else {
                    captures.malformed_lines += 1;
                    continue;
                };
                captures.records += 1;
                let at_ms = match DateTime::parse_from_rfc3339(&record.timestamp) {
                    Ok(t) => t.timestamp_millis(),
                    Err(_) => {
                        captures.malformed_lines += 1;
                        continue;
                    }
                };
                if at_ms < from_ms || at_ms >= to_ms {
                    continue;
                }
                captures.records_in_window += 1;
                acc.request(&record);
                if record.status >= 400 {
                    continue;
                }
                let Some(v) = record.version.as_deref().map(str::to_string) else {
                    *captures
                        .unknown_versions
                        .entry("(none)".into())
                        .or_insert(0) += 1;
                    continue;
                };
                if !maps.contains_key(&v) {
                    let map = if found.versions.contains(&v) {
                        match self
                            .store
                            .get_json::<ModelManifest>(&layout::model_manifest(model, &v)?)
                            .await
                        {
                            // Its outputs count only when they mean what production's do.
                            Ok(m) => Some((
                                input_map(baseline, &m.pipeline),
                                m.pipeline.label == found.manifest.pipeline.label,
                            )),
                            Err(_) => None,
                        }
                    } else {
                        None
                    };
                    maps.insert(v.clone(), map);
                }
                let Some(Some(map)) = maps.get(&v) else {
                    *captures.unknown_versions.entry(v).or_insert(0) +=
                        record.inputs.len().max(1) as u64;
                    continue;
                };
                let (map, same_outputs) = map.clone();
                if v != version {
                    *captures.other_versions.entry(v.clone()).or_insert(0) +=
                        record.inputs.len() as u64;
                }
                let width = classes.as_ref().map_or(1, Vec::len).max(1);
                for (r, row) in record.inputs.iter().enumerate() {
                    let values: Vec<Option<&Val<'_>>> =
                        map.iter().map(|i| i.and_then(|i| row.get(i))).collect();
                    let outputs: &[f64] = if same_outputs {
                        record
                            .outputs
                            .get(r * width..(r + 1) * width)
                            .unwrap_or(&[])
                    } else {
                        &[]
                    };
                    acc.row(&values, outputs);
                    captures.rows_scored += 1;
                    if labels.is_empty() {
                        continue;
                    }
                    let id = (record.request_id.to_string(), r);
                    if let Some(label) = labels.get(&id) {
                        let truth = match &classes {
                            Some(c) => c.iter().position(|x| x == label).map(|i| i as f64),
                            None => label.parse::<f64>().ok().filter(|x| x.is_finite()),
                        };
                        match truth {
                            Some(truth) if !outputs.is_empty() => {
                                if joined.insert(id) {
                                    feedback.joined += 1;
                                    acc.labelled.push(Labelled {
                                        truth,
                                        outputs: outputs.to_vec(),
                                        at_ms,
                                    });
                                    let texts = acc.texts(&values);
                                    labelled_csv
                                        .write_record(
                                            texts
                                                .iter()
                                                .map(String::as_str)
                                                .chain([label.as_str()]),
                                        )
                                        .map_err(csv_err)?;
                                    labelled_rows += 1;
                                }
                            }
                            _ => feedback.invalid += 1,
                        }
                    }
                }
            }
        }
        labelled_csv.flush().map_err(StageError::from)?;
        drop(labelled_csv);
        feedback.unmatched =
            (labels.len() as u64).saturating_sub(feedback.joined + feedback.invalid);
        captures.rows_tested = acc.rows_seen.min(sample_rows as u64);
        captures.sampled = acc.rows_seen > sample_rows as u64;

        if captures.records_in_window == 0 {
            notes.push(format!(
                "no capture records between {} and {}: nothing to compare, no verdict on drift",
                from.to_rfc3339_opts(SecondsFormat::Secs, true),
                to.to_rfc3339_opts(SecondsFormat::Secs, true)
            ));
        }
        if captures.malformed_lines > 0 {
            notes.push(format!(
                "{} capture lines were not records (truncated or corrupt) and were skipped",
                captures.malformed_lines
            ));
        }
        for (v, n) in &captures.unknown_versions {
            notes.push(format!(
                "{n} rows from version {v}, which the registry does not know: counted, not tested"
            ));
        }
        if feedback.unmatched > 0 {
            notes.push(format!(
                "{} feedback labels match no captured row of this window (another window, or an unknown request id)",
                feedback.unmatched
            ));
        }
        if feedback.duplicates > 0 {
            notes.push(format!(
                "{} duplicate feedback labels: the first label for a row wins",
                feedback.duplicates
            ));
        }
        if feedback.invalid > 0 {
            notes.push(format!(
                "{} feedback labels are not values the model predicts and were ignored",
                feedback.invalid
            ));
        }
        if feedback.malformed_lines > 0 {
            notes.push(format!(
                "{} feedback lines were not records and were skipped",
                feedback.malformed_lines
            ));
        }

        timings.insert("captures".to_string(), mark.elapsed().as_secs_f64() * 1e3);
        let mark = std::time::Instant::now();
        let labelled_data = std::mem::take(&mut acc.labelled);
        let data_drift = analysis::data_drift(baseline, &mut acc, &found.spec);
        for f in &data_drift.features {
            if f.current_values > 0 && f.reference_values == 0 {
                notes.push(format!(
                    "{}: the baseline has no values for this feature; not tested",
                    f.name
                ));
            }
        }
        let prediction_drift =
            analysis::prediction_drift(baseline, &mut acc, found.spec.monitor.min_samples as u64);
        let data_quality = analysis::data_quality(baseline, &acc);
        let processing = analysis::processing(&acc);
        let performance = analysis::performance(
            baseline,
            &labelled_data,
            classes.as_deref(),
            &found.spec,
            (from_ms, to_ms),
        );

        timings.insert("analysis".to_string(), mark.elapsed().as_secs_f64() * 1e3);
        let mut reasons = Vec::new();
        if data_drift.dataset_drift {
            reasons.push(format!(
                "dataset drift: {} of {} features drifted (share {:.2} ≥ {:.2})",
                data_drift.drifted,
                data_drift.tested,
                data_drift.drift_share,
                data_drift.drift_share_threshold
            ));
        }
        if performance.breach {
            reasons.push(format!(
                "performance drop: live {} {:.4} vs holdout {:.4}",
                performance.metric,
                performance.current.unwrap_or(f64::NAN),
                performance.baseline.unwrap_or(f64::NAN)
            ));
        }
        if found.spec_changed {
            reasons.push(format!(
                "the spec specs/{model}.toml changed since version {version} was trained: rebuild with the new features"
            ));
        }
        let verdict = Verdict {
            breach: !reasons.is_empty(),
            reasons,
        };

        let stamp = at.format("%Y%m%dT%H%M%S%.3fZ").to_string();
        let salt = lambdaml::sha256_hex(
            format!("{from}{to}{}", generated.timestamp_nanos_opt().unwrap_or(0)).as_bytes(),
        );
        let run_prefix = layout::monitor_run(model, &stamp, &salt[..6]);
        let report_key = layout::in_folder(&run_prefix, "report.json")?;
        let html_key = layout::in_folder(&run_prefix, "report.html")?;

        let retrain = self
            .decide(
                request,
                &found,
                &verdict,
                (from, to, at),
                &report_key,
                &run_prefix,
                tmp.path(),
                labelled_rows,
            )
            .await?;

        let report = Report {
            schema_version: report::SCHEMA_VERSION,
            model: model.to_string(),
            version: version.clone(),
            generated_at: generated.to_rfc3339_opts(SecondsFormat::Secs, true),
            at: at.to_rfc3339_opts(SecondsFormat::Millis, true),
            window: Window {
                from: from.to_rfc3339_opts(SecondsFormat::Millis, true),
                to: to.to_rfc3339_opts(SecondsFormat::Millis, true),
            },
            captures,
            feedback,
            data_drift,
            prediction_drift,
            data_quality,
            performance,
            processing,
            verdict,
            retrain,
            notes,
            timings_ms: timings,
        };
        self.store
            .put_if_absent(&report_key, to_json_bytes(&report))
            .await?;
        self.store
            .put_if_absent(&html_key, Bytes::from(html::render(&report)))
            .await?;
        let emf = emf_lines(&report, at.timestamp_millis());
        info!(%model, %version, breach = report.verdict.breach, retrain = %report.retrain.decision, report = %report_key, "monitored");
        Ok(MonitorOutcome {
            report,
            report_key: report_key.to_string(),
            html_key: html_key.to_string(),
            emf,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        request: &MonitorRequest,
        found: &Found,
        verdict: &Verdict,
        (from, to, at): (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>),
        report_key: &ObjectKey,
        run_prefix: &str,
        labelled_path: &std::path::Path,
        labelled_rows: u64,
    ) -> Result<RetrainDecision, StageError> {
        let model = found.manifest.model.as_str();
        let mode = if found.spec_changed {
            "new_features"
        } else {
            "same_features"
        };
        let decision = |d: &str, detail: String| RetrainDecision {
            decision: d.to_string(),
            detail,
            mode: Some(mode.to_string()),
            labelled: None,
            labelled_rows: 0,
        };
        if !verdict.breach {
            return Ok(RetrainDecision {
                decision: "not_needed".into(),
                detail: "no breach".into(),
                ..RetrainDecision::default()
            });
        }
        let r = &found.spec.retrain;
        if !r.enabled {
            return Ok(decision(
                "disabled",
                "retrain.enabled = false in the spec".into(),
            ));
        }
        if !request.retrain {
            return Ok(decision(
                "dry_run",
                "the request asked for a report only".into(),
            ));
        }
        let Some(queue) = &self.ingest else {
            return Ok(decision("dry_run", "no ingest queue configured".into()));
        };
        let state_key = layout::retrain_state(model)?;
        let cooldown = Duration::seconds(
            parse_duration_secs(&r.cooldown)
                .unwrap_or(86_400)
                .min(MAX_WINDOW_SECS) as i64,
        );
        let slack = Duration::seconds(SCHEDULE_SLACK_SECS);
        let reason = verdict.reasons.join("; ");
        let labelled_key = layout::in_folder(run_prefix, "labelled.csv")?;
        let time = |t: &str| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc))
                .ok()
        };
        let now = Utc::now();
        // Each rule, against every retrain already sent or being sent.
        let check = |state: &RetrainState| -> Option<String> {
            let retrains = || state.retrains.iter().filter(|e| e.in_force(now));
            if let Some(e) = retrains().find(|e| {
                matches!((time(&e.from), time(&e.to)), (Some(f), Some(t)) if f + slack < to && from + slack < t)
            }) {
                return Some(format!(
                    "a retrain was already {} for an overlapping window ({} to {}) at {}",
                    if e.sending { "being sent (by a concurrent monitor run)" } else { "sent" },
                    e.from, e.to, e.at
                ));
            }
            if let Some(last) = retrains()
                .filter_map(|e| time(&e.at))
                .find(|t| (at - *t).abs() + slack < cooldown)
            {
                return Some(format!(
                    "cooldown: a retrain was sent at {}, within retrain.cooldown = {} of {}",
                    last.to_rfc3339_opts(SecondsFormat::Secs, true),
                    r.cooldown,
                    at.to_rfc3339_opts(SecondsFormat::Secs, true)
                ));
            }
            let day = Duration::days(1) - slack;
            let today = retrains()
                .filter_map(|e| time(&e.at))
                .filter(|t| *t <= at && *t > at - day)
                .count();
            (today >= r.max_per_day as usize).then(|| {
                format!(
                    "cap: {today} retrains in the 24 hours before {} (retrain.max_per_day = {})",
                    at.to_rfc3339_opts(SecondsFormat::Secs, true),
                    r.max_per_day
                )
            })
        };
        let entry = RetrainEntry {
            at: at.to_rfc3339_opts(SecondsFormat::Millis, true),
            from: from.to_rfc3339_opts(SecondsFormat::Millis, true),
            to: to.to_rfc3339_opts(SecondsFormat::Millis, true),
            reason: reason.clone(),
            version: found.manifest.version.clone(),
            report: report_key.to_string(),
            sending: true,
            reserved_at: Some(now.to_rfc3339_opts(SecondsFormat::Millis, true)),
        };
        // Reserve: the rules are checked inside the compare-and-swap that records the
        // reservation, so of two concurrent runs only one can pass them.
        let reserved = self
            .edit_retrain_state(&state_key, |state| {
                if let Some(why) = check(state) {
                    return Err(why);
                }
                state.retrains.push(entry.clone());
                Ok(())
            })
            .await;
        match reserved {
            Ok(()) => {}
            Err(StateEdit::Refused(why)) => return Ok(decision("suppressed", why)),
            Err(StateEdit::Failed(StageError::Permanent { reason, .. })) => {
                return Ok(decision("suppressed", reason));
            }
            Err(StateEdit::Failed(e)) => return Err(e),
        }
        // Send, then confirm. A run that dies in between leaves a reservation that lapses
        // after RESERVATION_SECS, so the next run sends again rather than losing the
        // retrain; a retrain is idempotent (the same window makes the same dataset version).
        let sent = self
            .send_retrain(
                queue.as_ref(),
                model,
                found,
                r,
                &reason,
                report_key,
                at,
                labelled_rows,
                labelled_path,
                &labelled_key,
            )
            .await;
        let labelled = match sent {
            Ok(labelled) => labelled,
            Err(e) => {
                // Give the reservation back so the next run may try; if even that fails it
                // lapses by itself.
                let _ = self
                    .edit_retrain_state(&state_key, |state| {
                        state.retrains.retain(|x| !x.same(&entry));
                        Ok(())
                    })
                    .await;
                return Err(e);
            }
        };
        let confirmed = self
            .edit_retrain_state(&state_key, |state| {
                match state.retrains.iter_mut().find(|x| x.same(&entry)) {
                    Some(x) => x.sending = false,
                    None => state.retrains.push(RetrainEntry {
                        sending: false,
                        ..entry.clone()
                    }),
                }
                Ok(())
            })
            .await;
        match confirmed {
            Ok(()) => {}
            Err(StateEdit::Refused(why)) => return Err(StageError::retryable(why)),
            Err(StateEdit::Failed(e)) => return Err(e),
        }
        Ok(RetrainDecision {
            decision: "sent".into(),
            detail: reason,
            mode: Some(mode.to_string()),
            labelled: labelled.map(|k| k.to_string()),
            labelled_rows,
        })
    }

    /// Uploads the labelled rows and sends the retrain message; returns the labelled key.
    #[allow(clippy::too_many_arguments)] // One call site; the pieces of one decision.
    async fn send_retrain(
        &self,
        queue: &dyn Queue,
        model: &str,
        found: &Found,
        r: &lambdaml::spec::RetrainSection,
        reason: &str,
        report_key: &ObjectKey,
        at: DateTime<Utc>,
        labelled_rows: u64,
        labelled_path: &std::path::Path,
        labelled_key: &ObjectKey,
    ) -> Result<Option<ObjectKey>, StageError> {
        let labelled = if labelled_rows > 0 {
            self.store.put_file(labelled_key, labelled_path).await?;
            Some(labelled_key.clone())
        } else {
            None
        };
        let message = Message::new(
            format!("retrain-{model}-{}", at.format("%Y%m%dT%H%M%S%.3fZ")),
            Some(model.to_string()),
            StageMessage::Retrain(RetrainRequest {
                model: model.to_string(),
                dataset: found.manifest.dataset.clone(),
                reason: reason.to_string(),
                labelled: labelled.clone(),
                base_dataset_version: found.manifest.dataset_version.clone(),
                data: r.data,
                window_rows: r.window_rows,
                report: Some(report_key.clone()),
            }),
        );
        queue.send(&message.to_body()).await?;
        Ok(labelled)
    }

    /// One compare-and-swap edit of `monitoring/<model>/retrain-state.json` (the last 200
    /// entries kept), retried when another run wrote in between; `edit` sees the current
    /// state on every try and may refuse.
    async fn edit_retrain_state(
        &self,
        state_key: &ObjectKey,
        mut edit: impl FnMut(&mut RetrainState) -> Result<(), String>,
    ) -> Result<(), StateEdit> {
        for _attempt in 0..20 {
            let (mut state, etag) = match self.store.get(state_key).await {
                Ok(o) => match serde_json::from_slice::<RetrainState>(&o.bytes) {
                    Ok(s) => (s, Some(o.etag)),
                    Err(e) => {
                        return Err(StateEdit::Failed(StageError::permanent(format!(
                            "{state_key} is corrupt ({e}); fix or delete it — until then no retrain is sent"
                        ))));
                    }
                },
                Err(StoreError::NotFound(_)) => (RetrainState::default(), None),
                Err(e) => return Err(StateEdit::Failed(e.into())),
            };
            edit(&mut state).map_err(StateEdit::Refused)?;
            let excess = state.retrains.len().saturating_sub(200);
            state.retrains.drain(..excess);
            let bytes = to_json_bytes(&state);
            let written = match &etag {
                Some(etag) => self.store.put_if_match(state_key, bytes, etag).await,
                None => self.store.put_if_absent(state_key, bytes).await,
            };
            match written {
                Ok(_) => return Ok(()),
                // Another monitor run wrote in between: read again and edit again.
                Err(StoreError::PreconditionFailed { .. } | StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(StateEdit::Failed(e.into())),
            }
        }
        warn!(%state_key, "retrain state kept changing under concurrent monitor runs");
        Err(StateEdit::Failed(StageError::retryable(
            "retrain state kept changing under concurrent monitor runs",
        )))
    }

    /// The newest report of `model`: (key, report).
    pub async fn latest_report(&self, model: &str) -> Result<Option<(String, Report)>, StageError> {
        let mut keys: Vec<String> = self
            .store
            .list_all(&layout::monitoring(model))
            .await?
            .into_iter()
            .map(|m| m.key.to_string())
            .filter(|k| k.ends_with("/report.json"))
            .collect();
        keys.sort();
        match keys.pop() {
            Some(k) => {
                let report: Report = self.store.get_json(&key(&k)?).await?;
                Ok(Some((k, report)))
            }
            None => Ok(None),
        }
    }
}

/// What one monitor invocation did: its JSON answer and the EMF lines to print (Lambda
/// turns stdout EMF into CloudWatch metrics).
#[derive(Debug, Clone)]
pub struct Invocation {
    /// `{"runs": [...], "failed": [...]}`.
    pub response: serde_json::Value,
    /// EMF lines of every run.
    pub emf: Vec<String>,
}

impl Monitor {
    /// Answers a Lambda event: a direct request naming a model (`{"model": …, "window": …}`)
    /// monitors that model; an EventBridge scheduled event (or `{}`) monitors every model in
    /// the registry, one model's failure (no baseline yet, say) not stopping the others.
    /// Anything else is refused with what was expected.
    pub async fn handle_event(&self, event: serde_json::Value) -> Result<Invocation, StageError> {
        let scheduled = event.get("detail-type").and_then(serde_json::Value::as_str)
            == Some("Scheduled Event")
            || event.as_object().is_some_and(|o| o.is_empty());
        let requests: Vec<MonitorRequest> = if event.get("model").is_some() {
            vec![
                serde_json::from_value(event)
                    .map_err(|e| StageError::permanent(format!("invalid monitor request: {e}")))?,
            ]
        } else if scheduled {
            RegistryStore::new(self.store.clone())
                .models()
                .await
                .map_err(|e| StageError::context("listing the registry", e))?
                .into_iter()
                .map(MonitorRequest::new)
                .collect()
        } else if event.get("Records").is_some() {
            return Err(StageError::permanent(
                "the monitor takes no S3 or SQS events: invoke it with {\"model\": NAME} or on an EventBridge schedule",
            ));
        } else {
            return Err(StageError::permanent(format!(
                "expected {{\"model\": NAME, ...}} or an EventBridge scheduled event, got {}",
                truncate(&event.to_string(), 200)
            )));
        };
        let mut runs = Vec::new();
        let mut failed = Vec::new();
        let mut emf = Vec::new();
        let mut only_error = None;
        for request in &requests {
            match self.run(request).await {
                Ok(outcome) => {
                    emf.extend(outcome.emf);
                    runs.push(serde_json::json!({
                        "model": outcome.report.model,
                        "report": outcome.report_key,
                        "html": outcome.html_key,
                        "breach": outcome.report.verdict.breach,
                        "reasons": outcome.report.verdict.reasons,
                        "retrain": outcome.report.retrain.decision,
                    }));
                }
                Err(e) => {
                    warn!(model = %request.model, error = %e, "monitor run failed");
                    failed.push(serde_json::json!({"model": request.model, "error": e.reason()}));
                    only_error = Some(e);
                }
            }
        }
        if requests.len() == 1
            && let Some(e) = only_error
        {
            return Err(e);
        }
        Ok(Invocation {
            response: serde_json::json!({"runs": runs, "failed": failed}),
            emf,
        })
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// CloudWatch EMF lines: one with the run's verdicts, one per feature with its drift score.
pub fn emf_lines(report: &Report, timestamp_ms: i64) -> Vec<String> {
    let service = lambdaml::telemetry::service();
    let mut lines = Vec::new();
    let run = serde_json::json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": "lambdaml",
                "Dimensions": [["service", "model"]],
                "Metrics": [
                    {"Name": "DriftShare", "Unit": "None"},
                    {"Name": "DriftedFeatures", "Unit": "Count"},
                    {"Name": "DatasetDrift", "Unit": "Count"},
                    {"Name": "PredictionDrift", "Unit": "Count"},
                    {"Name": "PerformanceDrop", "Unit": "None"},
                    {"Name": "Breach", "Unit": "Count"},
                    {"Name": "RetrainSent", "Unit": "Count"},
                    {"Name": "ValidationErrorRate", "Unit": "None"}
                ]
            }]
        },
        "service": service,
        "model": report.model,
        "version": report.version,
        "DriftShare": report.data_drift.drift_share,
        "DriftedFeatures": report.data_drift.drifted,
        "DatasetDrift": u8::from(report.data_drift.dataset_drift),
        "PredictionDrift": u8::from(report.prediction_drift.drifted),
        "PerformanceDrop": report.performance.drop.unwrap_or(0.0),
        "Breach": u8::from(report.verdict.breach),
        "RetrainSent": u8::from(report.retrain.decision == "sent"),
        "ValidationErrorRate": report.data_quality.validation_error_rate,
    });
    lines.push(run.to_string());
    for f in &report.data_drift.features {
        let Some(score) = f.score else { continue };
        lines.push(
            serde_json::json!({
                "_aws": {
                    "Timestamp": timestamp_ms,
                    "CloudWatchMetrics": [{
                        "Namespace": "lambdaml",
                        "Dimensions": [["service", "model", "feature"]],
                        "Metrics": [{"Name": "DriftScore", "Unit": "None"}, {"Name": "Drifted", "Unit": "Count"}]
                    }]
                },
                "service": service,
                "model": report.model,
                "feature": f.name,
                "method": f.method,
                "DriftScore": score,
                "Drifted": u8::from(f.drifted),
            })
            .to_string(),
        );
    }
    lines
}
