//! The level gauges of every pool kind (`pool.size`, `pool.idle`, `pool.in_use`,
//! `pool.max_size`, `pool.waiting`), checked as the exposition prints them, against
//! the real PostgreSQL and Redis. Each test uses its own registry and pool name.

use std::future::Future;
use std::time::Duration;

use cortex_metrics::Metrics;
use cortex_pool::{Limiter, LimiterConfig, Manager, Pool, PoolMetrics};
use tokio::time::Instant;

use crate::unique_name;

/// No test may hang: every wait for a pool to settle gives up after this.
const BOUND: Duration = Duration::from_secs(20);

/// The families in the order [`levels`] reads them.
const LEVELS: [&str; 5] = ["size", "idle", "in_use", "max_size", "waiting"];

/// The exposition lines of the five level gauges of pool `name`, exactly as printed.
fn levels(registry: &Metrics, name: &str) -> Vec<String> {
    let text = registry.prometheus();
    LEVELS
        .iter()
        .map(|level| {
            let prefix = format!("cortex_pool_{level}{{pool=\"{name}\"}} ");
            text.lines()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{text}"))
                .to_owned()
        })
        .collect()
}

/// The lines [`levels`] should read: `[size, idle, in_use, max_size, waiting]`.
fn expected(name: &str, values: [&str; 5]) -> Vec<String> {
    LEVELS
        .iter()
        .zip(values)
        .map(|(level, v)| format!("cortex_pool_{level}{{pool=\"{name}\"}} {v}"))
        .collect()
}

/// Every gauge of a dropped pool reads NaN.
fn gone(name: &str) -> Vec<String> {
    expected(name, ["NaN"; 5])
}

