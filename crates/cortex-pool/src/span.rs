//! The `pool.acquire` debug span shared by every pool, so a slow request shows how long
//! it waited for which pool.

use std::future::Future;
use std::time::Instant;

use tracing::Instrument;

use crate::{Error, Result};

/// Run the acquire `fut` inside a `pool.acquire` span naming `pool`, and record on it
/// `wait_us` (microseconds from the call to the answer) and `outcome` (`ok`,
/// `timeout`, `closed` or `error`). With debug disabled it costs a level check: no
/// clock is read.
pub(crate) async fn acquire<T>(
    pool: &'static str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let span = tracing::debug_span!(
        "pool.acquire",
        pool,
        wait_us = tracing::field::Empty,
        outcome = tracing::field::Empty
    );
    if span.is_disabled() {
        return fut.await;
    }
    let start = Instant::now();
    let got = fut.instrument(span.clone()).await;
    let waited = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    span.record("wait_us", waited);
    span.record(
        "outcome",
        match &got {
            Ok(_) => "ok",
            Err(Error::Timeout { .. } | Error::Saturated { .. }) => "timeout",
            Err(Error::Closed) => "closed",
            Err(_) => "error",
        },
    );
    got
}
