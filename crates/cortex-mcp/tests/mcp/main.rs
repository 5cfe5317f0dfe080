//! cortex-mcp integration tests: one binary.
#![allow(clippy::unwrap_used)]

mod faults;
mod interop;
mod secrets;
mod spans;
#[cfg(feature = "test-server-tls")]
mod tls;
