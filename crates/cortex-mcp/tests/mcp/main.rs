//! cortex-mcp integration tests: one binary.

mod faults;
mod interop;
