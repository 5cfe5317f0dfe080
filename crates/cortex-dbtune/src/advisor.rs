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
//!
//! # Whose statements are planned, and as whom
//!
//! Planning a statement runs code: the planner evaluates the IMMUTABLE and STABLE
//! functions it calls, with the privileges of the role that plans it. A text in
//! `pg_stat_statements` may come from any user of the server, and the advisor often
//! runs as a superuser, so planning it as is would let any user run code as the
//! advisor. Hence:
//!
//! - Only statements of the users in [`AdviseOptions::plan_users`] are planned
//!   (`DBTUNE_PLAN_USERS` in the CLI). Empty, the default: only the advisor's own role
//!   (`current_user`), and the plan role.
//! - With [`AdviseOptions::plan_role`] set (`DBTUNE_PLAN_ROLE`), every
//!   `pg_stat_statements` text is planned as that low-privilege role: `SET LOCAL ROLE`
//!   in a transaction that is rolled back, on a connection of its own that is closed
//!   afterwards, and each step through a `SECURITY DEFINER` function the role owns. The
//!   function is what makes the role stick: under a plain `SET ROLE` a function can
//!   `set_config('role', 'none', ...)` back to the session's user, but inside a
//!   security-definer function PostgreSQL refuses to change `role` or
//!   `session_authorization`. The connection is dropped afterwards, so nothing the
//!   planned code leaves in the session (prepared statements, session settings,
//!   advisory locks) reaches any later statement.
//! - Without a plan role, statements of users other than the advisor's own role are
//!   refused with [`Error::PlanRoleRequired`] rather than planned with the advisor's
//!   privileges.
//!
//! The plan role must be a low-privilege role: not a superuser, without `CREATEROLE`
//! and not a member of `pg_execute_server_program`, `pg_write_server_files` or
//! `pg_read_server_files` (checked), with read access to the tables the statements use
//! (`GRANT pg_read_all_data TO role`, PostgreSQL 14+, or `SELECT` grants: `EXPLAIN`
//! checks them), the `TEMPORARY` privilege on the database and `USAGE` on `plpgsql`
//! (both granted to `PUBLIC` by default). The advisor's login must be able to
//! `SET ROLE` to it (a superuser can; otherwise `GRANT role TO advisor`). It needs no
//! `LOGIN`.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cortex_support::{ConfigError, EnvSource, EnvVar, FromEnv};
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
    /// cost (default 1000, the mark of an expensive plan): cheaper scans are
    /// not worth an index.
    pub min_scan_cost: f64,
    /// Verify with HypoPG when it is installed (default true). When false, or without
    /// the extension, candidates are returned unverified.
    pub use_hypopg: bool,
    /// Timeout of each statement run or planned (default 30 s). Serialized as seconds;
    /// read from seconds or a duration text (`"500ms"`, `"30s"`).
    #[serde(with = "cortex_support::duration::secs")]
    pub statement_timeout: Duration,
    /// Thresholds of the plan rules (for the given queries' findings).
    pub thresholds: Thresholds,
    /// A low-privilege role to plan `pg_stat_statements` texts as (the CLI reads
    /// `DBTUNE_PLAN_ROLE`); see the [module docs](self) for what it must and must not
    /// be allowed. `None` (default): texts are planned as the advisor's own role, and
    /// only its own statements are.
    pub plan_role: Option<String>,
    /// Whose `pg_stat_statements` texts are planned, by role name (the CLI reads
    /// `DBTUNE_PLAN_USERS`, comma-separated). Empty (default): the advisor's own role
    /// (`current_user`) and the plan role. Naming any other user needs
    /// [`plan_role`](Self::plan_role), else [`Error::PlanRoleRequired`].
    pub plan_users: Vec<String>,
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
            plan_role: None,
            plan_users: Vec::new(),
        }
    }
}

impl FromEnv for AdviseOptions {
    type Error = Error;

