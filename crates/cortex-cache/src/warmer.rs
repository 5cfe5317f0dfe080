use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

/// What one warming run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmReport {
    /// Items attempted.
    pub attempted: u64,
    /// Items warmed.
    pub warmed: u64,
    /// Items whose warming failed (each logged at DEBUG, the run summarized at WARN).
    pub failed: u64,
    /// How long the run took.
    pub elapsed_ms: u64,
}

/// Warm `items` now, at most `concurrency` at a time. A failing item is counted and
/// logged, never fatal: the run goes on with the others.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let report = cortex_cache::warm(1..=10u32, 4, |id| async move {
///     if id == 7 { Err(format!("user {id} is gone")) } else { Ok(()) }
/// })
/// .await;
/// assert_eq!((report.warmed, report.failed), (9, 1));
/// # }
/// ```
pub async fn warm<I, F, Fut, E>(items: I, concurrency: usize, warm_one: F) -> WarmReport
where
    I: IntoIterator,
    F: Fn(I::Item) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let start = Instant::now();
    let (warmed, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    futures_util::stream::iter(items)
        .map(warm_one)
        .buffer_unordered(concurrency.max(1))
        .for_each(|r| {
            match r {
                Ok(()) => warmed.fetch_add(1, Relaxed),
                Err(e) => {
                    tracing::debug!(error = %e, "cache warming of one item failed");
                    failed.fetch_add(1, Relaxed)
                }
            };
            std::future::ready(())
        })
        .await;
    let report = WarmReport {
        attempted: warmed.load(Relaxed) + failed.load(Relaxed),
        warmed: warmed.load(Relaxed),
        failed: failed.load(Relaxed),
        elapsed_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    if report.failed > 0 {
        tracing::warn!(
            failed = report.failed,
            attempted = report.attempted,
            "cache warming finished with failures"
        );
    }
    report
}

/// A periodic warming job; stops when [`stop`](Self::stop) is called or the handle is
/// dropped.
#[derive(Debug)]
pub struct Warmer {
    task: tokio::task::JoinHandle<()>,
    state: Arc<WarmerState>,
}

#[derive(Debug, Default)]
struct WarmerState {
    runs: AtomicU64,
    warmed: AtomicU64,
    failed: AtomicU64,
}

/// Totals of a [`Warmer`] so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmerStats {
    /// Runs finished.
    pub runs: u64,
    /// Items warmed over all runs.
    pub warmed: u64,
    /// Items failed over all runs.
    pub failed: u64,
}

impl Warmer {
    /// Run `job` now and then every `every` plus a random delay of up to `jitter`, so
    /// many processes started together do not warm in lockstep. `job` returns the
    /// report of its run (usually from [`warm`]).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn<F, Fut>(every: Duration, jitter: Duration, job: F) -> Self
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = WarmReport> + Send,
    {
        let state = Arc::new(WarmerState::default());
        let s = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let report = job().await;
                s.runs.fetch_add(1, Relaxed);
                s.warmed.fetch_add(report.warmed, Relaxed);
                s.failed.fetch_add(report.failed, Relaxed);
                let extra = jitter.mul_f64(unit());
                tokio::time::sleep(every + extra).await;
            }
        });
        Self { task, state }
    }

    /// Totals so far.
    pub fn stats(&self) -> WarmerStats {
        WarmerStats {
            runs: self.state.runs.load(Relaxed),
            warmed: self.state.warmed.load(Relaxed),
            failed: self.state.failed.load(Relaxed),
        }
    }

    /// Stop warming (a run in progress is cancelled).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Warmer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A number in `[0, 1)` from [`random_u64`](cortex_support::backoff::random_u64): jitter
/// needs spread across processes, not cryptography.
pub(crate) fn unit() -> f64 {
    (cortex_support::backoff::random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_is_in_range_and_spread() {
        let v: Vec<f64> = (0..1000).map(|_| unit()).collect();
        assert!(v.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(v.iter().any(|x| *x < 0.1) && v.iter().any(|x| *x > 0.9));
    }
}
