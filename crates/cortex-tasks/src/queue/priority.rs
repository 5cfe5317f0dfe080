//! [`PriorityQueue`]: three levels, one bounded queue each, shared workers.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cortex_support::{EnvSource, EnvVar, FromEnv};
use serde::{Deserialize, Serialize};

use super::{Limits, PRIORITY_FIELDS, Shared, TaskFnFuture, invalid, task_fn};
use crate::admin::TaskAdmin;
use crate::builder::TaskBuilder;
use crate::engine::{DrainReport, EngineConfig, Options, Policy, TaskHandle};
use crate::{BoxError, Error, Priority, QueueStats, Result, TaskId, TaskInfo};

/// Settings of a [`PriorityQueue`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct PriorityQueueConfig {
    /// Names the queue: the `queue` label of its metrics. Default `priority`.
    pub name: String,
    /// Workers shared by all levels, 1 to [`MAX_CONCURRENCY`](crate::MAX_CONCURRENCY). Default 10 (5 + 3 + 2).
    pub workers: usize,
    /// Tasks waiting at most, per level. Default 1000.
    pub max_queue_size: usize,
    /// How workers pick the next level. Default [`Policy::Strict`] (high before normal
    /// before low); [`Policy::Weighted`] keeps low work moving under a flood.
    pub policy: Policy,
    /// Timeouts, retention and metrics.
    #[serde(flatten)]
    pub limits: Limits,
}

impl Default for PriorityQueueConfig {
    fn default() -> Self {
        Self {
            name: "priority".into(),
            workers: 10,
            max_queue_size: 1000,
            policy: Policy::Strict,
            limits: Limits::default(),
        }
    }
}

impl FromEnv for PriorityQueueConfig {
    type Error = Error;

    const VARS: &'static [EnvVar] = crate::vars::PRIORITY_QUEUE;

    fn from_env_source(env: &EnvSource<'_>) -> Result<Self> {
        let mut c = Self::default();
        if let Some(v) = env.parse("TASKS_MAX_WORKERS")? {
            c.workers = v;
        }
        if let Some(v) = env.parse("TASKS_MAX_QUEUE_SIZE")? {
            c.max_queue_size = v;
        }
        if let Some(v) = env.var("TASKS_PRIORITY_POLICY") {
            c.policy = parse_policy(&v)
                .ok_or_else(|| invalid("TASKS_PRIORITY_POLICY", &v, POLICY_SYNTAX))?;
        }
        c.limits.read(env)?;
        c.engine()
            .map_err(|e| crate::vars::name_variable(e, env, &PRIORITY_FIELDS))?;
        Ok(c)
    }
}

const POLICY_SYNTAX: &str =
    "expected strict, weighted, or three weights high,normal,low (e.g. 5,3,2), each at least 1";

/// `strict`, `weighted` (5/3/2), or three comma-separated weights.
fn parse_policy(v: &str) -> Option<Policy> {
    match v.trim().to_ascii_lowercase().as_str() {
        "strict" => Some(Policy::Strict),
        "weighted" => Some(Policy::Weighted(vec![5, 3, 2])),
        list => {
            let weights = list
                .split(',')
                .map(|w| w.trim().parse::<u32>().ok().filter(|w| *w > 0))
                .collect::<Option<Vec<u32>>>()?;
            (weights.len() == 3).then_some(Policy::Weighted(weights))
        }
    }
}

impl PriorityQueueConfig {
    /// Defaults overridden by `TASKS_MAX_WORKERS` (workers shared by the levels),
    /// `TASKS_MAX_QUEUE_SIZE` (per level), `TASKS_PRIORITY_POLICY` (`strict`,
    /// `weighted` or `5,3,2`) and the limits' `TASKS_ENQUEUE_TIMEOUT`,
    /// `TASKS_TASK_TIMEOUT`, `TASKS_RETENTION`, `TASKS_MAX_RECORDS` ([`FromEnv::VARS`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable and its value.
    pub fn from_env() -> Result<Self> {
        <Self as FromEnv>::from_env()
    }

    /// Weighted fairness with weights 5 / 3 / 2 (high, normal, low).
    pub fn weighted(mut self) -> Self {
        self.policy = Policy::Weighted(vec![5, 3, 2]);
        self
    }

    fn engine(&self) -> Result<EngineConfig> {
        if let Policy::Weighted(w) = &self.policy
            && (w.len() != 3 || w.contains(&0))
        {
            return Err(invalid(
                "policy",
                format!("{w:?}"),
                "give three weights, each at least 1",
            ));
        }
        self.limits.engine(
            &self.name,
            self.workers,
            self.max_queue_size,
            3,
            self.policy.clone(),
        )
    }
}

