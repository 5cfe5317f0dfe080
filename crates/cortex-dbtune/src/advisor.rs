//! Index advice that proves itself.
//!
//! Candidates come from two places: the `indexable_seq_scan` findings of the queries
//! given (run with `EXPLAIN ANALYZE` through [`analyze_query`]), and the sequential
//! scans with a simple filter in the generic plans of `pg_stat_statements`' top
//! queries by total time. When the HypoPG extension is installed, each candidate is
//! created as a hypothetical index and the statement planned again: only candidates
//! the planner then uses, with a total-cost drop of at least
//! [`AdviseOptions::min_cost_drop`], are kept (`verified: true`). Without HypoPG every
//! candidate is returned with `verified: false` and a note saying so.
//!
//! Everything runs in transactions that are rolled back; HypoPG's indexes live only in
//! the session and are reset after each check.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{AssertSqlSafe, Row};

use crate::live::{bind, timeout_ms};
use crate::plan::{IndexCandidate, IndexKey, NodeKind, Plan, Thresholds, index_keys, quote_ident};
use crate::{AnalyzeOptions, Error, Param, Result, analyze_query};

/// A statement to find indexes for, with its parameters (`$1`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuerySource {
    /// The statement.
    pub sql: String,
    /// Its parameters, bound (never interpolated).
    #[serde(default)]
    pub params: Vec<Param>,
}

impl QuerySource {
    /// A statement without parameters.
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    /// A statement with parameters.
    pub fn with_params(sql: impl Into<String>, params: Vec<Param>) -> Self {
        Self {
            sql: sql.into(),
            params,
        }
    }
}

/// Options of [`advise_indexes`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdviseOptions {
    /// The share of the total cost an index must save to be suggested (default 0.5:
    /// cost after <= half the cost before).
    pub min_cost_drop: f64,
    /// Also take candidates from `pg_stat_statements` (default true; left out, with a
    /// warning, when the extension is not installed in the database).
    pub use_pg_stat_statements: bool,
    /// How many of `pg_stat_statements`' top queries by total time to look at (default
    /// 20).
    pub top_statements: u32,
    /// A sequential scan in a generic plan is a candidate only from this estimated
    /// cost (default 1000, the original design's "expensive" mark): cheaper scans are
    /// not worth an index.
    pub min_scan_cost: f64,
    /// Verify with HypoPG when it is installed (default true). When false, or without
    /// the extension, candidates are returned unverified.
    pub use_hypopg: bool,
    /// Timeout of each statement run or planned (default 30 s).
    pub statement_timeout: Duration,
    /// Thresholds of the plan rules (for the given queries' findings).
    pub thresholds: Thresholds,
}

impl Default for AdviseOptions {
    fn default() -> Self {
        Self {
            min_cost_drop: 0.5,
            use_pg_stat_statements: true,
            top_statements: 20,
            min_scan_cost: 1000.0,
            use_hypopg: true,
            statement_timeout: Duration::from_secs(30),
            thresholds: Thresholds::default(),
        }
    }
}

/// One suggested index.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexAdvice {
    /// The table's schema, when it could be determined (else the name resolves through
    /// the `search_path`, as in the query).
    pub schema: Option<String>,
    /// The table.
    pub table: String,
    /// The index keys (columns, expressions, JSON fields).
    pub keys: Vec<IndexKey>,
    /// The columns the keys read.
    pub columns: Vec<String>,
    /// `CREATE INDEX CONCURRENTLY ...`, every identifier quoted.
    pub create_sql: String,
    /// The statement's estimated total cost without the index (HypoPG only).
    pub cost_before: Option<f64>,
    /// Its estimated total cost with the hypothetical index (HypoPG only).
    pub cost_after: Option<f64>,
    /// Whether HypoPG showed the planner using the index with the required cost drop.
    pub verified: bool,
    /// The statement the candidate came from.
    pub source: String,
    /// Where the candidate came from and how it was checked.
    pub note: String,
}

impl IndexAdvice {
    /// The share of the cost the index saves (`1 - after / before`), when verified.
    pub fn cost_drop(&self) -> Option<f64> {
        match (self.cost_before, self.cost_after) {
            (Some(b), Some(a)) if b > 0.0 => Some(1.0 - a / b),
            _ => None,
        }
    }
}

/// How a statement is planned.
#[derive(Debug, Clone)]
enum Stmt<'a> {
    /// The caller's statement with its parameters bound (a custom plan).
    Bound(&'a str, &'a [Param]),
    /// A normalized `pg_stat_statements` text with `$n` placeholders: prepared and
    /// explained as a generic plan with NULL arguments.
    Generic(&'a str),
}

