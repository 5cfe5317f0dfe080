//! One test binary for cortex-tasks.
#![allow(clippy::unwrap_used)]

mod durable;
mod queue;
