//! Work that outgrew `work_mem` and went to temporary files: disk sorts and hash
//! batches.

use super::super::PlanNode;
use super::{Finding, PlanContext, PlanRule, Severity, fmt_num};

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

#[cfg(test)]
mod tests {
    use super::super::test_support::{run, single};
    use super::*;

    #[test]
    fn a_sort_on_disk_suggests_twice_its_size_in_work_mem() {
        let sort = |method: &str, space: &str| {
            single(&format!(
                r#""Node Type": "Sort", "Total Cost": 1.0, "Plan Rows": 1, "Actual Rows": 1,
                   "Sort Key": ["a"], "Sort Method": "{method}", "Sort Space Used": 3000,
                   "Sort Space Type": "{space}""#
            ))
        };
        let fs = run(DiskSort, &sort("external merge", "Disk"));
        assert_eq!(fs[0].measured, 3000.0);
        assert!(fs[0].suggestion.contains("'6MB'"), "{}", fs[0].suggestion);
        assert!(run(DiskSort, &sort("quicksort", "Memory")).is_empty());
    }

    #[test]
    fn hash_batches_above_one() {
        let hash = |batches: u32| {
            single(&format!(
                r#""Node Type": "Hash", "Total Cost": 1.0, "Plan Rows": 1, "Actual Rows": 1,
                   "Hash Batches": {batches}, "Original Hash Batches": 1, "Peak Memory Usage": 100"#
            ))
        };
        assert!(run(HashBatches, &hash(1)).is_empty());
        let fs = run(HashBatches, &hash(4));
        assert_eq!((fs[0].measured, fs[0].severity), (4.0, Severity::Warning));
        assert!(fs[0].suggestion.contains("400 kB"), "{}", fs[0].suggestion);
    }
}
