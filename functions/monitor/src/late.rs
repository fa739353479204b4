//! Late labels: feedback that arrives after its window was judged. A run reads the labels
//! received during its window; those that match none of its own rows belong to an earlier
//! window. For each of the last `monitor.late_labels` earlier reports (newest first), the run
//! scans that report's window again with every label received so far, and where late labels
//! join its rows it writes the window's realized performance now beside the report
//! (`late-labels.json`; the report itself stays as judged) and adds the late-labelled rows
//! to this run's labelled rows, so a retrain learns from them.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use chrono::{DateTime, Utc};
use lambdaml::layout;
use lambdaml::stage::StageError;
use lambdaml::store::{ObjectKey, ObjectStoreExt, to_json_bytes};
use tracing::{info, warn};

use crate::Monitor;
use crate::analysis;
use crate::found::Found;
use crate::interval::Interval;
use crate::report::{LateLabels, LateUpdate, Report};
use crate::scan::Scanned;

/// What re-judging earlier windows added to this run.
#[derive(Debug, Default)]
pub(crate) struct LateOutcome {
    /// One summary per earlier window that gained labels.
    pub windows: Vec<LateLabels>,
    /// Late-labelled rows appended to this run's labelled CSV.
    pub rows: u64,
}

impl LateOutcome {
    /// The run's note about it, if anything was re-judged.
    pub fn note(&self) -> Option<String> {
        (self.rows > 0).then(|| {
            format!(
                "{} labels arrived after their window was judged: {} earlier window(s) re-judged (late-labels.json beside each report), their rows added to this run's labelled rows",
                self.rows,
                self.windows.len()
            )
        })
    }
}

fn parse(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl Monitor {
    /// Re-judges earlier windows with `unmatched` labels (see the module docs); appends
    /// their late-labelled rows to `labelled_csv`.
    pub(crate) async fn late_labels(
        &self,
        found: &Found,
        interval: &Interval,
        mut unmatched: HashMap<(String, usize), i64>,
        labelled_csv: &std::path::Path,
        report_key: &ObjectKey,
    ) -> Result<LateOutcome, StageError> {
        let mut out = LateOutcome::default();
        let limit = found.spec.monitor.late_labels;
        if unmatched.is_empty() || limit == 0 {
            return Ok(out);
        }
        let model = found.manifest.model.as_str();
        let earlier = self.earlier_reports(model, interval, limit).await?;
        // A label the previous run could already read is not late: it joined that run's
        // window or was that run's to place (labels are read up to a run's evaluation time,
        // its window's end included).
        let read_end = |r: &Report| {
            let at = parse(&r.at).map_or(i64::MIN, |t| t.timestamp_millis());
            let to = parse(&r.window.to).map_or(i64::MIN, |t| t.timestamp_millis());
            at.max(to) + 1
        };
        if let Some((_, _, newest)) = earlier.first() {
            let end = read_end(newest);
            unmatched.retain(|_, received| *received >= end);
        }
        for (from, key, report) in earlier {
            if unmatched.is_empty() {
                break;
            }
            let Some(to) = parse(&report.window.to) else {
                continue;
            };
            let window = Interval {
                from,
                to,
                at: interval.at,
            };
            let labels = self.read_labels(model, &window).await?;
            let late_ids: HashSet<(String, usize)> = unmatched.keys().cloned().collect();
            let Scanned {
                acc,
                classes,
                labelled_csv: late_csv,
                labelled_rows,
                late_joined,
                ..
            } = self
                .scan_with(found, &window, labels, Some(late_ids))
                .await?;
            if late_joined.is_empty() {
                continue;
            }
            for id in &late_joined {
                unmatched.remove(id);
            }
            // The window's performance now, against the holdout it was judged against.
            let mut baseline = found.baseline.clone();
            baseline.metrics = report.performance.baseline_metrics.clone();
            let window_ms = (from.timestamp_millis(), to.timestamp_millis());
            let now = analysis::performance(
                &baseline,
                &acc.labelled,
                classes.as_deref(),
                &found.spec,
                window_ms,
            );
            let then = &report.performance;
            let summary = LateLabels {
                report: key.to_string(),
                window: report.window.clone(),
                judged_at: report.at.clone(),
                late_rows: late_joined.len() as u64,
                labelled_then: then.labelled_rows,
                labelled_now: now.labelled_rows,
                metric: now.metric.clone(),
                then: then.current,
                now: now.current,
                status_then: then.status.clone(),
                status_now: now.status.clone(),
                breach_now: now.breach,
            };
            let update = LateUpdate {
                report: key.to_string(),
                by_report: report_key.to_string(),
                updated_at: interval.at.to_rfc3339(),
                summary: summary.clone(),
                then: then.clone(),
                now,
            };
            let late_key = layout::late_labels(key.as_str())?;
            self.store.put(&late_key, to_json_bytes(&update)).await?;
            // The late rows join this run's labelled rows (same columns: this baseline's).
            let text = std::fs::read_to_string(late_csv.path()).map_err(StageError::from)?;
            let body: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(labelled_csv)
                .map_err(StageError::from)?;
            file.write_all(body.as_bytes()).map_err(StageError::from)?;
            out.rows += labelled_rows;
            info!(%model, earlier = %key, late = summary.late_rows, "late labels re-judged an earlier window");
            out.windows.push(summary);
        }
        Ok(out)
    }

    /// The last `limit` reports of `model` whose windows ended by `interval`'s start, newest
    /// first, each with its window's start and its key.
    async fn earlier_reports(
        &self,
        model: &str,
        interval: &Interval,
        limit: usize,
    ) -> Result<Vec<(DateTime<Utc>, ObjectKey, Report)>, StageError> {
        // Earlier runs, newest first, whose windows ended by this one's start.
        let mut earlier: Vec<(DateTime<Utc>, ObjectKey, Report)> = Vec::new();
        let mut keys: Vec<ObjectKey> = self
            .store
            .list_all(&layout::monitoring(model))
            .await?
            .into_iter()
            .map(|m| m.key)
            .filter(|k| layout::is_report_json(k.as_str()))
            .collect();
        keys.sort_by(|a, b| b.as_str().cmp(a.as_str()));
        for key in keys {
            if earlier.len() >= limit {
                break;
            }
            let report: Report = match self.store.get_json(&key).await {
                Ok(r) => r,
                Err(e) => {
                    warn!(report = %key, error = %e, "an earlier report could not be read; skipped for late labels");
                    continue;
                }
            };
            let (Some(from), Some(to)) = (parse(&report.window.from), parse(&report.window.to))
            else {
                continue;
            };
            if to <= interval.from && report.model == model {
                earlier.push((from, key, report));
            }
        }
        Ok(earlier)
    }
}
