//! The stream a backtest replays: the file's rows, scoring them through the router on the
//! simulated clock, and the task's metric.

use std::sync::atomic::{AtomicI64, Ordering};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Duration, Utc};

use super::BATCH;

/// The file's rows as text, header first.
pub(crate) struct Rows {
    pub(super) header: Vec<String>,
    pub(super) rows: Vec<Vec<String>>,
}

impl Rows {
    /// The rows of CSV text (`what` names it in errors).
    pub(crate) fn parse(bytes: &[u8], what: &str) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(bytes);
        let header: Vec<String> = reader
            .headers()
            .with_context(|| format!("{what}: no CSV header"))?
            .iter()
            .map(str::to_string)
            .collect();
        let mut rows = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let record = record.with_context(|| format!("{what}: line {}", i + 2))?;
            rows.push(record.iter().map(str::to_string).collect());
        }
        Ok(Rows { header, rows })
    }

    /// Data rows.
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Where column `name` is.
    pub(crate) fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }
}

pub(super) fn read_rows(path: &std::path::Path) -> Result<Rows> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
            .with_context(|| format!("{} is not a readable gzip file", path.display()))?;
        out
    } else {
        bytes
    };
    Rows::parse(&bytes, &path.display().to_string())
}

pub(super) fn csv_of(header: &[String], rows: &[Vec<String>]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(header)?;
    for r in rows {
        w.write_record(r)?;
    }
    Ok(w.into_inner()?)
}

/// What a period's scoring returned.
pub(super) struct Scored {
    pub(super) version: String,
    /// The predicted label (classification) or value, per row.
    pub(super) predictions: Vec<String>,
    /// Request ids and row counts, for the feedback.
    pub(super) requests: Vec<(String, usize)>,
}

/// POSTs a JSON body; the status and the JSON answer.
pub(crate) async fn post(
    app: &axum::Router,
    path: &str,
    body: &serde_json::Value,
) -> Result<(axum::http::StatusCode, serde_json::Value)> {
    use tower::ServiceExt;
    let request = axum::http::Request::post(path)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))?;
    let response = app.clone().oneshot(request).await?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    Ok((status, serde_json::from_slice(&bytes)?))
}

/// The replay's context: the stream, the columns the model takes, the clock.
pub(crate) struct Replay {
    pub(super) rows: Rows,
    pub(super) label: usize,
    /// (column index, input name) the model takes.
    inputs: Vec<(usize, String)>,
    pub(super) classification: bool,
    pub(super) start: DateTime<Utc>,
    period_time: Duration,
}

impl Replay {
    /// A replay of `rows` (`label` the label's column) through a model with `pipeline`, from
    /// `start`, each period lasting `period_time`.
    pub(crate) fn new(
        rows: Rows,
        label: usize,
        pipeline: &lambdaml::features::FeaturePipeline,
        classification: bool,
        start: DateTime<Utc>,
        period_time: Duration,
    ) -> Self {
        let inputs = pipeline
            .inputs
            .iter()
            .filter_map(|i| rows.column(&i.name).map(|c| (c, i.name.clone())))
            .collect();
        Replay {
            rows,
            label,
            inputs,
            classification,
            start,
            period_time,
        }
    }

    pub(super) fn record(&self, row: &[String]) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = self
            .inputs
            .iter()
            .map(|(i, name)| {
                let text = row.get(*i).map_or("", String::as_str);
                let v = if text.is_empty() {
                    serde_json::Value::Null
                } else if let Ok(x) = text.parse::<f64>() {
                    serde_json::json!(x)
                } else {
                    serde_json::Value::String(text.to_string())
                };
                (name.clone(), v)
            })
            .collect();
        serde_json::Value::Object(map)
    }

    /// Period `p`'s first instant.
    pub(super) fn period_start(&self, p: usize) -> DateTime<Utc> {
        self.start + self.period_time * p as i32
    }

    /// Scores `rows` through `app` (`path` picks model and version), the clock stepping
    /// through period `p`.
    pub(super) async fn score(
        &self,
        app: &axum::Router,
        path: &str,
        now: Option<(&AtomicI64, usize)>,
        p: usize,
        rows: &[Vec<String>],
    ) -> Result<Scored> {
        let batch = now.map_or(BATCH, |(_, b)| b.max(1));
        let step = self.period_time.num_milliseconds() / rows.len().max(1) as i64;
        let mut out = Scored {
            version: String::new(),
            predictions: Vec::with_capacity(rows.len()),
            requests: Vec::new(),
        };
        for (b, chunk) in rows.chunks(batch).enumerate() {
            if let Some((now, _)) = now {
                let at = self.period_start(p).timestamp_millis() + (b * batch) as i64 * step;
                now.store(at, Ordering::Relaxed);
            }
            let records: Vec<serde_json::Value> = chunk.iter().map(|r| self.record(r)).collect();
            let (status, answer) = post(
                app,
                path,
                &serde_json::json!({ "dataframe_records": records }),
            )
            .await?;
            if !status.is_success() {
                bail!(
                    "period {}: the score function refused a request ({status}): {}",
                    p + 1,
                    answer
                );
            }
            out.version = answer["model_version"].as_str().unwrap_or_default().into();
            let predictions = answer["predictions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for v in predictions.iter().take(chunk.len()) {
                out.predictions.push(if self.classification {
                    v["label"].as_str().unwrap_or_default().to_string()
                } else {
                    v.as_f64().map_or(String::new(), |x| x.to_string())
                });
            }
            out.requests.push((
                answer["request_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                chunk.len(),
            ));
        }
        Ok(out)
    }

    /// The task's metric of `predictions` against the rows' labels.
    pub(super) fn metric(&self, rows: &[Vec<String>], predictions: &[String]) -> f64 {
        let truth = rows.iter().map(|r| r[self.label].as_str());
        metric_of(
            self.classification,
            truth,
            predictions.iter().map(String::as_str),
        )
    }
}

/// Accuracy, or RMSE (unreadable values count as misses / are skipped).
pub(super) fn metric_of<'a>(
    classification: bool,
    truth: impl Iterator<Item = &'a str>,
    predicted: impl Iterator<Item = &'a str>,
) -> f64 {
    let (mut n, mut sum) = (0usize, 0.0);
    for (t, p) in truth.zip(predicted) {
        if classification {
            n += 1;
            if t == p {
                sum += 1.0;
            }
        } else if let (Ok(t), Ok(p)) = (t.parse::<f64>(), p.parse::<f64>()) {
            n += 1;
            sum += (t - p) * (t - p);
        }
    }
    if n == 0 {
        return f64::NAN;
    }
    if classification {
        sum / n as f64
    } else {
        (sum / n as f64).sqrt()
    }
}
