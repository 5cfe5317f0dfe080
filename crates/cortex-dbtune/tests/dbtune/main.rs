//! Integration tests on a real PostgreSQL (`DATABASE_URL`, default the services
//! script's server). They fail, never skip, when it is unreachable: start it with
//! `bash scripts/services.sh start` from the workspace root.

mod advisor;
mod bad_input;
// The binary is built only with the `cli` feature.
#[cfg(feature = "cli")]
mod cli;
#[cfg(feature = "cli")]
mod cli_habits;
mod pgtune_upstream;
mod spans;

use std::sync::atomic::{AtomicU32, Ordering};

/// An error's message and its sources', joined: messages leave the driver's text to
/// `source()`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
use std::time::{Duration, Instant};

use cortex_dbtune::plan::{NodeKind, quote_ident};
use cortex_dbtune::{AnalyzeOptions, Param, analyze_query};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};

pub(crate) async fn pool() -> PgPool {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://cortex@127.0.0.1:5432/cortex".to_string());
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at {url} is unreachable ({e}); run scripts/services.sh start")
        })
}

/// A schema of its own per test, so parallel tests and runs do not collide.
struct Schema {
    pool: PgPool,
    name: String,
}

impl Schema {
    async fn new(pool: &PgPool, tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "dbtune_it_{tag}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let s = Self {
            pool: pool.clone(),
            name,
        };
        s.exec(&format!("DROP SCHEMA IF EXISTS {} CASCADE", s.q()))
            .await;
        s.exec(&format!("CREATE SCHEMA {}", s.q())).await;
        s
    }

    fn q(&self) -> String {
        quote_ident(&self.name)
    }

    /// `schema.table`, quoted.
    fn t(&self, table: &str) -> String {
        format!("{}.{}", self.q(), quote_ident(table))
    }

    async fn exec(&self, sql: &str) {
        sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query(AssertSqlSafe(sql.to_string()))
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    async fn drop(self) {
        self.exec(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.q()))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unindexed_column_gives_indexable_seq_scan_then_index_fixes_it() {
    let pool = pool().await;
    let s = Schema::new(&pool, "big").await;
    let big = s.t("big");
    let started = Instant::now();
    s.exec(&format!(
        "CREATE TABLE {big} AS SELECT g AS id, g % 100000 AS val, md5(g::text) AS pad \
         FROM generate_series(1, 1000000) g; ANALYZE {big}"
    ))
    .await;
    eprintln!("1,000,000 rows loaded in {:?}", started.elapsed());

    let sql = format!("SELECT id, pad FROM {big} WHERE val = $1");
    let params = [Param::Int(4242)];
    let a = analyze_query(&pool, &sql, &params, &AnalyzeOptions::default())
        .await
        .unwrap();
    let f = a
        .findings
        .iter()
        .find(|f| f.rule == "indexable_seq_scan")
        .unwrap_or_else(|| panic!("no indexable_seq_scan in {:#?}", a.findings));
    assert_eq!(f.relation.as_deref(), Some("big"));
    let idx = f.index.clone().unwrap();
    assert_eq!(idx.columns(), ["val"]);
    assert_eq!(
        f.suggestion,
        "CREATE INDEX CONCURRENTLY ON \"big\" (\"val\");"
    );

    // With the suggested index (on the schema-qualified table, since non-VERBOSE
    // EXPLAIN prints no schema), the plan uses it and the finding is gone.
    s.exec(&format!("CREATE INDEX ON {big} (val); ANALYZE {big}"))
        .await;
    let a = analyze_query(&pool, &sql, &params, &AnalyzeOptions::default())
        .await
        .unwrap();
    assert!(
        a.findings.iter().all(|f| f.rule != "indexable_seq_scan"),
        "{:#?}",
        a.findings
    );
    let kinds: Vec<NodeKind> = a.plan.nodes().iter().map(|n| n.node.kind()).collect();
    assert!(
        kinds.iter().any(|k| matches!(
            k,
            NodeKind::IndexScan | NodeKind::BitmapHeapScan | NodeKind::BitmapIndexScan
        )),
        "{kinds:?}"
    );
    assert_eq!(a.plan.root.total_actual_rows(), Some(10.0));
    s.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explained_write_changes_no_row() {
    let pool = pool().await;
    let s = Schema::new(&pool, "write").await;
    let t = s.t("t");
    s.exec(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, v int NOT NULL); \
         INSERT INTO {t} SELECT g, 0 FROM generate_series(1, 10000) g"
    ))
    .await;
    let changed = format!("SELECT count(*) FROM {t} WHERE v <> 0");
    let total = format!("SELECT count(*) FROM {t}");
    assert_eq!(s.count(&changed).await, 0);

    let a = analyze_query(
        &pool,
        &format!("UPDATE {t} SET v = $1 WHERE id <= $2"),
        &[Param::Int(7), Param::Int(5000)],
        &AnalyzeOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(a.plan.root.kind(), NodeKind::ModifyTable);
    assert_eq!(a.plan.root.operation.as_deref(), Some("Update"));
    // It really ran (ANALYZE): the scan under ModifyTable saw 5000 rows...
    assert_eq!(a.plan.root.children[0].total_actual_rows(), Some(5000.0));
    // ...and was rolled back.
    assert_eq!(s.count(&changed).await, 0);

    analyze_query(
        &pool,
        &format!("DELETE FROM {t} WHERE id > $1"),
        &[Param::Int(0)],
        &AnalyzeOptions::default(),
    )
    .await
    .unwrap();
    analyze_query(
        &pool,
        &format!("INSERT INTO {t} SELECT g, 1 FROM generate_series($1::int, $2::int) g"),
        &[Param::Int(20_001), Param::Int(20_100)],
        &AnalyzeOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(s.count(&total).await, 10_000);
    assert_eq!(s.count(&changed).await, 0);
    s.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_attempt_in_a_parameter_stays_data() {
    let pool = pool().await;
    let s = Schema::new(&pool, "inj").await;
    let x = s.t("x");
    s.exec(&format!(
        "CREATE TABLE {x} (id int, name text); \
         INSERT INTO {x} SELECT g, 'n' || g FROM generate_series(1, 100) g"
    ))
    .await;
    let drop_it = format!("1; DROP TABLE {x}; --");
    for attempt in [
        drop_it.as_str(),
        "1; DROP TABLE x; --",
        "' OR '1'='1",
        "1' OR '1'='1'; DROP TABLE x; --",
    ] {
        let a = analyze_query(
            &pool,
            &format!("SELECT * FROM {x} WHERE name = $1"),
            &[Param::Text(attempt.to_string())],
            &AnalyzeOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(a.plan.root.total_actual_rows(), Some(0.0), "{attempt}");
    }
    let regclass = format!(
        "SELECT count(*) FROM pg_class WHERE oid = to_regclass('{}')",
        x.replace('\'', "''")
    );
    assert_eq!(s.count(&regclass).await, 1, "table x must still exist");
    assert_eq!(s.count(&format!("SELECT count(*) FROM {x}")).await, 100);

    // A second statement appended to the SQL itself is refused by the extended
    // protocol, and nothing runs.
    let err = analyze_query(
        &pool,
        &format!("SELECT 1; DROP TABLE {x}"),
        &[],
        &AnalyzeOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(chain(&err).contains("multiple commands"), "{err:?}");
    assert!(!err.is_retryable(), "{err:?}");
    assert_eq!(s.count(&regclass).await, 1);
    s.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_applies_and_does_not_leak() {
    let pool = pool().await;
    let opts = AnalyzeOptions {
        statement_timeout: Duration::from_millis(200),
        ..AnalyzeOptions::default()
    };
    // The error itself says the server cancelled the statement at the timeout.
    let err = analyze_query(&pool, "SELECT pg_sleep(5)", &[], &opts)
        .await
        .unwrap_err();
    assert!(chain(&err).contains("statement timeout"), "{err:?}");
    // A statement cancelled by its timeout may pass another time.
    assert!(err.is_retryable(), "{err:?}");
    // SET LOCAL ended with the rolled-back transaction: every pooled connection is
    // back to the server default.
    for _ in 0..4 {
        let v: String = sqlx::query("SHOW statement_timeout")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
        assert_ne!(v, "200ms");
    }
    let zero = AnalyzeOptions {
        statement_timeout: Duration::ZERO,
        ..AnalyzeOptions::default()
    };
    let err = analyze_query(&pool, "SELECT 1", &[], &zero)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("statement_timeout"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_settings_report_compares_with_pgtune() {
    use cortex_dbtune::pgtune::{DbType, PgtuneInput, Storage, parse_memory};
    use cortex_dbtune::settings::{alter_system_statements, settings_report, to_postgresql_conf};
    let pool = pool().await;
    let input = PgtuneInput {
        db_type: DbType::Web,
        total_memory_bytes: parse_memory("16GB").unwrap(),
        cpus: Some(8),
        connections: None,
        storage: Storage::Ssd,
        pg_version: 15,
    };
    let r = settings_report(&pool, Some(input)).await.unwrap();
    assert_eq!(r.server.version_num / 10_000, 15);
    assert!(r.server.connections_in_use >= 1);
    assert!(r.server.max_connections >= 1);
    let get = |n: &str| {
        r.recommendations
            .iter()
            .find(|x| x.name == n)
            .unwrap_or_else(|| panic!("no {n} in {:#?}", r.recommendations))
    };
    let sb = get("shared_buffers");
    assert_eq!(sb.recommended, "4GB");
    assert!(
        sb.current.as_deref().is_some_and(|c| c.ends_with("B")),
        "{sb:?}"
    );
    assert!(sb.needs_restart());
    assert_eq!(get("work_mem").recommended, "20164kB");
    assert!(get("statement_timeout").current.is_some());
    assert!(get("log_lock_waits").current.is_some());
    // Every row validates against the live pg_settings.
    let sql = alter_system_statements(&r.recommendations).unwrap();
    assert_eq!(
        sql.iter()
            .filter(|s| s.starts_with("ALTER SYSTEM SET"))
            .count(),
        r.recommendations.len()
    );
    assert!(sql.iter().any(|s| s == "SELECT pg_reload_conf();"));
    assert!(
        sql.iter()
            .all(|s| !s.to_ascii_uppercase().contains("RESET"))
    );
    let conf = to_postgresql_conf(&r.recommendations).unwrap();
    for sec in [
        "connections",
        "memory",
        "planner",
        "parallel",
        "checkpoints/WAL",
        "logging",
        "autovacuum",
        "statement_timeout",
    ] {
        assert!(conf.contains(&format!("# --- {sec} ---")), "{sec}: {conf}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_report_quotes_weird_names() {
    use cortex_dbtune::maintenance::maintenance_report;
    let pool = pool().await;
    let s = Schema::new(&pool, "maint").await;
    let t = s.t("Weird \"Name\"");
    s.exec(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, \"Val\" int); \
         INSERT INTO {t} SELECT g, g % 10 FROM generate_series(1, 5000) g; \
         CREATE INDEX \"Idx \"\"A\"\"\" ON {t} (\"Val\"); \
         CREATE INDEX idx_b ON {t} (\"Val\"); \
         CREATE INDEX idx_c ON {t} (\"Val\") WHERE \"Val\" > 5; \
         ANALYZE {t}"
    ))
    .await;
    let r = maintenance_report(&pool).await.unwrap();
    let schema_q = s.q();
    let dups: Vec<_> = r
        .duplicate_indexes
        .iter()
        .filter(|d| d.schema == s.name)
        .collect();
    // The partial index is not a duplicate: its predicate differs.
    assert_eq!(dups.len(), 1, "{dups:#?}");
    let d = dups[0];
    assert_eq!(d.table, "Weird \"Name\"");
    assert_eq!(d.keep, "Idx \"A\"");
    assert_eq!(d.redundant, ["idx_b"]);
    assert_eq!(
        d.sql,
        [format!("DROP INDEX CONCURRENTLY {schema_q}.\"idx_b\";")]
    );

    let unused: Vec<&str> = r
        .unused_indexes
        .iter()
        .filter(|u| u.schema == s.name)
        .map(|u| u.sql.as_str())
        .collect();
    let idx_a = format!("DROP INDEX CONCURRENTLY {schema_q}.\"Idx \"\"A\"\"\";");
    assert!(unused.contains(&idx_a.as_str()), "{unused:#?}");
    // The primary key is never reported unused.
    assert!(unused.iter().all(|u| !u.contains("pkey")), "{unused:#?}");

    let table = r
        .tables
        .iter()
        .find(|x| x.schema == s.name)
        .unwrap_or_else(|| panic!("{:#?}", r.tables));
    assert_eq!(table.sql, format!("VACUUM (ANALYZE) {t};"));
    assert_eq!(
        table.sql,
        format!("VACUUM (ANALYZE) {schema_q}.\"Weird \"\"Name\"\"\";")
    );
    assert!(table.last_analyze.is_some());
    assert!(
        table
            .estimated_bloat_ratio
            .is_some_and(|b| (0.0..1.0).contains(&b)),
        "{table:#?}"
    );
    // The suggested SQL runs as is.
    s.exec(&table.sql).await;
    for q in &d.sql {
        s.exec(q).await;
    }
    s.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sessions_temp_tables_are_not_orphaned() {
    use cortex_dbtune::maintenance::{TempOwner, maintenance_report};
    use sqlx::Connection;
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://cortex@127.0.0.1:5432/cortex".to_string());
    let other_name = format!("dbtune_tmp_other_{}", std::process::id());
    let own_name = format!("dbtune_tmp_own_{}", std::process::id());

    // Another session holds a temporary table while the report is read.
    let mut other = sqlx::PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is unreachable ({e})"));
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TEMP TABLE {} (id int); INSERT INTO {} VALUES (1)",
        quote_ident(&other_name),
        quote_ident(&other_name)
    )))
    .execute(&mut other)
    .await
    .unwrap();
    // A one-connection pool: the report runs in the session that owns the table.
    let own = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TEMP TABLE {} (id int)",
        quote_ident(&own_name)
    )))
    .execute(&own)
    .await
    .unwrap();

    let r = maintenance_report(&own).await.unwrap();
    let find = |name: &str| {
        r.temp_tables
            .iter()
            .find(|t| t.table == name)
            .unwrap_or_else(|| panic!("{name} not in {:#?}", r.temp_tables))
            .clone()
    };
    let o = find(&other_name);
    assert_ne!(o.owner, TempOwner::Orphaned, "{o:#?}");
    assert!(o.sql.is_none());
    assert_eq!(o.schema, format!("pg_temp_{}", o.backend_id));
    let m = find(&own_name);
    assert_eq!(m.owner, TempOwner::Live, "{m:#?}");
    assert!(m.sql.is_none());
    assert_ne!(m.backend_id, o.backend_id);

    own.close().await;
    other.close().await.unwrap();
}
