//! The CLI's suites in one test binary (one link of the whole dependency set instead of
//! three): least privilege over the whole loop (`access`), `captures export` on real
//! captures (`captures`), `lambdaml local`/`stack`/`serve`
//! against the emulator (`local`), and template.yaml as a security reviewer reads it
//! (`template`).

mod access;
mod backtest;
mod batch;
mod bin;
mod captures;
mod dashboard;
mod ingest;
mod local;
mod monitor_parts;
mod template;
