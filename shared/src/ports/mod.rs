//! The ports and their adapters: object storage ([`store`]: files, memory, S3) and stage
//! queues ([`queue`]: a durable local queue, SQS). The AWS adapters are behind the `s3`
//! and `sqs` features, so a function builds only the SDKs it uses.

#[cfg(any(feature = "s3", feature = "sqs", feature = "eventbridge"))]
pub(crate) mod aws;
pub mod events;
pub mod queue;
pub mod store;
