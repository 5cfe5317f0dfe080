//! The PostgreSQL pool against the real server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use cortex_metrics::Metrics;
use cortex_pool::{DbConfig, DbPool, Error, PoolMetrics};
use sqlx::{Connection, PgConnection, Postgres};

use crate::{database_url, unique_name};

fn config(app: &str) -> DbConfig {
    DbConfig {
        url: database_url(),
        application_name: app.to_owned(),
        pool_size: 1,
        max_overflow: 1,
        pool_timeout: Duration::from_secs(10),
        ..DbConfig::default()
    }
}

async fn pool(config: DbConfig) -> DbPool<Postgres> {
    let shown = cortex_support::redact::redact_url(&config.url);
    DbPool::postgres_with(config, PoolMetrics::disabled())
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at {shown} is not reachable ({e}): run scripts/services.sh")
        })
}

async fn raw() -> PgConnection {
    let url = database_url();
    PgConnection::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at {} is not reachable ({e})",
            cortex_support::redact::redact_url(&url)
        )
    })
}

async fn backend_pid(pool: &DbPool<Postgres>) -> i32 {
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut **conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn session_settings_are_in_effect_on_every_connection() {
    let app = unique_name("settings");
    let pool = pool(DbConfig {
        pool_size: 2,
        max_overflow: 2,
        work_mem: "12MB".into(),
        maintenance_work_mem: "80MB".into(),
        statement_timeout: Duration::from_secs(7),
        async_commit: true,
        ..config(&app)
    })
    .await;
    // Hold four connections at once, so four distinct sessions are checked.
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(pool.acquire().await.unwrap());
    }
    let mut pids = Vec::new();
    for conn in &mut conns {
        let show = |name: &'static str| format!("SHOW {name}");
        let mut get = async |name: &'static str| -> String {
            sqlx::query_scalar(sqlx::AssertSqlSafe(show(name)))
                .fetch_one(&mut ***conn)
                .await
                .unwrap()
        };
        assert_eq!(get("work_mem").await, "12MB");
        assert_eq!(get("maintenance_work_mem").await, "80MB");
        assert_eq!(get("statement_timeout").await, "7s");
        assert_eq!(get("TimeZone").await, "UTC");
        assert_eq!(get("synchronous_commit").await, "off");
        assert_eq!(get("application_name").await, app);
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut ***conn)
            .await
            .unwrap();
        pids.push(pid);
    }
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 4, "four distinct sessions");
    assert_eq!(pool.stats().in_use, 4);
}

