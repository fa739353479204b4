//! The parts of the `lambdaml` command that tests use too: reading template.yaml, building
//! the functions in-process, creating the stack on an emulator, and `lambdaml local`.

pub mod functions;
pub mod local;
pub mod sigv4;
pub mod stack;
pub mod template;

/// Concurrent batch workers when none are asked for: the machine's cores.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}
