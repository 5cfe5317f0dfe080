//! The one integration test binary of cortex-cache, against the real Redis that
//! `scripts/services.sh` starts. Tests fail loudly, naming the URL, when it is absent.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap should fail right there

mod cached;
mod cached_calls;
mod gated;
mod memory;
mod memory_bytes;
mod shared_store;
mod two_tier;
mod warmer;
