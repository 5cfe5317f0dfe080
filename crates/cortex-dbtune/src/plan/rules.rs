//! The rule engine: [`PlanRule`]s over every node, [`Finding`]s with a severity, the
//! measured figure and its threshold, and a suggested fix.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::filter::{self, IndexCandidate, quote_ident};
use super::{NodeInfo, NodeKind, Plan, PlanNode};

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing (PEV2 level 2).
    Info,
    /// Worth fixing (PEV2 level 3).
    Warning,
    /// Dominates the query (PEV2 level 4).
    Critical,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        })
    }
}

/// One problem found in a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The rule's id, e.g. `"indexable_seq_scan"`.
    pub rule: &'static str,
    /// How much it matters.
    pub severity: Severity,
    /// Child indexes from the root, e.g. `"0.1.0"`.
    pub node_path: String,
    /// The node's type, e.g. `"Seq Scan"`.
    pub node_type: String,
    /// The table the node reads, if any.
    pub relation: Option<String>,
    /// The figure the rule measured (its unit depends on the rule; see `message`).
    pub measured: f64,
    /// The threshold it crossed (the one that set the severity).
    pub threshold: f64,
    /// What was found, with the figures.
    pub message: String,
    /// The suggested fix.
    pub suggestion: String,
    /// The node's own time in ms (ANALYZE), used to rank findings of equal severity.
    pub own_time_ms: Option<f64>,
    /// For index suggestions: the index, with its `CREATE INDEX` statement.
    pub index: Option<IndexCandidate>,
}

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
    /// high_total_cost: root total cost above this (the original design: 1000).
    pub high_total_cost: f64,
    /// large_hash_join: planned rows of a Hash Join above this (the original: 10,000).
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

/// What a rule sees besides the node: the plan, the thresholds and the node's
/// position and derived figures.
#[derive(Debug)]
pub struct PlanContext<'a> {
    /// The whole plan.
    pub plan: &'a Plan,
    /// The thresholds in force.
    pub thresholds: &'a Thresholds,
    /// The node's position and derived figures (own time, own cost).
    pub info: &'a NodeInfo<'a>,
    /// All nodes, depth first (for plan-wide rules).
    pub all: &'a [NodeInfo<'a>],
    /// The statement's time, ms: Execution Time, else the root's total (ANALYZE).
    pub execution_time_ms: Option<f64>,
    /// The plan's highest total cost (the root's, unless subplans exceed it).
    pub max_total_cost: f64,
}

impl PlanContext<'_> {
    /// A finding about `node` with the common fields filled in.
    #[allow(clippy::too_many_arguments)]
    pub fn finding(
        &self,
        rule: &'static str,
        node: &PlanNode,
        severity: Severity,
        measured: f64,
        threshold: f64,
        message: String,
        suggestion: String,
    ) -> Finding {
        Finding {
            rule,
            severity,
            node_path: self.info.path.clone(),
            node_type: node.node_type.clone(),
            relation: node.relation_name.clone(),
            measured,
            threshold,
            message,
            suggestion,
            own_time_ms: self.info.own_time_ms,
            index: None,
        }
    }
}

/// A check on one plan node.
pub trait PlanRule: Send + Sync {
    /// The rule's stable id, e.g. `"disk_sort"`.
    fn id(&self) -> &'static str;
    /// A finding when the node has the problem.
    fn check(&self, node: &PlanNode, ctx: &PlanContext<'_>) -> Option<Finding>;
}

/// Runs the default rules over every node; findings sorted by severity (critical first),
/// then by the node's own time, then by the measured figure.
pub fn analyze(plan: &Plan, thresholds: &Thresholds) -> Vec<Finding> {
    analyze_with(plan, thresholds, &default_rules())
}

/// As [`analyze`] with a chosen rule set.
pub fn analyze_with(
    plan: &Plan,
    thresholds: &Thresholds,
    rules: &[Box<dyn PlanRule>],
) -> Vec<Finding> {
    let all = plan.nodes();
    let max_total_cost = all
        .iter()
        .map(|n| n.node.total_cost)
        .fold(0.0_f64, f64::max);
    let execution_time_ms = plan.total_time_ms();
    let mut out = Vec::new();
    for info in &all {
        let ctx = PlanContext {
            plan,
            thresholds,
            info,
            all: &all,
            execution_time_ms,
            max_total_cost,
        };
        out.extend(rules.iter().filter_map(|r| r.check(info.node, &ctx)));
    }
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(
                b.own_time_ms
                    .unwrap_or(0.0)
                    .total_cmp(&a.own_time_ms.unwrap_or(0.0)),
            )
            .then(b.measured.total_cmp(&a.measured))
    });
    out
}

