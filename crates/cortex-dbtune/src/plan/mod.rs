//! A typed model of `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)` output, derived per-node
//! figures (total and own time, own cost) and a rule engine ([`analyze`]).
//!
//! ```
//! use cortex_dbtune::plan::{Plan, Thresholds, analyze};
//!
//! let json = r#"[{"Plan": {"Node Type": "Seq Scan", "Relation Name": "t",
//!     "Total Cost": 4595.0, "Plan Rows": 10, "Plan Width": 52,
//!     "Actual Total Time": 17.6, "Actual Rows": 10, "Actual Loops": 1,
//!     "Filter": "(customer_id = 42)", "Rows Removed by Filter": 199990},
//!     "Execution Time": 17.7}]"#;
//! let plan = Plan::from_json(json)?;
//! let findings = analyze(&plan, &Thresholds::default());
//! assert!(findings.iter().any(|f| f.rule == "indexable_seq_scan"));
//! # Ok::<(), cortex_dbtune::Error>(())
//! ```

mod filter;
mod patterns;
mod rules;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub(crate) use filter::index_keys;
pub use filter::{IndexCandidate, IndexKey, quote_ident, quote_literal};
pub use patterns::{
    CorrelatedSubplan, GinIndex, MaterializedView, PartialIndex, PartitionByMonth, SqlLint,
    lint_sql,
};
pub use rules::{
    BadEstimate, CostlyNode, DiskSort, Finding, HashBatches, HeapFetches, HighTotalCost,
    IndexableSeqScan, LargeHashJoin, LargeOffset, Levels, LossyBitmap, NestedLoopLoops,
    PlanContext, PlanRule, RowsRemovedByFilter, SeqScan, Severity, SlowNode, StaleStats,
    Thresholds, analyze, analyze_with, default_rules,
};

/// One `EXPLAIN` result: the plan tree and the statement-level figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The root node.
    #[serde(rename = "Plan")]
    pub root: PlanNode,
    /// Planning time in ms (ANALYZE, or SUMMARY).
    #[serde(
        rename = "Planning Time",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub planning_time_ms: Option<f64>,
    /// Execution time in ms (ANALYZE only).
    #[serde(
        rename = "Execution Time",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub execution_time_ms: Option<f64>,
    /// Time spent in triggers (ANALYZE of a write).
    #[serde(rename = "Triggers", default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
    /// Buffers used by planning (BUFFERS, PostgreSQL 13+).
    #[serde(rename = "Planning", default, skip_serializing_if = "Option::is_none")]
    pub planning_buffers: Option<Buffers>,
}

/// One trigger's execution statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// Trigger name.
    #[serde(rename = "Trigger Name", default)]
    pub name: String,
    /// Constraint name, for constraint triggers (e.g. foreign keys).
    #[serde(
        rename = "Constraint Name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub constraint_name: Option<String>,
    /// The table the trigger is on.
    #[serde(rename = "Relation", default, skip_serializing_if = "Option::is_none")]
    pub relation: Option<String>,
    /// Total time in ms.
    #[serde(rename = "Time", default)]
    pub time_ms: f64,
    /// Number of calls.
    #[serde(rename = "Calls", default)]
    pub calls: u64,
}

/// Buffer counters of a node (BUFFERS), in 8 kB blocks; zero when absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Buffers {
    /// Shared blocks found in cache.
    #[serde(rename = "Shared Hit Blocks")]
    pub shared_hit: u64,
    /// Shared blocks read from disk (or the OS cache).
    #[serde(rename = "Shared Read Blocks")]
    pub shared_read: u64,
    /// Shared blocks dirtied.
    #[serde(rename = "Shared Dirtied Blocks")]
    pub shared_dirtied: u64,
    /// Shared blocks written.
    #[serde(rename = "Shared Written Blocks")]
    pub shared_written: u64,
    /// Local (temporary table) blocks found in cache.
    #[serde(rename = "Local Hit Blocks")]
    pub local_hit: u64,
    /// Local blocks read.
    #[serde(rename = "Local Read Blocks")]
    pub local_read: u64,
    /// Local blocks dirtied.
    #[serde(rename = "Local Dirtied Blocks")]
    pub local_dirtied: u64,
    /// Local blocks written.
    #[serde(rename = "Local Written Blocks")]
    pub local_written: u64,
    /// Temporary-file blocks read (sorts, hashes spilling to disk).
    #[serde(rename = "Temp Read Blocks")]
    pub temp_read: u64,
    /// Temporary-file blocks written.
    #[serde(rename = "Temp Written Blocks")]
    pub temp_written: u64,
}

