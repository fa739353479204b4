//! The end-to-end suites in one test binary (one link of the whole dependency set instead
//! of three): the pipeline on the embedded default and the emulator, the score router, and
//! the monitor with retraining.

mod batch;
mod concept;
mod estimate;
mod ingest_parts;
mod late;
mod monitor;
mod monitor_parts;
mod pipeline;
mod rollout;
mod score;
