//! The one integration test binary of cortex-batch.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap should fail right there

mod batch;
mod spans;
