//! lambdaml's library: everything the seven functions, the CLI and the tests share.
//!
//! - The domain, which knows nothing of AWS: [`spec`] (the model spec), [`message`] (what
//!   stages send each other), [`dataset`] (reading, validating, profiling raw data),
//!   [`features`] (the fitted feature pipeline), [`matrix`] (design matrices on disk).
//! - The ports and their adapters: [`store`] (object storage: files, memory, S3) and
//!   [`queue`] (stage queues: a durable local queue, SQS).
//! - The glue every function uses: [`stage`] (handler errors, draining queues locally),
//!   [`lambda`] (Lambda event shapes: direct, S3, SQS, batch failures) and [`telemetry`].

mod aws;
pub mod baseline;
pub mod capture;
pub mod config;
pub mod dataset;
pub mod drift;
pub mod error;
pub mod evaluation;
pub mod features;
pub mod lambda;
pub mod layout;
pub mod matrix;
pub mod message;
pub mod metrics;
pub mod model;
pub mod monitoring;
pub mod queue;
pub mod registry;
pub mod run;
pub mod spec;
pub mod stage;
pub mod store;
pub mod telemetry;
pub mod train;

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