/// All built-in rules.
pub fn default_rules() -> Vec<Box<dyn PlanRule>> {
    vec![
        Box::new(SlowNode),
        Box::new(CostlyNode),
        Box::new(BadEstimate),
        Box::new(RowsRemovedByFilter),
        Box::new(IndexableSeqScan),
        Box::new(DiskSort),
        Box::new(HashBatches),
        Box::new(HeapFetches),
        Box::new(LossyBitmap),
        Box::new(LargeOffset),
        Box::new(NestedLoopLoops),
        Box::new(StaleStats),
        Box::new(SeqScan),
        Box::new(HighTotalCost),
        Box::new(LargeHashJoin),
        Box::new(super::patterns::PartialIndex),
        Box::new(super::patterns::GinIndex),
        Box::new(super::patterns::CorrelatedSubplan),
        Box::new(super::patterns::MaterializedView),
        Box::new(super::patterns::PartitionByMonth),
    ]
}

/// A number as rules print it: whole numbers without decimals, others with two.
pub(super) fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The node's table as SQL: schema-qualified when the plan names the schema, quoted.
pub(super) fn table_sql(node: &PlanNode) -> Option<String> {
    let t = node.relation_name.as_deref()?;
    Some(match node.schema.as_deref() {
        Some(s) => format!("{}.{}", quote_ident(s), quote_ident(t)),
        None => quote_ident(t),
    })
}

/// Own time as a share of the statement's time (PEV2 "slow").
#[derive(Debug, Clone, Copy)]
pub struct SlowNode;

impl PlanRule for SlowNode {
    fn id(&self) -> &'static str {
        "slow_node"
    }
    fn check(&self, node: &PlanNode, ctx: &PlanContext<'_>) -> Option<Finding> {
        let own = ctx
            .info
            .own_time_ms
            .filter(|&o| o >= ctx.thresholds.slow_node_min_ms)?;
        let total = ctx.execution_time_ms.filter(|&t| t > 0.0)?;
        let pct = own / total * 100.0;
        let (sev, t) = ctx.thresholds.slow_node_pct.grade(pct)?;
        Some(ctx.finding(
            self.id(),
            node,
            sev,
            pct,
            t,
            format!(
                "{} spends {own:.2} ms of its own, {pct:.1}% of the {total:.2} ms query",
                node.node_type
            ),
            "optimize this operation first: it dominates the run time".to_string(),
        ))
    }
}

/// Own cost as a share of the plan's highest total cost (PEV2 "costly").
#[derive(Debug, Clone, Copy)]
pub struct CostlyNode;

impl PlanRule for CostlyNode {
    fn id(&self) -> &'static str {
        "costly_node"
    }
    fn check(&self, node: &PlanNode, ctx: &PlanContext<'_>) -> Option<Finding> {
        if ctx.max_total_cost <= 0.0 || ctx.info.own_cost < ctx.thresholds.costly_node_min_cost {
            return None;
        }
        let pct = ctx.info.own_cost / ctx.max_total_cost * 100.0;
        let (sev, t) = ctx.thresholds.costly_node_pct.grade(pct)?;
        Some(
            ctx.finding(
                self.id(),
                node,
                sev,
                pct,
                t,
                format!(
                    "{} has an own cost of {:.2}, {pct:.1}% of the plan's {:.2}",
                    node.node_type, ctx.info.own_cost, ctx.max_total_cost
                ),
                "the planner expects this operation to dominate: reduce the rows it handles"
                    .to_string(),
            ),
        )
    }
}

/// Row misestimate, either way (PEV2 "bad estimate").
#[derive(Debug, Clone, Copy)]
pub struct BadEstimate;

