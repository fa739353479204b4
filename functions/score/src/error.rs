//! The one error shape every route answers with:
//! `{"error": …, "details": [{"row", "field", "reason"}], "request_id": …}`.

use axum::http::StatusCode;
use lambdaml::capture::FieldError;
use serde::Serialize;

/// At most this many details are listed; `details_total` says how many there were.
pub const MAX_DETAILS: usize = 100;

/// An error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// One sentence for people.
    pub error: String,
    /// What exactly was wrong, per row and field (at most [`MAX_DETAILS`]).
    pub details: Vec<FieldError>,
    /// How many details there were in all.
    pub details_total: usize,
}

/// The JSON body of an error.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// One sentence.
    pub error: &'a str,
    /// Per row and field.
    pub details: &'a [FieldError],
    /// How many details in all (more than listed when over the cap).
    pub details_total: usize,
    /// The request id.
    pub request_id: &'a str,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            details: Vec::new(),
            details_total: 0,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error)
    }

    /// 404.
    pub fn not_found(error: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, error)
    }

    /// 503: nothing to serve yet.
    pub fn unavailable(error: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, error)
    }

    /// 500: our fault (the store, a corrupt artifact).
    pub fn internal(error: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, error)
    }

    /// 413, naming the body.
    pub fn too_large(error: impl Into<String>) -> Self {
        Self::field(StatusCode::PAYLOAD_TOO_LARGE, Some("body"), error)
    }

    /// 415, naming the content type.
    pub fn unsupported(error: impl Into<String>) -> Self {
        Self::field(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("content-type"),
            error,
        )
    }

    /// An error with one detail, naming `field` when one is to blame.
    pub fn field(status: StatusCode, field: Option<&str>, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        let error = match field {
            Some(f) if !matches!(f, "body" | "content-type") => format!("{f}: {reason}"),
            _ => reason.clone(),
        };
        let mut e = Self::new(status, error);
        e.details.push(FieldError::new(None, field, reason));
        e.details_total = 1;
        e
    }

    /// 422 with the collected details.
    pub fn invalid(errors: Errors) -> Self {
        let total = errors.total;
        let first = errors
            .list
            .first()
            .map(|d| {
                let at = match (d.row, &d.field) {
                    (Some(r), Some(f)) => format!("row {r}, {f}: "),
                    (None, Some(f)) => format!("{f}: "),
                    (Some(r), None) => format!("row {r}: "),
                    (None, None) => String::new(),
                };
                format!("{at}{}", d.reason)
            })
            .unwrap_or_default();
        let more = if total > 1 {
            format!(" (and {} more)", total - 1)
        } else {
            String::new()
        };
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error: format!("the request does not match the model's inputs: {first}{more}"),
            details: errors.list,
            details_total: total,
        }
    }
}

/// Collects validation details up to [`MAX_DETAILS`], counting the rest.
#[derive(Debug, Default)]
pub struct Errors {
    /// The first details.
    pub list: Vec<FieldError>,
    /// All of them.
    pub total: usize,
}

impl Errors {
    /// Adds one.
    pub fn push(&mut self, row: Option<usize>, field: Option<&str>, reason: impl Into<String>) {
        self.total += 1;
        if self.list.len() < MAX_DETAILS {
            self.list.push(FieldError::new(row, field, reason));
        }
    }

    /// None yet.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}
