//! The vocabulary shared by every queue of this crate, in process and durable.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Identifies one task for its whole life.
///
/// In process, ids are sequential per queue (1, 2, 3, ...): the record index is a
/// window indexed by `id - base`, so a lookup is arithmetic. They are therefore
/// guessable, start over in every process and repeat across queues: fine for naming a
/// task inside one queue, not as a secret or a key shared between processes. The
/// durable backend draws its ids at random (and Redis checks them unused), so that
/// many processes never collide. Shown as 16 hex digits, and parsed back the same way
/// (an admin route takes it from a path).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct TaskId(u64);

impl TaskId {
    /// An id from its numeric value.
    pub const fn from_u64(value: u64) -> Self {
        Self(value)
    }

    /// The numeric value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({self})")
    }
}

impl FromStr for TaskId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 16 {
            return Err(Error::InvalidTaskId(s.to_owned()));
        }
        u64::from_str_radix(s, 16)
            .map(TaskId)
            .map_err(|_| Error::InvalidTaskId(s.to_owned()))
    }
}

impl From<TaskId> for String {
    fn from(id: TaskId) -> Self {
        id.to_string()
    }
}

impl TryFrom<String> for TaskId {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// Where a task is in its life.
///
/// `Queued`, `Running` and `Retrying` are live; the other three are final and never
/// change again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskStatus {
    /// Accepted, waiting for a worker (what other queues call "queued", "pending" and
    /// "waiting").
    Queued,
    /// A worker is running it.
    Running,
    /// An attempt failed and the task waits out its backoff before the next one.
    Retrying,
    /// Finished with a value.
    Completed,
    /// Finished with an error, a panic or a timeout, after its last attempt.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl TaskStatus {
    /// `true` once the task can no longer change.
    pub const fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// The lower-case name used in JSON and in metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A priority level: three named levels.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Served first.
    High,
    /// The default.
    #[default]
    Normal,
    /// Served last, but never starved when weighted fairness is on.
    Low,
}

impl Priority {
    /// Every level, highest first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }

    /// Index into per-level arrays, highest first.
    pub(crate) const fn index(self) -> usize {
        match self {
            Self::High => 0,
            Self::Normal => 1,
            Self::Low => 2,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = Error;

    /// Parses `high`, `normal` or `low` (any case); anything else is
    /// [`Error::UnknownPriority`], which lists the valid levels.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| Error::UnknownPriority(s.to_owned()))
    }
}

/// A snapshot of one task: what the admin routes show.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskInfo {
    /// The task.
    pub id: TaskId,
    /// The name given at enqueue (a handler name for the durable backend).
    pub name: String,
    /// Where it is now.
    pub status: TaskStatus,
    /// Its level, for priority queues.
    pub priority: Option<Priority>,
    /// When it was accepted.
    pub queued_at: SystemTime,
    /// When its latest attempt started.
    pub started_at: Option<SystemTime>,
    /// When it reached a final status.
    pub finished_at: Option<SystemTime>,
    /// Attempts started so far (1 for a task that ran once).
    pub attempts: u32,
    /// The error of the last failed attempt: the error's text, `panicked: <message>`,
    /// or `timed out after ..`.
    pub error: Option<String>,
    /// The result, when it was recorded as JSON (durable tasks always; in-process tasks
    /// enqueued with a serializable output through `enqueue_recorded`).
    pub result: Option<serde_json::Value>,
}

impl TaskInfo {
    /// A freshly queued task.
    pub fn queued(id: TaskId, name: impl Into<String>, priority: Option<Priority>) -> Self {
        Self {
            id,
            name: name.into(),
            status: TaskStatus::Queued,
            priority,
            queued_at: SystemTime::now(),
            started_at: None,
            finished_at: None,
            attempts: 0,
            error: None,
            result: None,
        }
    }
}

/// Counters of one queue (or of one priority level).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QueueStats {
    /// Tasks waiting for a worker now.
    pub queued: u64,
    /// Tasks running now.
    pub running: u64,
    /// Workers (or concurrency slots) configured.
    pub workers: u64,
    /// Tasks accepted since start.
    pub enqueued: u64,
    /// Tasks that completed.
    pub completed: u64,
    /// Tasks that failed after their last attempt (panics and timeouts included).
    pub failed: u64,
    /// Tasks cancelled.
    pub cancelled: u64,
    /// Attempts retried.
    pub retried: u64,
}

impl QueueStats {
    /// Tasks that reached a final status.
    pub fn finished(&self) -> u64 {
        self.completed + self.failed + self.cancelled
    }
}
