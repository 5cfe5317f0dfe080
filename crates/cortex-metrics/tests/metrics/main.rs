//! Integration tests of cortex-metrics: one binary for the crate. The counting allocator
//! is installed here, once for the whole binary, as a service installs it in `main.rs`.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap should fail right there

use cortex_metrics::CountingAllocator;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator::system();

mod bench;
mod histogram;
#[cfg(feature = "load")]
mod load;
mod memory;
mod registry;