/// max(actual/planned, planned/actual), each at least 1 row (0 rows means "at most 1"
/// to the planner, which never estimates below 1).
fn misestimate(node: &PlanNode) -> Option<f64> {
    if !node.executed() {
        return None;
    }
    let actual = node.actual_rows?.max(1.0);
    let planned = node.plan_rows.max(1.0);
    Some((actual / planned).max(planned / actual))
}

impl PlanRule for BadEstimate {
    fn id(&self) -> &'static str {
        "bad_estimate"
    }
    fn check(&self, node: &PlanNode, ctx: &PlanContext<'_>) -> Option<Finding> {
        let ratio = misestimate(node)?;
        let (sev, t) = ctx.thresholds.bad_estimate_ratio.grade(ratio)?;
        let actual = node.actual_rows.unwrap_or(0.0);
        let dir = if actual > node.plan_rows {
            "under"
        } else {
            "over"
        };
        Some(
            ctx.finding(
                self.id(),
                node,
                sev,
                ratio,
                t,
                format!(
                    "{} {dir}estimated: planned {} rows, got {} ({ratio:.0}x)",
                    node.node_type,
                    fmt_num(node.plan_rows),
                    fmt_num(actual)
                ),
                "refresh statistics (ANALYZE), raise the column's statistics target, or add \
             extended statistics (CREATE STATISTICS) for correlated columns"
                    .to_string(),
            ),
        )
    }
}

/// Share of read rows thrown away by a filter (PEV2 "rows removed by filter").
#[derive(Debug, Clone, Copy)]
pub struct RowsRemovedByFilter;

impl PlanRule for RowsRemovedByFilter {
    fn id(&self) -> &'static str {
        "rows_removed_by_filter"
    }
    fn check(&self, node: &PlanNode, ctx: &PlanContext<'_>) -> Option<Finding> {
        let per_loop = node.rows_removed_by_filter.unwrap_or(0.0)
            + node.rows_removed_by_join_filter.unwrap_or(0.0);
        let removed = per_loop * node.loops();
        let kept = node.total_actual_rows()?;
        if removed <= ctx.thresholds.rows_removed_min || removed + kept <= 0.0 {
            return None;
        }
        let pct = removed / (removed + kept) * 100.0;
        let (sev, t) = ctx.thresholds.rows_removed_pct.grade(pct)?;
        let what = node
            .filter
            .as_deref()
            .or(node.join_filter.as_deref())
            .unwrap_or("the filter");
        Some(
            ctx.finding(
                self.id(),
                node,
                sev,
                pct,
                t,
                format!(
                    "{} reads {} rows and its filter {what} removes {} ({pct:.1}%)",
                    node.node_type,
                    fmt_num(removed + kept),
                    fmt_num(removed)
                ),
                "make the condition usable by an index (or a more selective one) so the rows \
             are not read only to be discarded"
                    .to_string(),
            ),
        )
    }
}

/// A Seq Scan whose filter an index would serve (explain.depesz.com's hint), single- or
/// multi-column.
#[derive(Debug, Clone, Copy)]
pub struct IndexableSeqScan;

impl PlanRule for IndexableSeqScan {
    fn id(&self) -> &'static str {
        "indexable_seq_scan"
    }
    fn check(&self, node: &PlanNode, ctx: &PlanContext<'_>) -> Option<Finding> {
        if node.kind() != NodeKind::SeqScan {
            return None;
        }
        let th = ctx.thresholds;
        let filter = node.filter.as_deref()?;
        let rows = node.actual_rows?;
        let removed = node.rows_removed_by_filter?;
        // Per loop, as depesz measures: a correlated subquery re-running the scan is
        // caught per run, and the loops multiply the waste.
        let bytes = (rows + removed) * node.plan_width;
        if bytes <= th.indexable_scan_bytes || removed <= th.indexable_removed_factor * rows {
            return None;
        }
        let keys = filter::index_keys(filter)?;
        let cand = IndexCandidate {
            schema: node.schema.clone(),
            table: node.relation_name.clone()?,
            keys,
        };
        let multi = cand.keys.len() > 1;
        let total_removed = removed * node.loops();
        let sev = if total_removed > 100.0 * th.rows_removed_min {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let sql = cand.create_sql();
        let mut f = ctx.finding(
            self.id(),
            node,
            sev,
            total_removed,
            th.indexable_removed_factor * rows * node.loops(),
            format!(
                "Seq Scan on {} removes {} rows to return {} with filter {filter}; a {} \
                 index on ({}) would read only the matching rows",
                cand.table,
                fmt_num(total_removed),
                fmt_num(rows * node.loops()),
                if multi {
                    "multi-column"
                } else {
                    "single-column"
                },
                cand.columns().join(", ")
            ),
            format!("{sql};"),
        );
        f.index = Some(cand);
        Some(f)
    }
}

