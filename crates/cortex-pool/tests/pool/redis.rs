//! The Redis pool against the real server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cortex_pool::{Error, PoolMetrics, RedisConfig, RedisPool};

use crate::{redis_url, unique_name};

fn config(name: &str) -> RedisConfig {
    RedisConfig {
        url: redis_url(),
        client_name: name.to_owned(),
        pool_size: 2,
        ..RedisConfig::default()
    }
}

async fn pool(config: RedisConfig) -> RedisPool {
    let shown = cortex_support::redact::redact_url(&config.url);
    RedisPool::with_metrics(config, PoolMetrics::disabled())
        .await
        .unwrap_or_else(|e| {
            panic!("Redis at {shown} is not reachable ({e}): run scripts/services.sh")
        })
}

async fn admin() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis at {} is not reachable ({e})", redis_url()))
}

/// Connections whose `CLIENT SETNAME` is `name`.
async fn named(admin: &mut redis::aio::MultiplexedConnection, name: &str) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(admin)
        .await
        .unwrap();
    list.lines()
        .filter(|l| l.split(' ').any(|kv| kv == format!("name={name}")))
        .count()
}

async fn client_id(pool: &RedisPool) -> i64 {
    let mut conn = pool.acquire().await.unwrap();
    redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut *conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn connections_never_exceed_the_maximum_under_200_tasks() {
    let name = unique_name("redis-max");
    let pool = pool(RedisConfig {
        pool_size: 4,
        ..config(&name)
    })
    .await;
    let done = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (done, seen, name) = (done.clone(), seen.clone(), name.clone());
        tokio::spawn(async move {
            let mut admin = admin().await;
            while !done.load(Ordering::Relaxed) {
                seen.fetch_max(named(&mut admin, &name).await, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.acquire().await.unwrap();
                let _: () = redis::cmd("SET")
                    .arg(format!("cortex-test:pool:{i}"))
                    .arg(i)
                    .arg("EX")
                    .arg(5)
                    .query_async(&mut *conn)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    let seen = seen.load(Ordering::Relaxed);
    assert!(seen >= 1, "the watcher saw the pool's connections");
    assert!(seen <= 4, "{seen} connections open, maximum 4");
    pool.health().await.unwrap();
}

#[tokio::test]
async fn an_acquire_that_cannot_be_served_times_out_with_a_typed_error() {
    let pool = pool(RedisConfig {
        pool_size: 1,
        pool_timeout: Duration::from_millis(300),
        ..config(&unique_name("redis-timeout"))
    })
    .await;
    let _held = pool.acquire().await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), pool.acquire())
        .await
        .expect("get is bounded by its own timeout");
    match r {
        Err(Error::Timeout { waited, max }) => {
            assert!(waited >= Duration::from_millis(300), "{waited:?}");
            assert_eq!(max, 1);
        }
        other => panic!("expected Error::Timeout, got {other:?}"),
    }
    assert_eq!(pool.stats().in_use, 1);
}

#[tokio::test]
async fn a_killed_connection_is_never_handed_out_again() {
    let pool = pool(RedisConfig {
        pool_size: 1,
        ..config(&unique_name("redis-kill"))
    })
    .await;
    let mut admin = admin().await;
    for _ in 0..3 {
        let id = client_id(&pool).await;
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(&mut admin)
            .await
            .unwrap();
        assert_eq!(killed, 1);
        let new_id = client_id(&pool).await;
        assert_ne!(new_id, id, "the killed connection was handed out again");
    }
    assert!(pool.closed_connections() >= 3);
}

#[tokio::test]
async fn recycle_replaces_old_connections() {
    let pool = pool(RedisConfig {
        pool_size: 1,
        pool_recycle: Duration::from_millis(500),
        ..config(&unique_name("redis-recycle"))
    })
    .await;
    let first = client_id(&pool).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let second = client_id(&pool).await;
    assert_ne!(
        first, second,
        "a connection older than pool_recycle was reused"
    );
}

#[tokio::test]
async fn an_unreachable_server_fails_fast_with_its_error() {
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        RedisPool::with_metrics(
            RedisConfig {
                url: "redis://127.0.0.1:1".into(),
                pool_timeout: Duration::from_millis(500),
                ..RedisConfig::default()
            },
            PoolMetrics::disabled(),
        ),
    )
    .await
    .expect("bounded");
    assert!(r.is_err());
}