impl Buffers {
    /// Blocks read from outside shared buffers: shared, local and temp reads.
    /// Saturates at `u64::MAX`: the counters come from input text, and a nonsense
    /// value must not overflow.
    pub fn blocks_read(&self) -> u64 {
        self.shared_read
            .saturating_add(self.local_read)
            .saturating_add(self.temp_read)
    }
}

/// The node types PostgreSQL reports, with a fallback for new or custom ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
#[allow(missing_docs)] // each variant is the PostgreSQL node type of the same name
pub enum NodeKind {
    SeqScan,
    SampleScan,
    IndexScan,
    IndexOnlyScan,
    BitmapHeapScan,
    BitmapIndexScan,
    BitmapAnd,
    BitmapOr,
    TidScan,
    TidRangeScan,
    SubqueryScan,
    FunctionScan,
    TableFunctionScan,
    ValuesScan,
    CteScan,
    NamedTuplestoreScan,
    WorkTableScan,
    ForeignScan,
    CustomScan,
    NestedLoop,
    MergeJoin,
    HashJoin,
    Hash,
    Sort,
    IncrementalSort,
    Aggregate,
    Group,
    WindowAgg,
    Unique,
    SetOp,
    Limit,
    LockRows,
    Gather,
    GatherMerge,
    Materialize,
    Memoize,
    Append,
    MergeAppend,
    RecursiveUnion,
    Result,
    ProjectSet,
    ModifyTable,
    /// A node type this version does not know, with its name.
    Other(String),
}

impl NodeKind {
    /// Maps PostgreSQL's `Node Type` string.
    pub fn from_name(name: &str) -> Self {
        use NodeKind::*;
        match name {
            "Seq Scan" => SeqScan,
            "Sample Scan" => SampleScan,
            "Index Scan" => IndexScan,
            "Index Only Scan" => IndexOnlyScan,
            "Bitmap Heap Scan" => BitmapHeapScan,
            "Bitmap Index Scan" => BitmapIndexScan,
            "BitmapAnd" => BitmapAnd,
            "BitmapOr" => BitmapOr,
            "Tid Scan" => TidScan,
            "Tid Range Scan" => TidRangeScan,
            "Subquery Scan" => SubqueryScan,
            "Function Scan" => FunctionScan,
            "Table Function Scan" => TableFunctionScan,
            "Values Scan" => ValuesScan,
            "CTE Scan" => CteScan,
            "Named Tuplestore Scan" => NamedTuplestoreScan,
            "WorkTable Scan" => WorkTableScan,
            "Foreign Scan" => ForeignScan,
            "Custom Scan" => CustomScan,
            "Nested Loop" => NestedLoop,
            "Merge Join" => MergeJoin,
            "Hash Join" => HashJoin,
            "Hash" => Hash,
            "Sort" => Sort,
            "Incremental Sort" => IncrementalSort,
            "Aggregate" => Aggregate,
            "Group" => Group,
            "WindowAgg" => WindowAgg,
            "Unique" => Unique,
            "SetOp" => SetOp,
            "Limit" => Limit,
            "LockRows" => LockRows,
            "Gather" => Gather,
            "Gather Merge" => GatherMerge,
            "Materialize" => Materialize,
            "Memoize" => Memoize,
            "Append" => Append,
            "Merge Append" => MergeAppend,
            "Recursive Union" => RecursiveUnion,
            "Result" => Result,
            "ProjectSet" => ProjectSet,
            "ModifyTable" => ModifyTable,
            other => Other(other.to_string()),
        }
    }

    /// Whether the node reads a base table (where statistics and indexes apply).
    pub fn is_table_scan(&self) -> bool {
        matches!(
            self,
            NodeKind::SeqScan
                | NodeKind::SampleScan
                | NodeKind::IndexScan
                | NodeKind::IndexOnlyScan
                | NodeKind::BitmapHeapScan
                | NodeKind::TidScan
                | NodeKind::TidRangeScan
        )
    }
}

