//! The rule engine: [`PlanRule`]s over every node, [`Finding`]s with a severity, the
//! measured figure and its threshold, and a suggested fix.
//!
//! One family of rules per file: [`hotspots`] (where the time and cost go), [`estimates`]
//! (row misestimates), [`scans`] (table scans and what their filters waste), [`spills`]
//! (sorts and hashes past `work_mem`), [`joins`], [`limits`] (OFFSET pagination); the
//! thresholds of all of them in [`thresholds`].

use std::fmt;

use serde::{Deserialize, Serialize};

use super::filter::{IndexCandidate, quote_ident};
use super::{NodeInfo, Plan, PlanNode};

mod estimates;
mod hotspots;
mod joins;
mod limits;
mod scans;
mod spills;
mod thresholds;

pub use estimates::{BadEstimate, StaleStats};
pub use hotspots::{CostlyNode, HighTotalCost, SlowNode};
pub use joins::{LargeHashJoin, NestedLoopLoops};
pub use limits::LargeOffset;
pub use scans::{HeapFetches, IndexableSeqScan, LossyBitmap, RowsRemovedByFilter, SeqScan};
pub use spills::{DiskSort, HashBatches};
pub use thresholds::{Levels, Thresholds};

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
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

#[cfg(test)]
pub(super) mod test_support {
    //! Running one rule over a hand-written plan.

    use super::*;

    /// The findings of `rule` alone over the plan `json`, with the default thresholds.
    pub(crate) fn run(rule: impl PlanRule + 'static, json: &str) -> Vec<Finding> {
        let plan = Plan::from_json(json).expect("test plan parses");
        analyze_with(&plan, &Thresholds::default(), &[Box::new(rule)])
    }

    /// A one-node ANALYZE plan: `node` holds the node's fields (JSON object members),
    /// executed once, 10 ms of 10 ms.
    pub(crate) fn single(node: &str) -> String {
        format!(
            r#"{{"Plan": {{"Startup Cost": 0.0, "Plan Width": 8, "Actual Loops": 1,
                "Actual Startup Time": 0.0, "Actual Total Time": 10.0, {node}}},
                "Execution Time": 10.0}}"#
        )
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{run, single};
    use super::*;

    #[test]
    fn findings_sort_by_severity_then_own_time() {
        let plan = Plan::from_json(&single(
            r#""Node Type": "Seq Scan", "Relation Name": "t", "Total Cost": 5000.0,
               "Plan Rows": 1, "Actual Rows": 1000"#,
        ))
        .unwrap();
        let fs = analyze(&plan, &Thresholds::default());
        assert!(
            fs.windows(2).all(|w| w[0].severity >= w[1].severity),
            "{fs:#?}"
        );
        assert!(fs.iter().any(|f| f.rule == "seq_scan"));
        assert_eq!(default_rules().len(), 20);
    }

    #[test]
    fn helpers_format_numbers_and_quote_tables() {
        assert_eq!(fmt_num(3.0), "3");
        assert_eq!(fmt_num(2.5), "2.50");
        let plan = Plan::from_json(&single(
            r#""Node Type": "Seq Scan", "Relation Name": "o\"rders", "Schema": "app",
               "Total Cost": 1.0, "Plan Rows": 1, "Actual Rows": 1"#,
        ))
        .unwrap();
        assert_eq!(
            table_sql(&plan.root).as_deref(),
            Some(r#""app"."o""rders""#)
        );
        assert!(
            run(
                SeqScan,
                &single(
                    r#""Node Type": "Result", "Total Cost": 1.0, "Plan Rows": 1, "Actual Rows": 1"#
                )
            )
            .is_empty()
        );
    }
}
