#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admin;
mod builder;
#[cfg(feature = "durable")]
#[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
pub mod durable;
mod engine;
mod error;
mod index;
mod queue;
mod room;
mod task;
mod vars;

pub use self::builder::TaskBuilder;
pub use self::engine::{DrainReport, Policy, Retry, TaskHandle};
pub use self::error::{BoxError, Error, Result};
pub use self::queue::{
    BackgroundConfig, BackgroundTasks, Limits, PriorityQueue, PriorityQueueConfig, TaskFnFuture,
    TaskQueue, TaskQueueConfig,
};
pub use self::task::{Priority, QueueStats, TaskId, TaskInfo, TaskStatus};
/// The W3C trace context a durable task carries from enqueue to run (one type for the
/// workspace, from `cortex_support::trace`).
pub use cortex_support::trace::TraceParent;

use std::time::Duration;

/// The longest duration any setting accepts: 365 days. Longer ones would overflow when
/// added to a clock or to each other, and Redis refuses such expiries and timeouts.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The most workers one queue runs at once (`max_workers`, `workers`,
/// `max_concurrent`, and a durable worker's `concurrency`).
pub const MAX_CONCURRENCY: usize = 1_000_000;
