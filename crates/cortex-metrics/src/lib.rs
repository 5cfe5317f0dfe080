#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod alloc;
mod baseline;
mod bench;
mod config;
mod counter;
mod error;
mod file;
mod histogram;
mod memory;
mod registry;
mod snapshot;
mod tracked;

pub mod env;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod http;
#[cfg(feature = "tower")]
mod layer;
#[cfg(feature = "load")]
#[cfg_attr(docsrs, doc(cfg(feature = "load")))]
pub mod load;
pub mod prometheus;

pub use self::alloc::{
    AllocStats, AllocationReport, CountingAllocator, ScopeDiff, ScopeStats, allocation_stats,
    diff_scopes, is_counting, profile_allocations, profile_scope, profile_scope_sync, scope_stats,
    top_scopes,
};
pub use self::baseline::{
    Baseline, BaselineConfig, Baselines, Deltas, Metric, OperationReport, RegressionReport,
    Thresholds, Verdict,
};
pub use self::bench::{BenchResult, Benchmark, Comparison, ComparisonRow, compare};
pub use self::config::MetricsConfig;
pub use self::counter::Counter;
pub use self::error::{Error, Result};
pub use self::histogram::{Histogram, HistogramSnapshot, RELATIVE_ERROR};
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use self::layer::{MetricsFuture, MetricsLayer, MetricsService, UNMATCHED_ROUTE};
pub use self::memory::{
    GrowthPoint, MemoryComparison, MemoryConfig, MemoryGrowth, MemoryProfiler, MemoryReport,
    MemorySnapshot, ProcessMemory, process_memory,
};
pub use self::registry::{Metrics, OTHER_METHOD, OVERFLOW_SERIES, Operation, global};
pub use self::snapshot::{
    CallStats, CategorySnapshot, CounterSnapshot, EndpointSnapshot, LastCall, LatencySummary,
    MetricsSnapshot, NamedHistogram, OperationSnapshot, RequestStats,
};
pub use self::tracked::{Outcome, Tracked, TrackedExt, track, track_op};
