//! Metrics: Prometheus text at `/metrics` on the local server, and CloudWatch Embedded
//! Metric Format lines (one JSON object on stdout per invocation) in Lambda, which
//! CloudWatch turns into metrics with no API call.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// What one request did, as the handlers report it to the metrics layer.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The route family (`v2`, `mlflow`, `feedback`, `metadata`).
    pub route: &'static str,
    /// The model, when the route names one.
    pub model: Option<String>,
    /// The version that answered.
    pub version: Option<String>,
    /// Rows scored.
    pub rows: usize,
    /// Validation details.
    pub validation_errors: usize,
}

/// Latency histogram bucket bounds, seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Series {
    requests: BTreeMap<(&'static str, u16), u64>,
    rows: u64,
    validation_errors: u64,
}

/// Counters by model, then version (looked up by `&str`: no allocation per request).
#[derive(Default)]
struct Inner {
    series: BTreeMap<String, BTreeMap<String, Series>>,
    latency: BTreeMap<String, Histogram>,
}

/// The server's counters.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Gauges read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Seconds from process start to the first model loaded.
    pub cold_start_seconds: Option<f64>,
    /// Model versions loaded.
    pub model_loads: u64,
    /// Registry checks.
    pub registry_checks: u64,
    /// Production versions in use.
    pub production: Vec<(String, String)>,
    /// Capture counters.
    pub captures: lambdaml::capture::CaptureStats,
    /// Shadow requests scored, refused and skipped, and shadow jobs in flight.
    pub shadow: ([u64; 3], usize),
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Counts one request.
    pub fn observe(&self, route: &'static str, status: u16, outcome: &Outcome, latency: Duration) {
        let model = outcome.model.as_deref().unwrap_or("");
        let version = outcome.version.as_deref().unwrap_or("");
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !inner.series.contains_key(model) {
            inner.series.insert(model.to_string(), BTreeMap::new());
        }
        let versions = inner.series.get_mut(model);
        if let Some(versions) = versions {
            if !versions.contains_key(version) {
                versions.insert(version.to_string(), Series::default());
            }
            if let Some(series) = versions.get_mut(version) {
                *series.requests.entry((route, status)).or_default() += 1;
                series.rows += outcome.rows as u64;
                series.validation_errors += outcome.validation_errors as u64;
            }
        }
        if outcome.model.is_none() {
            return;
        }
        if !inner.latency.contains_key(model) {
            inner
                .latency
                .insert(model.to_string(), Histogram::default());
        }
        if let Some(h) = inner.latency.get_mut(model) {
            let s = latency.as_secs_f64();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if s <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum += s;
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, gauges: &Gauges) -> String {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP lambdaml_requests_total Requests by model, version, route and status.\n# TYPE lambdaml_requests_total counter"
        );
        for (m, versions) in &inner.series {
            for (v, series) in versions {
                for ((r, s), n) in &series.requests {
                    let _ = writeln!(
                        out,
                        "lambdaml_requests_total{{model=\"{}\",version=\"{}\",route=\"{r}\",status=\"{s}\"}} {n}",
                        escape(m),
                        escape(v),
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP lambdaml_rows_total Rows scored.\n# TYPE lambdaml_rows_total counter"
        );
        for (m, versions) in inner.series.iter().filter(|(m, _)| !m.is_empty()) {
            for (v, series) in versions.iter().filter(|(_, s)| s.rows > 0) {
                let _ = writeln!(
                    out,
                    "lambdaml_rows_total{{model=\"{}\",version=\"{}\"}} {}",
                    escape(m),
                    escape(v),
                    series.rows
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP lambdaml_validation_errors_total Rejected values and rows.\n# TYPE lambdaml_validation_errors_total counter"
        );
        for (m, versions) in inner.series.iter().filter(|(m, _)| !m.is_empty()) {
            for (v, series) in versions.iter().filter(|(_, s)| s.validation_errors > 0) {
                let _ = writeln!(
                    out,
                    "lambdaml_validation_errors_total{{model=\"{}\",version=\"{}\"}} {}",
                    escape(m),
                    escape(v),
                    series.validation_errors
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP lambdaml_request_duration_seconds Time to answer, by model.\n# TYPE lambdaml_request_duration_seconds histogram"
        );
        for (m, h) in &inner.latency {
            let m = escape(m);
            for (bound, n) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "lambdaml_request_duration_seconds_bucket{{model=\"{m}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "lambdaml_request_duration_seconds_bucket{{model=\"{m}\",le=\"+Inf\"}} {}\nlambdaml_request_duration_seconds_sum{{model=\"{m}\"}} {}\nlambdaml_request_duration_seconds_count{{model=\"{m}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        drop(inner);
        let _ = writeln!(
            out,
            "# HELP lambdaml_production_info The production version each model serves.\n# TYPE lambdaml_production_info gauge"
        );
        for (m, v) in &gauges.production {
            let _ = writeln!(
                out,
                "lambdaml_production_info{{model=\"{}\",version=\"{}\"}} 1",
                escape(m),
                escape(v)
            );
        }
        if let Some(s) = gauges.cold_start_seconds {
            let _ = writeln!(
                out,
                "# HELP lambdaml_cold_start_seconds Process start to the first model loaded.\n# TYPE lambdaml_cold_start_seconds gauge\nlambdaml_cold_start_seconds {s}"
            );
        }
        let c = &gauges.captures;
        let _ = writeln!(
            out,
            "# HELP lambdaml_model_loads_total Model versions read from the store.\n# TYPE lambdaml_model_loads_total counter\nlambdaml_model_loads_total {}\n# HELP lambdaml_registry_checks_total Registry etag checks.\n# TYPE lambdaml_registry_checks_total counter\nlambdaml_registry_checks_total {}\n# HELP lambdaml_captures_buffered_total Capture records buffered.\n# TYPE lambdaml_captures_buffered_total counter\nlambdaml_captures_buffered_total {}\n# HELP lambdaml_captures_written_total Capture records written to the store.\n# TYPE lambdaml_captures_written_total counter\nlambdaml_captures_written_total {}\n# HELP lambdaml_capture_write_failures_total Capture writes that failed (kept for retry).\n# TYPE lambdaml_capture_write_failures_total counter\nlambdaml_capture_write_failures_total {}\n# HELP lambdaml_captures_dropped_total Capture records dropped at the buffer limit.\n# TYPE lambdaml_captures_dropped_total counter\nlambdaml_captures_dropped_total {}\n# HELP lambdaml_capture_pending_bytes Capture bytes waiting in memory.\n# TYPE lambdaml_capture_pending_bytes gauge\nlambdaml_capture_pending_bytes {}",
            gauges.model_loads,
            gauges.registry_checks,
            c.buffered,
            c.written,
            c.failed_writes,
            c.dropped,
            c.pending_bytes
        );
        let ([scored, refused, skipped], in_flight) = gauges.shadow;
        let _ = writeln!(
            out,
            "# HELP lambdaml_shadow_requests_total Copies of production requests a shadow version scored, refused (its failure) or skipped (a feature it takes was not sent).\n# TYPE lambdaml_shadow_requests_total counter\nlambdaml_shadow_requests_total{{outcome=\"scored\"}} {scored}\nlambdaml_shadow_requests_total{{outcome=\"refused\"}} {refused}\nlambdaml_shadow_requests_total{{outcome=\"skipped\"}} {skipped}\n# HELP lambdaml_shadow_in_flight Shadow scorings started and not yet captured.\n# TYPE lambdaml_shadow_in_flight gauge\nlambdaml_shadow_in_flight {in_flight}"
        );
        out
    }
}

#[derive(Serialize)]
struct EmfMetric {
    #[serde(rename = "Name")]
    name: &'static str,
    #[serde(rename = "Unit")]
    unit: &'static str,
}

#[derive(Serialize)]
struct EmfDirective {
    #[serde(rename = "Namespace")]
    namespace: &'static str,
    #[serde(rename = "Dimensions")]
    dimensions: [[&'static str; 3]; 1],
    #[serde(rename = "Metrics")]
    metrics: [EmfMetric; 4],
}

#[derive(Serialize)]
struct EmfMeta {
    #[serde(rename = "Timestamp")]
    timestamp: i64,
    #[serde(rename = "CloudWatchMetrics")]
    cloudwatch_metrics: [EmfDirective; 1],
}

#[derive(Serialize)]
struct EmfLine<'a> {
    #[serde(rename = "_aws")]
    aws: EmfMeta,
    service: &'a str,
    model: &'a str,
    version: &'a str,
    route: &'a str,
    status: u16,
    request_id: &'a str,
    #[serde(rename = "Latency")]
    latency: f64,
    #[serde(rename = "Rows")]
    rows: usize,
    #[serde(rename = "ValidationErrors")]
    validation_errors: usize,
    #[serde(rename = "ColdStart")]
    cold_start: u8,
}

/// The namespace of lambdaml's scoring metrics.
pub const EMF_NAMESPACE: &str = "lambdaml/score";

/// One EMF line for one invocation: latency (ms), rows, validation errors and cold start
/// (1 once per execution environment), with service, model and version as dimensions.
#[allow(clippy::too_many_arguments)]
pub fn emf_line(
    service: &str,
    route: &str,
    status: u16,
    request_id: &str,
    outcome: &Outcome,
    latency: Duration,
    cold_start: bool,
    timestamp_ms: i64,
) -> String {
    let line = EmfLine {
        aws: EmfMeta {
            timestamp: timestamp_ms,
            cloudwatch_metrics: [EmfDirective {
                namespace: EMF_NAMESPACE,
                dimensions: [["service", "model", "version"]],
                metrics: [
                    EmfMetric {
                        name: "Latency",
                        unit: "Milliseconds",
                    },
                    EmfMetric {
                        name: "Rows",
                        unit: "Count",
                    },
                    EmfMetric {
                        name: "ValidationErrors",
                        unit: "Count",
                    },
                    EmfMetric {
                        name: "ColdStart",
                        unit: "Count",
                    },
                ],
            }],
        },
        service,
        model: outcome.model.as_deref().unwrap_or("none"),
        version: outcome.version.as_deref().unwrap_or("none"),
        route,
        status,
        request_id,
        latency: latency.as_secs_f64() * 1000.0,
        rows: outcome.rows,
        validation_errors: outcome.validation_errors,
        cold_start: u8::from(cold_start),
    };
    serde_json::to_string(&line).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emf_line_declares_its_metrics_and_dimensions() {
        let outcome = Outcome {
            route: "v2",
            model: Some("m".into()),
            version: Some("v1".into()),
            rows: 3,
            validation_errors: 0,
        };
        let line = emf_line(
            "scorer",
            "v2",
            200,
            "req",
            &outcome,
            Duration::from_micros(1500),
            true,
            1_700_000_000_000,
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], EMF_NAMESPACE);
        assert_eq!(
            directive["Dimensions"][0],
            serde_json::json!(["service", "model", "version"])
        );
        let names: Vec<&str> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        for name in &names {
            assert!(v.get(*name).is_some(), "metric {name} has a value");
        }
        assert_eq!(v["Latency"], 1.5);
        assert_eq!(v["Rows"], 3);
        assert_eq!(v["ColdStart"], 1);
        assert_eq!(v["service"], "scorer");
        assert_eq!(v["model"], "m");
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000i64);
    }

    #[test]
    fn prometheus_text_counts_requests_rows_and_latency() {
        let m = Metrics::default();
        let ok = Outcome {
            route: "v2",
            model: Some("m".into()),
            version: Some("v".into()),
            rows: 2,
            validation_errors: 0,
        };
        let bad = Outcome {
            validation_errors: 3,
            rows: 0,
            ..ok.clone()
        };
        m.observe("v2", 200, &ok, Duration::from_micros(300));
        m.observe("v2", 200, &ok, Duration::from_millis(30));
        m.observe("mlflow", 422, &bad, Duration::from_micros(100));
        let text = m.render(&Gauges::default());
        assert!(text.contains(
            "lambdaml_requests_total{model=\"m\",version=\"v\",route=\"v2\",status=\"200\"} 2"
        ));
        assert!(text.contains("lambdaml_rows_total{model=\"m\",version=\"v\"} 4"));
        assert!(text.contains("lambdaml_validation_errors_total{model=\"m\",version=\"v\"} 3"));
        assert!(
            text.contains("lambdaml_request_duration_seconds_bucket{model=\"m\",le=\"0.0005\"} 2")
        );
        assert!(text.contains("lambdaml_request_duration_seconds_count{model=\"m\"} 3"));
    }
}
