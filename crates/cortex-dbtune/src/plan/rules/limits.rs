//! Limits that read many rows only to discard them: OFFSET pagination.

use super::super::{NodeKind, PlanNode};
use super::{Finding, PlanContext, PlanRule, fmt_num};

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

#[cfg(test)]
mod tests {
    use super::super::test_support::{run, single};
    use super::*;
    use crate::plan::Severity;

    #[test]
    fn discarded_rows_are_graded() {
        let plan = |read: u32| {
            single(&format!(
                r#""Node Type": "Limit", "Total Cost": 1.0, "Plan Rows": 10, "Actual Rows": 10,
                   "Plans": [{{"Node Type": "Seq Scan", "Parent Relationship": "Outer",
                     "Relation Name": "t", "Total Cost": 1.0, "Plan Rows": 1, "Plan Width": 8,
                     "Actual Loops": 1, "Actual Rows": {read}}}]"#
            ))
        };
        assert!(run(LargeOffset, &plan(10_010)).is_empty());
        let fs = run(LargeOffset, &plan(20_010));
        assert_eq!(
            (fs[0].measured, fs[0].severity),
            (20_000.0, Severity::Warning)
        );
    }
}
