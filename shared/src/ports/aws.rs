//! What the two AWS adapters (S3 and SQS) share: the SDK configuration (timeouts), and how
//! an SDK failure is summarised and classified ([`BackendKind`]) — the one place that reads
//! an SDK error's status and code.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::error::{BackendKind, Cause};

/// The AWS SDK configuration every lambdaml client uses: credentials, region and endpoint
/// from the standard environment (`AWS_ENDPOINT_URL` points it at an emulator), with
/// timeouts, so a stalled connection fails an operation (and is retried by the SDK or by the
/// queue) instead of holding a response or an invocation until Lambda's own timeout.
///
/// Connect: 5 s. Read (the longest wait for the next bytes on a socket; transfers of any
/// size keep going while bytes flow): 30 s. The per-attempt and whole-operation limits stay
/// the SDK's (none), since an upload of a large dataset legitimately takes minutes.
pub async fn sdk_config() -> aws_config::SdkConfig {
    use aws_config::timeout::TimeoutConfig;
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .read_timeout(std::time::Duration::from_secs(30))
        .build();
    // One HTTPS client (hyper 1, rustls on ring, the OS's roots; plain http for the
    // emulators) for every SDK client and the credential providers.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts)
        .load()
        .await
}

/// A failed SDK call: what kind of failure, a one-line summary (`Code: message`) and the
/// SDK's error itself, kept as the cause.
#[derive(Debug)]
pub(crate) struct SdkFailure {
    pub kind: BackendKind,
    pub summary: String,
    pub cause: Cause,
}

/// The HTTP status of a service's answer, when it answered.
pub(crate) fn status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// Classifies and summarises an SDK error.
pub(crate) fn failure<E>(err: SdkError<E, HttpResponse>) -> SdkFailure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let kind = match &err {
        SdkError::TimeoutError(_) => BackendKind::Timeout,
        SdkError::DispatchFailure(d) if d.is_timeout() => BackendKind::Timeout,
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => BackendKind::Unavailable,
        SdkError::ConstructionFailure(_) => BackendKind::Refused,
        _ => BackendKind::from_response(status(&err), err.code()),
    };
    let summary = match err.code() {
        Some(code) => format!("{code}: {}", err.message().unwrap_or_default()),
        None => format!("{err:?}"),
    };
    SdkFailure {
        kind,
        summary,
        cause: std::sync::Arc::new(err),
    }
}
