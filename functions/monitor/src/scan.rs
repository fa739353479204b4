//! Reading a window: the feedback labels first (their number is the number of labels, not
//! the window's traffic), then every capture record of the window folded into the
//! accumulators, each labelled row joined by request id and row and kept for a retrain.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::io::BufWriter;

use chrono::{DateTime, Duration};
use lambdaml::capture::FeedbackRecord;
use lambdaml::dataset::ColumnType;
use lambdaml::layout;
use lambdaml::model::ModelManifest;
use lambdaml::stage::StageError;
use lambdaml::store::{ObjectKey, ObjectStoreExt, StoreError};
use tempfile::NamedTempFile;

use crate::found::{Found, input_map};
use crate::interval::Interval;
use crate::report::{CaptureSummary, FeedbackSummary};
use crate::rollout::RolloutAcc;
use crate::window::{Labelled, Line, Val, VersionMaps, WindowAcc, file_key_hash, row_key};
use crate::{Monitor, MonitorConfig};

pub(crate) mod partial;

/// The labels of a window, by (request id, row); the first label for a row wins.
#[derive(Debug, Default)]
pub(crate) struct Labels {
    pub summary: FeedbackSummary,
    /// with when it was received, epoch milliseconds (for late labels).
    pub by_row: HashMap<(String, usize), (String, i64)>,
}

impl Labels {
    /// Adds the feedback records of one object.
    fn add(&mut self, bytes: &[u8]) {
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<FeedbackRecord>(line) {
                Ok(r) => {
                    self.summary.records += 1;
                    match self.by_row.entry((r.request_id, r.row)) {
                        Entry::Occupied(_) => self.summary.duplicates += 1,
                        Entry::Vacant(v) => {
                            let at = chrono::DateTime::parse_from_rfc3339(&r.received_at)
                                .map_or(i64::MAX, |t| t.timestamp_millis());
                            v.insert((r.label, at));
                        }
                    }
                }
                Err(_) => self.summary.malformed_lines += 1,
            }
        }
    }
}

/// What the scan of a window produced.
pub(crate) struct Scanned {
    pub acc: WindowAcc,
    pub captures: CaptureSummary,
    pub feedback: FeedbackSummary,
    pub classes: Option<Vec<String>>,
    /// The labelled rows as CSV (features, then the label), for a retrain.
    pub labelled_csv: NamedTempFile,
    pub labelled_rows: u64,
    /// The rollout's accumulator, when one is in progress.
    pub rollout: Option<RolloutAcc>,
    /// Labels read that match no row of this window (candidates for an earlier window),
    /// with when each was received (epoch milliseconds).
    pub unmatched: HashMap<(String, usize), i64>,
    /// Of the `late_only` labels the scan was given, those it joined.
    pub late_joined: HashSet<(String, usize)>,
}

/// The fold over a window's records.
pub(crate) struct Scan<'f> {
    found: &'f Found,
    acc: WindowAcc,
    maps: VersionMaps,
    classes: Option<Vec<String>>,
    labels: Labels,
    joined: HashSet<(String, usize)>,
    csv: csv::Writer<BufWriter<std::fs::File>>,
    labelled_rows: u64,
    captures: CaptureSummary,
    window_ms: (i64, i64),
    labelled_file: NamedTempFile,
    rollout: Option<RolloutAcc>,
    /// Label ids that exist among this window's rows.
    attempted: HashSet<(String, usize)>,
    /// When set, only these labels' rows go to the labelled CSV (a re-judged window's late
    /// labels; the rest were in its first run's).
    late_only: Option<HashSet<(String, usize)>>,
    late_joined: HashSet<(String, usize)>,
    /// A part of a window planned in parts keeps its labelled rows for the merge.
    part_labels: Option<Vec<partial::PartLabel>>,
}

impl Monitor {
    /// The labels received for `interval`: from its start up to the evaluation time, its own
    /// hour included.
    pub(crate) async fn read_labels(
        &self,
        model: &str,
        interval: &Interval,
    ) -> Result<Labels, StageError> {
        let keys = self.feedback_keys(model, interval).await?;
        self.labels_of(&keys).await
    }

