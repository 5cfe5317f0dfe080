//! The three in-process queues: [`TaskQueue`], [`PriorityQueue`], [`BackgroundTasks`].

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cortex_support::{EnvSource, EnvVar, FromEnv};
use serde::{Deserialize, Serialize};

use crate::builder::TaskBuilder;
use crate::engine::{Engine, EngineConfig, Options, Policy, ShutdownReport, TaskHandle};
use crate::{
    BoxError, Error, MAX_CONCURRENCY, MAX_DURATION, Priority, QueueStats, Result, TaskId, TaskInfo,
};

/// Closes the engine when the last clone of a queue goes: workers finish what was
/// accepted, then exit.
struct Owner(Arc<Engine>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Limits every in-process queue shares; each queue's config embeds them.
///
/// Durations are at most [`MAX_DURATION`] (365 days) and worker counts at most
/// [`MAX_CONCURRENCY`]; larger values are refused with [`Error::InvalidConfig`] when the
/// queue starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Limits {
    /// How long `enqueue` waits for room before [`Error::EnqueueTimeout`]. Default 30 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub enqueue_timeout: Duration,
    /// Limit on each attempt unless a task sets its own. Default none.
    #[serde(with = "cortex_support::duration::opt_secs")]
    pub task_timeout: Option<Duration>,
    /// How long finished tasks stay queryable. Default one hour.
    #[serde(with = "cortex_support::duration::secs")]
    pub retention: Duration,
    /// At most this many finished records are kept (oldest go first), so memory stays
    /// bounded under any load. Default 10 000.
    pub max_records: usize,
    /// Record wait time, run time, queue depth and outcomes as `tasks.<name>.*`, into
    /// [`cortex_metrics::global()`] or the registry given to the queue's
    /// `with_metrics`. Default on.
    pub metrics: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            enqueue_timeout: Duration::from_secs(30),
            task_timeout: None,
            retention: Duration::from_secs(3600),
            max_records: 10_000,
            metrics: true,
        }
    }
}

impl Limits {
    fn read(&mut self, env: &EnvSource<'_>) -> Result<()> {
        if let Some(v) = env.duration("TASKS_ENQUEUE_TIMEOUT")? {
            self.enqueue_timeout = v;
        }
        if let Some(v) = env.duration("TASKS_TASK_TIMEOUT")? {
            self.task_timeout = Some(v);
        }
        if let Some(v) = env.duration("TASKS_RETENTION")? {
            self.retention = v;
        }
        if let Some(v) = env.parse("TASKS_MAX_RECORDS")? {
            self.max_records = v;
        }
        Ok(())
    }

    fn engine(
        &self,
        name: &str,
        workers: usize,
        capacity: usize,
        levels: usize,
        policy: Policy,
    ) -> Result<EngineConfig> {
        positive("workers", workers)?;
        positive("max_queue_size", capacity)?;
        positive("max_records", self.max_records)?;
        // Each worker is a task with its own counters: a count no machine could run
        // would only exhaust memory (or overflow) at start.
        if workers > MAX_CONCURRENCY {
            return Err(invalid(
                "workers",
                workers,
                &format!("must be at most {MAX_CONCURRENCY}"),
            ));
        }
        // Added to clocks: a longer one would overflow (and panic) on first use.
        for (key, d) in [
            ("enqueue_timeout", Some(self.enqueue_timeout)),
            ("task_timeout", self.task_timeout),
            ("retention", Some(self.retention)),
        ] {
            if let Some(d) = d.filter(|d| *d > MAX_DURATION) {
                return Err(invalid(
                    key,
                    format!("{d:?}"),
                    &format!("must be at most {} days", MAX_DURATION.as_secs() / 86_400),
                ));
            }
        }
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return Err(invalid(
                "name",
                name,
                "use letters, digits, '_', '-' or '.'",
            ));
        }
        Ok(EngineConfig {
            name: name.to_owned(),
            workers,
            capacity,
            levels,
            policy,
            enqueue_timeout: self.enqueue_timeout,
            retention: self.retention,
            max_records: self.max_records,
            metrics: self.metrics.then(|| cortex_metrics::global().clone()),
        })
    }

    fn options(&self) -> Options {
        Options {
            level: 0,
            priority: None,
            timeout: self.task_timeout,
            retry: None,
        }
    }
}

fn invalid(key: &'static str, value: impl ToString, reason: &str) -> Error {
    Error::InvalidConfig {
        key,
        value: value.to_string(),
        reason: reason.to_owned(),
    }
}

/// Settings the size variables set, so a rejected value names its variable.
const SIZE_FIELDS: [(&str, &str); 6] = [
    ("workers", "TASKS_MAX_WORKERS"),
    ("max_queue_size", "TASKS_MAX_QUEUE_SIZE"),
    ("max_records", "TASKS_MAX_RECORDS"),
    ("enqueue_timeout", "TASKS_ENQUEUE_TIMEOUT"),
    ("task_timeout", "TASKS_TASK_TIMEOUT"),
    ("retention", "TASKS_RETENTION"),
];

/// As [`SIZE_FIELDS`], with the policy.
const PRIORITY_FIELDS: [(&str, &str); 7] = [
    SIZE_FIELDS[0],
    SIZE_FIELDS[1],
    SIZE_FIELDS[2],
    SIZE_FIELDS[3],
    SIZE_FIELDS[4],
    SIZE_FIELDS[5],
    ("policy", "TASKS_PRIORITY_POLICY"),
];

fn positive(key: &'static str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(invalid(key, value, "must be at least 1"));
    }
    Ok(())
}