    const VARS: &'static [EnvVar] = &[
        EnvVar {
            name: "DBTUNE_PLAN_ROLE",
            default: "unset",
            doc: "Low-privilege role to plan `pg_stat_statements` texts as; unset: only the advisor's own statements are planned.",
        },
        EnvVar {
            name: "DBTUNE_PLAN_USERS",
            default: "unset",
            doc: "Comma-separated users whose `pg_stat_statements` texts are planned; unset: the advisor's own role and the plan role.",
        },
    ];

    fn from_env_source(env: &EnvSource<'_>) -> Result<Self> {
        let mut opts = Self::default();
        if let Some(role) = env.var("DBTUNE_PLAN_ROLE") {
            let role = role.trim();
            role_name(role).map_err(|reason| ConfigError::new("DBTUNE_PLAN_ROLE", role, reason))?;
            opts.plan_role = Some(role.to_owned());
        }
        if let Some(users) = env.var("DBTUNE_PLAN_USERS") {
            for user in users.split(',').map(str::trim).filter(|u| !u.is_empty()) {
                role_name(user).map_err(|reason| {
                    ConfigError::new(
                        "DBTUNE_PLAN_USERS",
                        users.as_str(),
                        format!("{user:?}: {reason}"),
                    )
                })?;
                opts.plan_users.push(user.to_owned());
            }
        }
        Ok(opts)
    }
}

impl AdviseOptions {
    /// The defaults with the plan role and users of the environment
    /// (`DBTUNE_PLAN_ROLE`, `DBTUNE_PLAN_USERS`: [`FromEnv::VARS`]), as the CLI reads
    /// them.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable when a name in it is not a role
    /// name.
    pub fn from_env() -> Result<Self> {
        <Self as FromEnv>::from_env()
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

/// The verified cost drop from which an index suggestion is critical: the index saves
/// 90% of the statement's cost or more (PEV2's top level).
pub const CRITICAL_COST_DROP: f64 = 0.9;

impl IndexAdvice {
    /// How much the suggestion matters: critical when verified with a cost drop of at
    /// least [`CRITICAL_COST_DROP`], warning when verified with a smaller one (at least
    /// the advisor's `min_cost_drop`), info when unverified (no HypoPG: the planner was
    /// not asked).
    pub fn severity(&self) -> crate::plan::Severity {
        use crate::plan::Severity;
        if !self.verified {
            return Severity::Info;
        }
        match self.cost_drop() {
            Some(d) if d >= CRITICAL_COST_DROP => Severity::Critical,
            _ => Severity::Warning,
        }
    }

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

/// A unique name per use (prepared statements, the plan role's functions), so
/// concurrent advisors on one session (or a statement left behind by an error) never
/// collide, with a random part: code run while planning cannot guess the next one.
fn unique_name(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    format!(
        "cortex_dbtune_{what}_{}_{:016x}",
        std::process::id(),
        h.finish()
    )
}

fn statement_name() -> String {
    unique_name("advise")
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

/// The schema an extension is installed in, when it is.
async fn extension_schema(pool: &PgPool, name: &str) -> Result<Option<String>> {
    Ok(sqlx::query(
        "SELECT n.nspname::text FROM pg_catalog.pg_extension e \
         JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?
    .map(|r| r.try_get(0))
    .transpose()?)
}

/// The top queries of the current database by total execution time, of the given
/// users only.
async fn top_statements(pool: &PgPool, limit: u32, users: &[String]) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT s.query FROM pg_stat_statements s \
         JOIN pg_catalog.pg_database d ON d.oid = s.dbid \
         JOIN pg_catalog.pg_roles r ON r.oid = s.userid \
         WHERE d.datname = current_database() AND r.rolname = ANY($2) \
         ORDER BY s.total_exec_time DESC LIMIT $1",
    )
    .bind(i64::from(limit))
    .bind(users)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(Error::from))
        .collect()
}

/// A role name as the settings take it: 1 to 63 letters, digits, `_`, `$`, `-` or `.`,
/// starting with a letter or `_` (it is quoted wherever it goes into SQL).
fn check_role_name(setting: &'static str, variable: &str, name: &str) -> Result<()> {
    role_name(name).map_err(|reason| Error::InvalidOption {
        name: setting,
        reason: format!("{name:?} ({variable}) {reason}"),
    })
}

/// Checks the shape of a role name; the error says what one looks like.
fn role_name(name: &str) -> std::result::Result<(), &'static str> {
    let ok = name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_$-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err("is not a role name: 1 to 63 letters, digits, _ $ - or ., starting with a letter or _")
    }
}

