//! How the score function behaves: [`ScoreConfig`], read once from `LAMBDAML_*` variables.

use std::time::Duration;

use lambdaml::capture::CaptureConfig;

/// Lambda's synchronous payload limit, the default body limit.
pub const LAMBDA_PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;

/// How the score function behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreConfig {
    /// The model `/invocations` and `/ping` serve when the request names none.
    pub default_model: Option<String>,
    /// How often a production pointer is re-checked against the registry.
    pub refresh: Duration,
    /// Explicitly requested versions kept loaded.
    pub lru: usize,
    /// Request body limit in bytes.
    pub max_body_bytes: usize,
    /// Rows per request.
    pub max_rows: usize,
    /// Capture sampling and batching.
    pub capture: CaptureConfig,
    /// Write captures at the end of every request (Lambda: the process may be frozen or
    /// ended after any response).
    pub flush_each_request: bool,
    /// Print one CloudWatch EMF line per request on stdout (Lambda).
    pub emf: bool,
    /// Refuse requests a browser marks as cross-origin (`lambdaml serve`; see [`guard`]).
    pub same_origin_only: bool,
    /// Requests handled at once; more get 503 (see [`server`]).
    pub max_in_flight: usize,
    /// A request's whole time, body reading included (see [`server`]).
    pub request_timeout: Duration,
    /// How long `lambdaml serve` waits for a request's headers.
    pub header_timeout: Duration,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        ScoreConfig {
            default_model: None,
            refresh: Duration::from_secs(10),
            lru: 4,
            max_body_bytes: LAMBDA_PAYLOAD_LIMIT,
            max_rows: 10_000,
            capture: CaptureConfig::default(),
            flush_each_request: false,
            emf: false,
            same_origin_only: false,
            max_in_flight: 256,
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// `"250ms"`, `"10s"`, `"5m"`, `"1h"`.
pub fn parse_interval(text: &str) -> Option<Duration> {
    let t = text.trim();
    if let Some(ms) = t.strip_suffix("ms") {
        return ms.trim().parse().ok().map(Duration::from_millis);
    }
    lambdaml::spec::parse_duration_secs(t).map(Duration::from_secs)
}

impl ScoreConfig {
    /// The configuration from `LAMBDAML_*` variables (`get` looks one up); Lambda settings
    /// (flush every request, EMF) when `AWS_LAMBDA_FUNCTION_NAME` is set.
    ///
    /// `LAMBDAML_MODEL`, `LAMBDAML_REFRESH` (e.g. `10s`), `LAMBDAML_MAX_ROWS`,
    /// `LAMBDAML_MAX_BODY_BYTES`, `LAMBDAML_MAX_IN_FLIGHT`, `LAMBDAML_REQUEST_TIMEOUT`,
    /// `LAMBDAML_CAPTURE_SAMPLE` (0–1),
    /// `LAMBDAML_CAPTURE_MAX_BYTES`, `LAMBDAML_CAPTURE_MAX_AGE` (e.g. `60s`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut c = ScoreConfig::default();
        let lambda = get("AWS_LAMBDA_FUNCTION_NAME").is_some();
        c.flush_each_request = lambda;
        c.emf = lambda;
        c.default_model = get("LAMBDAML_MODEL").filter(|m| !m.is_empty());
        let number = |name: &str| -> Result<Option<usize>, String> {
            get(name)
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| format!("{name}={v:?} is not a whole number"))
                })
                .transpose()
        };
        let interval = |name: &str| -> Result<Option<Duration>, String> {
            get(name)
                .map(|v| {
                    parse_interval(&v).ok_or_else(|| {
                        format!("{name}={v:?} is not a duration like 500ms, 10s, 5m")
                    })
                })
                .transpose()
        };
        if let Some(d) = interval("LAMBDAML_REFRESH")? {
            c.refresh = d;
        }
        if let Some(n) = number("LAMBDAML_MAX_ROWS")? {
            c.max_rows = n.max(1);
        }
        if let Some(n) = number("LAMBDAML_MAX_BODY_BYTES")? {
            c.max_body_bytes = n;
        }
        if let Some(n) = number("LAMBDAML_MAX_IN_FLIGHT")? {
            c.max_in_flight = n.max(1);
        }
        if let Some(d) = interval("LAMBDAML_REQUEST_TIMEOUT")? {
            c.request_timeout = d.max(Duration::from_millis(1));
        }
        if let Some(n) = number("LAMBDAML_CAPTURE_MAX_BYTES")? {
            c.capture.max_bytes = n;
        }
        if let Some(d) = interval("LAMBDAML_CAPTURE_MAX_AGE")? {
            c.capture.max_age = d;
        }
        if let Some(v) = get("LAMBDAML_CAPTURE_SAMPLE") {
            c.capture.sample_rate = v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    format!("LAMBDAML_CAPTURE_SAMPLE={v:?} is not a number in [0, 1]")
                })?;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_comes_from_the_environment_with_clear_errors() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = ScoreConfig::from_lookup(env(&[
            ("LAMBDAML_MODEL", "m"),
            ("LAMBDAML_REFRESH", "250ms"),
            ("LAMBDAML_CAPTURE_SAMPLE", "0.5"),
            ("AWS_LAMBDA_FUNCTION_NAME", "score"),
        ]))
        .unwrap();
        assert_eq!(c.default_model.as_deref(), Some("m"));
        assert_eq!(c.refresh, Duration::from_millis(250));
        assert_eq!(c.capture.sample_rate, 0.5);
        assert!(
            c.flush_each_request && c.emf,
            "Lambda flushes every invocation"
        );
        let local = ScoreConfig::from_lookup(env(&[])).unwrap();
        assert!(!local.flush_each_request && !local.emf);
        let e = ScoreConfig::from_lookup(env(&[("LAMBDAML_CAPTURE_SAMPLE", "2")])).unwrap_err();
        assert!(e.contains("LAMBDAML_CAPTURE_SAMPLE"), "{e}");
        let e = ScoreConfig::from_lookup(env(&[("LAMBDAML_REFRESH", "soon")])).unwrap_err();
        assert!(e.contains("LAMBDAML_REFRESH"), "{e}");
    }
}