/// Methods every in-process queue has, over its engine.
macro_rules! common_methods {
    () => {
        /// A snapshot of one task, or `None` when unknown or expired.
        pub fn get(&self, id: TaskId) -> Option<TaskInfo> {
            self.shared.owner.0.get(id)
        }

        /// Every task still on record (live, and finished within the retention), by id.
        pub fn list(&self) -> Vec<TaskInfo> {
            self.shared.owner.0.list(|_| true)
        }

        /// The tasks queued, running or waiting to retry.
        pub fn active(&self) -> Vec<TaskInfo> {
            self.shared.owner.0.list(|s| !s.is_finished())
        }

        /// Cancels a task: a queued one leaves the queue at once, a running one stops at
        /// its next `.await`. Its handle then yields [`Error::Cancelled`].
        ///
        /// # Errors
        /// [`Error::UnknownTask`], or [`Error::AlreadyFinished`].
        pub fn cancel(&self, id: TaskId) -> Result<()> {
            self.shared.owner.0.cancel(id)
        }

        /// Cancels every live task; returns how many were cancelled.
        pub fn cancel_all(&self) -> usize {
            self.shared.owner.0.cancel_all()
        }

        /// Forgets finished tasks older than `age` now (they also expire on their own
        /// after the configured retention). Returns how many went.
        pub fn clear_finished(&self, age: Duration) -> usize {
            self.shared.owner.0.clear_finished(age)
        }

        /// Waits until nothing is queued or running, at most `limit`; `false` if time ran
        /// out first.
        pub async fn wait_idle(&self, limit: Duration) -> bool {
            self.shared.owner.0.wait_idle(limit).await
        }

        /// Stops intake ([`Error::ShutDown`] from then on), lets the workers drain the
        /// queue until `deadline`, then cancels what is left and reports it.
        pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
            self.shared.owner.0.shutdown(deadline).await
        }
    };
}

/// What each queue type shares: its engine (closed when the last clone goes) and the
/// task options its config sets.
#[derive(Clone)]
struct Shared {
    owner: Arc<Owner>,
    defaults: Options,
}

impl Shared {
    /// Starts the engine, recording into `metrics` instead of the global registry when
    /// given (and when the config records at all).
    fn start(
        mut engine: EngineConfig,
        limits: &Limits,
        metrics: Option<&cortex_metrics::Metrics>,
    ) -> Result<Self> {
        if let (Some(slot), Some(m)) = (engine.metrics.as_mut(), metrics) {
            *slot = m.clone();
        }
        Ok(Self {
            owner: Arc::new(Owner(Engine::start(engine)?)),
            defaults: limits.options(),
        })
    }
}

/// `Debug` and [`TaskAdmin`](crate::admin::TaskAdmin) for a queue type.
macro_rules! queue_impls {
    ($ty:ident) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("name", &self.shared.owner.0.config().name)
                    .field("stats", &self.stats())
                    .finish()
            }
        }

        impl crate::admin::TaskAdmin for $ty {
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
    };
}

/// Settings of a [`TaskQueue`]. Defaults: 10 workers, 1000 waiting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TaskQueueConfig {
    /// Names the queue in metrics (`tasks.<name>.*`). Default `tasks`.
    pub name: String,
    /// Tasks run at once, 1 to [`MAX_CONCURRENCY`]. Default 10.
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

    /// As [`start`](Self::start), recording `tasks.<name>.*` into `metrics` instead of
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
        TaskBuilder::new(&self.shared.owner.0, name.into(), self.shared.defaults)
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
        self.shared.owner.0.stats(None)
    }

    common_methods!();
}

queue_impls!(TaskQueue);

/// The wrapper behind every `task_fn`: each call enqueues `f(arg)` with `opts`.
fn task_fn<A, G, F, T, E>(
    owner: Arc<Owner>,
    opts: Options,
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
    // Owned once here; each call clones it.
    let name: Cow<'static, str> = Cow::Owned(name.to_owned());
    move |arg| {
        let (owner, name, f) = (Arc::clone(&owner), name.clone(), f.clone());
        Box::pin(async move { TaskBuilder::new(&owner.0, name, opts).enqueue(f(arg)).await })
    }
}

/// The future a [`TaskQueue::task_fn`] wrapper returns: the enqueue, resolving to the
/// task's handle.
pub type TaskFnFuture<T> = std::pin::Pin<Box<dyn Future<Output = Result<TaskHandle<T>>> + Send>>;

/// Settings of a [`PriorityQueue`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct PriorityQueueConfig {
    /// Names the queue in metrics. Default `priority`.
    pub name: String,
    /// Workers shared by all levels, 1 to [`MAX_CONCURRENCY`]. Default 10 (5 + 3 + 2).
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

    /// As [`start`](Self::start), recording `tasks.<name>.*` into `metrics` instead of
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
        TaskBuilder::new(&self.shared.owner.0, name.into(), self.shared.defaults).priority(priority)
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
        self.shared.owner.0.stats(None)
    }

    /// Counters of one level.
    pub fn level_stats(&self, priority: Priority) -> QueueStats {
        self.shared.owner.0.stats(Some(priority.index()))
    }

    common_methods!();
}

queue_impls!(PriorityQueue);

/// Settings of [`BackgroundTasks`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct BackgroundConfig {
    /// Names the manager in metrics. Default `background`.
    pub name: String,
    /// Tasks running at once, 1 to [`MAX_CONCURRENCY`]; the rest wait. Default 50.
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

    /// As [`start`](Self::start), recording `tasks.<name>.*` into `metrics` instead of
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
        TaskBuilder::new(&self.shared.owner.0, name.into(), self.shared.defaults)
    }

    /// Counters and gauges.
    pub fn stats(&self) -> QueueStats {
        self.shared.owner.0.stats(None)
    }

    common_methods!();
}

queue_impls!(BackgroundTasks);
