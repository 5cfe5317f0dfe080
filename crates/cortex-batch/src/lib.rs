#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod batcher;
mod config;
mod error;
#[cfg(feature = "tower")]
mod layer;
mod loader;
mod stats;

pub use self::batcher::{Batcher, BatcherBuilder};
pub use self::config::BatchConfig;
pub use self::error::{BoxError, Error, Result};
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use self::layer::{BatchLayer, BatchService, ServiceBatchFn};
pub use self::loader::{BatchFn, BatchFnFn, Loaded, batch_fn};
pub use self::stats::BatchStats;
