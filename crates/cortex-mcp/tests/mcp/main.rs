//! cortex-mcp integration tests: one binary.
#![allow(clippy::unwrap_used)]

mod capture;
mod faults;
mod interop;
mod secrets;
mod spans;
#[cfg(feature = "test-server-tls")]
mod tls;
