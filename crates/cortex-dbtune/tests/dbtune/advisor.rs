//! The index advisor on the real server, with HypoPG and pg_stat_statements.

use cortex_dbtune::advisor::{AdviseOptions, QuerySource, advise_indexes};
use cortex_dbtune::plan::{NodeKind, quote_ident};
use cortex_dbtune::{AnalyzeOptions, Param, analyze_query};
use sqlx::postgres::PgPool;

use super::{Schema, pool};

pub(super) async fn extensions(pool: &PgPool) {
    // CI starts a fresh server: the tests create what they need. Concurrent CREATE
    // EXTENSION IF NOT EXISTS can still race on the catalog, so retry once.
    for ext in ["hypopg", "pg_stat_statements"] {
        let sql = format!("CREATE EXTENSION IF NOT EXISTS {ext}");
        if sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(pool)
            .await
            .is_err()
        {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .execute(pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisor_proposes_a_verified_index_that_then_fixes_the_plan() {
    let pool = pool().await;
    extensions(&pool).await;
    let s = Schema::new(&pool, "adv").await;
    let big = s.t("big");
    s.exec(&format!(
        "CREATE TABLE {big} AS SELECT g AS id, g % 100000 AS val, md5(g::text) AS pad \
         FROM generate_series(1, 1000000) g; ANALYZE {big}"
    ))
    .await;
    let sql = format!("SELECT id, pad FROM {big} WHERE val = $1");
    let params = vec![Param::Int(4242)];

    // The indexable seq scan is found...
    let a = analyze_query(&pool, &sql, &params, &AnalyzeOptions::default())
        .await
        .unwrap();
    assert!(
        a.findings.iter().any(|f| f.rule == "indexable_seq_scan"),
        "{:#?}",
        a.findings
    );

    // ...the advisor proposes the index with a verified cost drop...
    let opts = AdviseOptions {
        use_pg_stat_statements: false,
        ..AdviseOptions::default()
    };
    let advice = advise_indexes(
        &pool,
        &[QuerySource::with_params(&sql, params.clone())],
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(advice.len(), 1, "{advice:#?}");
    let ad = &advice[0];
    let (before, after) = (ad.cost_before.unwrap(), ad.cost_after.unwrap());
    eprintln!("advisor: cost {before:.2} -> {after:.2}; {}", ad.create_sql);
    assert!(ad.verified, "{ad:#?}");
    assert!(after <= before / 2.0, "{before} -> {after}");
    assert_eq!(ad.table, "big");
    assert_eq!(ad.columns, ["val"]);
    assert_eq!(
        ad.create_sql,
        format!("CREATE INDEX CONCURRENTLY ON {big} (\"val\")")
    );
    assert_eq!(ad.source, sql);

    // Without HypoPG the candidate comes back unverified, and says so.
    let unverified = AdviseOptions {
        use_hypopg: false,
        ..opts.clone()
    };
    let advice = advise_indexes(
        &pool,
        &[QuerySource::with_params(&sql, params.clone())],
        &unverified,
    )
    .await
    .unwrap();
    assert_eq!(advice.len(), 1, "{advice:#?}");
    assert!(!advice[0].verified);
    assert!(advice[0].note.contains("unverified"), "{}", advice[0].note);
    assert_eq!((advice[0].cost_before, advice[0].cost_after), (None, None));

    // Duplicated queries give one advice.
    let twice = [
        QuerySource::with_params(&sql, params.clone()),
        QuerySource::with_params(&sql, vec![Param::Int(7)]),
    ];
    assert_eq!(advise_indexes(&pool, &twice, &opts).await.unwrap().len(), 1);

    // ...creating it for real: the plan uses it and the finding is gone.
    // CONCURRENTLY cannot run in the implicit transaction of a multi-statement string.
    s.exec(&ad.create_sql).await;
    s.exec(&format!("ANALYZE {big}")).await;
    let a = analyze_query(&pool, &sql, &params, &AnalyzeOptions::default())
        .await
        .unwrap();
    assert!(
        a.findings.iter().all(|f| f.rule != "indexable_seq_scan"),
        "{:#?}",
        a.findings
    );
    assert!(
        a.plan.nodes().iter().any(|n| matches!(
            n.node.kind(),
            NodeKind::IndexScan | NodeKind::BitmapIndexScan
        )),
        "{:#?}",
        a.plan
    );
    // And the advisor has nothing left to suggest.
    let advice = advise_indexes(&pool, &[QuerySource::with_params(&sql, params)], &opts)
        .await
        .unwrap();
    assert!(advice.is_empty(), "{advice:#?}");
    s.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisor_finds_indexes_for_pg_stat_statements_top_queries() {
    let pool = pool().await;
    extensions(&pool).await;
    let s = Schema::new(&pool, "pgss").await;
    let t = s.t("orders");
    s.exec(&format!(
        "CREATE TABLE {t} AS SELECT g AS id, g % 50000 AS customer_id, md5(g::text) AS pad \
         FROM generate_series(1, 300000) g; ANALYZE {t}"
    ))
    .await;
    let sql = format!("SELECT id, pad FROM {t} WHERE customer_id = $1");
    // Enough runs to rank among the top statements by total time.
    for i in 0..20_i64 {
        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(i * 7)
            .fetch_all(&pool)
            .await
            .unwrap();
    }
    let opts = AdviseOptions {
        top_statements: 200,
        ..AdviseOptions::default()
    };
    let advice = advise_indexes(&pool, &[], &opts).await.unwrap();
    let ours = advice
        .iter()
        .find(|a| a.schema.as_deref() == Some(s.name.as_str()) && a.table == "orders")
        .unwrap_or_else(|| panic!("no advice for {t} in {advice:#?}"));
    assert!(ours.verified, "{ours:#?}");
    assert_eq!(ours.columns, ["customer_id"]);
    assert!(ours.cost_after.unwrap() <= ours.cost_before.unwrap() / 2.0);
    assert!(ours.source.contains("$1"), "{}", ours.source);
    assert_eq!(
        ours.create_sql,
        format!("CREATE INDEX CONCURRENTLY ON {t} (\"customer_id\")")
    );
    s.drop().await;
}

/// Roles of one test, dropped at the end: `author`, a low-privilege user whose
/// statements reach pg_stat_statements, and `planner`, a low-privilege role to plan them
/// as.
struct Roles {
    pool: PgPool,
    author: String,
    planner: String,
}

impl Roles {
    async fn new(pool: &PgPool) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let r = Self {
            pool: pool.clone(),
            author: format!("dbtune_it_author_{pid}_{n}"),
            planner: format!("dbtune_it_planner_{pid}_{n}"),
        };
        r.drop_roles().await;
        exec(
            pool,
            &format!(
                "CREATE ROLE {} LOGIN; CREATE ROLE {} NOLOGIN",
                quote_ident(&r.author),
                quote_ident(&r.planner)
            ),
        )
        .await;
        r
    }

    /// A session logged in as `author` (the services script's server trusts loopback).
    async fn author_session(&self) -> sqlx::PgConnection {
        use sqlx::ConnectOptions;
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://cortex@127.0.0.1:5432/cortex".to_string());
        let opts: sqlx::postgres::PgConnectOptions = url
            .parse()
            .unwrap_or_else(|e| panic!("DATABASE_URL does not parse: {e}"));
        opts.username(&self.author)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot log in as {}: {e}", self.author))
    }

    async fn drop_roles(&self) {
        for r in [&self.author, &self.planner] {
            let q = quote_ident(r);
            // DROP OWNED needs the role to exist; ignore a role that does not.
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP OWNED BY {q} CASCADE; DROP ROLE IF EXISTS {q}"
            )))
            .execute(&self.pool)
            .await;
        }
    }
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// `(last_value, is_called)` of a sequence: whether anything called `nextval`.
async fn sequence_state(pool: &PgPool, seq: &str) -> (i64, bool) {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT last_value, is_called FROM {seq}"
    )))
    .fetch_one(pool)
    .await
    .unwrap_or_else(|e| panic!("reading {seq}: {e}"));
    use sqlx::Row;
    (row.get(0), row.get(1))
}