/// Checks that `role` exists, is a low-privilege role and can be used as the plan role
/// (see the module docs).
async fn check_plan_role(pool: &PgPool, role: &str) -> Result<()> {
    let bad = |reason: String| Error::InvalidOption {
        name: "plan_role",
        reason: format!("DBTUNE_PLAN_ROLE {role:?}: {reason}"),
    };
    let row = sqlx::query(
        "SELECT r.rolsuper, r.rolcreaterole, \
           pg_catalog.pg_has_role(session_user, r.oid, 'MEMBER'), \
           pg_catalog.has_database_privilege(r.oid, pg_catalog.current_database(), 'TEMPORARY'), \
           pg_catalog.has_language_privilege(r.oid, 'plpgsql', 'USAGE'), \
           ARRAY(SELECT g.rolname::text FROM pg_catalog.pg_roles g \
                 WHERE g.rolname IN ('pg_execute_server_program', 'pg_write_server_files', \
                                     'pg_read_server_files') \
                   AND pg_catalog.pg_has_role(r.oid, g.oid, 'MEMBER')), \
           session_user::text \
         FROM pg_catalog.pg_roles r WHERE r.rolname = $1",
    )
    .bind(role)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| bad("no such role".to_string()))?;
    let (superuser, createrole, can_set, temp, plpgsql): (bool, bool, bool, bool, bool) = (
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
        row.try_get(4)?,
    );
    let risky: Vec<String> = row.try_get(5)?;
    let login: String = row.try_get(6)?;
    if superuser {
        return Err(bad(
            "is a superuser; the plan role must be a low-privilege role".into(),
        ));
    }
    if createrole {
        return Err(bad(
            "has CREATEROLE (it could grant itself any role); the plan role must be a \
             low-privilege role"
                .into(),
        ));
    }
    if !risky.is_empty() {
        return Err(bad(format!(
            "is a member of {}; the plan role must not reach the server's files or programs",
            risky.join(", ")
        )));
    }
    if !can_set {
        return Err(bad(format!(
            "the advisor's login {login:?} cannot SET ROLE to it (GRANT {} TO {})",
            quote_ident(role),
            quote_ident(&login)
        )));
    }
    if !temp || !plpgsql {
        return Err(bad(
            "needs the TEMPORARY privilege on this database and USAGE on plpgsql (the \
             functions it plans through are temporary plpgsql functions)"
                .into(),
        ));
    }
    Ok(())
}

/// Where a check plans its statement.
enum Planner {
    /// On a pooled connection, as the pool's role: the caller's own queries, and the
    /// advisor's own `pg_stat_statements` texts when no plan role is set.
    Session,
    /// On a connection of its own, as the plan role, every step through a fresh
    /// `SECURITY DEFINER` function the role owns (see the module docs). `search_path`
    /// is the advisor session's, quoted, for the statement's unqualified names; `limit`
    /// bounds each step on the client side too, since the planned code can lift the
    /// server's `statement_timeout`.
    Role {
        search_path: String,
        limit: Duration,
    },
}

