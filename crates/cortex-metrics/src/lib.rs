#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod counter;
mod error;
mod gauge;
mod histogram;
mod registry;
mod snapshot;
mod tracked;

#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod http;
#[cfg(feature = "tower")]
mod layer;
pub mod prometheus;
#[cfg(feature = "recorder")]
mod recorder;

pub use self::config::{DEFAULT_SECONDS_BUCKETS, DEFAULT_VALUE_BUCKETS, MetricsConfig};
pub use self::counter::Counter;
pub use self::error::{Error, Result};
pub use self::gauge::Gauge;
pub use self::histogram::{Bucket, Histogram, HistogramBuckets, HistogramSnapshot, RELATIVE_ERROR};
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use self::layer::{MetricsFuture, MetricsLayer, MetricsService, UNMATCHED_ROUTE};
#[cfg(feature = "recorder")]
#[cfg_attr(docsrs, doc(cfg(feature = "recorder")))]
pub use self::recorder::MetricsRecorder;
pub use self::registry::{Metrics, OTHER_METHOD, OVERFLOW_SERIES, Operation, global};
pub use self::snapshot::{
    CallStats, CategorySnapshot, CounterSnapshot, EndpointSnapshot, LastCall, LatencySummary,
    MetricsSnapshot, NamedHistogram, OperationSnapshot, RequestStats, SeriesHistogram, SeriesKind,
    SeriesSnapshot,
};
pub use self::tracked::{Outcome, Tracked, TrackedExt, track, track_op};
