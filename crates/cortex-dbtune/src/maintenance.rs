//! A maintenance report of the current database: unused and duplicate indexes, dead
//! tuples, an estimate of table bloat and the last (auto)vacuum and analyze, each with
//! suggested SQL whose identifiers are quoted with [`quote_ident`].
//!
//! Temporary tables are listed with their owning session's state ([`TempOwner`]); see
//! [`classify_temp_namespace`] for how an orphan is told from a live session's table.
//!
//! Index usage counters (`idx_scan`) count since the last statistics reset: an index
//! unused since then may still serve a monthly report. Check
//! `pg_stat_database.stats_reset` before dropping.

use serde::Serialize;
use sqlx::Row;
use sqlx::postgres::PgPool;

use crate::Result;
use crate::plan::{Severity, quote_ident};

/// Dead tuples over (live + dead) above which a table is suggested a VACUUM, with at
/// least [`MIN_DEAD_TUPLES`] dead (autovacuum's own default trigger is 20% + 50 rows).
pub const DEAD_RATIO: f64 = 0.1;
/// The fewest dead tuples worth a manual VACUUM.
pub const MIN_DEAD_TUPLES: i64 = 1000;
/// Dead tuples over (live + dead) above which a table's VACUUM is critical: more dead
/// than live tuples, so every scan reads more dead rows than live ones.
pub const CRITICAL_DEAD_RATIO: f64 = 0.5;

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

/// Whether the session owning a temporary schema `pg_temp_N` still exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TempOwner {
    /// A live session owns the schema: its tables go away when it ends.
    Live,
    /// No session owns the schema: the tables were left by a backend that crashed.
    Orphaned,
    /// The server gives no means to tell (PostgreSQL 15 and older; see
    /// [`classify_temp_namespace`]).
    Unknown,
}

/// A temporary table (`pg_class.relpersistence = 't'`) in a `pg_temp_N` schema.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TempTable {
    /// The temporary schema, `pg_temp_N`.
    pub schema: String,
    /// Table.
    pub table: String,
    /// `N`: the backend ID of the session the schema belongs to.
    pub backend_id: i32,
    /// Size on disk, with indexes and TOAST.
    pub size_bytes: i64,
    /// Whether the owning session is alive.
    pub owner: TempOwner,
    /// `DROP TABLE "pg_temp_N"."table";`, for orphaned tables only.
    pub sql: Option<String>,
}

/// Tells whether temporary schema `pg_temp_{backend_id}` is orphaned.
///
/// A temporary schema is named after its session's backend ID (`pg_temp_3` belongs to
/// backend 3), and a new session reusing the ID clears the schema before its first
/// temporary table, so the schema is orphaned exactly when no live backend has that
/// ID (the test autovacuum applies before dropping orphans):
///
/// - `own`: the schema is this session's (`pg_my_temp_schema()`): live.
/// - `live_backend_ids`: from PostgreSQL 16, `pg_stat_get_backend_idset()` returns the
///   live backends' IDs, so the answer is exact. On PostgreSQL 15 and older it returns
///   positions in a compacted list (1 to the number of backends), not IDs, and no SQL
///   function maps a session to its backend ID: pass `None` there.
/// - `max_backends`: without the IDs, an ID above the highest a backend can get
///   (`max_connections + autovacuum_max_workers + 1 + max_worker_processes +
///   max_wal_senders`) cannot be live (the schema outlived a lowered limit):
///   orphaned; any other is [`TempOwner::Unknown`], never guessed orphaned.
///
/// Autovacuum drops orphaned temporary tables of its own accord; the report names
/// them because they hold back `relfrozenxid` until it does.
pub fn classify_temp_namespace(
    backend_id: i32,
    own: bool,
    live_backend_ids: Option<&[i32]>,
    max_backends: i32,
) -> TempOwner {
    if own {
        return TempOwner::Live;
    }
    match live_backend_ids {
        Some(ids) if ids.contains(&backend_id) => TempOwner::Live,
        Some(_) => TempOwner::Orphaned,
        None if backend_id > max_backends => TempOwner::Orphaned,
        None => TempOwner::Unknown,
    }
}

