//! Interop tests against the reference server.
