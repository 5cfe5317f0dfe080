//! A maintenance report of the current database: unused and duplicate indexes, dead
//! tuples, an estimate of table bloat and the last (auto)vacuum and analyze, each with
//! suggested SQL whose identifiers are quoted with [`quote_ident`].
//!
//! Index usage counters (`idx_scan`) count since the last statistics reset: an index
//! unused since then may still serve a monthly report. Check
//! `pg_stat_database.stats_reset` before dropping.

use serde::Serialize;
use sqlx::Row;
use sqlx::postgres::PgPool;

use crate::Result;
use crate::plan::quote_ident;

/// Dead tuples over (live + dead) above which a table is suggested a VACUUM, with at
/// least [`MIN_DEAD_TUPLES`] dead (autovacuum's own default trigger is 20% + 50 rows).
pub const DEAD_RATIO: f64 = 0.1;
/// The fewest dead tuples worth a manual VACUUM.
pub const MIN_DEAD_TUPLES: i64 = 1000;

/// An index never scanned since the statistics were reset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnusedIndex {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Index.
    pub index: String,
    /// Size on disk.
    pub size_bytes: i64,
    /// `DROP INDEX CONCURRENTLY "schema"."index";`
    pub sql: String,
}

/// Indexes of one table with the same method, columns, operator classes, expressions
/// and predicate: all but one are redundant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DuplicateIndexes {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// The index kept: a primary key or unique index if one is among them, else the
    /// first by name.
    pub keep: String,
    /// The redundant ones.
    pub redundant: Vec<String>,
    /// The kept index's definition (`pg_get_indexdef`).
    pub definition: String,
    /// `DROP INDEX CONCURRENTLY` of each redundant index that backs no constraint.
    pub sql: Vec<String>,
}

/// Vacuum health of one table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableHealth {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// `n_live_tup`.
    pub live_tuples: i64,
    /// `n_dead_tup`.
    pub dead_tuples: i64,
    /// dead / (live + dead), when there are any.
    pub dead_ratio: Option<f64>,
    /// Estimated share of the table's pages that is bloat: `1 - expected / relpages`,
    /// where `expected = reltuples x (sum of pg_stats.avg_width + 28 bytes of tuple
    /// header and line pointer) / (block size - 24 bytes of page header)`. Rough: it
    /// ignores alignment padding, fillfactor and TOAST; `None` without statistics
    /// (never analyzed) or for an empty table.
    pub estimated_bloat_ratio: Option<f64>,
    /// Last manual VACUUM.
    pub last_vacuum: Option<String>,
    /// Last autovacuum.
    pub last_autovacuum: Option<String>,
    /// Last manual ANALYZE.
    pub last_analyze: Option<String>,
    /// Last autoanalyze.
    pub last_autoanalyze: Option<String>,
    /// Whether a VACUUM (ANALYZE) is suggested: many dead tuples, or never analyzed.
    pub needs_vacuum: bool,
    /// `VACUUM (ANALYZE) "schema"."table";`
    pub sql: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaintenanceReport {
    /// Indexes never scanned (neither unique nor primary, backing no constraint).
    pub unused_indexes: Vec<UnusedIndex>,
    /// Sets of identical indexes.
    pub duplicate_indexes: Vec<DuplicateIndexes>,
    /// Every user table, most dead tuples first.
    pub tables: Vec<TableHealth>,
}

fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// Reads the report from the database `pool` is connected to (user schemas only).
pub async fn maintenance_report(pool: &PgPool) -> Result<MaintenanceReport> {
    let rows = sqlx::query(
        "SELECT s.schemaname::text, s.relname::text, s.indexrelname::text, \
                pg_relation_size(s.indexrelid) \
         FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid \
         WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary \
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = s.indexrelid) \
         ORDER BY 4 DESC, 1, 2, 3",
    )
    .fetch_all(pool)
    .await?;
    let mut unused_indexes = Vec::new();
    for r in &rows {
        let (schema, table, index): (String, String, String) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        unused_indexes.push(UnusedIndex {
            sql: format!("DROP INDEX CONCURRENTLY {};", qualified(&schema, &index)),
            schema,
            table,
            index,
            size_bytes: r.try_get(3)?,
        });
    }

    // Grouped by everything that makes two indexes answer the same queries the same
    // way: table, access method, keys, operator classes, expressions and predicate.
    // Within a group, constraint-backed and unique indexes sort first: they are kept.
    let rows = sqlx::query(
        "SELECT n.nspname::text, t.relname::text, \
                array_agg(ic.relname::text ORDER BY i.indisprimary DESC, i.indisunique DESC, \
                          ic.relname), \
                array_agg(EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) \
                          ORDER BY i.indisprimary DESC, i.indisunique DESC, ic.relname), \
                (array_agg(pg_get_indexdef(i.indexrelid) \
                           ORDER BY i.indisprimary DESC, i.indisunique DESC, ic.relname))[1] \
         FROM pg_index i \
         JOIN pg_class ic ON ic.oid = i.indexrelid \
         JOIN pg_class t ON t.oid = i.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
         GROUP BY n.nspname, t.relname, i.indrelid, ic.relam, i.indkey::text, \
                  i.indclass::text, i.indcollation::text, \
                  coalesce(pg_get_expr(i.indexprs, i.indrelid), ''), \
                  coalesce(pg_get_expr(i.indpred, i.indrelid), '') \
         HAVING count(*) > 1 ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    let mut duplicate_indexes = Vec::new();
    for r in &rows {
        let schema: String = r.try_get(0)?;
        let table: String = r.try_get(1)?;
        let names: Vec<String> = r.try_get(2)?;
        let constraint: Vec<bool> = r.try_get(3)?;
        let Some((keep, rest)) = names.split_first() else {
            continue;
        };
        let sql = rest
            .iter()
            .zip(constraint.iter().skip(1))
            .filter(|(_, c)| !**c)
            .map(|(n, _)| format!("DROP INDEX CONCURRENTLY {};", qualified(&schema, n)))
            .collect();
        duplicate_indexes.push(DuplicateIndexes {
            keep: keep.clone(),
            redundant: rest.to_vec(),
            definition: r.try_get(4)?,
            sql,
            schema,
            table,
        });
    }

    let rows = sqlx::query(
        "SELECT s.schemaname::text, s.relname::text, s.n_live_tup, s.n_dead_tup, \
                s.last_vacuum::text, s.last_autovacuum::text, s.last_analyze::text, \
                s.last_autoanalyze::text, c.relpages::float8, c.reltuples::float8, \
                (SELECT sum(st.avg_width)::float8 FROM pg_stats st \
                 WHERE st.schemaname = s.schemaname AND st.tablename = s.relname), \
                current_setting('block_size')::float8 \
         FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
         ORDER BY s.n_dead_tup DESC, 1, 2",
    )
    .fetch_all(pool)
    .await?;
    let mut tables = Vec::new();
    for r in &rows {
        let schema: String = r.try_get(0)?;
        let table: String = r.try_get(1)?;
        let live: i64 = r.try_get(2)?;
        let dead: i64 = r.try_get(3)?;
        let relpages: f64 = r.try_get(8)?;
        let reltuples: f64 = r.try_get(9)?;
        let width: Option<f64> = r.try_get(10)?;
        let block: f64 = r.try_get(11)?;
        let estimated_bloat_ratio = match width {
            // reltuples is -1 before the first VACUUM/ANALYZE (PostgreSQL 14+).
            Some(w) if relpages > 0.0 && reltuples >= 0.0 => {
                let expected = (reltuples * (w + 28.0) / (block - 24.0)).ceil();
                Some((1.0 - expected / relpages).max(0.0))
            }
            _ => None,
        };
        let dead_ratio = (live + dead > 0).then(|| dead as f64 / (live + dead) as f64);
        let last_analyze: Option<String> = r.try_get(6)?;
        let last_autoanalyze: Option<String> = r.try_get(7)?;
        let never_analyzed = last_analyze.is_none() && last_autoanalyze.is_none();
        let needs_vacuum = (dead >= MIN_DEAD_TUPLES && dead_ratio.is_some_and(|d| d > DEAD_RATIO))
            || (never_analyzed && live > 0);
        tables.push(TableHealth {
            sql: format!("VACUUM (ANALYZE) {};", qualified(&schema, &table)),
            schema,
            table,
            live_tuples: live,
            dead_tuples: dead,
            dead_ratio,
            estimated_bloat_ratio,
            last_vacuum: r.try_get(4)?,
            last_autovacuum: r.try_get(5)?,
            last_analyze,
            last_autoanalyze,
            needs_vacuum,
        });
    }
    Ok(MaintenanceReport {
        unused_indexes,
        duplicate_indexes,
        tables,
    })
}