impl Stmt<'_> {
    fn text(&self) -> &str {
        match self {
            Stmt::Bound(s, _) | Stmt::Generic(s) => s,
        }
    }
}

/// A unique prepared-statement name per use, so concurrent advisors on one session
/// (or a statement left behind by an error) never collide.
fn statement_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "cortex_dbtune_advise_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `EXPLAIN (FORMAT JSON[, VERBOSE])` of the statement on `conn` (no ANALYZE: nothing
/// runs). Must be called inside a transaction.
async fn explain(conn: &mut PgConnection, stmt: &Stmt<'_>, verbose: bool) -> Result<Plan> {
    let opts = if verbose {
        "FORMAT JSON, VERBOSE"
    } else {
        "FORMAT JSON"
    };
    let json: serde_json::Value = match stmt {
        Stmt::Bound(sql, params) => {
            // The statement is what gets explained (see `analyze_query`); values go
            // only through bound parameters.
            let mut q = sqlx::query(AssertSqlSafe(format!("EXPLAIN ({opts}) {sql}")));
            for p in *params {
                q = bind(q, p);
            }
            q.fetch_one(&mut *conn).await?.try_get(0)?
        }
        Stmt::Generic(sql) => {
            let raw = statement_name();
            let name = quote_ident(&raw);
            // PostgreSQL 15 has no EXPLAIN (GENERIC_PLAN): prepare the text, count its
            // parameters from the server's own parse and execute it with NULLs under
            // plan_cache_mode = force_generic_plan (set by the caller). The text is a
            // query pg_stat_statements recorded, explained as is; the extended
            // protocol refuses a second statement.
            sqlx::query(AssertSqlSafe(format!("PREPARE {name} AS {sql}")))
                .execute(&mut *conn)
                .await?;
            let n: i32 = sqlx::query(
                "SELECT coalesce(cardinality(parameter_types), 0) FROM pg_prepared_statements \
                 WHERE name = $1",
            )
            .bind(&raw)
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
            let args = if n > 0 {
                format!("({})", vec!["NULL"; n as usize].join(", "))
            } else {
                String::new()
            };
            let json = sqlx::query(AssertSqlSafe(format!(
                "EXPLAIN ({opts}) EXECUTE {name}{args}"
            )))
            .fetch_one(&mut *conn)
            .await
            .and_then(|r| r.try_get(0));
            // A new PREPARE per plan: a cached generic plan would not see a
            // hypothetical index created after it.
            sqlx::query(AssertSqlSafe(format!("DEALLOCATE {name}")))
                .execute(&mut *conn)
                .await?;
            json?
        }
    };
    Plan::from_value(json)
}

/// A candidate with the statement it came from and the plan node it serves.
#[derive(Debug, Clone)]
struct Candidate {
    index: IndexCandidate,
    node_path: String,
}

/// Sequential scans with a simple filter in a plan without ANALYZE figures.
fn generic_candidates(plan: &Plan, min_cost: f64) -> Vec<Candidate> {
    plan.nodes()
        .iter()
        .filter(|n| n.node.kind() == NodeKind::SeqScan && n.node.total_cost >= min_cost)
        .filter_map(|n| {
            let keys = index_keys(n.node.filter.as_deref()?)?;
            Some(Candidate {
                index: IndexCandidate {
                    schema: n.node.schema.clone(),
                    table: n.node.relation_name.clone()?,
                    keys,
                },
                node_path: n.path.clone(),
            })
        })
        .collect()
}

/// Schemas that hold the system catalogs: never advised on.
fn is_system_schema(s: &str) -> bool {
    s == "pg_catalog" || s == "information_schema" || s.starts_with("pg_toast")
}

/// Whether a `pg_stat_statements` text is worth planning: a plain query (not a utility
/// statement) that does not read the system catalogs.
fn plannable(text: &str) -> bool {
    let t = text.trim_start().to_ascii_lowercase();
    let first = t.split_whitespace().next().unwrap_or("");
    let dml = ["select", "with", "update", "delete"].contains(&first);
    let catalog = [
        "pg_catalog",
        "information_schema",
        "pg_stat",
        "pg_class",
        "hypopg",
    ]
    .iter()
    .any(|c| t.contains(c));
    dml && !catalog
}

async fn extension_installed(pool: &PgPool, name: &str) -> Result<bool> {
    Ok(
        sqlx::query("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = $1)")
            .bind(name)
            .fetch_one(pool)
            .await?
            .try_get(0)?,
    )
}

