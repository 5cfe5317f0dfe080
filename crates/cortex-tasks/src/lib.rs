#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod task;

pub use self::error::{BoxError, Error, Result};
pub use self::task::{Priority, QueueStats, TaskId, TaskInfo, TaskStatus};