/// Three levels (high, normal, low), one bounded queue each, one set of workers.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), cortex_tasks::Error> {
/// use cortex_tasks::{Priority, PriorityQueue, PriorityQueueConfig};
///
/// let queue = PriorityQueue::start(PriorityQueueConfig::default().weighted())?;
/// let urgent = queue.enqueue(Priority::High, "page", async { Ok::<_, std::io::Error>(1) }).await?;
/// assert_eq!(urgent.await?, 1);
///
/// // Levels named at run time are checked, and an unknown one lists the valid ones.
/// let err = queue.enqueue_named("urgent", "x", async { Ok::<_, std::io::Error>(()) }).await.unwrap_err();
/// assert!(err.to_string().contains("high, normal, low"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PriorityQueue {
    shared: Shared,
}

impl PriorityQueue {
    /// Starts the workers on the current Tokio runtime.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero size, bad weights or a bad name, or when no
    /// runtime runs.
    pub fn start(config: PriorityQueueConfig) -> Result<Self> {
        Self::start_in(config, None)
    }

    /// As [`start`](Self::start), recording its `tasks.*` series (labeled `queue="<name>"`) into `metrics` instead of
    /// [`cortex_metrics::global()`].
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn with_metrics(
        config: PriorityQueueConfig,
        metrics: &cortex_metrics::Metrics,
    ) -> Result<Self> {
        Self::start_in(config, Some(metrics))
    }

    fn start_in(
        config: PriorityQueueConfig,
        metrics: Option<&cortex_metrics::Metrics>,
    ) -> Result<Self> {
        Ok(Self {
            shared: Shared::start(config.engine()?, &config.limits, metrics)?,
        })
    }

    /// Options for one task at `priority`, then its enqueue.
    pub fn task(&self, priority: Priority, name: impl Into<Cow<'static, str>>) -> TaskBuilder<'_> {
        TaskBuilder::new(self.shared.engine(), name.into(), self.shared.defaults).priority(priority)
    }

    /// Enqueues a future at `priority`, waiting (bounded) for room in that level.
    ///
    /// # Errors
    /// [`Error::EnqueueTimeout`], or [`Error::ShutDown`].
    pub async fn enqueue<F, T, E>(
        &self,
        priority: Priority,
        name: impl Into<Cow<'static, str>>,
        fut: F,
    ) -> Result<TaskHandle<T>>
    where
        F: Future<Output = std::result::Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Into<BoxError>,
    {
        self.task(priority, name).enqueue(fut).await
    }

    /// Enqueues at a level given by name (`high`, `normal`, `low`).
    ///
    /// # Errors
    /// [`Error::UnknownPriority`] listing the valid levels, then as
    /// [`enqueue`](Self::enqueue).
    pub async fn enqueue_named<F, T, E>(
        &self,
        priority: &str,
        name: impl Into<Cow<'static, str>>,
        fut: F,
    ) -> Result<TaskHandle<T>>
    where
        F: Future<Output = std::result::Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Into<BoxError>,
    {
        let priority: Priority = priority.parse()?;
        self.enqueue(priority, name, fut).await
    }

    /// Enqueues at `priority` if that level has room now.
    ///
    /// # Errors
    /// [`Error::QueueFull`], or [`Error::ShutDown`].
    pub fn try_enqueue<F, T, E>(
        &self,
        priority: Priority,
        name: impl Into<Cow<'static, str>>,
        fut: F,
    ) -> Result<TaskHandle<T>>
    where
        F: Future<Output = std::result::Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Into<BoxError>,
    {
        self.task(priority, name).try_enqueue(fut)
    }

    /// Turns an async function into one that enqueues its calls at `priority` (a
    /// priority task decorator).
    pub fn task_fn<A, G, F, T, E>(
        &self,
        priority: Priority,
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
        let opts = Options {
            level: priority.index(),
            priority: Some(priority),
            ..self.shared.defaults
        };
        task_fn(Arc::clone(&self.shared.owner), opts, name, f)
    }

    /// Counters of all levels together.
    pub fn stats(&self) -> QueueStats {
        self.shared.engine().stats(None)
    }

    /// Counters of one level.
    pub fn level_stats(&self, priority: Priority) -> QueueStats {
        self.shared.engine().stats(Some(priority.index()))
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

impl std::fmt::Debug for PriorityQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.debug("PriorityQueue", &self.stats(), f)
    }
}

impl TaskAdmin for PriorityQueue {
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
