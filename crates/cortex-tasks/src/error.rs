use std::time::Duration;

use crate::TaskId;

/// A boxed error, as returned by a task.
pub use cortex_support::BoxError;

/// Everything that can go wrong in cortex-tasks.
///
/// The `Display` text says what failed; the underlying error (Redis, JSON) is its
/// [`source`](std::error::Error::source), not repeated in the text.
/// [`is_retryable`](Self::is_retryable) tells whether the same call may succeed later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `try_enqueue` found the queue at its bound.
    #[error("queue is full ({capacity} tasks waiting)")]
    QueueFull {
        /// The bound that was reached.
        capacity: usize,
    },
    /// `enqueue` waited for room for its whole timeout.
    #[error("no room in the queue within {waited:?}")]
    EnqueueTimeout {
        /// How long it waited.
        waited: Duration,
    },
    /// The queue is shutting down or was shut down; nothing new is accepted.
    #[error("the queue is shut down")]
    ShutDown,
    /// A priority name that is not one of `high`, `normal`, `low`.
    #[error("unknown priority {0:?}; valid priorities are high, normal, low")]
    UnknownPriority(String),
    /// A `traceparent` that is not `00-<32 hex>-<16 hex>-<2 hex>` with non-zero ids.
    #[error(
        "invalid traceparent {0:?}: expected 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>"
    )]
    InvalidTraceParent(String),
    /// A task id that is not 1 to 16 hex digits.
    #[error("invalid task id {0:?}: expected 1 to 16 hex digits")]
    InvalidTaskId(String),
    /// No task with this id is known (never was, or its record expired).
    #[error("unknown task {0}")]
    UnknownTask(TaskId),
    /// The task already reached a final status and cannot be cancelled.
    #[error("task {0} already finished")]
    AlreadyFinished(TaskId),
    /// The task ended with an error after its last attempt; the text is the task's
    /// own error message.
    #[error("task failed: {0}")]
    Failed(String),
    /// The task panicked; the message is the panic payload.
    #[error("task panicked: {0}")]
    Panicked(String),
    /// An attempt ran past its timeout.
    #[error("task timed out after {0:?}")]
    TimedOut(Duration),
    /// The task was cancelled.
    #[error("task cancelled")]
    Cancelled,
    /// The durable backend has no handler registered under this name.
    #[error("no handler registered for {0:?}")]
    UnknownHandler(String),
    /// A payload or result could not be encoded or decoded.
    #[error("task payload could not be encoded or decoded")]
    Payload(#[from] serde_json::Error),
    /// Redis failed or did not answer within `op_timeout` (durable backend). Nothing
    /// this crate sends is half-applied: a refused or failed call wrote nothing (see
    /// [`Error::EnqueueUnconfirmed`] for the one call whose outcome can be unknown).
    #[cfg(feature = "durable")]
    #[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
    #[error("redis call failed")]
    Redis(#[from] redis::RedisError),
    /// A durable enqueue was sent but no reply came within `op_timeout`, or the
    /// connection dropped: Redis may have enqueued the tasks (all of them or none), or
    /// may still do so. `ids` are the ids they have if so;
    /// [`DurableQueue::status`](crate::durable::DurableQueue::status) tells.
    ///
    /// Not [retryable](Error::is_retryable): enqueueing again draws new ids, so the
    /// tasks may then run twice. Look the ids up instead once Redis answers (a record
    /// means all of them were enqueued; none means none was, for good once
    /// `op_timeout` has passed since).
    #[cfg(feature = "durable")]
    #[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
    #[error("enqueue of {} task(s) not confirmed; they may be enqueued", ids.len())]
    EnqueueUnconfirmed {
        /// The ids of the tasks, enqueued or not.
        ids: Vec<TaskId>,
        /// Why no reply came.
        #[source]
        source: redis::RedisError,
    },
    /// The durable queue refused to start: tasks accepted by a release before one-slot
    /// queues, or its dead letters, are still stored under the old key prefix
    /// `cortex:tasks:<name>:` (no hash tag), where this release would never read them.
    /// Drain them with the previous release's workers, keep or drop its dead letters,
    /// then delete the old streams (the crate README, "Upgrading", says how).
    ///
    /// Not [retryable](Error::is_retryable): it stays so until someone drains the old keys.
    #[cfg(feature = "durable")]
    #[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
    #[error(
        "durable queue {queue:?}: {tasks} unfinished task(s) and {dead_letters} dead letter(s) \
         are stored under the previous key layout {old_prefix:?}; drain them with the previous \
         release's workers, read or drop its dead letters, then UNLINK {old_prefix}stream:high, \
         {old_prefix}stream:normal, {old_prefix}stream:low and {old_prefix}dead (see the \
         cortex-tasks README, Upgrading)"
    )]
    LegacyKeys {
        /// The queue name.
        queue: String,
        /// The old prefix the keys are under, `cortex:tasks:<name>:`.
        old_prefix: String,
        /// Stream entries (unfinished tasks) under the old prefix.
        tasks: u64,
        /// Dead letters under the old prefix.
        dead_letters: u64,
    },
    /// cortex-pool could not set up the Redis connection (durable backend). A bad URL
    /// is reported as [`Error::InvalidConfig`] instead.
    #[cfg(feature = "durable")]
    #[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
    #[error("redis connection setup failed")]
    Pool(#[source] cortex_pool::Error),
    /// A configuration value was rejected.
    #[error("invalid value {value:?} for {key}: {reason}")]
    InvalidConfig {
        /// The setting or environment variable.
        key: &'static str,
        /// The value as given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
}

impl Error {
    /// `true` when the same call may succeed if tried again later: the queue was full
    /// or had no room in time, an attempt timed out, or Redis was unreachable, dropped
    /// the connection, timed out or said it is busy, loading or out of memory.
    ///
    /// `false` for bad input or config, unknown or finished tasks, a shut-down queue,
    /// a task's own failure or panic, and [`Error::EnqueueUnconfirmed`], whose call
    /// may have taken effect (see there: repeating it may enqueue the tasks twice; use
    /// [`is_indeterminate`](Self::is_indeterminate) to spot it).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::QueueFull { .. } | Error::EnqueueTimeout { .. } | Error::TimedOut(_) => true,
            #[cfg(feature = "durable")]
            Error::Redis(e) => redis_retryable(e),
            #[cfg(feature = "durable")]
            Error::Pool(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// `true` when the call was sent and its outcome is unknown
    /// ([`Error::EnqueueUnconfirmed`]): it may or may not have taken effect.
    pub fn is_indeterminate(&self) -> bool {
        #[cfg(feature = "durable")]
        if matches!(self, Error::EnqueueUnconfirmed { .. }) {
            return true;
        }
        false
    }

    /// A stable, machine-readable name of this error's kind (`queue_full`,
    /// `unknown_task`, ...), as the [`admin`](crate::admin) routes answer it.
    pub fn code(&self) -> &'static str {
        match self {
            Error::QueueFull { .. } => "queue_full",
            Error::EnqueueTimeout { .. } => "enqueue_timeout",
            Error::ShutDown => "shut_down",
            Error::UnknownPriority(_) => "unknown_priority",
            Error::InvalidTaskId(_) => "invalid_task_id",
            Error::InvalidTraceParent(_) => "invalid_traceparent",
            Error::UnknownTask(_) => "unknown_task",
            Error::AlreadyFinished(_) => "already_finished",
            Error::Failed(_) => "failed",
            Error::Panicked(_) => "panicked",
            Error::TimedOut(_) => "timed_out",
            Error::Cancelled => "cancelled",
            Error::UnknownHandler(_) => "unknown_handler",
            Error::Payload(_) => "payload",
            #[cfg(feature = "durable")]
            Error::Redis(_) | Error::Pool(_) => "unavailable",
            #[cfg(feature = "durable")]
            Error::EnqueueUnconfirmed { .. } => "enqueue_unconfirmed",
            #[cfg(feature = "durable")]
            Error::LegacyKeys { .. } => "legacy_keys",
            Error::InvalidConfig { .. } => "invalid_config",
        }
    }
}

/// Connection loss, timeouts and a server that says "later" (busy, loading, out of
/// memory, fail-over in progress) pass; a refused command does not.
#[cfg(feature = "durable")]
fn redis_retryable(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || matches!(e.retry_method(), redis::RetryMethod::WaitAndRetry)
        || matches!(
            e.code(),
            Some("BUSY" | "LOADING" | "OOM" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN")
        )
}

/// So `TraceParent::parse(..)?` works in code returning this crate's errors.
impl From<cortex_support::trace::InvalidTraceParent> for Error {
    fn from(e: cortex_support::trace::InvalidTraceParent) -> Self {
        Error::InvalidTraceParent(e.0)
    }
}

impl From<cortex_support::ConfigError> for Error {
    fn from(e: cortex_support::ConfigError) -> Self {
        Error::InvalidConfig {
            key: e.key,
            value: e.value,
            reason: e.reason,
        }
    }
}

#[cfg(feature = "durable")]
impl From<cortex_pool::Error> for Error {
    /// A bad setting stays [`Error::InvalidConfig`] (naming the variable, the URL
    /// redacted); anything else is [`Error::Pool`].
    fn from(e: cortex_pool::Error) -> Self {
        match e {
            cortex_pool::Error::InvalidConfig { key, value, reason } => {
                Error::InvalidConfig { key, value, reason }
            }
            e => Error::Pool(e),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_bad_traceparent_becomes_this_crates_error_naming_it() {
        fn parse(v: &str) -> Result<crate::TraceParent> {
            Ok(crate::TraceParent::parse(v)?)
        }
        let e = parse("00-zz").unwrap_err();
        assert!(
            matches!(&e, Error::InvalidTraceParent(v) if v == "00-zz"),
            "{e:?}"
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn retryable_only_where_a_later_call_can_succeed() {
        assert!(Error::QueueFull { capacity: 1 }.is_retryable());
        assert!(
            Error::EnqueueTimeout {
                waited: Duration::ZERO
            }
            .is_retryable()
        );
        assert!(Error::TimedOut(Duration::from_secs(1)).is_retryable());
        for e in [
            Error::ShutDown,
            Error::UnknownTask(TaskId::from_u64(1)),
            Error::AlreadyFinished(TaskId::from_u64(1)),
            Error::InvalidTaskId("x".into()),
            Error::Failed("no".into()),
            Error::Cancelled,
            Error::from(cortex_support::ConfigError::new("K", "v", "bad")),
        ] {
            assert!(!e.is_retryable(), "{e:?}");
            assert!(!e.is_indeterminate(), "{e:?}");
        }
    }

    #[test]
    fn display_leaves_the_source_to_source() {
        let json = serde_json::from_str::<u32>("x").unwrap_err();
        let text = json.to_string();
        let e = Error::from(json);
        assert!(!e.to_string().contains(&text), "{e}");
        assert!(e.source().is_some());
        assert_eq!(e.code(), "payload");
        assert_eq!(
            cortex_support::error_chain(&e),
            format!("task payload could not be encoded or decoded: {text}")
        );
    }

    #[cfg(feature = "durable")]
    #[test]
    fn redis_errors_by_kind() {
        let timeout =
            redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "slow"));
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let e = Error::Redis(timeout);
        assert!(e.is_retryable());
        assert_eq!(e.to_string(), "redis call failed");
        assert!(e.source().unwrap().to_string().contains("slow"));
        assert!(Error::Redis(refused).is_retryable());
        let wrong_type = redis::RedisError::from((redis::ErrorKind::Client, "bad reply"));
        assert!(!Error::Redis(wrong_type).is_retryable());

        let unconfirmed = Error::EnqueueUnconfirmed {
            ids: vec![TaskId::from_u64(7)],
            source: redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)),
        };
        assert!(!unconfirmed.is_retryable());
        assert!(unconfirmed.is_indeterminate());
        assert_eq!(
            unconfirmed.to_string(),
            "enqueue of 1 task(s) not confirmed; they may be enqueued"
        );

        let bad_url = cortex_pool::RedisConfig {
            url: "nope://x".into(),
            ..cortex_pool::RedisConfig::default()
        }
        .client()
        .map_err(Error::from)
        .unwrap_err();
        assert!(
            matches!(
                bad_url,
                Error::InvalidConfig {
                    key: "REDIS_URL",
                    ..
                }
            ),
            "{bad_url:?}"
        );
    }
}
