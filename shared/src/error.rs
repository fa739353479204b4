//! Whether a failure is worth a retry, decided once, here, from the error's kind.
//!
//! Throttling, timeouts, network faults and 5xx answers are retryable: the same request may
//! succeed later. Invalid input, a missing artifact or a refused request (4xx) is permanent:
//! a retry only burns receives before the dead-letter queue takes the message anyway. Every
//! error type of the ports says which it is through [`Classify`]; handlers never decide.

use std::sync::Arc;

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Retrying cannot help.
    Permanent,
    /// May succeed later.
    Retryable,
}

/// An error that knows whether a retry can help.
pub trait Classify {
    /// Retryable or permanent, from the error's kind.
    fn retry(&self) -> Retry;
}

/// A kept cause: cheap to clone, any error type.
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What a remote backend's failure was, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendKind {
    /// The service asked us to slow down (503 SlowDown, 429, `Throttling…`).
    Throttled,
    /// No answer in time (connect or read timeout).
    Timeout,
    /// The network failed or the service answered 5xx.
    Unavailable,
    /// The service refused the request (4xx other than throttling): retrying the same
    /// request gets the same answer.
    Refused,
}

impl BackendKind {
    /// From an HTTP status and a service error code, as AWS services answer.
    pub fn from_response(status: Option<u16>, code: Option<&str>) -> Self {
        const THROTTLING: [&str; 7] = [
            "Throttling",
            "ThrottlingException",
            "ThrottledException",
            "SlowDown",
            "RequestLimitExceeded",
            "TooManyRequestsException",
            "RequestThrottled",
        ];
        if code.is_some_and(|c| THROTTLING.contains(&c)) || status == Some(429) {
            return BackendKind::Throttled;
        }
        match status {
            Some(408) => BackendKind::Timeout,
            Some(s) if (400..500).contains(&s) => BackendKind::Refused,
            _ => BackendKind::Unavailable,
        }
    }

    /// Retryable unless the service refused the request.
    pub fn retry(self) -> Retry {
        match self {
            BackendKind::Refused => Retry::Permanent,
            _ => Retry::Retryable,
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Throttled => "throttled",
            BackendKind::Timeout => "timed out",
            BackendKind::Unavailable => "unavailable",
            BackendKind::Refused => "refused",
        })
    }
}

/// Local I/O (temporary files, the file store's disk) is worth a retry: a full disk or a
/// busy file may clear, and the input is not to blame.
impl Classify for std::io::Error {
    fn retry(&self) -> Retry {
        Retry::Retryable
    }
}

/// An error with only a message (a backend that gave no typed error), kept as a cause.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Message(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_timeouts_and_5xx_are_retryable_and_4xx_is_not() {
        let kind = BackendKind::from_response;
        assert_eq!(kind(Some(503), Some("SlowDown")), BackendKind::Throttled);
        assert_eq!(
            kind(Some(400), Some("ThrottlingException")),
            BackendKind::Throttled
        );
        assert_eq!(kind(Some(429), None), BackendKind::Throttled);
        assert_eq!(kind(Some(408), None), BackendKind::Timeout);
        assert_eq!(
            kind(Some(500), Some("InternalError")),
            BackendKind::Unavailable
        );
        assert_eq!(kind(None, None), BackendKind::Unavailable);
        assert_eq!(kind(Some(403), Some("AccessDenied")), BackendKind::Refused);
        assert_eq!(kind(Some(404), Some("NoSuchBucket")), BackendKind::Refused);
        for k in [
            BackendKind::Throttled,
            BackendKind::Timeout,
            BackendKind::Unavailable,
        ] {
            assert_eq!(k.retry(), Retry::Retryable, "{k}");
        }
        assert_eq!(BackendKind::Refused.retry(), Retry::Permanent);
    }
}
