//! `EXPLAIN ANALYZE` of a statement on a live server: parameters bound, never
//! interpolated; run inside a transaction that is always rolled back; under a
//! statement timeout.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgArguments, PgPool};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Postgres, Row};
use tracing::Instrument;

use crate::plan::{Finding, Plan, Thresholds, analyze};
use crate::{Error, Result};

/// A statement parameter (`$1`, `$2`, ...), bound with its PostgreSQL type. The server
/// does not coerce between these and a column of another type (`text = integer` is an
/// error): pass the matching variant, or cast in the statement (`$1::date`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Param {
    /// SQL NULL, typed `text`.
    Null,
    /// `boolean`.
    Bool(bool),
    /// `bigint`.
    Int(i64),
    /// `double precision`.
    Float(f64),
    /// `text`.
    Text(String),
    /// `jsonb`.
    Json(serde_json::Value),
}

impl From<serde_json::Value> for Param {
    /// JSON scalars map to their SQL type (integers to `bigint`, other numbers to
    /// `double precision`); arrays and objects to `jsonb`.
    fn from(v: serde_json::Value) -> Self {
        use serde_json::Value as V;
        match v {
            V::Null => Param::Null,
            V::Bool(b) => Param::Bool(b),
            V::Number(n) => match n.as_i64() {
                Some(i) => Param::Int(i),
                None => Param::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            V::String(s) => Param::Text(s),
            other => Param::Json(other),
        }
    }
}

impl From<&str> for Param {
    fn from(s: &str) -> Self {
        Param::Text(s.to_string())
    }
}

impl From<i64> for Param {
    fn from(i: i64) -> Self {
        Param::Int(i)
    }
}

/// Options of [`analyze_query`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnalyzeOptions {
    /// Cancels the statement after this long (default 30 s; 1 ms ..= about 24.8 days,
    /// PostgreSQL's limit). Serialized as seconds; read from seconds or a duration
    /// text (`"500ms"`, `"30s"`).
    #[serde(with = "cortex_support::duration::secs")]
    pub statement_timeout: Duration,
    /// Thresholds of the plan rules.
    pub thresholds: Thresholds,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        Self {
            statement_timeout: Duration::from_secs(30),
            thresholds: Thresholds::default(),
        }
    }
}

/// A plan and what the rules found in it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    /// The parsed plan.
    pub plan: Plan,
    /// Findings, most severe first.
    pub findings: Vec<Finding>,
    /// Lints of the statement's text ([`crate::plan::lint_sql`]).
    pub lints: Vec<crate::plan::SqlLint>,
}

pub(crate) fn bind<'q>(
    q: Query<'q, Postgres, PgArguments>,
    p: &Param,
) -> Query<'q, Postgres, PgArguments> {
    match p {
        Param::Null => q.bind(None::<String>),
        Param::Bool(b) => q.bind(*b),
        Param::Int(i) => q.bind(*i),
        Param::Float(f) => q.bind(*f),
        Param::Text(s) => q.bind(s.clone()),
        Param::Json(v) => q.bind(sqlx::types::Json(v.clone())),
    }
}

/// The timeout in whole ms, checked against PostgreSQL's range (1 ..= i32::MAX; 0 would
/// mean "no timeout", which this function never applies).
pub(crate) fn timeout_ms(d: Duration) -> Result<i64> {
    let ms = d.as_millis();
    if ms == 0 || ms > i32::MAX as u128 {
        return Err(Error::InvalidOption {
            name: "statement_timeout",
            reason: format!("{ms} ms is outside 1..={} ms", i32::MAX),
        });
    }
    Ok(ms as i64)
}

