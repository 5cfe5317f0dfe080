//! Integration tests of cortex-metrics: one binary for the crate. The counting allocator
//! is installed here, once for the whole binary, as a service installs it in `main.rs`.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap should fail right there

use cortex_profile::CountingAllocator;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator::system();

/// Tests that keep every core busy for a while (tens of thousands of inserts, eight
/// writer threads) hold this shared; a test that compares timings holds it alone, so it
/// does not measure them.
static CPU_HEAVY: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

mod caps;
mod escaping;
mod exposition;
mod families;
mod files;
mod histogram;
#[cfg(feature = "recorder")]
mod recorder;
mod registry;
mod series_cost;
