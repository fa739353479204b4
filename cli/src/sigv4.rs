//! SigV4 verification for `lambdaml local`'s `AWS_IAM` routes.
//!
//! API Gateway checks a request's Signature Version 4 signature against the caller's
//! credentials; locally there is one caller, the credentials of this process's AWS
//! environment (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, a profile, …). A request is
//! accepted when its `Authorization` header names that access key, its `x-amz-date` is
//! within 15 minutes of now (as API Gateway requires), and the signature the `aws-sigv4`
//! crate computes over the same method, path, query, signed headers and body with the
//! secret key is the one the request carries. Anything else is refused with the reason.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use axum::http::HeaderMap;

/// How far a request's `x-amz-date` may be from now.
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// The parts of a SigV4 `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
struct Authorization<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, String> {
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not an AWS4-HMAC-SHA256 Authorization header")?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| format!("malformed Authorization component {part:?}"))?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let credential = credential.ok_or("the Authorization header has no Credential")?;
    let mut scope = credential.split('/');
    let (Some(access_key), Some(date), Some(region), Some(service), Some("aws4_request"), None) = (
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
    ) else {
        return Err(format!(
            "Credential {credential:?} is not KEY/DATE/REGION/SERVICE/aws4_request"
        ));
    };
    let signed_headers: Vec<&str> = signed
        .ok_or("the Authorization header has no SignedHeaders")?
        .split(';')
        .collect();
    if !signed_headers.contains(&"host") {
        return Err("SignedHeaders must include host".into());
    }
    Ok(Authorization {
        access_key,
        date,
        region,
        service,
        signed_headers,
        signature: signature.ok_or("the Authorization header has no Signature")?,
    })
}

