use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use crate::engine::{self, Engine, Options, Retry, TaskHandle};
use crate::{BoxError, Priority, Result};

/// Options for one task, then its enqueue: `queue.task("send_email").timeout(..)`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), cortex_tasks::Error> {
/// use std::time::Duration;
/// use cortex_tasks::{Retry, TaskQueue, TaskQueueConfig};
///
/// let queue = TaskQueue::start(TaskQueueConfig::default())?;
/// let mut tries = 0;
/// let handle = queue
///     .task("flaky")
///     .timeout(Duration::from_secs(5))
///     .retry(Retry::exponential(3, Duration::from_millis(1)))
///     .enqueue_with(move || {
///         tries += 1;
///         let this_try = tries;
///         async move {
///             if this_try < 3 { Err("not yet") } else { Ok(this_try) }
///         }
///     })
///     .await?;
/// assert_eq!(handle.await?, 3);
/// # Ok(()) }
/// ```
#[must_use = "a task builder does nothing until one of its enqueue methods is called"]
pub struct TaskBuilder<'q> {
    engine: &'q Engine,
    name: Cow<'static, str>,
    opts: Options,
}

impl std::fmt::Debug for TaskBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskBuilder")
            .field("queue", &self.engine.config().name)
            .field("name", &self.name)
            .field("options", &self.opts)
            .finish()
    }
}

impl<'q> TaskBuilder<'q> {
    pub(crate) fn new(engine: &'q Engine, name: Cow<'static, str>, opts: Options) -> Self {
        Self { engine, name, opts }
    }

    /// Fails an attempt that runs longer than `limit` (the queue's default otherwise).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.opts.timeout = Some(limit);
        self
    }

    /// Retries failed attempts (errors, panics, timeouts) with backoff. Only tasks
    /// enqueued from a function (`enqueue_with`) can run again: a plain future runs once.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.opts.retry = Some(retry);
        self
    }

    pub(crate) fn priority(mut self, priority: Priority) -> Self {
        self.opts.level = priority.index();
        self.opts.priority = Some(priority);
        self
    }

    /// Enqueues a future, waiting (bounded by the queue's enqueue timeout) for room.
    ///
    /// # Errors
    /// [`Error::EnqueueTimeout`](crate::Error::EnqueueTimeout) when no room came in
    /// time, [`Error::ShutDown`](crate::Error::ShutDown) after shutdown.
    pub async fn enqueue<F, T, E>(self, fut: F) -> Result<TaskHandle<T>>
    where
        F: Future<Output = std::result::Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Into<BoxError>,
    {
        let work = engine::once(fut, engine::no_json);
        let record = self.engine.enqueue(self.name, work, self.opts).await?;
        Ok(TaskHandle::new(record))
    }

    /// Enqueues a future at once, or fails with
    /// [`Error::QueueFull`](crate::Error::QueueFull).
    ///
    /// # Errors
    /// `QueueFull`, or `ShutDown` after shutdown.
    pub fn try_enqueue<F, T, E>(self, fut: F) -> Result<TaskHandle<T>>
    where
        F: Future<Output = std::result::Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Into<BoxError>,
    {
        let work = engine::once(fut, engine::no_json);
        let record = self.engine.try_enqueue(self.name, work, self.opts)?;
        Ok(TaskHandle::new(record))
    }

    /// Enqueues a function that makes the task's future, called once per attempt (so
    /// [`retry`](Self::retry) can run it again).
    ///
    /// # Errors
    /// As [`enqueue`](Self::enqueue).
    pub async fn enqueue_with<G, F, T, E>(self, make: G) -> Result<TaskHandle<T>>
    where
        G: FnMut() -> F + Send + 'static,
        F: Future<Output = std::result::Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Into<BoxError>,
    {
        let work = engine::factory(make, engine::no_json);
        let record = self.engine.enqueue(self.name, work, self.opts).await?;
        Ok(TaskHandle::new(record))
    }

    /// As [`enqueue`](Self::enqueue), and the value is also kept as JSON in the task's
    /// record ([`TaskInfo::result`](crate::TaskInfo::result)), for status queries by id.
    ///
    /// # Errors
    /// As [`enqueue`](Self::enqueue).
    pub async fn enqueue_recorded<F, T, E>(self, fut: F) -> Result<TaskHandle<T>>
    where
        F: Future<Output = std::result::Result<T, E>> + Send + 'static,
        T: serde::Serialize + Send + 'static,
        E: Into<BoxError>,
    {
        let work = engine::once(fut, engine::to_json::<T>);
        let record = self.engine.enqueue(self.name, work, self.opts).await?;
        Ok(TaskHandle::new(record))
    }
}