/// Runs `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) <sql>` with `params` bound and analyzes
/// the plan.
///
/// The statement runs in a transaction that is rolled back whether it succeeds or not,
/// so an `INSERT`/`UPDATE`/`DELETE` changes no row (sequences it advances stay advanced,
/// as PostgreSQL never rolls those back). `statement_timeout` is set for that
/// transaction only. The SQL text must be one statement; it is sent as the user wrote
/// it (it is what is being explained) and values go only through `params`.
pub async fn analyze_query(
    pool: &PgPool,
    sql: &str,
    params: &[Param],
    opts: &AnalyzeOptions,
) -> Result<Analysis> {
    let ms = timeout_ms(opts.statement_timeout)?;
    // The SQL is not a field: it may hold literals the caller would not log.
    let span = tracing::debug_span!(
        "dbtune.analyze",
        params = params.len(),
        findings = tracing::field::Empty
    );
    let analysis = run_analysis(pool, sql, params, opts, ms)
        .instrument(span.clone())
        .await?;
    span.record("findings", analysis.findings.len());
    Ok(analysis)
}

/// [`analyze_query`] inside its span.
async fn run_analysis(
    pool: &PgPool,
    sql: &str,
    params: &[Param],
    opts: &AnalyzeOptions,
    ms: i64,
) -> Result<Analysis> {
    let mut tx = pool.begin().await?;
    let result = async {
        // set_config(..., is_local => true) is SET LOCAL with a bound value.
        sqlx::query("SELECT set_config('statement_timeout', $1, true)")
            .bind(ms.to_string())
            .execute(&mut *tx)
            .await?;
        let text = format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}");
        // The statement is the caller's by design (it is what gets explained); the
        // extended protocol rejects a second statement appended to it, and every value
        // travels as a bound parameter.
        let mut q = sqlx::query(AssertSqlSafe(text));
        for p in params {
            q = bind(q, p);
        }
        let row = q.fetch_one(&mut *tx).await?;
        let json: serde_json::Value = row.try_get(0)?;
        Ok::<_, Error>(json)
    }
    .await;
    // Always roll back, also after an error (the transaction is then aborted anyway).
    let rolled_back = tx.rollback().await;
    let json = result?;
    rolled_back?;
    let plan = Plan::from_value(json)?;
    let findings = analyze(&plan, &opts.thresholds);
    tracing::debug!(findings = findings.len(), "analyzed query plan");
    Ok(Analysis {
        plan,
        findings,
        lints: crate::plan::lint_sql(sql),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_validation() {
        assert_eq!(timeout_ms(Duration::from_secs(30)).unwrap(), 30_000);
        assert!(timeout_ms(Duration::ZERO).is_err());
        assert!(timeout_ms(Duration::from_micros(999)).is_err());
        let e = timeout_ms(Duration::from_secs(3_000_000)).unwrap_err();
        assert!(e.to_string().contains("3000000000 ms"), "{e}");
    }

    #[test]
    fn options_serialize_the_timeout_as_seconds() {
        let o: AnalyzeOptions = serde_json::from_str(r#"{"statement_timeout": "500ms"}"#).unwrap();
        assert_eq!(o.statement_timeout, Duration::from_millis(500));
        let o: AnalyzeOptions = serde_json::from_str(r#"{"statement_timeout": 2}"#).unwrap();
        assert_eq!(o.statement_timeout, Duration::from_secs(2));
        let json = serde_json::to_value(&o).unwrap();
        assert_eq!(json["statement_timeout"], 2.0);
        let a: crate::advisor::AdviseOptions =
            serde_json::from_str(r#"{"statement_timeout": "1m"}"#).unwrap();
        assert_eq!(a.statement_timeout, Duration::from_secs(60));
        assert!(serde_json::from_str::<AnalyzeOptions>(r#"{"statement_timeout": "-1s"}"#).is_err());
    }

    #[test]
    fn params_from_json() {
        use serde_json::json;
        assert_eq!(Param::from(json!(42)), Param::Int(42));
        assert_eq!(Param::from(json!(1.5)), Param::Float(1.5));
        assert_eq!(Param::from(json!("x")), Param::Text("x".into()));
        assert_eq!(Param::from(json!(null)), Param::Null);
        assert_eq!(Param::from(json!(true)), Param::Bool(true));
        assert_eq!(Param::from(json!({"a": 1})), Param::Json(json!({"a": 1})));
    }
}
