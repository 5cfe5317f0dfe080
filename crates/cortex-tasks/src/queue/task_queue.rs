//! [`TaskQueue`]: a bounded queue and a fixed set of workers.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cortex_support::{EnvSource, EnvVar, FromEnv};
use serde::{Deserialize, Serialize};

use super::{Limits, SIZE_FIELDS, Shared, TaskFnFuture, task_fn};
use crate::admin::TaskAdmin;
use crate::builder::TaskBuilder;
use crate::engine::{DrainReport, EngineConfig, Policy, TaskHandle};
use crate::{BoxError, Error, QueueStats, Result, TaskId, TaskInfo};

/// Settings of a [`TaskQueue`]. Defaults: 10 workers, 1000 waiting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TaskQueueConfig {
    /// Names the queue: the `queue` label of its metrics (`queue="<name>"`). Default `tasks`.
    pub name: String,
    /// Tasks run at once, 1 to [`MAX_CONCURRENCY`](crate::MAX_CONCURRENCY). Default 10.
    pub max_workers: usize,
    /// Tasks waiting at most; beyond it `enqueue` waits and `try_enqueue` fails.
    /// Default 1000.
    pub max_queue_size: usize,
    /// Timeouts, retention and metrics.
    #[serde(flatten)]
    pub limits: Limits,
}

impl Default for TaskQueueConfig {
    fn default() -> Self {
        Self {
            name: "tasks".into(),
            max_workers: 10,
            max_queue_size: 1000,
            limits: Limits::default(),
        }
    }
}

impl FromEnv for TaskQueueConfig {
    type Error = Error;

    const VARS: &'static [EnvVar] = crate::vars::TASK_QUEUE;

    fn from_env_source(env: &EnvSource<'_>) -> Result<Self> {
        let mut c = Self::default();
        if let Some(v) = env.parse("TASKS_MAX_WORKERS")? {
            c.max_workers = v;
        }
        if let Some(v) = env.parse("TASKS_MAX_QUEUE_SIZE")? {
            c.max_queue_size = v;
        }
        c.limits.read(env)?;
        c.engine()
            .map_err(|e| crate::vars::name_variable(e, env, &SIZE_FIELDS))?;
        Ok(c)
    }
}

impl TaskQueueConfig {
    /// Defaults overridden by `TASKS_MAX_WORKERS`, `TASKS_MAX_QUEUE_SIZE`,
    /// `TASKS_ENQUEUE_TIMEOUT`, `TASKS_TASK_TIMEOUT`, `TASKS_RETENTION` (durations as
    /// `30`, `500ms`, `2m`) and `TASKS_MAX_RECORDS` ([`FromEnv::VARS`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable and its value.
    pub fn from_env() -> Result<Self> {
        <Self as FromEnv>::from_env()
    }

    fn engine(&self) -> Result<EngineConfig> {
        self.limits.engine(
            &self.name,
            self.max_workers,
            self.max_queue_size,
            1,
            Policy::Strict,
        )
    }
}

/// A bounded queue served by a fixed set of workers.
///
/// `enqueue` waits for room (bounded), `try_enqueue` fails with [`Error::QueueFull`];
/// panics are caught and recorded as failures; every task has a status record that
/// expires after it finishes. Cloning is cheap and shares the queue; when the last clone
/// drops, the workers finish what was accepted and exit.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), cortex_tasks::Error> {
/// use std::time::Duration;
/// use cortex_tasks::{TaskQueue, TaskQueueConfig, TaskStatus};
///
/// let queue = TaskQueue::start(TaskQueueConfig::default())?;
/// let handle = queue.enqueue("add", async { Ok::<_, std::io::Error>(2 + 2) }).await?;
/// let id = handle.id();
/// assert_eq!(handle.await?, 4);
/// assert_eq!(queue.get(id).unwrap().status, TaskStatus::Completed);
///
/// let report = queue.shutdown(Duration::from_secs(1)).await;
/// assert!(report.is_complete());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TaskQueue {
    shared: Shared,
}

impl TaskQueue {
    /// Starts the workers on the current Tokio runtime.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero size or a bad name, or when no runtime runs.
    pub fn start(config: TaskQueueConfig) -> Result<Self> {
        Self::start_in(config, None)
    }

    /// As [`start`](Self::start), recording its `tasks.*` series (labeled `queue="<name>"`) into `metrics` instead of
    /// [`cortex_metrics::global()`].
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn with_metrics(
        config: TaskQueueConfig,
        metrics: &cortex_metrics::Metrics,
    ) -> Result<Self> {
        Self::start_in(config, Some(metrics))
    }