/// `ALTER TABLE "schema"."table" SET UNLOGGED;` for a table the caller names as
/// cache-like: data that can be rebuilt from elsewhere (caches, sessions, staging of
/// an import). An unlogged table writes no WAL, so writes are cheaper, but it is
/// emptied after a crash and not replicated to standbys; the report does not guess
/// which tables qualify (names say too little). `SET LOGGED` undoes it, rewriting the
/// table into the WAL. Both rewrite the table under an ACCESS EXCLUSIVE lock.
pub fn unlogged_table_sql(schema: &str, table: &str) -> String {
    format!("ALTER TABLE {} SET UNLOGGED;", qualified(schema, table))
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
    /// Every temporary table of the database, orphaned ones first.
    pub temp_tables: Vec<TempTable>,
}

/// One item of a [`MaintenanceReport`] worth acting on, with how much it matters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaintenanceFinding {
    /// How much it matters (see [`MaintenanceReport::findings`]).
    pub severity: Severity,
    /// `unused_index`, `duplicate_index`, `vacuum` or `orphaned_temp_table`.
    pub kind: &'static str,
    /// The object, `"schema"."name"` quoted.
    pub object: String,
}

impl MaintenanceReport {
    /// The report's items to act on, each with a level:
    ///
    /// - critical: a table with more dead than live tuples (dead ratio above
    ///   [`CRITICAL_DEAD_RATIO`], at least [`MIN_DEAD_TUPLES`] dead);
    /// - warning: any other table that needs a VACUUM (`needs_vacuum`), an unused index,
    ///   each redundant index of a duplicate set, an orphaned temporary table (it holds
    ///   back `relfrozenxid` until autovacuum drops it).
    ///
    /// Temporary tables of live or unknown sessions are no finding.
    pub fn findings(&self) -> Vec<MaintenanceFinding> {
        let mut out = Vec::new();
        for t in self.tables.iter().filter(|t| t.needs_vacuum) {
            let critical = t.dead_tuples >= MIN_DEAD_TUPLES
                && t.dead_ratio.is_some_and(|r| r > CRITICAL_DEAD_RATIO);
            out.push(MaintenanceFinding {
                severity: if critical {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                kind: "vacuum",
                object: qualified(&t.schema, &t.table),
            });
        }
        for i in &self.unused_indexes {
            out.push(MaintenanceFinding {
                severity: Severity::Warning,
                kind: "unused_index",
                object: qualified(&i.schema, &i.index),
            });
        }
        for d in &self.duplicate_indexes {
            for r in &d.redundant {
                out.push(MaintenanceFinding {
                    severity: Severity::Warning,
                    kind: "duplicate_index",
                    object: qualified(&d.schema, r),
                });
            }
        }
        for t in &self.temp_tables {
            if t.owner == TempOwner::Orphaned {
                out.push(MaintenanceFinding {
                    severity: Severity::Warning,
                    kind: "orphaned_temp_table",
                    object: qualified(&t.schema, &t.table),
                });
            }
        }
        out
    }
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
    let temp_tables = temp_tables(pool).await?;
    Ok(MaintenanceReport {
        unused_indexes,
        duplicate_indexes,
        tables,
        temp_tables,
    })
}

async fn temp_tables(pool: &PgPool) -> Result<Vec<TempTable>> {
    let server: (i32, i32) = sqlx::query_as(
        "SELECT current_setting('server_version_num')::int, \
                current_setting('max_connections')::int \
                + current_setting('autovacuum_max_workers')::int + 1 \
                + current_setting('max_worker_processes')::int \
                + current_setting('max_wal_senders')::int",
    )
    .fetch_one(pool)
    .await?;
    let (version, max_backends) = server;
    // From PostgreSQL 16 the idset holds backend IDs (see classify_temp_namespace).
    let live_ids: Option<Vec<i32>> = if version >= 160_000 {
        Some(
            sqlx::query_scalar("SELECT pg_stat_get_backend_idset()")
                .fetch_all(pool)
                .await?,
        )
    } else {
        None
    };
    // relkind r and p: tables; their indexes and TOAST go with them.
    let rows = sqlx::query(
        "SELECT n.nspname::text, c.relname::text, \
                substring(n.nspname FROM '^pg_temp_([0-9]+)$')::int, \
                pg_total_relation_size(c.oid), n.oid = pg_my_temp_schema() \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relpersistence = 't' AND c.relkind IN ('r', 'p') \
           AND n.nspname ~ '^pg_temp_[0-9]+$' \
         ORDER BY 3, 2",
    )
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for r in &rows {
        let schema: String = r.try_get(0)?;
        let table: String = r.try_get(1)?;
        let backend_id: i32 = r.try_get(2)?;
        let own: bool = r.try_get(4)?;
        let owner = classify_temp_namespace(backend_id, own, live_ids.as_deref(), max_backends);
        out.push(TempTable {
            sql: (owner == TempOwner::Orphaned)
                .then(|| format!("DROP TABLE {};", qualified(&schema, &table))),
            schema,
            table,
            backend_id,
            size_bytes: r.try_get(3)?,
            owner,
        });
    }
    out.sort_by_key(|t| t.owner != TempOwner::Orphaned);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, live: i64, dead: i64, needs_vacuum: bool) -> TableHealth {
        TableHealth {
            schema: "app".into(),
            table: name.into(),
            live_tuples: live,
            dead_tuples: dead,
            dead_ratio: (live + dead > 0).then(|| dead as f64 / (live + dead) as f64),
            estimated_bloat_ratio: None,
            last_vacuum: None,
            last_autovacuum: None,
            last_analyze: None,
            last_autoanalyze: None,
            needs_vacuum,
            sql: String::new(),
        }
    }

