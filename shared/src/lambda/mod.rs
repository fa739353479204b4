//! The glue every function uses: Lambda event shapes ([`events`]), stage handlers and how
//! messages reach them ([`stage`]), configuration from the environment ([`config`]) and
//! telemetry ([`telemetry`]).

pub mod config;
pub mod events;
pub mod pipeline;
pub mod process;
pub mod recorder;
pub mod stage;
pub mod telemetry;

pub use events::{
    BatchItemFailure, BatchResponse, EventError, Incoming, S3Object, SqsRecord, classify,
    decode_s3_key, encode_s3_key, s3_objects, sqs_event,
};
