#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod alloc;
mod baseline;
mod bench;
mod error;
mod memory;

#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod http;

pub use self::alloc::{
    AllocStats, AllocationReport, CountingAllocator, ScopeDiff, ScopeStats, allocation_stats,
    diff_scopes, is_counting, profile_allocations, profile_scope, profile_scope_sync, scope_stats,
    top_scopes,
};
pub use self::baseline::{
    Baseline, BaselineConfig, Baselines, Deltas, Metric, OperationReport, RegressionReport,
    RegressionThresholds, Verdict,
};
pub use self::bench::{BenchResult, Benchmark, Comparison, ComparisonRow, compare};
pub use self::error::{Error, Result};
pub use self::memory::{
    GrowthPoint, MemoryComparison, MemoryGrowth, MemoryProfiler, MemoryProfilerStats, MemoryReport,
    MemorySnapshot, ProcessMemory, ProfilerConfig, process_memory,
};
