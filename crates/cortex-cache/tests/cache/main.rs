//! The one integration test binary of cortex-cache, against the real Redis that
//! `scripts/services.sh` starts. Tests fail loudly, naming the URL, when it is absent.
//! The Redis tests are built with the `redis` feature (`--all-features`); the cluster
//! tests need the local Redis Cluster of `scripts/services.sh cluster` too
//! (`REDIS_CLUSTER_URLS`).

#![allow(clippy::unwrap_used)] // a test that cannot unwrap should fail right there

#[cfg(feature = "redis")]
mod cached;
mod cached_calls;
#[cfg(feature = "redis")]
mod cluster;
#[cfg(feature = "redis")]
mod coalesce;
mod gated;
mod memory;
mod memory_bytes;
mod metrics;
#[cfg(feature = "redis")]
mod shared_store;
mod spans;
#[cfg(feature = "redis")]
mod two_tier;
#[cfg(feature = "redis")]
mod warmer;