/// One plan node. Figures from ANALYZE are `None` without it; figures PostgreSQL only
/// prints for some nodes are `None` (or zero, for buffers) elsewhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanNode {
    /// PostgreSQL's node type, e.g. `"Seq Scan"`; see [`PlanNode::kind`].
    #[serde(rename = "Node Type")]
    pub node_type: String,
    /// How the node hangs under its parent: `Outer`, `Inner`, `Member`, `InitPlan`,
    /// `SubPlan`, `Subquery`.
    #[serde(
        rename = "Parent Relationship",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub parent_relationship: Option<String>,
    /// Name of an InitPlan, SubPlan or CTE (`"CTE big"`, `"SubPlan 2"`).
    #[serde(
        rename = "Subplan Name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub subplan_name: Option<String>,
    /// The CTE a `CTE Scan` reads.
    #[serde(rename = "CTE Name", default, skip_serializing_if = "Option::is_none")]
    pub cte_name: Option<String>,
    /// Whether the node runs in parallel workers' shared mode.
    #[serde(rename = "Parallel Aware", default)]
    pub parallel_aware: bool,
    /// Table scanned.
    #[serde(
        rename = "Relation Name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub relation_name: Option<String>,
    /// Its schema (VERBOSE only).
    #[serde(rename = "Schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Alias in the query.
    #[serde(rename = "Alias", default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Index used.
    #[serde(
        rename = "Index Name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub index_name: Option<String>,
    /// Join type (`Inner`, `Left`, `Semi`, ...).
    #[serde(rename = "Join Type", default, skip_serializing_if = "Option::is_none")]
    pub join_type: Option<String>,
    /// Aggregate strategy (`Plain`, `Sorted`, `Hashed`, `Mixed`).
    #[serde(rename = "Strategy", default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// ModifyTable operation (`Insert`, `Update`, `Delete`, `Merge`).
    #[serde(rename = "Operation", default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Estimated cost before the first row.
    #[serde(rename = "Startup Cost", default)]
    pub startup_cost: f64,
    /// Estimated cost of all rows, including children.
    #[serde(rename = "Total Cost", default)]
    pub total_cost: f64,
    /// Estimated rows per loop.
    #[serde(rename = "Plan Rows", default)]
    pub plan_rows: f64,
    /// Estimated row width in bytes.
    #[serde(rename = "Plan Width", default)]
    pub plan_width: f64,
    /// Time to the first row, ms per loop (ANALYZE).
    #[serde(
        rename = "Actual Startup Time",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub actual_startup_time_ms: Option<f64>,
    /// Time to the last row, ms per loop (ANALYZE).
    #[serde(
        rename = "Actual Total Time",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub actual_total_time_ms: Option<f64>,
    /// Rows per loop (ANALYZE).
    #[serde(
        rename = "Actual Rows",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub actual_rows: Option<f64>,
    /// Times the node ran (ANALYZE).
    #[serde(
        rename = "Actual Loops",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub actual_loops: Option<f64>,
    /// Parallel workers planned (Gather).
    #[serde(
        rename = "Workers Planned",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub workers_planned: Option<u64>,
    /// Parallel workers launched (Gather, ANALYZE).
    #[serde(
        rename = "Workers Launched",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub workers_launched: Option<u64>,
    /// Filter applied after reading rows.
    #[serde(rename = "Filter", default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Index condition.
    #[serde(
        rename = "Index Cond",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub index_cond: Option<String>,
    /// Recheck condition of a bitmap heap scan.
    #[serde(
        rename = "Recheck Cond",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub recheck_cond: Option<String>,
    /// Hash join condition.
    #[serde(rename = "Hash Cond", default, skip_serializing_if = "Option::is_none")]
    pub hash_cond: Option<String>,
    /// Merge join condition.
    #[serde(
        rename = "Merge Cond",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub merge_cond: Option<String>,
    /// Join filter.
    #[serde(
        rename = "Join Filter",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub join_filter: Option<String>,
    /// Rows removed by the filter, per loop.
    #[serde(
        rename = "Rows Removed by Filter",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub rows_removed_by_filter: Option<f64>,
    /// Rows removed by the index recheck, per loop.
    #[serde(
        rename = "Rows Removed by Index Recheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub rows_removed_by_index_recheck: Option<f64>,
    /// Rows removed by the join filter, per loop.
    #[serde(
        rename = "Rows Removed by Join Filter",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub rows_removed_by_join_filter: Option<f64>,
    /// Sort keys.
    #[serde(rename = "Sort Key", default, skip_serializing_if = "Vec::is_empty")]
    pub sort_key: Vec<String>,
    /// Grouping keys of an Aggregate or Group node.
    #[serde(rename = "Group Key", default, skip_serializing_if = "Vec::is_empty")]
    pub group_key: Vec<String>,
    /// Sort method (`quicksort`, `top-N heapsort`, `external merge`, ...).
    #[serde(
        rename = "Sort Method",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sort_method: Option<String>,
    /// `Memory` or `Disk`.
    #[serde(
        rename = "Sort Space Type",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sort_space_type: Option<String>,
    /// Sort space used, kB.
    #[serde(
        rename = "Sort Space Used",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sort_space_used_kb: Option<f64>,
    /// Hash batches used.
    #[serde(
        rename = "Hash Batches",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub hash_batches: Option<u64>,
    /// Hash batches planned.
    #[serde(
        rename = "Original Hash Batches",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub original_hash_batches: Option<u64>,
    /// Peak memory of a hash, kB.
    #[serde(
        rename = "Peak Memory Usage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub peak_memory_kb: Option<f64>,
    /// Heap fetches of an index-only scan (rows not known all-visible).
    #[serde(
        rename = "Heap Fetches",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub heap_fetches: Option<f64>,
    /// Exact heap blocks of a bitmap heap scan.
    #[serde(
        rename = "Exact Heap Blocks",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exact_heap_blocks: Option<u64>,
    /// Lossy heap blocks of a bitmap heap scan (bitmap did not fit in work_mem).
    #[serde(
        rename = "Lossy Heap Blocks",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub lossy_heap_blocks: Option<u64>,
    /// Buffer counters (BUFFERS).
    #[serde(flatten)]
    pub buffers: Buffers,
    /// Child nodes, including InitPlans, SubPlans and CTEs.
    #[serde(rename = "Plans", default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<PlanNode>,
}

