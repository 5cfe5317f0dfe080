//! One test binary for cortex-tasks.
#![allow(clippy::unwrap_used)]

#[cfg(feature = "durable")]
mod durable;
#[cfg(feature = "durable")]
mod durable_backoff;
#[cfg(feature = "durable")]
mod durable_cluster;
#[cfg(feature = "durable")]
mod durable_keys;
#[cfg(feature = "durable")]
mod durable_safety;
mod queue;
mod spans;
