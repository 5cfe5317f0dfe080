//! Row estimates the planner got wrong: any node, and table scans whose statistics
//! look stale.

use super::super::PlanNode;
use super::{Finding, PlanContext, PlanRule, fmt_num, table_sql};

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

#[cfg(test)]
mod tests {
    use super::super::test_support::{run, single};
    use super::*;

    #[test]
    fn misestimates_either_way_count_at_least_one_row() {
        let under = single(
            r#""Node Type": "Seq Scan", "Relation Name": "t", "Total Cost": 1.0, "Plan Rows": 1, "Actual Rows": 5000"#,
        );
        let over = single(
            r#""Node Type": "Seq Scan", "Relation Name": "t", "Total Cost": 1.0, "Plan Rows": 5000, "Actual Rows": 0"#,
        );
        for plan in [under, over] {
            let fs = run(BadEstimate, &plan);
            assert_eq!(fs[0].measured, 5000.0, "{fs:#?}");
            assert_eq!(run(StaleStats, &plan)[0].threshold, 100.0);
        }
        let close = single(
            r#""Node Type": "Seq Scan", "Relation Name": "t", "Total Cost": 1.0, "Plan Rows": 5, "Actual Rows": 40"#,
        );
        assert!(run(BadEstimate, &close).is_empty());
    }

    #[test]
    fn stale_stats_only_on_table_scans() {
        let agg = single(
            r#""Node Type": "Aggregate", "Total Cost": 1.0, "Plan Rows": 1, "Actual Rows": 5000"#,
        );
        assert!(run(StaleStats, &agg).is_empty());
        assert!(!run(BadEstimate, &agg).is_empty());
    }
}