impl PlanNode {
    /// The node type as an enum.
    pub fn kind(&self) -> NodeKind {
        NodeKind::from_name(&self.node_type)
    }

    /// Loops, 1 when absent.
    pub fn loops(&self) -> f64 {
        self.actual_loops.unwrap_or(1.0)
    }

    /// Rows over all loops (ANALYZE).
    pub fn total_actual_rows(&self) -> Option<f64> {
        self.actual_rows.map(|r| r * self.loops())
    }

    /// Whether the node was executed at all (ANALYZE with loops > 0).
    pub fn executed(&self) -> bool {
        self.actual_loops.is_some_and(|l| l > 0.0)
    }

    /// Whether this child is an InitPlan or SubPlan (CTEs included).
    pub fn is_subplan(&self) -> bool {
        matches!(
            self.parent_relationship.as_deref(),
            Some("InitPlan") | Some("SubPlan")
        )
    }

    /// The CTE this node computes, if it is a CTE's InitPlan (`Subplan Name` = `CTE x`).
    pub fn cte_defined(&self) -> Option<&str> {
        if self.parent_relationship.as_deref() == Some("InitPlan") {
            self.subplan_name.as_deref()?.strip_prefix("CTE ")
        } else {
            None
        }
    }
}

impl Plan {
    /// Parses EXPLAIN's JSON: the `[ { "Plan": ... } ]` array PostgreSQL prints, or the
    /// bare object inside it.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        Self::from_value(value)
    }

    /// As [`Plan::from_json`], from an already parsed value.
    pub fn from_value(value: serde_json::Value) -> Result<Self> {
        let obj = match value {
            serde_json::Value::Array(mut items) => {
                if items.is_empty() {
                    return Err(Error::EmptyPlan);
                }
                items.swap_remove(0)
            }
            other => other,
        };
        Ok(serde_json::from_value(obj)?)
    }

    /// Every node in depth-first order with its derived figures.
    pub fn nodes(&self) -> Vec<NodeInfo<'_>> {
        let mut out = Vec::new();
        walk(&self.root, "0".to_string(), None, 1.0, &mut out);
        cte_adjust(&mut out);
        out
    }

    /// The time the whole statement took: Execution Time, else the root's total time.
    pub fn total_time_ms(&self) -> Option<f64> {
        self.execution_time_ms.or_else(|| {
            self.root
                .actual_total_time_ms
                .map(|t| t * self.root.loops())
        })
    }

    /// The plan-wide maxima PEV2 reports.
    pub fn summary(&self) -> PlanSummary {
        let nodes = self.nodes();
        let pick = |f: &dyn Fn(&NodeInfo<'_>) -> Option<f64>| -> Option<(String, f64)> {
            nodes
                .iter()
                .filter_map(|n| f(n).map(|v| (n.path.clone(), v)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
        };
        PlanSummary {
            largest_rows: pick(&|n| n.node.total_actual_rows().or(Some(n.node.plan_rows))),
            costliest: pick(&|n| Some(n.own_cost)),
            slowest: pick(&|n| n.own_time_ms),
            most_blocks_read: pick(&|n| Some(n.node.buffers.blocks_read() as f64)),
        }
    }
}

/// Plan-wide maxima: each the node path and its figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanSummary {
    /// Most rows (actual, else planned).
    pub largest_rows: Option<(String, f64)>,
    /// Highest own cost.
    pub costliest: Option<(String, f64)>,
    /// Highest own time, ms (ANALYZE).
    pub slowest: Option<(String, f64)>,
    /// Most blocks read (BUFFERS; cumulative, as PostgreSQL reports them).
    pub most_blocks_read: Option<(String, f64)>,
}