#[tokio::test]
async fn injected_setting_is_refused_before_connecting() {
    let err = DbPool::postgres_with(
        DbConfig {
            work_mem: "8MB'; DROP TABLE t; --".into(),
            ..config("x")
        },
        PoolMetrics::disabled(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidConfig {
                key: "DB_WORK_MEM",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn connections_never_exceed_the_maximum_under_200_tasks() {
    let app = unique_name("max");
    let pool = pool(DbConfig {
        pool_size: 2,
        max_overflow: 3,
        ..config(&app)
    })
    .await;
    let max = pool.config().max_connections() as i64;

    // Watch pg_stat_activity from outside the pool while the load runs.
    let done = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicI64::new(0));
    let watcher = {
        let (done, seen, app) = (done.clone(), seen.clone(), app.clone());
        tokio::spawn(async move {
            let mut conn = raw().await;
            while !done.load(Ordering::Relaxed) {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                )
                .bind(&app)
                .fetch_one(&mut conn)
                .await
                .unwrap();
                seen.fetch_max(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.acquire().await.unwrap();
                sqlx::query("SELECT pg_sleep(0.002)")
                    .execute(&mut **conn)
                    .await
                    .unwrap();
                assert!(pool.stats().in_use <= pool.stats().max);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    let seen = seen.load(Ordering::Relaxed);
    assert!(seen >= 1, "the watcher saw the pool's sessions");
    assert!(seen <= max, "{seen} sessions open, maximum {max}");
}

#[tokio::test]
async fn an_acquire_that_cannot_be_served_times_out_with_a_typed_error() {
    let pool = pool(DbConfig {
        pool_size: 1,
        max_overflow: 0,
        pool_timeout: Duration::from_millis(300),
        ..config(&unique_name("timeout"))
    })
    .await;
    let _held = pool.acquire().await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), pool.acquire())
        .await
        .expect("acquire is bounded by its own timeout");
    match r {
        Err(Error::Timeout { waited, max }) => {
            assert!(waited >= Duration::from_millis(300), "{waited:?}");
            assert_eq!(max, 1);
        }
        other => panic!("expected Error::Timeout, got {other:?}"),
    }
    // A caller that gives up mid-wait is no longer counted as waiting.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), pool.acquire())
            .await
            .is_err()
    );
    assert_eq!(pool.stats().waiting, 0);
}

#[tokio::test]
async fn a_terminated_connection_is_never_handed_out_again() {
    let pool = pool(DbConfig {
        pool_size: 1,
        max_overflow: 0,
        ..config(&unique_name("kill"))
    })
    .await;
    let mut admin = raw().await;
    for _ in 0..3 {
        let pid = backend_pid(&pool).await;
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert!(killed);
        // The pool's only connection is dead; the next one handed out must work.
        let mut conn = pool.acquire().await.unwrap();
        let (one, new_pid): (i32, i32) = sqlx::query_as("SELECT 1, pg_backend_pid()")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(one, 1);
        assert_ne!(new_pid, pid, "the killed session was handed out again");
    }
}

#[tokio::test]
async fn recycle_replaces_old_connections() {
    let pool = pool(DbConfig {
        pool_size: 1,
        max_overflow: 0,
        pool_recycle: Duration::from_millis(500),
        ..config(&unique_name("recycle"))
    })
    .await;
    let first = backend_pid(&pool).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let second = backend_pid(&pool).await;
    assert_ne!(
        first, second,
        "a connection older than pool_recycle was reused"
    );
}

#[tokio::test]
async fn acquire_wait_hold_and_created_are_recorded() {
    let registry = Metrics::new();
    let pool = DbPool::postgres_with(
        DbConfig {
            leak_threshold: Duration::from_millis(40),
            ..config(&unique_name("metrics"))
        },
        PoolMetrics::new(&registry, "pg"),
    )
    .await
    .unwrap();
    for _ in 0..5 {
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query("SELECT 1").execute(&mut **conn).await.unwrap();
    }
    assert_eq!(
        registry
            .histogram_seconds_with("pool.acquire_wait", &[("pool", "pg")])
            .unwrap()
            .snapshot()
            .count,
        5
    );
    assert_eq!(
        registry
            .histogram_seconds_with("pool.hold", &[("pool", "pg")])
            .unwrap()
            .snapshot()
            .count,
        5
    );
    assert!(
        registry
            .counter_with("pool.created", &[("pool", "pg")])
            .unwrap()
            .total()
            >= 1
    );
    assert_eq!(
        registry
            .counter_with("pool.leaks", &[("pool", "pg")])
            .unwrap()
            .total(),
        0
    );
    // A guard held past the leak threshold is reported (a warning naming this line).
    let held = pool.acquire().await.unwrap();
    assert!(format!("{held:?}").contains("postgres.rs"), "{held:?}");
    tokio::time::sleep(Duration::from_millis(80)).await;
    drop(held);
    assert_eq!(
        registry
            .counter_with("pool.leaks", &[("pool", "pg")])
            .unwrap()
            .total(),
        1
    );
    let short = DbPool::postgres_with(
        DbConfig {
            command_timeout: Duration::from_millis(50),
            ..config(&unique_name("cmd"))
        },
        PoolMetrics::disabled(),
    )
    .await
    .unwrap();
    let r = short
        .bounded(async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<(), Error>(())
        })
        .await;
    assert!(matches!(r, Err(Error::CommandTimeout { .. })), "{r:?}");
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn the_same_builder_gives_an_embedded_sqlite_pool() {
    let pool = DbPool::sqlite_with(DbConfig::default(), PoolMetrics::disabled())
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        .execute(pool.inner())
        .await
        .unwrap();
    sqlx::query("INSERT INTO t (name) VALUES (?)")
        .bind("a")
        .execute(pool.inner())
        .await
        .unwrap();
    // Another connection of the pool sees the same in-memory database.
    let mut a = pool.acquire().await.unwrap();
    let mut b = pool.acquire().await.unwrap();
    for conn in [&mut a, &mut b] {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&mut ***conn)
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
}