    #[test]
    fn findings_levels() {
        let temp = |name: &str, owner| TempTable {
            schema: "pg_temp_3".into(),
            table: name.into(),
            backend_id: 3,
            size_bytes: 0,
            owner,
            sql: None,
        };
        let report = MaintenanceReport {
            unused_indexes: vec![UnusedIndex {
                schema: "app".into(),
                table: "t".into(),
                index: "t_idx".into(),
                size_bytes: 8192,
                sql: String::new(),
            }],
            duplicate_indexes: vec![DuplicateIndexes {
                schema: "app".into(),
                table: "t".into(),
                keep: "a".into(),
                redundant: vec!["b".into(), "c".into()],
                definition: String::new(),
                sql: Vec::new(),
            }],
            tables: vec![
                // More dead than live: critical; exactly half: warning.
                table("bloated", 1000, 1001, true),
                table("half", 1000, 1000, true),
                // Over half dead but under MIN_DEAD_TUPLES: a warning only.
                table("small", 10, 990, true),
                table("fine", 1000, 0, false),
            ],
            temp_tables: vec![
                temp("gone", TempOwner::Orphaned),
                temp("live", TempOwner::Live),
                temp("unknown", TempOwner::Unknown),
            ],
        };
        let got: Vec<(Severity, &str, String)> = report
            .findings()
            .into_iter()
            .map(|f| (f.severity, f.kind, f.object))
            .collect();
        let w = Severity::Warning;
        assert_eq!(
            got,
            [
                (Severity::Critical, "vacuum", r#""app"."bloated""#.into()),
                (w, "vacuum", r#""app"."half""#.into()),
                (w, "vacuum", r#""app"."small""#.into()),
                (w, "unused_index", r#""app"."t_idx""#.into()),
                (w, "duplicate_index", r#""app"."b""#.into()),
                (w, "duplicate_index", r#""app"."c""#.into()),
                (w, "orphaned_temp_table", r#""pg_temp_3"."gone""#.into()),
            ]
        );
    }

    #[test]
    fn unlogged_sql_is_quoted() {
        assert_eq!(
            unlogged_table_sql("app", "Cache \"hot\""),
            r#"ALTER TABLE "app"."Cache ""hot""" SET UNLOGGED;"#
        );
    }

    #[test]
    fn own_session_is_live() {
        assert_eq!(classify_temp_namespace(3, true, None, 100), TempOwner::Live);
        assert_eq!(
            classify_temp_namespace(3, true, Some(&[]), 100),
            TempOwner::Live
        );
    }

    #[test]
    fn with_backend_ids_the_answer_is_exact() {
        let ids = [1, 2, 5, 7];
        assert_eq!(
            classify_temp_namespace(5, false, Some(&ids), 100),
            TempOwner::Live
        );
        assert_eq!(
            classify_temp_namespace(4, false, Some(&ids), 100),
            TempOwner::Orphaned
        );
        assert_eq!(
            classify_temp_namespace(300, false, Some(&ids), 100),
            TempOwner::Orphaned
        );
    }

    #[test]
    fn without_backend_ids_only_impossible_ids_are_orphans() {
        assert_eq!(
            classify_temp_namespace(4, false, None, 100),
            TempOwner::Unknown
        );
        assert_eq!(
            classify_temp_namespace(100, false, None, 100),
            TempOwner::Unknown
        );
        assert_eq!(
            classify_temp_namespace(101, false, None, 100),
            TempOwner::Orphaned
        );
    }
}
