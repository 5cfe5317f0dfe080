//! [`BackgroundTasks`]: fire-and-forget work with a record.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Limits, Shared};
#[cfg(doc)]
use crate::Error;
use crate::admin::TaskAdmin;
use crate::builder::TaskBuilder;
use crate::engine::{DrainReport, Policy, TaskHandle};
use crate::{BoxError, QueueStats, Result, TaskId, TaskInfo};

/// Settings of [`BackgroundTasks`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct BackgroundConfig {
    /// Names the manager: the `queue` label of its metrics. Default `background`.
    pub name: String,
    /// Tasks running at once, 1 to [`MAX_CONCURRENCY`](crate::MAX_CONCURRENCY); the rest wait. Default 50.
    pub max_concurrent: usize,
    /// Tasks waiting at most; beyond it `add_task` fails with [`Error::QueueFull`].
    /// Default 10 000.
    pub max_pending: usize,
    /// Timeouts, retention and metrics.
    #[serde(flatten)]
    pub limits: Limits,
}

impl Default for BackgroundConfig {
    fn default() -> Self {
        Self {
            name: "background".into(),
            max_concurrent: 50,
            max_pending: 10_000,
            limits: Limits::default(),
        }
    }
}

/// Fire-and-forget work with a record: at most `max_concurrent` running, each
/// listable and cancellable by id, everything cancelled at shutdown.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), cortex_tasks::Error> {
/// use std::time::Duration;
/// use cortex_tasks::{BackgroundConfig, BackgroundTasks, TaskStatus};
///
/// let tasks = BackgroundTasks::start(BackgroundConfig::default())?;
/// let id = tasks.add_task("reindex", async {
///     tokio::time::sleep(Duration::from_secs(3600)).await;
///     Ok::<_, std::io::Error>(())
/// })?;
/// tokio::task::yield_now().await;
/// tasks.cancel(id)?;
/// assert!(tasks.wait_idle(Duration::from_secs(1)).await);
/// assert_eq!(tasks.get(id).unwrap().status, TaskStatus::Cancelled);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BackgroundTasks {
    shared: Shared,
}

impl BackgroundTasks {
    /// Starts the manager on the current Tokio runtime.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero size or a bad name, or when no runtime runs.
    pub fn start(config: BackgroundConfig) -> Result<Self> {
        Self::start_in(config, None)
    }

    /// As [`start`](Self::start), recording its `tasks.*` series (labeled `queue="<name>"`) into `metrics` instead of
    /// [`cortex_metrics::global()`].
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn with_metrics(
        config: BackgroundConfig,
        metrics: &cortex_metrics::Metrics,
    ) -> Result<Self> {
        Self::start_in(config, Some(metrics))
    }

    fn start_in(
        config: BackgroundConfig,
        metrics: Option<&cortex_metrics::Metrics>,
    ) -> Result<Self> {
        let engine = config.limits.engine(
            &config.name,
            config.max_concurrent,
            config.max_pending,
            1,
            Policy::Strict,
        )?;
        Ok(Self {
            shared: Shared::start(engine, &config.limits, metrics)?,
        })
    }

    /// Starts a task and returns its id at once (fire and forget); it waits
    /// for a free slot if `max_concurrent` run already.
    ///
    /// # Errors
    /// [`Error::QueueFull`] past `max_pending`, or [`Error::ShutDown`].
    pub fn add_task<F, T, E>(&self, name: impl Into<Cow<'static, str>>, fut: F) -> Result<TaskId>
    where
        F: Future<Output = std::result::Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Into<BoxError>,
    {
        self.spawn(name, fut).map(|h| h.id())
    }

    /// As [`add_task`](Self::add_task), keeping the handle to the task's value.
    ///
    /// # Errors
    /// As [`add_task`](Self::add_task).
    pub fn spawn<F, T, E>(
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

    /// Options for one task (timeout, retries), then its start.
    pub fn task(&self, name: impl Into<Cow<'static, str>>) -> TaskBuilder<'_> {
        TaskBuilder::new(self.shared.engine(), name.into(), self.shared.defaults)
    }

    /// Counters and gauges.
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

impl std::fmt::Debug for BackgroundTasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.debug("BackgroundTasks", &self.stats(), f)
    }
}

impl TaskAdmin for BackgroundTasks {
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