fn parse_amz_date(text: &str) -> Result<SystemTime, String> {
    let t = chrono::NaiveDateTime::parse_from_str(text, "%Y%m%dT%H%M%SZ")
        .map_err(|_| format!("x-amz-date {text:?} is not YYYYMMDDTHHMMSSZ"))?;
    let secs = t.and_utc().timestamp();
    let secs = u64::try_from(secs).map_err(|_| format!("x-amz-date {text:?} is before 1970"))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Constant-time equality of two ASCII strings (a signature comparison must not tell an
/// attacker how many leading characters were right).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Checks a request's SigV4 signature against `credentials`; `Err` says why it is refused.
pub fn verify(
    credentials: Option<&Credentials>,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), String> {
    let value = headers
        .get("authorization")
        .ok_or("no SigV4 Authorization header")?
        .to_str()
        .map_err(|_| "the Authorization header is not text")?;
    let auth = parse_authorization(value)?;
    let credentials = credentials.ok_or(
        "this lambdaml local has no AWS credentials to check signatures with (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
    )?;
    if auth.access_key != credentials.access_key_id() {
        return Err(format!(
            "access key {:?} is not this environment's ({})",
            auth.access_key,
            credentials.access_key_id()
        ));
    }
    if auth.service != "execute-api" {
        return Err(format!(
            "the signature is for service {:?}, not execute-api",
            auth.service
        ));
    }
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or("no x-amz-date header")?;
    if !amz_date.starts_with(auth.date) {
        return Err(format!(
            "x-amz-date {amz_date} is not on the credential's date {}",
            auth.date
        ));
    }
    let time = parse_amz_date(amz_date)?;
    let skew = now
        .duration_since(time)
        .or_else(|e| Ok::<_, String>(e.duration()))?;
    if skew > MAX_SKEW {
        return Err(format!(
            "x-amz-date {amz_date} is more than 15 minutes from now"
        ));
    }
    // Exactly the headers the client signed (the crate adds host and x-amz-date itself
    // when absent; both are passed as the client sent them).
    let mut signed: Vec<(&str, String)> = Vec::new();
    for name in &auth.signed_headers {
        if *name == "x-amz-date" {
            continue;
        }
        let values: Vec<&str> = headers
            .get_all(*name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if values.is_empty() {
            return Err(format!("signed header {name} is missing from the request"));
        }
        signed.push((name, values.join(",")));
    }
    let payload = headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok());
    let body = match payload {
        Some(hash) if auth.signed_headers.contains(&"x-amz-content-sha256") => {
            SignableBody::Precomputed(hash.to_string())
        }
        _ => SignableBody::Bytes(body),
    };
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let uri = format!("http://{host}{path_and_query}");
    let request = SignableRequest::new(
        method,
        &uri,
        signed.iter().map(|(k, v)| (*k, v.as_str())),
        body,
    )
    .map_err(|e| format!("the request cannot be checked: {e}"))?;
    let mut settings = SigningSettings::default();
    // Sign exactly what the client listed.
    settings.excluded_headers = Some(Vec::new());
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(auth.region)
        .name(auth.service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| format!("the request cannot be checked: {e}"))?
        .into();
    let expected = sign(request, &params)
        .map_err(|e| format!("the request cannot be checked: {e}"))?
        .signature()
        .to_string();
    if same(&expected, auth.signature) {
        Ok(())
    } else {
        Err("the signature does not match (wrong secret key, or the request was changed after signing)".into())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn signed_request(secret: &str, at: SystemTime, body: &[u8]) -> HeaderMap {
        let creds = Credentials::new("AKIDLOCAL", secret, None, None, "test");
        let identity = creds.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("execute-api")
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let headers = [
            ("host", "127.0.0.1:3000"),
            ("content-type", "application/json"),
        ];
        let request = SignableRequest::new(
            "POST",
            "http://127.0.0.1:3000/invocations?model=m",
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(request, &params).unwrap().into_parts();
        let mut out = HeaderMap::new();
        for (k, v) in headers {
            out.insert(k, v.parse().unwrap());
        }
        for (k, v) in instructions.headers() {
            out.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        out
    }

    #[test]
    fn a_request_signed_with_the_local_secret_passes_and_nothing_else_does() {
        let local = Credentials::new("AKIDLOCAL", "right-secret", None, None, "env");
        let now = SystemTime::now();
        let body = br#"{"instances": [[1, 2]]}"#;
        let good = signed_request("right-secret", now, body);
        let check =
            |h: &HeaderMap, b: &[u8], path: &str| verify(Some(&local), "POST", path, h, b, now);
        assert_eq!(check(&good, body, "/invocations?model=m"), Ok(()));
        // A wrong secret, a changed body, path or query, a stale date: refused.
        let wrong = signed_request("wrong-secret", now, body);
        assert!(
            check(&wrong, body, "/invocations?model=m")
                .unwrap_err()
                .contains("does not match")
        );
        assert!(check(&good, b"{}", "/invocations?model=m").is_err());
        assert!(check(&good, body, "/invocations?model=other").is_err());
        assert!(check(&good, body, "/v2/models/m/infer").is_err());
        let old = signed_request("right-secret", now - Duration::from_secs(3600), body);
        assert!(
            check(&old, body, "/invocations?model=m")
                .unwrap_err()
                .contains("15 minutes")
        );
        // Another access key, no credentials, a bare or malformed header.
        let other = Credentials::new("AKIDOTHER", "right-secret", None, None, "env");
        assert!(
            verify(
                Some(&other),
                "POST",
                "/invocations?model=m",
                &good,
                body,
                now
            )
            .is_err()
        );
        assert!(verify(None, "POST", "/invocations?model=m", &good, body, now).is_err());
        let mut forged = good.clone();
        forged.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDLOCAL/20261127/us-east-1/execute-api/aws4_request, SignedHeaders=host, Signature=0"
                .parse()
                .unwrap(),
        );
        assert!(check(&forged, body, "/invocations?model=m").is_err());
        for bad in [
            "Bearer x",
            "AWS4-HMAC-SHA256 ",
            "AWS4-HMAC-SHA256 Credential=a/b",
        ] {
            let mut h = good.clone();
            h.insert("authorization", bad.parse().unwrap());
            assert!(check(&h, body, "/invocations?model=m").is_err(), "{bad}");
        }
    }
}
