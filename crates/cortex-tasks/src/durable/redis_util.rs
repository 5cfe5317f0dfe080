//! Plumbing shared by the queue and its workers: keys, ids, clocks, bounded calls.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cortex_support::backoff::Backoff;
use cortex_support::warn::WarnLimiter;

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

    /// The record key of a stream entry's `id` field as read, well-formed or not: a
    /// malformed one still names a key under the prefix, in the queue's slot (Redis
    /// hashes the first `{…}`, the queue's tag, whatever follows).
    pub(crate) fn task_raw(&self, raw_id: &str) -> String {
        format!("{}{raw_id}", self.task_prefix)
    }

    pub(crate) fn stream(&self, p: Priority) -> &str {
        &self.streams[p.index()]
    }
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

/// Logs that `what` failed and will be retried, at most once per `limiter` period, so a
/// Redis outage does not flood the logs.
pub(crate) fn warn_retrying(limiter: &WarnLimiter, what: &str, e: &Error) {
    limiter.note(|suppressed| {
        tracing::warn!(error = %cortex_support::error_chain(e), suppressed, "durable tasks: {what} failed; retrying");
    });
}

/// `at + d`, or a day later than `at` if that cannot be represented (a deadline of
/// `Duration::MAX` means "no deadline" to a caller, not a panic).
pub(crate) fn later(at: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    at.checked_add(d)
        .unwrap_or_else(|| at + Duration::from_secs(86_400 * 365 * 30))
}

/// The wait before retrying a Redis call after `failures` failures in a row (1 for the
/// first): 50 ms doubling up to 2 s, jittered so workers that lost Redis together do
/// not all come back at the same instant.
pub(crate) fn redis_backoff(failures: u32) -> Duration {
    const BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    BACKOFF.delay(failures.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_retries_back_off_with_jitter_up_to_two_seconds() {
        for failures in 1..40 {
            let nominal = Duration::from_millis(50)
                .saturating_mul(1 << (failures - 1).min(10))
                .min(Duration::from_secs(2));
            let d = redis_backoff(failures);
            assert!(d >= nominal / 2 && d <= nominal, "{failures}: {d:?}");
        }
        assert!(redis_backoff(0) <= Duration::from_millis(50));
    }

    #[test]
    fn deadlines_past_the_clock_are_far_away_not_a_panic() {
        let now = tokio::time::Instant::now();
        assert!(later(now, Duration::MAX) > now + Duration::from_secs(86_400 * 365));
        assert_eq!(
            later(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }

    #[test]
    fn keys_live_under_the_prefix() {
        let k = Keys::new(super::super::key_prefix("q").unwrap());
        assert_eq!(
            k.task(TaskId::from_u64(255)),
            "cortex:tasks:{q}:task:00000000000000ff"
        );
        assert_eq!(k.stream(Priority::High), "cortex:tasks:{q}:stream:high");
        assert_eq!(k.dead, "cortex:tasks:{q}:dead");
        assert_eq!(k.stats, "cortex:tasks:{q}:stats");
        assert_eq!(k.workers, "cortex:tasks:{q}:workers");
        assert_eq!(ms(Duration::MAX), u64::MAX);
    }
}
