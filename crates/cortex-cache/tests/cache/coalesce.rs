//! With `coalesce(true)`, concurrent `get`s on one server are coalesced into `MGET`s
//! (and `set`s into pipelines): each caller still gets
//! its own value, miss or error, within its own timeout, and the counters stay exact.
//! These run on a private `redis-server` (started and killed by each test), so that the
//! server's command counts and a `CLIENT PAUSE` concern no one else.

use std::sync::Arc;
use std::time::Duration;

use cortex_cache::{Cache, Error, RedisCache, RedisCacheConfig};

use crate::shared_store::{Server, free_port, namespace, pool_at};

fn cache_on(pool: cortex_pool::RedisPool, degrade_on_error: bool) -> RedisCache {
    RedisCache::builder(pool)
        .config(RedisCacheConfig {
            namespace: namespace(),
            degrade_on_error,
            ..RedisCacheConfig::default()
        })
        .coalesce(true)
        .build()
        .unwrap()
}

/// `n` bytes, different per key, so a value handed to the wrong caller shows.
fn value_of(i: usize) -> Vec<u8> {
    let len = [0, 1, 16, 300, 5000, 70_000][i % 6];
    (0..len).map(|j| ((i * 31 + j) % 251) as u8).collect()
}

/// How often the server ran `command`, from `INFO commandstats`.
async fn calls_of(conn: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

async fn admin(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("private redis-server at {url}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gets_each_get_their_own_value_and_exact_counts() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let _server = Server::start(port);
    let cache = Arc::new(cache_on(pool_at(&url, Duration::from_secs(5)).await, true));
    const KEYS: usize = 60;
    for i in 0..KEYS {
        cache
            .set(&format!("k{i}"), &value_of(i), None)
            .await
            .unwrap();
    }
    let mut admin = admin(&url).await;
    let mgets_before = calls_of(&mut admin, "mget").await;

    // 64 tasks, 50 reads each, of present keys (even `i`) and absent ones (odd).
    const TASKS: usize = 64;
    const READS: usize = 50;
    let index = |t: usize, r: usize| (t * 7 + r * 13) % (2 * KEYS);
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move {
                for r in 0..READS {
                    let i = index(t, r);
                    if i.is_multiple_of(2) {
                        let got = cache.get(&format!("k{}", i / 2)).await.unwrap();
                        assert_eq!(got, Some(value_of(i / 2)), "key k{}", i / 2);
                    } else {
                        let got = cache.get(&format!("absent{i}")).await.unwrap();
                        assert_eq!(got, None, "key absent{i}");
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let absent = (0..TASKS)
        .flat_map(|t| (0..READS).map(move |r| index(t, r)))
        .filter(|i| i % 2 == 1)
        .count() as u64;
    let stats = cache.stats();
    assert_eq!(stats.hits, (TASKS * READS) as u64 - absent, "{stats:?}");
    assert_eq!(stats.misses, absent, "{stats:?}");
    assert_eq!(stats.errors, 0, "{stats:?}");
    assert!(
        calls_of(&mut admin, "mget").await > mgets_before,
        "concurrent gets were sent one by one, never as an MGET"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sets_each_land_with_their_own_value_and_ttl() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let _server = Server::start(port);
    let cache = Arc::new(cache_on(pool_at(&url, Duration::from_secs(5)).await, true));
    const TASKS: usize = 64;
    const WRITES: usize = 20;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move {
                for w in 0..WRITES {
                    let i = t * WRITES + w;
                    // Two TTLs in the same batches: each write keeps its own.
                    let ttl = Duration::from_secs(if i.is_multiple_of(2) { 100 } else { 1000 });
                    cache
                        .set(&format!("k{i}"), &value_of(i), Some(ttl))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(cache.stats().sets, (TASKS * WRITES) as u64);
    let mut admin = admin(&url).await;
    for i in 0..TASKS * WRITES {
        let key = cache.full_key(&format!("k{i}"));
        let (value, pttl): (Vec<u8>, i64) = redis::pipe()
            .cmd("GET")
            .arg(&key)
            .cmd("PTTL")
            .arg(&key)
            .query_async(&mut admin)
            .await
            .unwrap();
        assert_eq!(value, value_of(i), "{key}");
        let ttl_ms = if i.is_multiple_of(2) {
            100_000
        } else {
            1_000_000
        };
        assert!(
            pttl > ttl_ms - 60_000 && pttl <= ttl_ms,
            "{key}: PTTL {pttl}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_errors_every_caller_and_the_cache_recovers() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let server = Server::start(port);
    let pool = pool_at(&url, Duration::from_millis(500)).await;
    let strict = Arc::new(cache_on(pool.clone(), false));
    let degrading = Arc::new(cache_on(pool, true));
    strict.set("k", b"v", None).await.unwrap();
    degrading.set("k", b"v", None).await.unwrap();
    assert_eq!(strict.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(
        degrading.get("k").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );

    drop(server);
    const CALLERS: usize = 40;
    let (strict_results, degraded_results) = tokio::time::timeout(Duration::from_secs(10), async {
        let strict_calls: Vec<_> = (0..CALLERS)
            .map(|_| {
                let c = Arc::clone(&strict);
                tokio::spawn(async move { c.get("k").await })
            })
            .collect();
        let degraded_calls: Vec<_> = (0..CALLERS)
            .map(|_| {
                let c = Arc::clone(&degrading);
                tokio::spawn(async move { c.get("k").await })
            })
            .collect();
        let mut s = Vec::new();
        for c in strict_calls {
            s.push(c.await.unwrap());
        }
        let mut d = Vec::new();
        for c in degraded_calls {
            d.push(c.await.unwrap());
        }
        (s, d)
    })
    .await
    .expect("reads must not hang while Redis is down");
    for r in &strict_results {
        let e = r.as_ref().expect_err("a read of a dead server");
        assert!(e.is_backend(), "{e}");
        assert!(e.is_retryable(), "{e}");
    }
    for r in &degraded_results {
        assert_eq!(r.as_ref().unwrap(), &None, "degraded to a miss");
    }
    // Writes return the error to every caller, degrading or not.
    let writes: Vec<_> = (0..CALLERS)
        .map(|i| {
            let c = Arc::clone(&degrading);
            tokio::spawn(async move { c.set(&format!("w{i}"), b"v", None).await })
        })
        .collect();
    for w in writes {
        let e = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("writes must not hang while Redis is down")
            .unwrap()
            .expect_err("a write to a dead server");
        assert!(e.is_retryable(), "{e}");
    }
    let s = strict.stats();
    assert_eq!(
        s.errors, CALLERS as u64,
        "one error per failed caller: {s:?}"
    );
    let d = degrading.stats();
    assert_eq!(d.errors, 2 * CALLERS as u64, "{d:?}");
    assert_eq!(d.sets, 1, "{d:?}");
    assert_eq!(d.misses, CALLERS as u64, "{d:?}");
    assert_eq!(d.hits, 1, "{d:?}");

    // Back up (empty): once the cool-down has passed, concurrent reads work again.
    let _server = Server::start(port);
    strict.set("k", b"back", None).await.ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let calls: Vec<_> = (0..CALLERS)
            .map(|_| {
                let c = Arc::clone(&strict);
                tokio::spawn(async move { c.get("k").await })
            })
            .collect();
        let mut ok = true;
        for c in calls {
            match c.await.unwrap() {
                Ok(v) => assert_eq!(v.as_deref(), Some(&b"back"[..])),
                Err(_) => ok = false,
            }
        }
        if ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cache did not recover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        strict.set("k", b"back", None).await.ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_callers_wait_stays_bounded_while_redis_is_paused() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let _server = Server::start(port);
    let cache = Arc::new(cache_on(
        pool_at(&url, Duration::from_millis(300)).await,
        false,
    ));
    cache.set("k", b"v", None).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));

    // The server holds every command for 60 s: far longer than the bound below, so a
    // call that returns did so by its own timeout, not because the pause ended.
    let mut admin = admin(&url).await;
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(60_000)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    const CALLERS: usize = 30;
    let results = tokio::time::timeout(Duration::from_secs(20), async {
        let calls: Vec<_> = (0..CALLERS)
            .map(|i| {
                let c = Arc::clone(&cache);
                tokio::spawn(async move {
                    if i.is_multiple_of(2) {
                        c.get(&format!("k{}", i % 3)).await.map(drop)
                    } else {
                        c.set(&format!("k{}", i % 3), b"w", None).await
                    }
                })
            })
            .collect();
        let mut out = Vec::new();
        for c in calls {
            out.push(c.await.unwrap());
        }
        out
    })
    .await
    .expect("a caller waited past its timeout while Redis was paused");
    for r in results {
        let e = r.expect_err("no answer while paused");
        assert!(
            matches!(e, Error::Redis(_) | Error::Unavailable { .. }),
            "{e}"
        );
        assert!(e.is_retryable(), "{e}");
    }
    assert_eq!(cache.stats().errors, CALLERS as u64);
}