/// The body of the plan role's function. Its arguments: the search path, the statement
/// (a `pg_stat_statements` text), the EXPLAIN options, a prepared-statement name, and,
/// to plan with a hypothetical index, the `CREATE INDEX` text and HypoPG's schema. It
/// returns `{"plan": EXPLAIN's JSON, "index": the hypothetical index's name}`.
///
/// The code the planner runs may change the session's `search_path` (a plain `SET`
/// outlives the function), so every name the body uses is schema-qualified, operators
/// included; the statement alone resolves through the search path it was given.
const PLAN_AS_ROLE_BODY: &str = r#"
DECLARE
  n pg_catalog.int4;
  args pg_catalog.text := '';
  idx pg_catalog.text;
  plan pg_catalog.json;
BEGIN
  PERFORM pg_catalog.set_config('search_path', p_path, true);
  IF p_ddl IS NOT NULL THEN
    EXECUTE pg_catalog.format('SELECT indexname FROM %I.hypopg_create_index($1)', p_hypopg)
      INTO idx USING p_ddl;
  END IF;
  EXECUTE pg_catalog.format('PREPARE %I AS %s', p_stmt, p_sql);
  SELECT pg_catalog.cardinality(s.parameter_types) INTO n
    FROM pg_catalog.pg_prepared_statements s WHERE s.name OPERATOR(pg_catalog.=) p_stmt;
  IF n OPERATOR(pg_catalog.>) 0 THEN
    args := pg_catalog.format('(%s)', pg_catalog.array_to_string(
      pg_catalog.array_fill('NULL'::pg_catalog.text, ARRAY[n]), ', '));
  END IF;
  EXECUTE pg_catalog.format('EXPLAIN (%s) EXECUTE %I%s', p_opts, p_stmt, args) INTO plan;
  EXECUTE pg_catalog.format('DEALLOCATE %I', p_stmt);
  IF p_ddl IS NOT NULL THEN
    EXECUTE pg_catalog.format('SELECT %I.hypopg_reset()', p_hypopg);
  END IF;
  RETURN pg_catalog.json_build_object('plan', plan, 'index', idx);
END
"#;

/// Plans a `pg_stat_statements` text as the plan role (the current role of the
/// transaction, set with `SET LOCAL ROLE`), through a fresh `SECURITY DEFINER`
/// function: created here, so owned by the plan role, and used once (the planned code
/// runs as the plan role and could replace a function it owns for a later call).
/// With `index`, HypoPG's schema and a `CREATE INDEX`, plans with that hypothetical
/// index and returns its name too.
async fn explain_as_plan_role(
    conn: &mut PgConnection,
    search_path: &str,
    limit: Duration,
    sql: &str,
    verbose: bool,
    index: Option<(&str, &str)>,
) -> Result<(Plan, Option<String>)> {
    let function = format!("pg_temp.{}", quote_ident(&unique_name("plan")));
    // Types qualified: the planned code may have changed the search path already.
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE FUNCTION {function}(p_path pg_catalog.text, p_sql pg_catalog.text, \
         p_opts pg_catalog.text, p_stmt pg_catalog.text, p_ddl pg_catalog.text, \
         p_hypopg pg_catalog.text) RETURNS pg_catalog.json LANGUAGE plpgsql \
         SECURITY DEFINER AS $cortex_dbtune_plan${PLAN_AS_ROLE_BODY}$cortex_dbtune_plan$"
    )))
    .execute(&mut *conn)
    .await?;
    let opts = if verbose {
        "FORMAT JSON, VERBOSE"
    } else {
        "FORMAT JSON"
    };
    // An unnamed statement: named ones could have been replaced by the planned code.
    let call = sqlx::query(AssertSqlSafe(format!(
        "SELECT {function}($1, $2, $3, $4, $5, $6)"
    )))
    .persistent(false)
    .bind(search_path)
    .bind(sql)
    .bind(opts)
    .bind(statement_name())
    .bind(index.map(|(_, ddl)| ddl))
    .bind(index.map(|(schema, _)| schema))
    .fetch_one(&mut *conn);
    let row = tokio::time::timeout(limit, call).await.map_err(|_| {
        sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("planning as the plan role took longer than {limit:?}"),
        ))
    })??;
    let mut json: serde_json::Value = row.try_get(0)?;
    let name = json
        .get("index")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let plan = Plan::from_value(
        json.get_mut("plan")
            .map(serde_json::Value::take)
            .unwrap_or_default(),
    )?;
    Ok((plan, name))
}

