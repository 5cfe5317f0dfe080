#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admin;
mod builder;
pub mod durable;
mod engine;
mod error;
mod index;
mod queue;
mod room;
mod task;

pub use self::builder::TaskBuilder;
pub use self::engine::{Policy, Retry, ShutdownReport, TaskHandle};
pub use self::error::{BoxError, Error, Result};
pub use self::queue::{
    BackgroundConfig, BackgroundTasks, Limits, PriorityQueue, PriorityQueueConfig, TaskFnFuture,
    TaskQueue, TaskQueueConfig,
};
pub use self::task::{Priority, QueueStats, TaskId, TaskInfo, TaskStatus};