/// A sort that spilled to disk (depesz, pganalyze "Disk Sort").
#[derive(Debug, Clone, Copy)]
pub struct DiskSort;

impl PlanRule for DiskSort {
    fn id(&self) -> &'static str {
        "disk_sort"
    }
    fn check(&self, node: &PlanNode, ctx: &PlanContext<'_>) -> Option<Finding> {
        let on_disk = node.sort_space_type.as_deref() == Some("Disk")
            || node
                .sort_method
                .as_deref()
                .is_some_and(|m| m.starts_with("external"));
        if !on_disk {
            return None;
        }
        let kb = node.sort_space_used_kb.unwrap_or(0.0);
        // Round the suggested work_mem up to whole MB above the spill.
        let mb = (kb / 1024.0).ceil().max(1.0) * 2.0;
        Some(ctx.finding(
            self.id(),
            node,
            Severity::Warning,
            kb,
            0.0,
            format!(
                "Sort ({}) spilled {} kB to disk",
                node.sort_method.as_deref().unwrap_or("external"),
                fmt_num(kb)
            ),
            format!(
                "raise work_mem for this query (SET LOCAL work_mem = '{mb:.0}MB') or add an \
                 index providing the order ({})",
                node.sort_key.join(", ")
            ),
        ))
    }
}

/// A hash split into batches because it exceeded work_mem (PEV2, pganalyze).
#[derive(Debug, Clone, Copy)]
pub struct HashBatches;

impl PlanRule for HashBatches {
    fn id(&self) -> &'static str {
        "hash_batches"
    }
    fn check(&self, node: &PlanNode, ctx: &PlanContext<'_>) -> Option<Finding> {
        let b = node.hash_batches? as f64;
        if b <= ctx.thresholds.hash_batches {
            return None;
        }
        let peak = node.peak_memory_kb.unwrap_or(0.0);
        Some(ctx.finding(
            self.id(),
            node,
            Severity::Warning,
            b,
            ctx.thresholds.hash_batches,
            format!(
                "Hash used {} batches (planned {}), spilling to temporary files",
                fmt_num(b),
                node.original_hash_batches.map_or("?".into(), |o| o.to_string())
            ),
            format!(
                "raise work_mem (or hash_mem_multiplier) to about {:.0} kB so the hash fits \
                 in one batch, or hash the smaller input",
                (peak * b).max(peak)
            ),
        ))
    }
}

/// Index-only scans that still visit the heap (PEV2 "heap fetches").
#[derive(Debug, Clone, Copy)]
pub struct HeapFetches;

impl PlanRule for HeapFetches {
    fn id(&self) -> &'static str {
        "heap_fetches"
    }
    fn check(&self, node: &PlanNode, ctx: &PlanContext<'_>) -> Option<Finding> {
        let fetches = node.heap_fetches?;
        let rows = node.actual_rows? + node.rows_removed_by_filter.unwrap_or(0.0);
        if fetches <= 0.0 {
            return None;
        }
        let pct = fetches / rows.max(1.0) * 100.0;
        let (sev, t) = ctx.thresholds.heap_fetches_pct.grade(pct)?;
        Some(ctx.finding(
            self.id(),
            node,
            sev,
            pct,
            t,
            format!(
                "Index Only Scan fetched {} heap tuples for {} rows ({pct:.0}%): the \
                 visibility map is out of date",
                fmt_num(fetches),
                fmt_num(rows)
            ),
            match table_sql(node) {
                Some(t) => format!("VACUUM {t}; (and tune autovacuum for it)"),
                None => "VACUUM the table (and tune autovacuum for it)".to_string(),
            },
        ))
    }
}

