use std::time::Duration;

use crate::TaskId;

/// A boxed error, as returned by a task.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in cortex-tasks.
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
    /// A task id that is not 1 to 16 hex digits.
    #[error("invalid task id {0:?}: expected 1 to 16 hex digits")]
    InvalidTaskId(String),
    /// No task with this id is known (never was, or its record expired).
    #[error("unknown task {0}")]
    UnknownTask(TaskId),
    /// The task already reached a final status and cannot be cancelled.
    #[error("task {0} already finished")]
    AlreadyFinished(TaskId),
    /// The task ended with an error after its last attempt.
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
    #[error("payload: {0}")]
    Payload(#[from] serde_json::Error),
    /// Redis failed (durable backend).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A durable enqueue was sent but no reply came within `op_timeout`, or the
    /// connection dropped: Redis may have enqueued the tasks (all of them or none), or
    /// may still do so. `ids` are the ids they have if so;
    /// [`DurableQueue::status`](crate::durable::DurableQueue::status) tells.
    #[error("enqueue of {} task(s) not confirmed, they may be enqueued: {source}", ids.len())]
    EnqueueUnconfirmed {
        /// The ids of the tasks, enqueued or not.
        ids: Vec<TaskId>,
        /// Why no reply came.
        source: redis::RedisError,
    },
    /// No Redis connection could be had (durable backend).
    #[error(transparent)]
    Pool(#[from] cortex_pool::Error),
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

impl From<cortex_support::ConfigError> for Error {
    fn from(e: cortex_support::ConfigError) -> Self {
        Error::InvalidConfig {
            key: e.key,
            value: e.value,
            reason: e.reason,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
