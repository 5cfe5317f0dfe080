//! The index advisor on the real server, with HypoPG and pg_stat_statements.

use cortex_dbtune::advisor::{AdviseOptions, QuerySource, advise_indexes};
use cortex_dbtune::plan::NodeKind;
use cortex_dbtune::{AnalyzeOptions, Param, analyze_query};
use sqlx::postgres::PgPool;

use super::{Schema, pool};

async fn extensions(pool: &PgPool) {
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
