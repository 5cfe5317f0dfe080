//! One test binary for cortex-tasks.
#![allow(clippy::unwrap_used)]

mod capture;
#[cfg(feature = "durable")]
mod durable;
#[cfg(feature = "durable")]
mod durable_safety;
mod queue;
mod spans;
