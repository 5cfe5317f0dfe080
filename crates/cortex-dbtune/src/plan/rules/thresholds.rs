//! Every threshold the rules use, and the graded levels of one.

use serde::{Deserialize, Serialize};

use super::Severity;

/// Thresholds of a graded rule; a level left `None` is not reported. A value is
/// reported at the highest level it exceeds (strictly greater).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Levels {
    /// Exceeding this gives [`Severity::Info`].
    pub info: Option<f64>,
    /// Exceeding this gives [`Severity::Warning`].
    pub warning: Option<f64>,
    /// Exceeding this gives [`Severity::Critical`].
    pub critical: Option<f64>,
}

impl Levels {
    /// All three levels.
    pub const fn new(info: f64, warning: f64, critical: f64) -> Self {
        Self {
            info: Some(info),
            warning: Some(warning),
            critical: Some(critical),
        }
    }

    /// The severity `value` reaches, with the threshold it exceeded.
    pub fn grade(&self, value: f64) -> Option<(Severity, f64)> {
        [
            (Severity::Critical, self.critical),
            (Severity::Warning, self.warning),
            (Severity::Info, self.info),
        ]
        .into_iter()
        .find_map(|(s, t)| t.filter(|&t| value > t).map(|t| (s, t)))
    }
}

/// Every threshold the rules use. The defaults are PEV2's and explain.depesz.com's
/// where they publish one; the others are documented on each field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Thresholds {
    /// slow_node: own time as % of execution time (PEV2: 10 / 40 / 90).
    pub slow_node_pct: Levels,
    /// slow_node: ignore nodes whose own time is under this many ms (default 1: a
    /// share of a sub-millisecond query is noise).
    pub slow_node_min_ms: f64,
    /// costly_node: own cost as % of the plan's highest total cost (PEV2: 10 / 40 / 90).
    pub costly_node_pct: Levels,
    /// costly_node: ignore nodes whose own cost is under this (default 100, dexter's
    /// floor for queries worth indexing).
    pub costly_node_min_cost: f64,
    /// bad_estimate: max(actual/planned, planned/actual) rows (PEV2: 10 / 100 / 1000).
    pub bad_estimate_ratio: Levels,
    /// rows_removed_by_filter: removed / (removed + returned), % (PEV2: 50 warning,
    /// 90 critical).
    pub rows_removed_pct: Levels,
    /// rows_removed_by_filter: ignore nodes removing fewer rows in total than this
    /// (default 1000, pg_qualstats' floor: below it the work is negligible).
    pub rows_removed_min: f64,
    /// heap_fetches: heap fetches as % of (returned + removed) rows (PEV2: 0 / 40 / 90).
    pub heap_fetches_pct: Levels,
    /// hash_batches: batches above this (PEV2: 1, warning).
    pub hash_batches: f64,
    /// indexable_seq_scan: (rows + removed) x width above this many bytes (depesz: 24576).
    pub indexable_scan_bytes: f64,
    /// indexable_seq_scan: removed rows above this factor x returned rows (depesz: 2).
    pub indexable_removed_factor: f64,
    /// lossy_bitmap: lossy heap blocks above this (default 0).
    pub lossy_blocks: f64,
    /// large_offset: rows a Limit discards (default: 10,000 warning, 100,000 critical).
    pub large_offset_rows: Levels,
    /// nested_loop_loops: loops of a Nested Loop's inner side (default: 1,000 warning,
    /// 100,000 critical).
    pub nested_loop_loops: Levels,
    /// stale_stats: misestimate ratio on a table scan above this (default 100: beyond
    /// the 10x that selectivity guesses explain).
    pub stale_stats_ratio: Levels,
    /// high_total_cost: root total cost above this (default 1000).
    pub high_total_cost: f64,
    /// large_hash_join: planned rows of a Hash Join above this (default 10,000).
    pub large_hash_join_rows: f64,
    /// partial_index and gin_index: rows a Seq Scan reads per loop above this (default
    /// 10,000: below it a sequential scan is cheap and an index buys little).
    pub pattern_min_rows: f64,
    /// correlated_subplan: runs of a SubPlan (default: 1,000 warning, 100,000
    /// critical, as nested_loop_loops).
    pub subplan_loops: Levels,
    /// materialized_view: time of a grouped Aggregate above this many ms (default 50).
    pub matview_min_ms: f64,
    /// materialized_view: rows of a sequential scan under it above this (default
    /// 100,000).
    pub matview_min_rows: f64,
    /// partition_by_month: rows a Seq Scan reads per loop, at least this many (default
    /// 1,000,000: smaller tables are served well enough by an index).
    pub partition_min_rows: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            slow_node_pct: Levels::new(10.0, 40.0, 90.0),
            slow_node_min_ms: 1.0,
            costly_node_pct: Levels::new(10.0, 40.0, 90.0),
            costly_node_min_cost: 100.0,
            bad_estimate_ratio: Levels::new(10.0, 100.0, 1000.0),
            rows_removed_pct: Levels {
                info: None,
                warning: Some(50.0),
                critical: Some(90.0),
            },
            rows_removed_min: 1000.0,
            heap_fetches_pct: Levels::new(0.0, 40.0, 90.0),
            hash_batches: 1.0,
            indexable_scan_bytes: 24_576.0,
            indexable_removed_factor: 2.0,
            lossy_blocks: 0.0,
            large_offset_rows: Levels {
                info: None,
                warning: Some(10_000.0),
                critical: Some(100_000.0),
            },
            nested_loop_loops: Levels {
                info: None,
                warning: Some(1_000.0),
                critical: Some(100_000.0),
            },
            stale_stats_ratio: Levels {
                info: None,
                warning: Some(100.0),
                critical: Some(10_000.0),
            },
            high_total_cost: 1000.0,
            large_hash_join_rows: 10_000.0,
            pattern_min_rows: 10_000.0,
            subplan_loops: Levels {
                info: None,
                warning: Some(1_000.0),
                critical: Some(100_000.0),
            },
            matview_min_ms: 50.0,
            matview_min_rows: 100_000.0,
            partition_min_rows: 1_000_000.0,
        }
    }
}
