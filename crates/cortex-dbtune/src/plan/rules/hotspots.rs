//! Where the time and the cost go: slow and costly nodes, a costly plan.

use super::super::{NodeInfo, PlanNode};
use super::{Finding, PlanContext, PlanRule, Severity};

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

/// A plan costing over 1000 -> optimize the most expensive
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{run, single};
    use super::*;

    #[test]
    fn slow_node_grades_the_share_of_execution_time() {
        // One node: all 10 ms are its own, 100% > 90%.
        let fs = run(
            SlowNode,
            &single(
                r#""Node Type": "Seq Scan", "Total Cost": 1.0, "Plan Rows": 1, "Actual Rows": 1"#,
            ),
        );
        assert_eq!(fs.len(), 1);
        assert_eq!(
            (fs[0].severity, fs[0].threshold),
            (Severity::Critical, 90.0)
        );
    }

    #[test]
    fn costly_node_needs_its_floor() {
        let cheap = single(
            r#""Node Type": "Seq Scan", "Total Cost": 99.0, "Plan Rows": 1, "Actual Rows": 1"#,
        );
        assert!(run(CostlyNode, &cheap).is_empty());
        let dear = single(
            r#""Node Type": "Seq Scan", "Total Cost": 500.0, "Plan Rows": 1, "Actual Rows": 1"#,
        );
        assert_eq!(run(CostlyNode, &dear)[0].severity, Severity::Critical);
    }

    #[test]
    fn high_total_cost_fires_once_on_the_root() {
        let plan = single(
            r#""Node Type": "Limit", "Total Cost": 2000.0, "Plan Rows": 1, "Actual Rows": 1,
               "Plans": [{"Node Type": "Seq Scan", "Parent Relationship": "Outer",
                 "Relation Name": "t", "Total Cost": 1900.0, "Plan Rows": 1, "Plan Width": 8,
                 "Actual Loops": 1, "Actual Rows": 1}]"#,
        );
        let fs = run(HighTotalCost, &plan);
        assert_eq!(fs.len(), 1, "{fs:#?}");
        assert_eq!(fs[0].node_path, "0");
        assert!(
            fs[0].suggestion.contains("Seq Scan on t"),
            "{}",
            fs[0].suggestion
        );
        let cheap = single(
            r#""Node Type": "Result", "Total Cost": 1000.0, "Plan Rows": 1, "Actual Rows": 1"#,
        );
        assert!(run(HighTotalCost, &cheap).is_empty());
    }
}