/// Wait (bounded) until `registry` shows `want` for pool `name`; then the assertion is
/// exact. Pools that return connections from a spawned task settle a moment later.
async fn settle(registry: &Metrics, name: &str, want: [&str; 5]) {
    let want = expected(name, want);
    let deadline = Instant::now() + BOUND;
    loop {
        let got = levels(registry, name);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "levels never became {want:#?}, still {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Run `f` with every wait of it bounded.
async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(BOUND * 2, f).await.expect("test hung")
}

struct Numbers;

impl Manager for Numbers {
    type Object = u64;
    type Error = std::io::Error;

    async fn create(&self) -> Result<u64, std::io::Error> {
        Ok(7)
    }
}

fn object_pool(registry: &Metrics, name: &str, max: usize) -> Pool<Numbers> {
    Pool::builder(Numbers)
        .max_size(max)
        .acquire_timeout(BOUND)
        .metrics(PoolMetrics::new(registry, name))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_pool_levels_follow_holders_and_waiters_then_read_nan() {
    bounded(async {
        let registry = Metrics::new();
        let name = unique_name("levels-object");
        let pool = object_pool(&registry, &name, 3);
        assert_eq!(
            levels(&registry, &name),
            expected(&name, ["0", "0", "0", "3", "0"])
        );
        let text = registry.prometheus();
        for family in ["size", "idle", "in_use", "max_size", "waiting"] {
            assert!(
                text.contains(&format!("# TYPE cortex_pool_{family} gauge\n")),
                "{text}"
            );
        }

        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(pool.acquire().await.unwrap());
        }
        assert_eq!(
            levels(&registry, &name),
            expected(&name, ["3", "0", "3", "3", "0"])
        );

        let p = pool.clone();
        let waiter = tokio::spawn(async move { p.acquire().await.map(drop) });
        settle(&registry, &name, ["3", "0", "3", "3", "1"]).await;
        // The returned object goes straight to the waiter, which returns it at once.
        held.pop();
        waiter.await.unwrap().unwrap();
        assert_eq!(
            levels(&registry, &name),
            expected(&name, ["3", "1", "2", "3", "0"])
        );
        held.clear();
        assert_eq!(
            levels(&registry, &name),
            expected(&name, ["3", "3", "0", "3", "0"])
        );

        drop(pool);
        assert_eq!(levels(&registry, &name), gone(&name));
    })
    .await;
}

#[tokio::test]
async fn a_recreated_pool_takes_over_the_series_of_its_name() {
    let registry = Metrics::new();
    let name = unique_name("levels-recreated");
    let first = object_pool(&registry, &name, 2);
    let a = first.acquire().await.unwrap();
    assert_eq!(
        levels(&registry, &name),
        expected(&name, ["1", "0", "1", "2", "0"])
    );
    drop(a);
    drop(first);
    assert_eq!(levels(&registry, &name), gone(&name));

    // Same name, same registry: the new pool's levels, not NaN.
    let second = object_pool(&registry, &name, 5);
    assert_eq!(
        levels(&registry, &name),
        expected(&name, ["0", "0", "0", "5", "0"])
    );
    let b = second.acquire().await.unwrap();
    assert_eq!(
        levels(&registry, &name),
        expected(&name, ["1", "0", "1", "5", "0"])
    );
    // A pool built while the first is alive takes over as well.
    let third = object_pool(&registry, &name, 9);
    assert_eq!(
        levels(&registry, &name),
        expected(&name, ["0", "0", "0", "9", "0"])
    );
    drop(third);
    assert_eq!(levels(&registry, &name), gone(&name));
    drop(b);
}

#[tokio::test]
async fn an_object_pool_without_metrics_registers_nothing() {
    let registry = Metrics::new();
    let name = unique_name("levels-off");
    let pool = Pool::builder(Numbers)
        .metrics(PoolMetrics::disabled())
        .build()
        .unwrap();
    let _held = pool.acquire().await.unwrap();
    let text = registry.prometheus();
    assert!(!text.contains(&name), "{text}");
    assert!(!text.contains("cortex_pool_in_use"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limiter_levels_count_slots_and_waiters() {
    bounded(async {
        let registry = Metrics::new();
        let name = unique_name("levels-limiter");
        let limiter = Limiter::with_metrics(
            LimiterConfig {
                limit: 2,
                max_wait: BOUND,
                ..LimiterConfig::default()
            },
            PoolMetrics::new(&registry, &name),
        )
        .unwrap();
        assert_eq!(
            levels(&registry, &name),
            expected(&name, ["0", "0", "0", "2", "0"])
        );
        let a = limiter.acquire().await.unwrap();
        let b = limiter.acquire().await.unwrap();
        // A limiter lends slots, not objects: nothing is ever idle.
        assert_eq!(
            levels(&registry, &name),
            expected(&name, ["2", "0", "2", "2", "0"])
        );

        let l = limiter.clone();
        let waiter = tokio::spawn(async move { l.acquire().await.map(drop) });
        settle(&registry, &name, ["2", "0", "2", "2", "1"]).await;
        drop(a);
        waiter.await.unwrap().unwrap();
        assert_eq!(
            levels(&registry, &name),
            expected(&name, ["1", "0", "1", "2", "0"])
        );
        drop(b);
        assert_eq!(
            levels(&registry, &name),
            expected(&name, ["0", "0", "0", "2", "0"])
        );

        drop(limiter);
        assert_eq!(levels(&registry, &name), gone(&name));
    })
    .await;
}

#[cfg(feature = "postgres")]
mod postgres {
    use cortex_pool::{DbConfig, DbPool};
    use sqlx::Postgres;

    use super::*;
    use crate::database_url;

    async fn pool(registry: &Metrics, name: &str, size: u32) -> DbPool<Postgres> {
        let config = DbConfig {
            url: database_url(),
            application_name: name.to_owned(),
            // No overflow: sqlx keeps exactly `size` connections open, so every level
            // is exact.
            pool_size: size,
            max_overflow: 0,
            pool_timeout: BOUND,
            ..DbConfig::default()
        };
        let shown = cortex_support::redact::redact_url(&config.url);
        DbPool::postgres_with(config, PoolMetrics::new(registry, name))
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL at {shown} is not reachable ({e}): run scripts/services.sh")
            })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_levels_show_held_connections_a_waiter_and_nan_after_drop() {
        bounded(async {
            let registry = Metrics::new();
            let name = unique_name("levels-pg");
            let pool = pool(&registry, &name, 3).await;

            let mut held = Vec::new();
            for _ in 0..3 {
                let mut conn = pool.acquire().await.unwrap();
                sqlx::query("SELECT 1").execute(&mut **conn).await.unwrap();
                held.push(conn);
            }
            assert_eq!(
                levels(&registry, &name),
                expected(&name, ["3", "0", "3", "3", "0"])
            );
            assert_eq!(pool.stats().in_use, 3);

            let p = pool.clone();
            let waiter = tokio::spawn(async move { p.acquire().await.map(drop) });
            settle(&registry, &name, ["3", "0", "3", "3", "1"]).await;
            held.pop();
            waiter.await.unwrap().unwrap();
            // sqlx gives a connection back from a spawned task: wait for it to land.
            settle(&registry, &name, ["3", "1", "2", "3", "0"]).await;
            held.clear();
            settle(&registry, &name, ["3", "3", "0", "3", "0"]).await;

            drop(pool);
            assert_eq!(levels(&registry, &name), gone(&name));

            // The same name again: the new pool's levels replace the NaN.
            let again = super::postgres::pool(&registry, &name, 2).await;
            let conn = again.acquire().await.unwrap();
            settle(&registry, &name, ["2", "1", "1", "2", "0"]).await;
            drop(conn);
            again.close().await;
        })
        .await;
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_levels_show_held_connections() {
        bounded(async {
            let registry = Metrics::new();
            let name = unique_name("levels-sqlite");
            let pool = DbPool::sqlite_with(
                DbConfig {
                    pool_size: 2,
                    max_overflow: 0,
                    pool_timeout: BOUND,
                    ..DbConfig::default()
                },
                PoolMetrics::new(&registry, &name),
            )
            .await
            .unwrap();
            let a = pool.acquire().await.unwrap();
            let b = pool.acquire().await.unwrap();
            assert_eq!(
                levels(&registry, &name),
                expected(&name, ["2", "0", "2", "2", "0"])
            );
            let p = pool.clone();
            let waiter = tokio::spawn(async move { p.acquire().await.map(drop) });
            settle(&registry, &name, ["2", "0", "2", "2", "1"]).await;
            drop(a);
            waiter.await.unwrap().unwrap();
            drop(b);
            settle(&registry, &name, ["2", "2", "0", "2", "0"]).await;
            drop(pool);
            assert_eq!(levels(&registry, &name), gone(&name));
        })
        .await;
    }
}

#[cfg(feature = "redis")]
mod redis {
    use cortex_pool::{RedisConfig, RedisPool};

    use super::*;
    use crate::redis_url;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_levels_show_held_connections_a_waiter_and_nan_after_drop() {
        bounded(async {
            let registry = Metrics::new();
            let name = unique_name("levels-redis");
            let config = RedisConfig {
                url: redis_url(),
                client_name: name.clone(),
                pool_size: 2,
                pool_timeout: BOUND,
                ..RedisConfig::default()
            };
            let shown = cortex_support::redact::redact_url(&config.url);
            let pool = RedisPool::with_metrics(config, PoolMetrics::new(&registry, &name))
                .await
                .unwrap_or_else(|e| {
                    panic!("Redis at {shown} is not reachable ({e}): run scripts/services.sh")
                });
            // The connection made up front to fail fast waits idle in the pool.
            assert_eq!(
                levels(&registry, &name),
                expected(&name, ["1", "1", "0", "2", "0"])
            );

            let mut held = Vec::new();
            for _ in 0..2 {
                let mut conn = pool.acquire().await.unwrap();
                let _: String = ::redis::cmd("PING").query_async(&mut *conn).await.unwrap();
                held.push(conn);
            }
            assert_eq!(
                levels(&registry, &name),
                expected(&name, ["2", "0", "2", "2", "0"])
            );

            let p = pool.clone();
            let waiter = tokio::spawn(async move { p.acquire().await.map(drop) });
            settle(&registry, &name, ["2", "0", "2", "2", "1"]).await;
            held.pop();
            waiter.await.unwrap().unwrap();
            settle(&registry, &name, ["2", "1", "1", "2", "0"]).await;
            held.clear();
            settle(&registry, &name, ["2", "2", "0", "2", "0"]).await;

            drop(pool);
            assert_eq!(levels(&registry, &name), gone(&name));
        })
        .await;
    }
}
