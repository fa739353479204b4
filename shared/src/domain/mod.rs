//! The domain: what lambdaml knows about data, models and monitoring. Nothing here imports
//! an AWS or Lambda type; code that needs storage or a queue takes the ports
//! ([`crate::ports`]) as trait objects.

pub mod baseline;
pub mod batch;
pub mod capture;
pub mod compare;
pub mod dataset;
pub mod drift;
pub mod estimate;
pub mod evaluation;
pub mod features;
pub mod layout;
pub mod matrix;
pub mod message;
pub mod metrics;
pub mod model;
pub mod monitoring;
pub mod record;
pub mod registry;
pub mod run;
pub mod spec;
#[cfg(feature = "train")]
pub mod train;
