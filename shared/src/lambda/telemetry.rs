//! Structured logs: JSON lines in Lambda, readable text locally.
//!
//! In Lambda every event is one JSON line with the keys AWS Lambda Powertools writes, so the
//! queries and dashboards people already have for Powertools work unchanged: `timestamp`
//! (RFC 3339, milliseconds), `level`, `message`, `service` (`POWERTOOLS_SERVICE_NAME`, else
//! the function's name), `cold_start` (true on the first invocation of an execution
//! environment), `function_name`, `function_request_id`, `xray_trace_id`, `logger` (the
//! module), then the event's and its spans' own fields (model, version, …). Locally the same
//! events print as text on stderr, so the CLI's stdout stays clean for its results.
//!
//! Lambda's advanced logging controls are honoured: `AWS_LAMBDA_LOG_FORMAT` (`JSON` or
//! `Text`) picks the format and `AWS_LAMBDA_LOG_LEVEL` (`TRACE` … `FATAL`) the level;
//! otherwise `RUST_LOG`, else the caller's default.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (Lambda).
    Json,
    /// Human-readable text on stderr.
    Text,
}

impl LogFormat {
    /// `AWS_LAMBDA_LOG_FORMAT` when set; else JSON inside Lambda, text elsewhere.
    pub fn detect() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        match get("AWS_LAMBDA_LOG_FORMAT").map(|f| f.to_ascii_lowercase()) {
            Some(f) if f == "json" => LogFormat::Json,
            Some(f) if f == "text" => LogFormat::Text,
            _ if get("AWS_LAMBDA_FUNCTION_NAME").is_some() => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }
}

/// The level filter: `AWS_LAMBDA_LOG_LEVEL` (Lambda's advanced logging controls), else
/// `RUST_LOG`, else `default_level`.
fn filter(get: impl Fn(&str) -> Option<String>, default_level: &str) -> EnvFilter {
    if let Some(level) = get("AWS_LAMBDA_LOG_LEVEL") {
        let level = match level.to_ascii_lowercase().as_str() {
            "fatal" => "error".to_string(),
            other => other.to_string(),
        };
        if let Ok(f) = EnvFilter::try_new(&level) {
            return f;
        }
    }
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level))
}

/// Installs the global subscriber; `default_level` applies when neither
/// `AWS_LAMBDA_LOG_LEVEL` nor `RUST_LOG` is set. Calling it twice is harmless (the second
/// call does nothing).
pub fn init(format: LogFormat, default_level: &str) {
    let get = |k: &str| std::env::var(k).ok();
    let filter = filter(get, default_level);
    let _ = match format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(PowertoolsLayer::new(service_name(get), std::io::stderr))
            .try_init(),
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .compact()
            .finish()
            .try_init(),
    };
}

/// The service name logs and metrics carry: `POWERTOOLS_SERVICE_NAME`, else the function's
/// name, else `lambdaml`.
pub fn service() -> String {
    service_name(|k| std::env::var(k).ok())
}

/// `POWERTOOLS_SERVICE_NAME`, else the function's name, else `lambdaml`.
fn service_name(get: impl Fn(&str) -> Option<String>) -> String {
    get("POWERTOOLS_SERVICE_NAME")
        .or_else(|| get("AWS_LAMBDA_FUNCTION_NAME"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "lambdaml".to_string())
}

/// Whether this execution environment has had an invocation yet.
static INVOKED: AtomicBool = AtomicBool::new(false);

/// True exactly once per process: for the first invocation of an execution environment.
pub fn take_cold_start() -> bool {
    !INVOKED.swap(true, Ordering::Relaxed)
}

/// The span every Lambda invocation runs in: its request id, X-Ray trace id, function name
/// and whether it is the environment's cold start become keys of every log line it writes.
pub fn invocation_span(request_id: &str, xray_trace_id: Option<&str>) -> tracing::Span {
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default();
    let cold_start = take_cold_start();
    tracing::info_span!(
        "invocation",
        function_request_id = %request_id,
        function_name = %function,
        xray_trace_id = xray_trace_id.unwrap_or(""),
        cold_start
    )
}

/// A span's fields, kept for the lines written inside it.
#[derive(Debug, Default)]
struct SpanFields(Map<String, Value>);

struct Collect<'a>(&'a mut Map<String, Value>);

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            Value::String(format!("{value:?}")),
        );
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_string(), Value::String(value.to_string()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Value::Bool(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(
            field.name().to_string(),
            serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number),
        );
    }
}