/// Bitmap heap scans whose bitmap went lossy (pganalyze "Lossy Bitmaps").
#[derive(Debug, Clone, Copy)]
pub struct LossyBitmap;

impl PlanRule for LossyBitmap {
    fn id(&self) -> &'static str {
        "lossy_bitmap"
    }
    fn check(&self, node: &PlanNode, ctx: &PlanContext<'_>) -> Option<Finding> {
        let lossy = node.lossy_heap_blocks? as f64;
        if lossy <= ctx.thresholds.lossy_blocks {
            return None;
        }
        let exact = node.exact_heap_blocks.unwrap_or(0) as f64;
        Some(
            ctx.finding(
                self.id(),
                node,
                Severity::Warning,
                lossy,
                ctx.thresholds.lossy_blocks,
                format!(
                    "Bitmap Heap Scan went lossy on {} of {} blocks; every row there is \
                 rechecked ({} removed by recheck)",
                    fmt_num(lossy),
                    fmt_num(lossy + exact),
                    fmt_num(node.rows_removed_by_index_recheck.unwrap_or(0.0))
                ),
                "raise work_mem so the bitmap stays exact, or use a more selective condition"
                    .to_string(),
            ),
        )
    }
}

/// A Limit discarding many rows: OFFSET pagination (pganalyze "Large Offset").
#[derive(Debug, Clone, Copy)]
pub struct LargeOffset;

impl PlanRule for LargeOffset {
    fn id(&self) -> &'static str {
        "large_offset"
    }
    fn check(&self, node: &PlanNode, ctx: &PlanContext<'_>) -> Option<Finding> {
        if node.kind() != NodeKind::Limit {
            return None;
        }
        let child = node.children.iter().find(|c| !c.is_subplan())?;
        let discarded = child.total_actual_rows()? - node.total_actual_rows()?;
        let (sev, t) = ctx.thresholds.large_offset_rows.grade(discarded)?;
        Some(ctx.finding(
            self.id(),
            node,
            sev,
            discarded,
            t,
            format!(
                "Limit read {} rows and discarded {} of them (OFFSET)",
                fmt_num(child.total_actual_rows().unwrap_or(0.0)),
                fmt_num(discarded)
            ),
            "paginate by key (WHERE id > $last ORDER BY id LIMIT n) instead of OFFSET".to_string(),
        ))
    }
}

/// A Nested Loop running its inner side many times.
#[derive(Debug, Clone, Copy)]
pub struct NestedLoopLoops;

impl PlanRule for NestedLoopLoops {
    fn id(&self) -> &'static str {
        "nested_loop_loops"
    }
    fn check(&self, node: &PlanNode, ctx: &PlanContext<'_>) -> Option<Finding> {
        if node.kind() != NodeKind::NestedLoop {
            return None;
        }
        let inner = node
            .children
            .iter()
            .find(|c| c.parent_relationship.as_deref() == Some("Inner"))?;
        // Loops of the inner side relative to the Nested Loop's own runs.
        let loops = inner.loops() / node.loops().max(1.0);
        let (sev, t) = ctx.thresholds.nested_loop_loops.grade(loops)?;
        Some(
            ctx.finding(
                self.id(),
                node,
                sev,
                loops,
                t,
                format!(
                    "Nested Loop runs its inner {} {} times",
                    inner.node_type,
                    fmt_num(loops)
                ),
                "check the outer side's row estimate; with accurate statistics the planner may \
             choose a hash or merge join, or index the inner join column; when the inner \
             side computes a per-row figure (a latest or top value per key), a window \
             function over one pass (row_number() or max() OVER (PARTITION BY key)) avoids \
             the loop"
                    .to_string(),
            ),
        )
    }
}

/// A table scan misestimated by far: the statistics no longer describe the table
/// (pganalyze "Stale Stats").
#[derive(Debug, Clone, Copy)]
pub struct StaleStats;