/// The author's IMMUTABLE function calls `nextval` on a sequence only the advisor's
/// (superuser) role may use, swallowing the permission error, so it succeeds for the
/// author and has a side effect only for a privileged planner. `escape` first tries
/// to leave a `SET ROLE` with `set_config('role', 'none', ...)`.
async fn plant_side_effects(s: &Schema, roles: &Roles) -> (String, Vec<String>) {
    let author = quote_ident(&roles.author);
    let planner = quote_ident(&roles.planner);
    let victim = s.t("victim");
    s.exec(&format!(
        "CREATE SEQUENCE {victim}; \
         GRANT USAGE, CREATE ON SCHEMA {schema} TO {author}; \
         GRANT USAGE ON SCHEMA {schema} TO {planner}",
        schema = s.q()
    ))
    .await;
    let victim_lit = victim.replace('\'', "''");
    let mut author_conn = roles.author_session().await;
    let side_effect = s.t("side_effect");
    let escape = s.t("escape");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION {side_effect}() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$ \
         BEGIN \
           BEGIN PERFORM nextval('{victim_lit}'); \
           EXCEPTION WHEN insufficient_privilege THEN NULL; END; \
           RETURN 1; \
         END $f$; \
         CREATE FUNCTION {escape}() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$ \
         BEGIN \
           BEGIN PERFORM set_config('role', 'none', true); \
           EXCEPTION WHEN OTHERS THEN NULL; END; \
           BEGIN PERFORM nextval('{victim_lit}'); \
           EXCEPTION WHEN insufficient_privilege THEN NULL; END; \
           RETURN 1; \
         END $f$"
    )))
    .execute(&mut author_conn)
    .await
    .unwrap_or_else(|e| panic!("creating the author's functions: {e}"));
    // The author's own runs put the statements into pg_stat_statements.
    let statements = vec![
        format!("SELECT {side_effect}()"),
        format!("SELECT {escape}()"),
    ];
    for _ in 0..3 {
        for q in &statements {
            sqlx::query(sqlx::AssertSqlSafe(q.clone()))
                .fetch_all(&mut author_conn)
                .await
                .unwrap_or_else(|e| panic!("{q} as the author: {e}"));
        }
    }
    use sqlx::Connection;
    author_conn
        .close()
        .await
        .unwrap_or_else(|e| panic!("closing the author's session: {e}"));
    (victim, statements)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_users_statements_are_not_planned_as_the_advisor_by_default() {
    let pool = pool().await;
    extensions(&pool).await;
    let s = Schema::new(&pool, "noplan").await;
    let roles = Roles::new(&pool).await;
    let (victim, _) = plant_side_effects(&s, &roles).await;
    // The author's runs had no effect: the author may not use the sequence.
    assert_eq!(sequence_state(&pool, &victim).await, (1, false));

    // Every statement in pg_stat_statements: the author's are among them.
    let opts = AdviseOptions {
        top_statements: 100_000,
        ..AdviseOptions::default()
    };
    let result = advise_indexes(&pool, &[], &opts).await;
    let after = sequence_state(&pool, &victim).await;
    s.drop().await;
    roles.drop_roles().await;
    result.unwrap();
    assert_eq!(
        after,
        (1, false),
        "planning the author's statement as the advisor's role ran its nextval"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_users_statements_are_planned_as_the_plan_role_and_run_nothing() {
    use cortex_dbtune::Error;
    let pool = pool().await;
    extensions(&pool).await;
    let s = Schema::new(&pool, "planas").await;
    let roles = Roles::new(&pool).await;
    let (victim, statements) = plant_side_effects(&s, &roles).await;
    // And a statement of the author's worth an index, on a table the plan role may read.
    let orders = s.t("orders");
    s.exec(&format!(
        "CREATE TABLE {orders} AS SELECT g AS id, g % 10000 AS customer_id, md5(g::text) AS pad \
         FROM generate_series(1, 100000) g; ANALYZE {orders}; \
         GRANT SELECT ON {orders} TO {author}, {planner}",
        author = quote_ident(&roles.author),
        planner = quote_ident(&roles.planner)
    ))
    .await;
    let wanted = format!("SELECT id, pad FROM {orders} WHERE customer_id = $1");
    {
        let mut author = roles.author_session().await;
        for i in 0..10_i64 {
            sqlx::query(sqlx::AssertSqlSafe(wanted.clone()))
                .bind(i)
                .fetch_all(&mut author)
                .await
                .unwrap();
        }
        use sqlx::Connection;
        author.close().await.unwrap();
    }

    // Controls: planning the author's statement as a privileged role runs its nextval,
    // and so does planning the escaping one under a plain SET ROLE: a function can
    // set_config('role', 'none', ...) back to the session's (superuser) role.
    assert_eq!(sequence_state(&pool, &victim).await, (1, false));
    let mut tx = pool.begin().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("EXPLAIN {}", statements[0])))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(sequence_state(&pool, &victim).await, (1, true));
    let mut tx = pool.begin().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET LOCAL ROLE {}; EXPLAIN {}",
        quote_ident(&roles.planner),
        statements[1]
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    let before = sequence_state(&pool, &victim).await;
    assert_eq!(
        before,
        (2, true),
        "a plain SET ROLE did not let the function escape"
    );

    let only_author = AdviseOptions {
        plan_users: vec![roles.author.clone()],
        top_statements: 100_000,
        ..AdviseOptions::default()
    };
    // No plan role: refused, naming the setting, before planning anything.
    let err = advise_indexes(&pool, &[], &only_author).await.unwrap_err();
    assert!(
        matches!(&err, Error::PlanRoleRequired { users } if users == std::slice::from_ref(&roles.author)),
        "{err:?}"
    );
    assert!(err.to_string().contains("DBTUNE_PLAN_ROLE"), "{err}");
    // Not a role name, or not a low-privilege role: refused.
    for bad in ["x; RESET ROLE", "", "cortex"] {
        let err = advise_indexes(
            &pool,
            &[],
            &AdviseOptions {
                plan_role: Some(bad.to_string()),
                ..only_author.clone()
            },
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidOption {
                    name: "plan_role",
                    ..
                }
            ),
            "{bad:?}: {err:?}"
        );
    }

    // As the plan role: the author's statements are planned (the orders one gives a
    // verified index) and neither side effect runs.
    let as_planner = AdviseOptions {
        plan_role: Some(roles.planner.clone()),
        ..only_author.clone()
    };
    let result = advise_indexes(&pool, &[], &as_planner).await;
    let after = sequence_state(&pool, &victim).await;
    s.drop().await;
    roles.drop_roles().await;
    let advice = result.unwrap();
    assert_eq!(
        after, before,
        "planning as the plan role ran the author's nextval"
    );
    let ours = advice
        .iter()
        .find(|a| a.table == "orders" && a.source == wanted)
        .unwrap_or_else(|| panic!("no advice for {orders} in {advice:#?}"));
    assert!(ours.verified, "{ours:#?}");
    assert_eq!(ours.columns, ["customer_id"]);
    assert_eq!(
        ours.create_sql,
        format!("CREATE INDEX CONCURRENTLY ON {orders} (\"customer_id\")")
    );
    // Only the author's statements were looked at.
    assert!(
        advice
            .iter()
            .all(|a| a.schema.as_deref() == Some(s_name(&orders))),
        "{advice:#?}"
    );
}

/// The schema of a quoted `"schema"."table"`.
fn s_name(qualified: &str) -> &str {
    qualified
        .split('.')
        .next()
        .unwrap_or_default()
        .trim_matches('"')
}
