//! Refusal of cross-origin browser requests on a local server.
//!
//! `lambdaml serve` listens on loopback with no authentication, so any web page the user
//! opens could make the browser post to it (a "simple" cross-site request needs no CORS
//! preflight). Feedback labels flow into retraining data, so such requests are refused: a
//! request that a browser marks as coming from another origin (`Origin` whose host differs
//! from `Host`, or `Sec-Fetch-Site: cross-site`) gets 403. Clients that are not browsers send
//! no `Origin` and are unaffected. In Lambda the API's own authorization (IAM) decides.

use axum::http::{HeaderMap, header};

/// Why a request is refused, or `None` when it is same-origin or not from a browser.
pub fn cross_origin(headers: &HeaderMap) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site.eq_ignore_ascii_case("cross-site")
    {
        return Some("Sec-Fetch-Site: cross-site".to_string());
    }
    let origin = headers.get(header::ORIGIN)?;
    let origin = String::from_utf8_lossy(origin.as_bytes());
    let host = headers
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).to_ascii_lowercase());
    let authority = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/').to_ascii_lowercase());
    match (authority, host) {
        (Some(a), Some(h)) if a == h => None,
        (_, host) => Some(format!(
            "Origin {origin:?} is not this server ({})",
            host.as_deref().unwrap_or("no Host header")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_browser_requests_from_another_origin_are_refused() {
        assert_eq!(cross_origin(&headers(&[("host", "127.0.0.1:8080")])), None);
        assert_eq!(
            cross_origin(&headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8080")
            ])),
            None
        );
        assert!(
            cross_origin(&headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "https://evil.example")
            ]))
            .is_some()
        );
        assert!(
            cross_origin(&headers(&[("host", "127.0.0.1:8080"), ("origin", "null")])).is_some()
        );
        // A rebound DNS name is another origin even though it resolves to loopback.
        assert!(
            cross_origin(&headers(&[
                ("host", "rebind.example:8080"),
                ("origin", "http://127.0.0.1:8080")
            ]))
            .is_some()
        );
        assert!(cross_origin(&headers(&[("sec-fetch-site", "cross-site")])).is_some());
        assert_eq!(
            cross_origin(&headers(&[("sec-fetch-site", "same-origin")])),
            None
        );
    }
}