/// The statement's plan, by the given planner. Must be called inside a transaction.
async fn plan_of(
    conn: &mut PgConnection,
    planner: &Planner,
    stmt: &Stmt<'_>,
    verbose: bool,
) -> Result<Plan> {
    match planner {
        Planner::Session => explain(conn, stmt, verbose).await,
        Planner::Role { search_path, limit } => {
            Ok(
                explain_as_plan_role(conn, search_path, *limit, stmt.text(), verbose, None)
                    .await?
                    .0,
            )
        }
    }
}

/// The statement's plan with a hypothetical index (`ddl`, a plain `CREATE INDEX`), and
/// the index's name; the index is gone afterwards.
async fn plan_with_index(
    conn: &mut PgConnection,
    planner: &Planner,
    stmt: &Stmt<'_>,
    hypopg: &str,
    ddl: &str,
) -> Result<(Plan, String)> {
    match planner {
        Planner::Session => {
            // hypopg_create_index takes the DDL as a bound value.
            let name: String = sqlx::query(AssertSqlSafe(format!(
                "SELECT indexname FROM {}.hypopg_create_index($1)",
                quote_ident(hypopg)
            )))
            .bind(ddl)
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
            let after = explain(conn, stmt, false).await;
            sqlx::query(AssertSqlSafe(format!(
                "SELECT {}.hypopg_reset()",
                quote_ident(hypopg)
            )))
            .execute(&mut *conn)
            .await?;
            Ok((after?, name))
        }
        Planner::Role { search_path, limit } => {
            let (plan, name) = explain_as_plan_role(
                conn,
                search_path,
                *limit,
                stmt.text(),
                false,
                Some((hypopg, ddl)),
            )
            .await?;
            let name = name.ok_or(Error::EmptyPlan)?;
            Ok((plan, name))
        }
    }
}

/// Checks one statement's candidates: fills in schemas from a VERBOSE plan and, with
/// HypoPG (its schema in `hypopg`), the costs. Runs in a transaction that is rolled
/// back; with a plan role, on a connection of its own that is closed afterwards.
async fn check_statement(
    pool: &PgPool,
    stmt: &Stmt<'_>,
    found: Option<Vec<Candidate>>,
    hypopg: Option<&str>,
    plan_role: Option<&str>,
    opts: &AdviseOptions,
) -> Result<Vec<IndexAdvice>> {
    let ms = timeout_ms(opts.statement_timeout)?;
    match plan_role {
        None => {
            let mut tx = pool.begin().await?;
            let result = check_in(&mut tx, &Planner::Session, ms, stmt, found, hypopg, opts).await;
            // Always roll back: nothing of the check stays (HypoPG was reset already).
            let rolled_back = tx.rollback().await;
            let out = result?;
            rolled_back?;
            Ok(out)
        }
        Some(role) => {
            // Never back to the pool: whatever the planned code leaves in the session
            // dies with the connection. Simple-protocol statements and unnamed ones
            // only, so nothing it could have prepared under a name is ever run.
            let mut conn = pool.acquire().await?.detach();
            let result = async {
                sqlx::raw_sql("BEGIN").execute(&mut conn).await?;
                let schemas: Vec<String> =
                    sqlx::query("SELECT pg_catalog.current_schemas(false)::pg_catalog.text[]")
                        .persistent(false)
                        .fetch_one(&mut conn)
                        .await?
                        .try_get(0)?;
                let search_path = schemas
                    .iter()
                    .map(|s| quote_ident(s))
                    .collect::<Vec<_>>()
                    .join(", ");
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "SET LOCAL ROLE {}",
                    quote_ident(role)
                )))
                .execute(&mut conn)
                .await?;
                check_in(
                    &mut conn,
                    &Planner::Role {
                        search_path,
                        // The server's own timeout, and a margin for the round trip.
                        limit: opts.statement_timeout + Duration::from_secs(5),
                    },
                    ms,
                    stmt,
                    found,
                    hypopg,
                    opts,
                )
                .await
            }
            .await;
            // Closing ends the transaction without committing it.
            let _ = sqlx::Connection::close(conn).await;
            result
        }
    }
}

