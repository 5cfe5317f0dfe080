//! Plumbing shared by the queue and its workers: keys, ids, clocks, bounded calls.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::RedisResult;

use crate::{Error, Priority, Result, TaskId};

/// Key names of one queue.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) prefix: String,
    pub(crate) task_prefix: String,
    pub(crate) streams: [String; 3],
    pub(crate) dead: String,
    pub(crate) stats: String,
    pub(crate) workers: String,
}

impl Keys {
    /// The keys under `prefix`, as [`key_prefix`](super::key_prefix) returns it.
    pub(crate) fn new(prefix: String) -> Self {
        Self {
            task_prefix: format!("{prefix}task:"),
            streams: Priority::ALL.map(|p| format!("{prefix}stream:{}", p.as_str())),
            dead: format!("{prefix}dead"),
            stats: format!("{prefix}stats"),
            workers: format!("{prefix}workers"),
            prefix,
        }
    }

    pub(crate) fn task(&self, id: TaskId) -> String {
        format!("{}{id}", self.task_prefix)
    }

    pub(crate) fn stream(&self, p: Priority) -> &str {
        &self.streams[p.index()]
    }
}

/// A random id: ids are drawn by many processes at once, so they must not be sequential.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS once per thread and stepped per `new`, so mixing
    // in a counter, the clock and the pid keeps ids apart across threads and processes.
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

pub(crate) fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn timeout_error(what: &'static str, after: Duration) -> Error {
    Error::Redis(redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} timed out after {after:?}"),
    )))
}

/// Runs one Redis call, bounded: a stalled server must never hang a caller.
pub(crate) async fn bounded<T>(
    after: Duration,
    what: &'static str,
    fut: impl Future<Output = RedisResult<T>>,
) -> Result<T> {
    match tokio::time::timeout(after, fut).await {
        Ok(r) => r.map_err(Error::from),
        Err(_) => Err(timeout_error(what, after)),
    }
}

/// `true` when the error says the consumer group (or its stream) is gone, e.g. after a
/// purge or a Redis restart without persistence.
pub(crate) fn is_nogroup(e: &Error) -> bool {
    // Inside a script the code may be wrapped, so look at the text too.
    matches!(e, Error::Redis(r) if r.code() == Some("NOGROUP") || r.to_string().contains("NOGROUP"))
}

/// Logs a failure at most once per period, so a Redis outage does not flood the logs.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    last: Mutex<Option<(Instant, u64)>>,
    period: Duration,
}

impl LogLimiter {
    pub(crate) fn new(period: Duration) -> Self {
        Self {
            last: Mutex::new(None),
            period,
        }
    }

    pub(crate) fn warn(&self, what: &str, e: &Error) {
        self.note(|suppressed| {
            tracing::warn!(error = %e, suppressed, "durable tasks: {what} failed; retrying");
        });
    }

    /// Calls `log` with the number of calls it skipped, unless it ran within the period.
    pub(crate) fn note(&self, log: impl FnOnce(u64)) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *last {
            Some((at, suppressed)) if at.elapsed() < self.period => *suppressed += 1,
            slot => {
                log(slot.map(|(_, s)| s).unwrap_or(0));
                *slot = Some((Instant::now(), 0));
            }
        }
    }
}

/// `at + d`, or a day later than `at` if that cannot be represented (a deadline of
/// `Duration::MAX` means "no deadline" to a caller, not a panic).
pub(crate) fn later(at: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    at.checked_add(d)
        .unwrap_or_else(|| at + Duration::from_secs(86_400 * 365 * 30))
}

/// Exponential backoff for retrying Redis calls: 50 ms doubling up to 2 s.
pub(crate) fn redis_backoff(failures: u32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(2))
}