/// The top queries of the current database by total execution time.
async fn top_statements(pool: &PgPool, limit: u32) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT s.query FROM pg_stat_statements s \
         JOIN pg_database d ON d.oid = s.dbid \
         WHERE d.datname = current_database() \
         ORDER BY s.total_exec_time DESC LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(Error::from))
        .collect()
}

/// Checks one statement's candidates: fills in schemas from a VERBOSE plan and, with
/// HypoPG, the costs. Runs in a transaction that is rolled back.
async fn check_statement(
    pool: &PgPool,
    stmt: &Stmt<'_>,
    found: Option<Vec<Candidate>>,
    hypopg: bool,
    opts: &AdviseOptions,
) -> Result<Vec<IndexAdvice>> {
    let ms = timeout_ms(opts.statement_timeout)?;
    let mut tx = pool.begin().await?;
    let conn: &mut PgConnection = &mut tx;
    let result = async {
        sqlx::query("SELECT set_config('statement_timeout', $1, true)")
            .bind(ms.to_string())
            .execute(&mut *conn)
            .await?;
        if matches!(stmt, Stmt::Generic(_)) {
            sqlx::query("SELECT set_config('plan_cache_mode', 'force_generic_plan', true)")
                .execute(&mut *conn)
                .await?;
        }
        let mut cands = match found {
            Some(c) => c,
            None => generic_candidates(&explain(conn, stmt, false).await?, opts.min_scan_cost),
        };
        if cands.is_empty() {
            return Ok(Vec::new());
        }
        // Non-VERBOSE EXPLAIN prints no schema; the VERBOSE plan of the same statement
        // has the same shape, so its node at the same path names the schema.
        let verbose = explain(conn, stmt, true).await?;
        let nodes = verbose.nodes();
        for c in &mut cands {
            if c.index.schema.is_none() {
                c.index.schema = nodes
                    .iter()
                    .find(|n| {
                        n.path == c.node_path
                            && n.node.relation_name.as_deref() == Some(c.index.table.as_str())
                    })
                    .and_then(|n| n.node.schema.clone());
            }
        }
        cands.retain(|c| !c.index.schema.as_deref().is_some_and(is_system_schema));
        let mut out = Vec::new();
        let before = if hypopg && !cands.is_empty() {
            Some(explain(conn, stmt, false).await?.root.total_cost)
        } else {
            None
        };
        for c in cands {
            let mut advice = IndexAdvice {
                schema: c.index.schema.clone(),
                table: c.index.table.clone(),
                keys: c.index.keys.clone(),
                columns: c.index.columns().iter().map(|s| s.to_string()).collect(),
                create_sql: c.index.create_sql(),
                cost_before: before,
                cost_after: None,
                verified: false,
                source: stmt.text().to_string(),
                note: if opts.use_hypopg {
                    "unverified: the HypoPG extension is not installed in this database \
                     (CREATE EXTENSION hypopg to verify)"
                } else {
                    "unverified: HypoPG verification was turned off"
                }
                .to_string(),
            };
            if let Some(before) = before {
                // hypopg_create_index takes a plain CREATE INDEX (no CONCURRENTLY),
                // passed as a bound value.
                let ddl = advice.create_sql.replacen("CREATE INDEX CONCURRENTLY", "CREATE INDEX", 1);
                let name: String = sqlx::query("SELECT indexname FROM hypopg_create_index($1)")
                    .bind(&ddl)
                    .fetch_one(&mut *conn)
                    .await?
                    .try_get(0)?;
                let after = explain(conn, stmt, false).await;
                sqlx::query("SELECT hypopg_reset()").execute(&mut *conn).await?;
                let after = after?;
                let used = after
                    .nodes()
                    .iter()
                    .any(|n| n.node.index_name.as_deref() == Some(name.as_str()));
                let cost = after.root.total_cost;
                advice.cost_after = Some(cost);
                let drop_ok = cost <= before * (1.0 - opts.min_cost_drop);
                if !used || !drop_ok {
                    tracing::debug!(index = %advice.create_sql, used, before, cost, "candidate rejected");
                    continue;
                }
                advice.verified = true;
                advice.note = format!(
                    "verified with HypoPG: the planner uses the index, cost {before:.2} -> {cost:.2}"
                );
            }
            out.push(advice);
        }
        Ok::<_, Error>(out)
    }
    .await;
    // Always roll back: nothing of the check stays (HypoPG was reset already).
    let rolled_back = tx.rollback().await;
    let out = result?;
    rolled_back?;
    Ok(out)
}