    /// The feedback files [`Monitor::read_labels`] reads for `interval`.
    pub(crate) async fn feedback_keys(
        &self,
        model: &str,
        interval: &Interval,
    ) -> Result<Vec<ObjectKey>, StageError> {
        let until = interval.at.max(interval.to) + Duration::milliseconds(1);
        self.keys_between(layout::FEEDBACK, model, interval.from, until)
            .await
    }

    /// The labels in the feedback files `keys` (a file gone meanwhile is skipped).
    pub(crate) async fn labels_of(&self, keys: &[ObjectKey]) -> Result<Labels, StageError> {
        let mut labels = Labels::default();
        for k in keys {
            match self.store.get(k).await {
                Ok(o) => labels.add(&o.bytes),
                Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(labels)
    }

    /// Folds every capture record of `interval` into accumulators sampled to the
    /// configured limits, joining `labels`.
    pub(crate) async fn scan(
        &self,
        found: &Found,
        interval: &Interval,
        labels: Labels,
    ) -> Result<Scanned, StageError> {
        self.scan_with(found, interval, labels, None).await
    }

    /// [`scan`](Self::scan), writing only the `late_only` labels' rows to the labelled CSV.
    pub(crate) async fn scan_with(
        &self,
        found: &Found,
        interval: &Interval,
        labels: Labels,
        late_only: Option<HashSet<(String, usize)>>,
    ) -> Result<Scanned, StageError> {
        let model = found.manifest.model.as_str();
        let mut scan = Scan::new(found, &self.config, labels, interval)?;
        scan.late_only = late_only;
        let keys = self
            .keys_between(layout::CAPTURES, model, interval.from, interval.to)
            .await?;
        self.fold_keys(&mut scan, &keys).await?;
        scan.finish()
    }

    /// Folds the capture files `keys` (in this order) into `scan`.
    pub(crate) async fn fold_keys(
        &self,
        scan: &mut Scan<'_>,
        keys: &[ObjectKey],
    ) -> Result<(), StageError> {
        // Files are parsed a few at a time on every core (parsing is most of the work),
        // then folded in order; memory holds only that many files.
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, 8);
        for batch in keys.chunks(threads) {
            let mut files = Vec::with_capacity(batch.len());
            let mut hashes = Vec::with_capacity(batch.len());
            for k in batch {
                match self.store.get(k).await {
                    Ok(o) => {
                        files.push(o.bytes);
                        hashes.push(file_key_hash(k.as_str()));
                    }
                    Err(StoreError::NotFound(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            scan.captures.files += files.len() as u64;
            let parsed = parse_files(&files);
            for record in parsed.iter().flatten().flatten() {
                if let Some(v) = scan.unmapped_version(record) {
                    let map = self.version_map(scan.found, v).await?;
                    scan.maps.insert(v.to_string(), map);
                }
            }
            for (records, hash) in parsed.into_iter().zip(hashes) {
                for (line, record) in records.into_iter().enumerate() {
                    scan.fold(record, hash, line as u64)?;
                }
            }
        }
        Ok(())
    }

    /// Where `version`'s capture rows put the baseline's features, and whether its outputs
    /// mean what production's do; `None` for a version the registry does not know.
    async fn version_map(
        &self,
        found: &Found,
        version: &str,
    ) -> Result<Option<(Vec<Option<usize>>, bool)>, StageError> {
        if !found.versions.contains(version) {
            return Ok(None);
        }
        let key = layout::model_manifest(&found.manifest.model, version)?;
        Ok(match self.store.get_json::<ModelManifest>(&key).await {
            // Its outputs count only when they mean what production's do.
            Ok(m) => Some((
                input_map(&found.baseline, &m.pipeline),
                m.pipeline.label == found.manifest.pipeline.label,
            )),
            Err(_) => None,
        })
    }
}

/// Each file's lines parsed on its own thread; `None` for a line that is not a record.
fn parse_files(files: &[bytes::Bytes]) -> Vec<Vec<Option<Line<'_>>>> {
    std::thread::scope(|scope| {
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
    })
}

impl<'f> Scan<'f> {
    pub(crate) fn new(
        found: &'f Found,
        config: &MonitorConfig,
        labels: Labels,
        interval: &Interval,
    ) -> Result<Self, StageError> {
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
        let sample_rows = config
            .sample_rows
            .min(config.sample_values / (numeric + 1))
            .max(1);
        let mut acc = WindowAcc::new(baseline, types, sample_rows);
        acc.estimation
            .with_pipeline(baseline, &found.manifest.pipeline);
        let classes = acc.classes().map(<[String]>::to_vec);
        let rollout = RolloutAcc::new(
            &found.registry,
            classes.as_deref(),
            found.candidate_classes.as_deref(),
        );
        let mut maps: VersionMaps = HashMap::new();
        maps.insert(
            found.manifest.version.clone(),
            Some((input_map(baseline, &found.manifest.pipeline), true)),
        );
        // The labelled rows, streamed to a temporary CSV for a possible retrain.
        let file = NamedTempFile::new().map_err(StageError::from)?;
        let mut csv =
            csv::Writer::from_writer(BufWriter::new(file.reopen().map_err(StageError::from)?));
        let label_name = found.manifest.pipeline.label.name();
        let header = baseline
            .features
            .iter()
            .map(|f| f.name.as_str())
            .chain([label_name]);
        csv.write_record(header).map_err(StageError::transient)?;
        Ok(Scan {
            found,
            acc,
            maps,
            classes,
            labels,
            joined: HashSet::new(),
            csv,
            labelled_rows: 0,
            captures: CaptureSummary::default(),
            window_ms: (
                interval.from.timestamp_millis(),
                interval.to.timestamp_millis(),
            ),
            labelled_file: file,
            rollout,
            attempted: HashSet::new(),
            late_only: None,
            late_joined: HashSet::new(),
            part_labels: None,
        })
    }

    /// The version of a successful record whose input map is not known yet (looked up
    /// before its batch is folded; a version the registry does not know costs no read).
    fn unmapped_version<'r>(&self, record: &'r Line<'_>) -> Option<&'r str> {
        let v = record.version.as_deref()?;
        (record.status < 400 && !self.maps.contains_key(v)).then_some(v)
    }

    /// Folds one parsed line (`None`: not a record), line `line` of the file whose key
    /// hashes to `file` ([`file_key_hash`]).
    fn fold(&mut self, record: Option<Line<'_>>, file: u64, line: u64) -> Result<(), StageError> {
        let Some(record) = record else {
            self.captures.malformed_lines += 1;
            return Ok(());
        };
        self.captures.records += 1;
        let Ok(at) = DateTime::parse_from_rfc3339(&record.timestamp) else {
            self.captures.malformed_lines += 1;
            return Ok(());
        };
        let at_ms = at.timestamp_millis();
        if !(self.window_ms.0..self.window_ms.1).contains(&at_ms) {
            return Ok(());
        }
        self.captures.records_in_window += 1;
        if let Some(rollout) = &mut self.rollout {
            let (labels, classes) = (&self.labels.by_row, &self.classes);
            rollout.fold(&record, at_ms, |id, r| {
                let (label, _) = labels.get(&(id.to_string(), r))?;
                match classes {
                    Some(c) => c.iter().position(|x| x == label).map(|i| i as f64),
                    None => label.parse::<f64>().ok().filter(|x| x.is_finite()),
                }
            });
        }
        // A shadow's copies are compared in the rollout section alone: production's
        // traffic is what the rest of the report describes.
        if record.role == Some(lambdaml::registry::Role::Shadow) {
            self.captures.shadow_records += 1;
            return Ok(());
        }
        self.acc.request(&record);
        if record.status >= 400 {
            return Ok(());
        }
        let Some(v) = record.version.as_deref().map(str::to_string) else {
            *self
                .captures
                .unknown_versions
                .entry("(none)".into())
                .or_insert(0) += 1;
            return Ok(());
        };
        let Some(Some((map, same_outputs))) = self.maps.get(&v).cloned() else {
            *self.captures.unknown_versions.entry(v).or_insert(0) +=
                record.inputs.len().max(1) as u64;
            return Ok(());
        };
        let production = v == self.found.manifest.version && same_outputs;
        if v != self.found.manifest.version {
            *self.captures.other_versions.entry(v).or_insert(0) += record.inputs.len() as u64;
        }
        let width = self.classes.as_ref().map_or(1, Vec::len).max(1);
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
            let key = row_key(file, line, r as u64);
            self.acc.row(key, &values, outputs);
            if production {
                self.acc.estimation.row(key, &values, outputs);
            }
            self.captures.rows_scored += 1;
            if !self.labels.by_row.is_empty() {
                self.join(&record.request_id, r, &values, outputs, at_ms)?;
            }
        }
        Ok(())
    }

    /// Joins row `r` of request `request_id` to its label, if there is one.
    fn join(
        &mut self,
        request_id: &str,
        r: usize,
        values: &[Option<&Val<'_>>],
        outputs: &[f64],
        at_ms: i64,
    ) -> Result<(), StageError> {
        let id = (request_id.to_string(), r);
        let Some((label, _)) = self.labels.by_row.get(&id) else {
            return Ok(());
        };
        self.attempted.insert(id.clone());
        let truth = match &self.classes {
            Some(c) => c.iter().position(|x| x == label).map(|i| i as f64),
            None => label.parse::<f64>().ok().filter(|x| x.is_finite()),
        };
        match truth {
            Some(truth) if !outputs.is_empty() => {
                let late = self.late_only.as_ref().map(|s| s.contains(&id));
                if self.joined.insert(id.clone()) {
                    self.labels.summary.joined += 1;
                    self.acc.labelled.push(Labelled {
                        truth,
                        outputs: outputs.to_vec(),
                        at_ms,
                    });
                    if let Some(kept) = &mut self.part_labels {
                        let mut csv = self.acc.texts(values);
                        csv.push(label.clone());
                        kept.push(partial::PartLabel {
                            id: id.clone(),
                            truth,
                            outputs: outputs.to_vec(),
                            at_ms,
                            csv,
                        });
                    }
                    if late != Some(false) {
                        let texts = self.acc.texts(values);
                        self.csv
                            .write_record(texts.iter().map(String::as_str).chain([label.as_str()]))
                            .map_err(StageError::transient)?;
                        self.labelled_rows += 1;
                    }
                    if late == Some(true) {
                        self.late_joined.insert(id);
                    }
                }
            }
            _ => self.labels.summary.invalid += 1,
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<Scanned, StageError> {
        self.csv.flush().map_err(StageError::from)?;
        drop(self.csv);
        let mut feedback = self.labels.summary;
        feedback.unmatched =
            (self.labels.by_row.len() as u64).saturating_sub(feedback.joined + feedback.invalid);
        let attempted = std::mem::take(&mut self.attempted);
        let unmatched = std::mem::take(&mut self.labels.by_row)
            .into_iter()
            .filter(|(id, _)| !attempted.contains(id))
            .map(|(id, (_, at))| (id, at))
            .collect();
        self.acc.seal();
        let cap = self.acc.sample_cap() as u64;
        self.captures.rows_tested = self.acc.rows_seen.min(cap);
        self.captures.sampled = self.acc.rows_seen > cap;
        Ok(Scanned {
            acc: self.acc,
            captures: self.captures,
            feedback,
            classes: self.classes,
            labelled_csv: self.labelled_file,
            labelled_rows: self.labelled_rows,
            rollout: self.rollout,
            unmatched,
            late_joined: self.late_joined,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_keep_the_first_per_row_and_count_duplicates_and_junk() {
        let line = |id: &str, row: usize, label: &str| {
            format!(
                "{{\"request_id\":\"{id}\",\"row\":{row},\"label\":\"{label}\",\"received_at\":\"2030-01-01T00:00:00.000Z\",\"source\":\"test\"}}\n"
            )
        };
        let mut labels = Labels::default();
        labels.add(format!("{}{}not json\n\n", line("a", 0, "1"), line("a", 1, "0")).as_bytes());
        labels.add(line("a", 0, "0").as_bytes());
        assert_eq!(labels.summary.records, 3);
        assert_eq!(labels.summary.duplicates, 1);
        assert_eq!(
            labels.summary.malformed_lines, 1,
            "blank lines are not records"
        );
        assert_eq!(
            labels.by_row[&("a".to_string(), 0)].0,
            "1",
            "the first label wins"
        );
        assert_eq!(labels.by_row[&("a".to_string(), 1)].0, "0");
        assert_eq!(labels.by_row.len(), 2);
    }
}
