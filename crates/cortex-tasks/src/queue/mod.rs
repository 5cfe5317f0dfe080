//! The three in-process queues: [`TaskQueue`], [`PriorityQueue`], [`BackgroundTasks`],
//! one file each over what they share here (limits, the engine's owner, `task_fn`).
//!
//! The methods every queue has (`get`, `list`, `active`, `cancel`, `cancel_all`,
//! `clear_finished`, `wait_idle`, `shutdown`) are written out on each type as one-line
//! calls into the engine, so each type's page lists them.

mod background;
mod priority;
mod task_queue;

pub use self::background::{BackgroundConfig, BackgroundTasks};
pub use self::priority::{PriorityQueue, PriorityQueueConfig};
pub use self::task_queue::{TaskQueue, TaskQueueConfig};

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cortex_support::EnvSource;
use serde::{Deserialize, Serialize};

use crate::builder::TaskBuilder;
use crate::engine::{Engine, EngineConfig, Options, Policy, TaskHandle};
use crate::{BoxError, Error, MAX_CONCURRENCY, MAX_DURATION, QueueStats, Result};

/// Closes the engine when the last clone of a queue goes: workers finish what was
/// accepted, then exit.
pub(super) struct Owner(Arc<Engine>);

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
    /// Record wait and run times, outcomes, queue depth and running tasks as the
    /// `tasks.*` families labeled `queue="<name>"` (see the crate's "Metrics" section),
    /// into [`cortex_metrics::global()`] or the registry given to the queue's
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
    pub(super) fn read(&mut self, env: &EnvSource<'_>) -> Result<()> {
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

    pub(super) fn engine(
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

pub(super) fn invalid(key: &'static str, value: impl ToString, reason: &str) -> Error {
    Error::InvalidConfig {
        key,
        value: value.to_string(),
        reason: reason.to_owned(),
    }
}

/// Settings the size variables set, so a rejected value names its variable.
pub(super) const SIZE_FIELDS: [(&str, &str); 6] = [
    ("workers", "TASKS_MAX_WORKERS"),
    ("max_queue_size", "TASKS_MAX_QUEUE_SIZE"),
    ("max_records", "TASKS_MAX_RECORDS"),
    ("enqueue_timeout", "TASKS_ENQUEUE_TIMEOUT"),
    ("task_timeout", "TASKS_TASK_TIMEOUT"),
    ("retention", "TASKS_RETENTION"),
];

/// As [`SIZE_FIELDS`], with the policy.
pub(super) const PRIORITY_FIELDS: [(&str, &str); 7] = [
    SIZE_FIELDS[0],
    SIZE_FIELDS[1],
    SIZE_FIELDS[2],
    SIZE_FIELDS[3],
    SIZE_FIELDS[4],
    SIZE_FIELDS[5],
    ("policy", "TASKS_PRIORITY_POLICY"),
];

pub(super) fn positive(key: &'static str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(invalid(key, value, "must be at least 1"));
    }
    Ok(())
}

/// What each queue type shares: its engine (closed when the last clone goes) and the
/// task options its config sets.
#[derive(Clone)]
pub(super) struct Shared {
    pub(super) owner: Arc<Owner>,
    pub(super) defaults: Options,
}

impl Shared {
    pub(super) fn engine(&self) -> &Engine {
        &self.owner.0
    }

    /// The `Debug` of every queue type: its name and counters.
    pub(super) fn debug(
        &self,
        ty: &str,
        stats: &QueueStats,
        f: &mut std::fmt::Formatter<'_>,
    ) -> std::fmt::Result {
        f.debug_struct(ty)
            .field("name", &self.engine().config().name)
            .field("stats", stats)
            .finish()
    }
    /// Starts the engine, recording into `metrics` instead of the global registry when
    /// given (and when the config records at all).
    pub(super) fn start(
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

/// The wrapper behind every `task_fn`: each call enqueues `f(arg)` with `opts`.
pub(super) fn task_fn<A, G, F, T, E>(
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