/// Suggests indexes for `queries` and, when [`AdviseOptions::use_pg_stat_statements`]
/// is set and the extension is installed, for `pg_stat_statements`' top queries.
///
/// The given queries are run with `EXPLAIN ANALYZE` (in a rolled-back transaction, as
/// [`analyze_query`]); an error there is returned. A `pg_stat_statements` query that
/// cannot be planned (a dropped table, a type the NULL arguments do not fit) gives
/// no candidate, with a debug log. Identical candidates are reported once, the first time
/// seen. Verified advice comes first, by cost drop.
pub async fn advise_indexes(
    pool: &PgPool,
    queries: &[QuerySource],
    opts: &AdviseOptions,
) -> Result<Vec<IndexAdvice>> {
    if !(0.0..1.0).contains(&opts.min_cost_drop) {
        return Err(Error::InvalidOption {
            name: "min_cost_drop",
            reason: format!("{} is outside 0 ..< 1", opts.min_cost_drop),
        });
    }
    let hypopg = opts.use_hypopg && extension_installed(pool, "hypopg").await?;
    if !hypopg {
        tracing::warn!("HypoPG is not used: index advice is unverified");
    }
    let analyze_opts = AnalyzeOptions {
        statement_timeout: opts.statement_timeout,
        thresholds: opts.thresholds.clone(),
    };
    let mut all: Vec<IndexAdvice> = Vec::new();
    for q in queries {
        let analysis = analyze_query(pool, &q.sql, &q.params, &analyze_opts).await?;
        let found: Vec<Candidate> = analysis
            .findings
            .iter()
            .filter_map(|f| {
                Some(Candidate {
                    index: f.index.clone()?,
                    node_path: f.node_path.clone(),
                })
            })
            .collect();
        let stmt = Stmt::Bound(&q.sql, &q.params);
        all.extend(check_statement(pool, &stmt, Some(found), hypopg, opts).await?);
    }
    if opts.use_pg_stat_statements {
        if extension_installed(pool, "pg_stat_statements").await? {
            for text in top_statements(pool, opts.top_statements).await? {
                if !plannable(&text) {
                    continue;
                }
                match check_statement(pool, &Stmt::Generic(&text), None, hypopg, opts).await {
                    Ok(a) => all.extend(a),
                    Err(e) => {
                        tracing::debug!(query = %text, error = %e, "not plannable; no candidate from it")
                    }
                }
            }
        } else {
            tracing::warn!("pg_stat_statements is not installed: only the given queries are used");
        }
    }
    let mut out: Vec<IndexAdvice> = Vec::new();
    for a in all {
        let same = out
            .iter()
            .any(|o| o.schema == a.schema && o.table == a.table && o.keys == a.keys);
        if !same {
            out.push(a);
        }
    }
    out.sort_by(|a, b| {
        b.verified.cmp(&a.verified).then(
            b.cost_drop()
                .unwrap_or(0.0)
                .total_cmp(&a.cost_drop().unwrap_or(0.0)),
        )
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plannable_skips_utility_and_catalog_queries() {
        assert!(plannable("SELECT id FROM t WHERE v = $1"));
        assert!(plannable("  with x as (select 1) select * from x"));
        assert!(plannable("UPDATE t SET a = $1 WHERE b = $2"));
        assert!(!plannable("CREATE INDEX ON t (v)"));
        assert!(!plannable("EXPLAIN SELECT 1"));
        assert!(!plannable("SET search_path = x"));
        assert!(!plannable("SELECT * FROM pg_catalog.pg_class"));
        assert!(!plannable("select * from pg_stat_activity"));
        assert!(!plannable("SELECT * FROM information_schema.tables"));
    }

    #[test]
    fn generic_scan_with_param_filter_is_a_candidate() {
        let plan = Plan::from_json(
            r#"[{"Plan": {"Node Type": "Seq Scan", "Relation Name": "t",
                "Total Cost": 17906.0, "Plan Rows": 10, "Plan Width": 37,
                "Filter": "(val = $1)"}}]"#,
        )
        .unwrap();
        let c = generic_candidates(&plan, 1000.0);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].index.columns(), ["val"]);
        assert!(generic_candidates(&plan, 20_000.0).is_empty());
    }

    #[test]
    fn cost_drop() {
        let mut a = IndexAdvice {
            schema: None,
            table: "t".into(),
            keys: vec![],
            columns: vec![],
            create_sql: String::new(),
            cost_before: Some(100.0),
            cost_after: Some(25.0),
            verified: true,
            source: String::new(),
            note: String::new(),
        };
        assert_eq!(a.cost_drop(), Some(0.75));
        a.cost_before = None;
        assert_eq!(a.cost_drop(), None);
    }
}
