//! Structured logs: JSON lines in Lambda, readable text locally.
//!
//! In Lambda (`AWS_LAMBDA_FUNCTION_NAME` is set) every event is one JSON line with its span
//! fields (request id, function, model, version), which CloudWatch Logs Insights can query.
//! Locally the same events print as text on stderr, so the CLI's stdout stays clean for its
//! results. `RUST_LOG` overrides the level either way.

use tracing_subscriber::EnvFilter;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (Lambda).
    Json,
    /// Human-readable text on stderr.
    Text,
}

impl LogFormat {
    /// JSON inside Lambda, text elsewhere.
    pub fn detect() -> Self {
        if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
            LogFormat::Json
        } else {
            LogFormat::Text
        }
    }
}

/// Installs the global subscriber; `default_level` applies when `RUST_LOG` is unset.
/// Calling it twice is harmless (the second call does nothing).
pub fn init(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .without_time()
            .try_init(),
        LogFormat::Text => builder.with_target(false).compact().try_init(),
    };
}

/// The span every Lambda invocation runs in: its request id and function name become fields
/// of every log line it writes.
pub fn invocation_span(request_id: &str) -> tracing::Span {
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default();
    tracing::info_span!("invocation", request_id = %request_id, function = %function)
}