    fn start_in(
        config: TaskQueueConfig,
        metrics: Option<&cortex_metrics::Metrics>,
    ) -> Result<Self> {
        Ok(Self {
            shared: Shared::start(config.engine()?, &config.limits, metrics)?,
        })
    }

    /// Options for one task (timeout, retries), then its enqueue.
    pub fn task(&self, name: impl Into<Cow<'static, str>>) -> TaskBuilder<'_> {
        TaskBuilder::new(self.shared.engine(), name.into(), self.shared.defaults)
    }

    /// Enqueues a future, waiting (bounded) for room; returns its handle at once.
    ///
    /// # Errors
    /// [`Error::EnqueueTimeout`], or [`Error::ShutDown`].
    pub async fn enqueue<F, T, E>(
        &self,
        name: impl Into<Cow<'static, str>>,
        fut: F,
    ) -> Result<TaskHandle<T>>
    where
        F: Future<Output = std::result::Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Into<BoxError>,
    {
        self.task(name).enqueue(fut).await
    }

    /// Enqueues a future if there is room now.
    ///
    /// # Errors
    /// [`Error::QueueFull`], or [`Error::ShutDown`].
    pub fn try_enqueue<F, T, E>(
        &self,
        name: impl Into<Cow<'static, str>>,
        fut: F,
    ) -> Result<TaskHandle<T>>
    where
        F: Future<Output = std::result::Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Into<BoxError>,
    {
        self.task(name).try_enqueue(fut)
    }

    /// Turns an async function into one that enqueues its calls (a task
    /// decorator): `let send = queue.task_fn("send", send_email); send(to).await?`.
    pub fn task_fn<A, G, F, T, E>(
        &self,
        name: &str,
        f: G,
    ) -> impl Fn(A) -> TaskFnFuture<T> + Clone + use<A, G, F, T, E>
    where
        A: Send + 'static,
        G: Fn(A) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = std::result::Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Into<BoxError>,
    {
        task_fn(
            Arc::clone(&self.shared.owner),
            self.shared.defaults,
            name,
            f,
        )
    }

    /// Counters and gauges: queued, running, workers, enqueued, completed, failed,
    /// cancelled, retried.
    pub fn stats(&self) -> QueueStats {
        self.shared.engine().stats(None)
    }

    /// A snapshot of one task, or `None` when unknown or expired.
    pub fn get(&self, id: TaskId) -> Option<TaskInfo> {
        self.shared.engine().get(id)
    }

    /// Every task still on record (live, and finished within the retention), by id.
    pub fn list(&self) -> Vec<TaskInfo> {
        self.shared.engine().list(|_| true)
    }

    /// The tasks queued, running or waiting to retry.
    pub fn active(&self) -> Vec<TaskInfo> {
        self.shared.engine().list(|s| !s.is_finished())
    }

    /// Cancels a task: a queued one leaves the queue at once, a running one stops at
    /// its next `.await`. Its handle then yields [`Error::Cancelled`].
    ///
    /// # Errors
    /// [`Error::UnknownTask`], or [`Error::AlreadyFinished`].
    pub fn cancel(&self, id: TaskId) -> Result<()> {
        self.shared.engine().cancel(id)
    }

    /// Cancels every live task; returns how many were cancelled.
    pub fn cancel_all(&self) -> usize {
        self.shared.engine().cancel_all()
    }

    /// Forgets finished tasks older than `age` now (they also expire on their own
    /// after the configured retention). Returns how many went.
    pub fn clear_finished(&self, age: Duration) -> usize {
        self.shared.engine().clear_finished(age)
    }

    /// Waits until nothing is queued or running, at most `limit`; `false` if time ran
    /// out first.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        self.shared.engine().wait_idle(limit).await
    }

    /// Stops intake ([`Error::ShutDown`] from then on), lets the workers drain the
    /// queue until `deadline`, then cancels what is left and reports it.
    pub async fn shutdown(&self, deadline: Duration) -> DrainReport {
        self.shared.engine().shutdown(deadline).await
    }
}

impl std::fmt::Debug for TaskQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.debug("TaskQueue", &self.stats(), f)
    }
}

impl TaskAdmin for TaskQueue {
    fn task(&self, id: TaskId) -> Option<TaskInfo> {
        self.get(id)
    }

    fn tasks(&self) -> Vec<TaskInfo> {
        self.list()
    }

    fn cancel_task(&self, id: TaskId) -> Result<()> {
        self.cancel(id)
    }
}