/// The body of [`check_statement`], inside its transaction.
async fn check_in(
    conn: &mut PgConnection,
    planner: &Planner,
    timeout_ms: i64,
    stmt: &Stmt<'_>,
    found: Option<Vec<Candidate>>,
    hypopg: Option<&str>,
    opts: &AdviseOptions,
) -> Result<Vec<IndexAdvice>> {
    sqlx::query("SELECT pg_catalog.set_config('statement_timeout', $1, true)")
        .persistent(false)
        .bind(timeout_ms.to_string())
        .execute(&mut *conn)
        .await?;
    if matches!(stmt, Stmt::Generic(_)) {
        sqlx::query("SELECT pg_catalog.set_config('plan_cache_mode', 'force_generic_plan', true)")
            .persistent(false)
            .execute(&mut *conn)
            .await?;
    }
    let mut cands = match found {
        Some(c) => c,
        None => generic_candidates(
            &plan_of(conn, planner, stmt, false).await?,
            opts.min_scan_cost,
        ),
    };
    if cands.is_empty() {
        return Ok(Vec::new());
    }
    // Non-VERBOSE EXPLAIN prints no schema; the VERBOSE plan of the same statement
    // has the same shape, so its node at the same path names the schema.
    let verbose = plan_of(conn, planner, stmt, true).await?;
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
    let before = match hypopg {
        Some(_) if !cands.is_empty() => {
            Some(plan_of(conn, planner, stmt, false).await?.root.total_cost)
        }
        _ => None,
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
        if let (Some(before), Some(hypopg)) = (before, hypopg) {
            // hypopg_create_index takes a plain CREATE INDEX (no CONCURRENTLY).
            let ddl = advice
                .create_sql
                .replacen("CREATE INDEX CONCURRENTLY", "CREATE INDEX", 1);
            let (after, name) = plan_with_index(conn, planner, stmt, hypopg, &ddl).await?;
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
    Ok(out)
}

/// Whose `pg_stat_statements` texts to plan, and as which role: the options checked
/// against the server.
async fn statement_users(
    pool: &PgPool,
    opts: &AdviseOptions,
) -> Result<(Vec<String>, Option<String>)> {
    if let Some(role) = &opts.plan_role {
        check_role_name("plan_role", "DBTUNE_PLAN_ROLE", role)?;
    }
    for user in &opts.plan_users {
        check_role_name("plan_users", "DBTUNE_PLAN_USERS", user)?;
    }
    let me: String = sqlx::query("SELECT current_user::text")
        .fetch_one(pool)
        .await?
        .try_get(0)?;
    let role = opts.plan_role.clone();
    let users: Vec<String> = if opts.plan_users.is_empty() {
        std::iter::once(me.clone()).chain(role.clone()).collect()
    } else {
        opts.plan_users.clone()
    };
    match &role {
        Some(role) => check_plan_role(pool, role).await?,
        None => {
            let others: Vec<String> = users.iter().filter(|u| **u != me).cloned().collect();
            if !others.is_empty() {
                return Err(Error::PlanRoleRequired { users: others });
            }
        }
    }
    Ok((users, role))
}

/// Suggests indexes for `queries` and, when [`AdviseOptions::use_pg_stat_statements`]
/// is set and the extension is installed, for `pg_stat_statements`' top queries of the
/// users in [`AdviseOptions::plan_users`] (default: the advisor's own role), planned
/// as [`AdviseOptions::plan_role`] when it is set (see the [module docs](self)).
///
/// The given queries are run with `EXPLAIN ANALYZE` (in a rolled-back transaction, as
/// [`analyze_query`]); an error there is returned. A `pg_stat_statements` query that
/// cannot be planned (a dropped table, a type the NULL arguments do not fit, a table
/// the plan role may not read) gives no candidate, with a debug log. Identical
/// candidates are reported once, the first time seen. Verified advice comes first, by
/// cost drop.
///
/// # Errors
/// [`Error::InvalidOption`] for an option out of range, a plan role or user that is
/// not a role name, or a plan role that is missing or not a low-privilege role;
/// [`Error::PlanRoleRequired`] when `plan_users` names another user and no plan role
/// is set; a database error of a given query.
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
    // Checked before any work, so a bad setting fails fast.
    let statements = if opts.use_pg_stat_statements {
        Some(statement_users(pool, opts).await?)
    } else {
        None
    };
    let hypopg = if opts.use_hypopg {
        extension_schema(pool, "hypopg").await?
    } else {
        None
    };
    if hypopg.is_none() {
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
        all.extend(check_statement(pool, &stmt, Some(found), hypopg.as_deref(), None, opts).await?);
    }
    if let Some((users, plan_role)) = statements {
        if extension_schema(pool, "pg_stat_statements")
            .await?
            .is_some()
        {
            for text in top_statements(pool, opts.top_statements, &users).await? {
                if !plannable(&text) {
                    continue;
                }
                let stmt = Stmt::Generic(&text);
                match check_statement(
                    pool,
                    &stmt,
                    None,
                    hypopg.as_deref(),
                    plan_role.as_deref(),
                    opts,
                )
                .await
                {
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
    fn advice_severity_follows_the_verified_cost_drop() {
        use crate::plan::Severity;
        let advice = |verified, before: Option<f64>, after: Option<f64>| IndexAdvice {
            schema: None,
            table: "t".into(),
            keys: Vec::new(),
            columns: Vec::new(),
            create_sql: String::new(),
            cost_before: before,
            cost_after: after,
            verified,
            source: String::new(),
            note: String::new(),
        };
        assert_eq!(
            advice(true, Some(1000.0), Some(100.0)).severity(),
            Severity::Critical
        );
        assert_eq!(
            advice(true, Some(1000.0), Some(100.1)).severity(),
            Severity::Warning
        );
        assert_eq!(
            advice(true, Some(1000.0), Some(500.0)).severity(),
            Severity::Warning
        );
        assert_eq!(advice(false, None, None).severity(), Severity::Info);
    }

    fn from_vars(vars: &[(&str, &str)]) -> Result<AdviseOptions> {
        let lookup = |k: &str| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        };
        AdviseOptions::from_env_source(&EnvSource::from_fn(&lookup))
    }

    #[test]
    fn plan_role_and_users_come_from_the_environment() {
        let o = from_vars(&[
            ("DBTUNE_PLAN_ROLE", " planner "),
            ("DBTUNE_PLAN_USERS", "app, ,reporting"),
        ])
        .unwrap();
        assert_eq!(o.plan_role.as_deref(), Some("planner"));
        assert_eq!(o.plan_users, ["app", "reporting"]);
        assert_eq!(from_vars(&[]).unwrap(), AdviseOptions::default());
        let err = from_vars(&[("DBTUNE_PLAN_USERS", "app,x y")]).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig { key: "DBTUNE_PLAN_USERS", value, .. } if value == "app,x y"),
            "{err}"
        );
        assert!(err.to_string().contains("\"x y\""), "{err}");
        let err = from_vars(&[("DBTUNE_PLAN_ROLE", "1role")]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidConfig {
                    key: "DBTUNE_PLAN_ROLE",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn the_readme_lists_every_variable() {
        cortex_support::env::check_readme(include_str!("../README.md"), AdviseOptions::VARS)
            .unwrap();
    }

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