/// A node with its position and derived figures.
#[derive(Debug, Clone)]
pub struct NodeInfo<'a> {
    /// The node.
    pub node: &'a PlanNode,
    /// Its parent, `None` for the root.
    pub parent: Option<&'a PlanNode>,
    /// Child indexes from the root, e.g. `"0.1.0"`.
    pub path: String,
    /// Wall-clock time of the node and its children over all loops, ms (ANALYZE).
    /// In a parallel section, `time x loops` is divided by the processes (workers
    /// launched + leader), since each process reports its own time.
    pub total_time_ms: Option<f64>,
    /// Own (exclusive) time: total minus the children's totals, at least 0.
    pub own_time_ms: Option<f64>,
    /// Own cost: total cost minus the children's total costs, at least 0.
    pub own_cost: f64,
}

fn node_total(node: &PlanNode, divisor: f64) -> Option<f64> {
    node.actual_total_time_ms
        .map(|t| t * node.loops() / divisor)
}

fn walk<'a>(
    node: &'a PlanNode,
    path: String,
    parent: Option<&'a PlanNode>,
    divisor: f64,
    out: &mut Vec<NodeInfo<'a>>,
) {
    let total = node_total(node, divisor);
    // Below a Gather, per-process figures are averaged over loops = processes, so
    // dividing `time x loops` by the process count gives wall-clock time. The leader
    // takes part too (parallel_leader_participation), hence workers + 1.
    let child_divisor = match node.kind() {
        NodeKind::Gather | NodeKind::GatherMerge => {
            node.workers_launched.map_or(1.0, |w| w as f64 + 1.0)
        }
        _ => divisor,
    };
    let mut children_time = 0.0;
    let mut children_cost = 0.0;
    for c in &node.children {
        // Time: a CTE's time is spent inside the CTE Scans that pull from it; it is taken off
        // those (see cte_adjust), not off the node the CTE hangs under.
        if c.cte_defined().is_none() {
            children_time += node_total(c, child_divisor).unwrap_or(0.0);
        }
    }
    let outer_rows = node
        .children
        .iter()
        .find(|c| c.parent_relationship.as_deref() == Some("Outer"))
        .map_or(1.0, |c| c.plan_rows.max(1.0));
    for c in &node.children {
        // A SubPlan's cost is charged once per evaluation, estimated as once per row
        // of the node evaluating it. CTEs stay in: the parent's cost includes them.
        // Likewise a Nested Loop's inner side is costed per outer row.
        let calls = match c.parent_relationship.as_deref() {
            Some("SubPlan") => node.plan_rows.max(1.0),
            Some("Inner") if node.kind() == NodeKind::NestedLoop => outer_rows,
            _ => 1.0,
        };
        children_cost += c.total_cost * calls;
    }
    let own_time = total.map(|t| (t - children_time).max(0.0));
    let own_cost = (node.total_cost - children_cost).max(0.0);
    out.push(NodeInfo {
        node,
        parent,
        path: path.clone(),
        total_time_ms: total,
        own_time_ms: own_time,
        own_cost,
    });
    for (i, c) in node.children.iter().enumerate() {
        walk(c, format!("{path}.{i}"), Some(node), child_divisor, out);
    }
}

/// Takes each CTE's total time off the own time of the CTE Scans reading it: the scan
/// that first pulls rows runs the CTE. Which one it was is not in the output, so the
/// time is taken from the slowest scans first.
fn cte_adjust(nodes: &mut [NodeInfo<'_>]) {
    let ctes: Vec<(String, f64)> = nodes
        .iter()
        .filter_map(|n| Some((n.node.cte_defined()?.to_string(), n.total_time_ms?)))
        .collect();
    for (name, cte_time) in ctes {
        let mut scans: Vec<usize> = (0..nodes.len())
            .filter(|&i| {
                nodes[i].node.kind() == NodeKind::CteScan
                    && nodes[i].node.cte_name.as_deref() == Some(name.as_str())
            })
            .collect();
        scans.sort_by(|&a, &b| {
            let ta = nodes[a].own_time_ms.unwrap_or(0.0);
            let tb = nodes[b].own_time_ms.unwrap_or(0.0);
            tb.total_cmp(&ta)
        });
        let mut left = cte_time;
        for i in scans {
            if let Some(own) = nodes[i].own_time_ms {
                let take = own.min(left);
                nodes[i].own_time_ms = Some(own - take);
                left -= take;
            }
        }
    }
}

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;
