//! One test binary for cortex-tasks.
#![allow(clippy::unwrap_used)]

mod durable;
mod durable_safety;
mod queue;
