//! lambdaml's library: everything the seven functions, the CLI and the tests share, in three
//! folders that show the architecture:
//!
//! - [`domain`], which knows nothing of AWS: [`spec`] (the model spec), [`message`] (what
//!   stages send each other), [`dataset`] (reading, validating, profiling raw data),
//!   [`features`] (the fitted feature pipeline), [`model`], `train` (candle training, the
//!   `train` feature), [`metrics`], [`drift`], [`baseline`], [`registry`], [`capture`],
//!   [`evaluation`], [`monitoring`] and [`layout`] (every key of the bucket).
//! - [`ports`] and their adapters: [`store`] (object storage: files, memory, S3 with the
//!   `s3` feature) and [`queue`] (stage queues: a durable local queue, SQS with the `sqs`
//!   feature).
//! - [`lambda`], the glue every function uses: [`stage`] (handler errors, draining queues
//!   locally; the Lambda runtime loop with the `lambda` feature), Lambda event shapes,
//!   [`config`] and [`telemetry`].
//!
//! [`error`] decides, once, which failures are worth a retry.
//!
//! Every module is also reachable at the root (`lambdaml::store`, `lambdaml::spec`, …).

pub mod domain;
pub mod error;
pub mod lambda;
pub mod ports;

#[cfg(feature = "train")]
pub use domain::train;
pub use domain::{
    baseline, batch, capture, compare, dataset, drift, estimate, evaluation, features, layout,
    matrix, message, metrics, model, monitoring, record, registry, run, spec,
};
pub use lambda::{config, pipeline, process, recorder, stage, telemetry};
pub use ports::{events, queue, store};

/// This crate's version, recorded in every manifest.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// The current time, RFC 3339 with seconds, UTC.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
