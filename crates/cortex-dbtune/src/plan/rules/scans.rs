//! Table scans: filters that throw rows away, sequential scans an index would serve,
//! index-only scans that visit the heap, bitmaps gone lossy.

use super::super::filter::{self, IndexCandidate};
use super::super::{NodeKind, PlanNode};
use super::{Finding, PlanContext, PlanRule, Severity, fmt_num, table_sql};

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

/// Any sequential scan -> consider an index (info).
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{run, single};
    use super::*;

    fn seq_scan(rows: u32, removed: u32) -> String {
        single(&format!(
            r#""Node Type": "Seq Scan", "Relation Name": "orders", "Schema": "public",
               "Total Cost": 100.0, "Plan Rows": {rows}, "Actual Rows": {rows},
               "Filter": "(customer_id = 42)", "Rows Removed by Filter": {removed}"#
        ))
    }

    #[test]
    fn filters_that_waste_rows_suggest_an_index() {
        let fs = run(IndexableSeqScan, &seq_scan(10, 100_000));
        assert_eq!(fs.len(), 1, "{fs:#?}");
        assert!(
            fs[0].suggestion.contains(r#"CREATE INDEX CONCURRENTLY"#),
            "{}",
            fs[0].suggestion
        );
        assert!(
            fs[0].suggestion.contains(r#"("customer_id")"#),
            "{}",
            fs[0].suggestion
        );
        // Little waste: under 2 x returned rows, or under 24 576 bytes read.
        assert!(run(IndexableSeqScan, &seq_scan(10_000, 10_000)).is_empty());
        assert!(run(IndexableSeqScan, &seq_scan(1, 100)).is_empty());
        let removed = run(RowsRemovedByFilter, &seq_scan(10, 100_000));
        assert_eq!(removed[0].severity, Severity::Critical);
        assert!(run(RowsRemovedByFilter, &seq_scan(10, 900)).is_empty());
        let seq = run(SeqScan, &seq_scan(10, 5));
        assert_eq!((seq[0].severity, seq[0].measured), (Severity::Info, 15.0));
    }

    #[test]
    fn heap_fetches_and_lossy_bitmaps() {
        let ios = single(
            r#""Node Type": "Index Only Scan", "Relation Name": "t", "Schema": "s",
               "Index Name": "i", "Total Cost": 1.0, "Plan Rows": 100, "Actual Rows": 100,
               "Heap Fetches": 50"#,
        );
        let fs = run(HeapFetches, &ios);
        assert_eq!((fs[0].severity, fs[0].measured), (Severity::Warning, 50.0));
        assert!(
            fs[0].suggestion.starts_with(r#"VACUUM "s"."t";"#),
            "{}",
            fs[0].suggestion
        );
        let bitmap = |lossy: u32| {
            single(&format!(
                r#""Node Type": "Bitmap Heap Scan", "Relation Name": "t", "Total Cost": 1.0,
                   "Plan Rows": 1, "Actual Rows": 1, "Exact Heap Blocks": 10,
                   "Lossy Heap Blocks": {lossy}"#
            ))
        };
        assert!(run(LossyBitmap, &bitmap(0)).is_empty());
        assert_eq!(run(LossyBitmap, &bitmap(3))[0].measured, 3.0);
    }
}
