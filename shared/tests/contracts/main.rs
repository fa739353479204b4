//! The shared crate's contract suites in one test binary (each binary links the AWS SDKs,
//! arrow and candle, so one link instead of three): the object store, the queue and the
//! registry under contention, and the registry-event sinks, each on the local adapters and
//! on the emulator.

mod common;
mod events;
mod queue;
mod registry;
mod store;
