//! Integration tests of cortex-pool against the real PostgreSQL and Redis that
//! `scripts/services.sh` starts. They never skip: an absent server fails them, naming
//! the URL.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap should fail right there

#[cfg(feature = "metrics")]
mod levels;
mod limiter;
mod object;
#[cfg(feature = "postgres")]
mod postgres;
mod redact;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod redis_cluster;
#[cfg(feature = "postgres")]
mod replicas;
mod services_sh;
mod spans;
#[cfg(all(feature = "tls", feature = "postgres", feature = "redis"))]
mod tls;

use std::sync::atomic::{AtomicUsize, Ordering};

/// `DATABASE_URL`, or the loopback default of `scripts/services.sh`.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://cortex@127.0.0.1:5432/cortex".to_owned())
}

/// `REDIS_URL`, or the loopback default of `scripts/services.sh`.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A name no other test (or test run) uses, for `application_name` / `CLIENT SETNAME`.
pub fn unique_name(what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "cortex-test-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
