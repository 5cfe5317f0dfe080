//! Joins: nested loops that run their inner side many times, large hash joins.

use super::super::{NodeKind, PlanNode};
use super::{Finding, PlanContext, PlanRule, Severity, fmt_num};

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

/// A Hash Join over 10,000 planned rows -> index the join
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{run, single};
    use super::*;

    #[test]
    fn nested_loop_counts_inner_loops_per_own_run() {
        let plan = |loops: u32| {
            single(&format!(
                r#""Node Type": "Nested Loop", "Total Cost": 1.0, "Plan Rows": 1, "Actual Rows": 1,
                   "Plans": [
                     {{"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Relation Name": "a",
                       "Total Cost": 1.0, "Plan Rows": 1, "Plan Width": 8, "Actual Loops": 1, "Actual Rows": 1}},
                     {{"Node Type": "Index Scan", "Parent Relationship": "Inner", "Relation Name": "b",
                       "Total Cost": 1.0, "Plan Rows": 1, "Plan Width": 8, "Actual Loops": {loops}, "Actual Rows": 1}}]"#
            ))
        };
        assert!(run(NestedLoopLoops, &plan(1000)).is_empty());
        assert_eq!(
            run(NestedLoopLoops, &plan(1001))[0].severity,
            Severity::Warning
        );
        assert_eq!(
            run(NestedLoopLoops, &plan(100_001))[0].severity,
            Severity::Critical
        );
    }

    #[test]
    fn large_hash_join_by_planned_rows() {
        let plan = |rows: u32| {
            single(&format!(
                r#""Node Type": "Hash Join", "Total Cost": 1.0, "Plan Rows": {rows}, "Actual Rows": 1,
                   "Hash Cond": "(a.id = b.a_id)""#
            ))
        };
        assert!(run(LargeHashJoin, &plan(10_000)).is_empty());
        let fs = run(LargeHashJoin, &plan(10_001));
        assert!(
            fs[0].message.contains("(a.id = b.a_id)"),
            "{}",
            fs[0].message
        );
    }
}
