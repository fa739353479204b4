//! The routes, one room per protocol: health and metadata, KServe V2 inference, MLflow
//! scoring, feedback.

pub(crate) mod feedback;
pub(crate) mod health;
pub(crate) mod mlflow;
pub(crate) mod v2;