impl PlanRule for StaleStats {
    fn id(&self) -> &'static str {
        "stale_stats"
    }
    fn check(&self, node: &PlanNode, ctx: &PlanContext<'_>) -> Option<Finding> {
        if !node.kind().is_table_scan() {
            return None;
        }
        let ratio = misestimate(node)?;
        let (sev, t) = ctx.thresholds.stale_stats_ratio.grade(ratio)?;
        let table = table_sql(node)?;
        Some(ctx.finding(
            self.id(),
            node,
            sev,
            ratio,
            t,
            format!(
                "{} on {} planned {} rows but got {} ({ratio:.0}x): its statistics look stale",
                node.node_type,
                node.relation_name.as_deref().unwrap_or("?"),
                fmt_num(node.plan_rows),
                fmt_num(node.actual_rows.unwrap_or(0.0))
            ),
            format!("ANALYZE {table}; and check that autovacuum analyzes it often enough"),
        ))
    }
}

/// The original design's rule: any sequential scan -> consider an index.
#[derive(Debug, Clone, Copy)]
pub struct SeqScan;

impl PlanRule for SeqScan {
    fn id(&self) -> &'static str {
        "seq_scan"
    }
    fn check(&self, node: &PlanNode, ctx: &PlanContext<'_>) -> Option<Finding> {
        if node.kind() != NodeKind::SeqScan {
            return None;
        }
        let read = match node.actual_rows {
            Some(r) => (r + node.rows_removed_by_filter.unwrap_or(0.0)) * node.loops(),
            None => node.plan_rows,
        };
        let table = node.relation_name.as_deref().unwrap_or("?");
        Some(ctx.finding(
            self.id(),
            node,
            Severity::Info,
            read,
            0.0,
            format!("sequential scan of {table} reading {} rows", fmt_num(read)),
            match &node.filter {
                Some(f) => format!("consider an index on {table} for the filter {f}"),
                None => format!("consider an index on {table} if only some rows are needed"),
            },
        ))
    }
}

/// The original design's rule: a plan costing over 1000 -> optimize the most expensive
/// operations (named in the suggestion).
#[derive(Debug, Clone, Copy)]
pub struct HighTotalCost;

impl PlanRule for HighTotalCost {
    fn id(&self) -> &'static str {
        "high_total_cost"
    }
    fn check(&self, node: &PlanNode, ctx: &PlanContext<'_>) -> Option<Finding> {
        // One finding per plan, on the root.
        if ctx.info.parent.is_some() || node.total_cost <= ctx.thresholds.high_total_cost {
            return None;
        }
        let mut by_cost: Vec<&NodeInfo<'_>> = ctx.all.iter().collect();
        by_cost.sort_by(|a, b| b.own_cost.total_cmp(&a.own_cost));
        let top: Vec<String> = by_cost
            .iter()
            .take(3)
            .map(|n| {
                let on = n
                    .node
                    .relation_name
                    .as_deref()
                    .map(|r| format!(" on {r}"))
                    .unwrap_or_default();
                format!(
                    "{}{on} [{}] own cost {:.2}",
                    n.node.node_type, n.path, n.own_cost
                )
            })
            .collect();
        Some(ctx.finding(
            self.id(),
            node,
            Severity::Warning,
            node.total_cost,
            ctx.thresholds.high_total_cost,
            format!("the plan's total cost is {:.2}", node.total_cost),
            format!("optimize the most expensive operations: {}", top.join("; ")),
        ))
    }
}

/// The original design's rule: a Hash Join over 10,000 planned rows -> index the join
/// columns or denormalize.
#[derive(Debug, Clone, Copy)]
pub struct LargeHashJoin;

impl PlanRule for LargeHashJoin {
    fn id(&self) -> &'static str {
        "large_hash_join"
    }
    fn check(&self, node: &PlanNode, ctx: &PlanContext<'_>) -> Option<Finding> {
        if node.kind() != NodeKind::HashJoin
            || node.plan_rows <= ctx.thresholds.large_hash_join_rows
        {
            return None;
        }
        Some(
            ctx.finding(
                self.id(),
                node,
                Severity::Warning,
                node.plan_rows,
                ctx.thresholds.large_hash_join_rows,
                format!(
                    "Hash Join planned for {} rows on {}",
                    fmt_num(node.plan_rows),
                    node.hash_cond.as_deref().unwrap_or("?")
                ),
                "index the join columns (so a filtered nested loop or merge join can be used) \
             or denormalize the joined data"
                    .to_string(),
            ),
        )
    }
}