/// Writes each event as one Powertools-shaped JSON line (see the module docs).
struct PowertoolsLayer<W> {
    service: String,
    writer: W,
}

impl<W> PowertoolsLayer<W> {
    fn new(service: String, writer: W) -> Self {
        PowertoolsLayer { service, writer }
    }
}

impl<S, W> tracing_subscriber::Layer<S> for PowertoolsLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id) {
            let mut fields = SpanFields::default();
            attrs.record(&mut Collect(&mut fields.0));
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut Collect(&mut fields.0));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut own = Map::new();
        event.record(&mut Collect(&mut own));
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        line.insert(
            "level".into(),
            Value::String(event.metadata().level().as_str().to_string()),
        );
        line.insert(
            "message".into(),
            own.remove("message")
                .unwrap_or(Value::String(String::new())),
        );
        line.insert("service".into(), Value::String(self.service.clone()));
        line.insert("cold_start".into(), Value::Bool(false));
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &fields.0 {
                        // An empty trace id (none sent) is left out, as Powertools does.
                        if v.as_str() == Some("") && k == "xray_trace_id" {
                            continue;
                        }
                        line.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        line.insert(
            "logger".into(),
            Value::String(event.metadata().target().to_string()),
        );
        for (k, v) in own {
            line.entry(k).or_insert(v);
        }
        if let Ok(mut text) = serde_json::to_vec(&line) {
            text.push(b'\n');
            let _ = self.writer.make_writer().write_all(&text);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn lines_carry_the_powertools_keys_and_the_spans_fields() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry()
            .with(PowertoolsLayer::new("scorer".into(), buffer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "invocation",
                function_request_id = "req-1",
                function_name = "ScoreFunction",
                xray_trace_id = "Root=1-abc",
                cold_start = true
            );
            let _entered = span.enter();
            let inner = tracing::info_span!("model", model = "mixed", version = "v1");
            let _inner = inner.enter();
            tracing::warn!(rows = 3, "scored with a warning");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let v: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["message"], "scored with a warning");
        assert_eq!(v["service"], "scorer");
        assert_eq!(v["cold_start"], true);
        assert_eq!(v["function_request_id"], "req-1");
        assert_eq!(v["function_name"], "ScoreFunction");
        assert_eq!(v["xray_trace_id"], "Root=1-abc");
        assert_eq!(v["model"], "mixed");
        assert_eq!(v["rows"], 3);
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        // Outside an invocation: no request id, and not a cold start.
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry()
            .with(PowertoolsLayer::new("scorer".into(), buffer.clone()));
        tracing::subscriber::with_default(subscriber, || tracing::info!("idle"));
        let v: Value = serde_json::from_slice(&buffer.0.lock().unwrap()).unwrap();
        assert_eq!(v["cold_start"], false);
        assert!(v.get("function_request_id").is_none());
    }

    #[test]
    fn lambdas_logging_controls_pick_the_format_and_level() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(LogFormat::from_lookup(env(&[])), LogFormat::Text);
        assert_eq!(
            LogFormat::from_lookup(env(&[("AWS_LAMBDA_FUNCTION_NAME", "f")])),
            LogFormat::Json
        );
        assert_eq!(
            LogFormat::from_lookup(env(&[
                ("AWS_LAMBDA_FUNCTION_NAME", "f"),
                ("AWS_LAMBDA_LOG_FORMAT", "Text")
            ])),
            LogFormat::Text
        );
        assert_eq!(
            LogFormat::from_lookup(env(&[("AWS_LAMBDA_LOG_FORMAT", "JSON")])),
            LogFormat::Json
        );
        assert_eq!(
            filter(env(&[("AWS_LAMBDA_LOG_LEVEL", "WARN")]), "info").to_string(),
            "warn"
        );
        assert_eq!(
            filter(env(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")]), "info").to_string(),
            "error"
        );
        assert_eq!(
            service_name(env(&[("AWS_LAMBDA_FUNCTION_NAME", "stack-Score")])),
            "stack-Score"
        );
        assert_eq!(
            service_name(env(&[
                ("AWS_LAMBDA_FUNCTION_NAME", "stack-Score"),
                ("POWERTOOLS_SERVICE_NAME", "scoring")
            ])),
            "scoring"
        );
    }
}
