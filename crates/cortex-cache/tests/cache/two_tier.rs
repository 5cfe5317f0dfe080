//! The two-tier cache: coherence across "processes" (two caches with their own memory
//! tiers and Redis pools) through pub/sub, and serving memory while Redis is down.

use std::time::{Duration, Instant};

use cortex_cache::{Cache, MemoryConfig, MemoryStore, RedisCache, RedisCacheConfig, TwoTierCache};

use crate::shared_store::{Server, free_port, namespace, pool_at, redis_url};

async fn two_tier(url: &str, namespace: &str) -> TwoTierCache<MemoryStore> {
    let remote = RedisCache::new(
        pool_at(url, Duration::from_millis(500)).await,
        RedisCacheConfig {
            namespace: namespace.to_owned(),
            ..RedisCacheConfig::default()
        },
    )
    .unwrap();
    TwoTierCache::new(MemoryStore::new(MemoryConfig::default()).unwrap(), remote).unwrap()
}

/// Wait (bounded) until `cond` holds.
async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_in_one_process_evict_the_others_memory_tier() {
    let ns = namespace();
    let url = redis_url();
    let a = two_tier(&url, &ns).await;
    let b = two_tier(&url, &ns).await;
    // Let both listeners subscribe before the first publish.
    tokio::time::sleep(Duration::from_millis(200)).await;

    a.set("k", b"v1", None).await.unwrap();
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(
        b.local().get("k").await.unwrap().as_deref(),
        Some(&b"v1"[..]),
        "b cached it"
    );

    a.set("k", b"v2", None).await.unwrap();
    eventually("b's memory copy evicted after a's write", async || {
        b.local().get("k").await.unwrap().is_none()
    })
    .await;
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"v2"[..]));

    a.delete("k").await.unwrap();
    eventually("b's copy evicted after a's delete", async || {
        b.local().get("k").await.unwrap().is_none()
    })
    .await;
    assert_eq!(b.get("k").await.unwrap(), None);

    b.set("x", b"1", None).await.unwrap();
    assert_eq!(a.get("x").await.unwrap().as_deref(), Some(&b"1"[..]));
    b.clear().await.unwrap();
    eventually("a's memory tier cleared after b's clear", async || {
        a.local().get("x").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_keeps_serving_while_redis_is_down_and_it_recovers() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let server = Server::start(port);
    let cache = two_tier(&url, &namespace()).await;
    cache.set("k", b"v", None).await.unwrap();

    drop(server);
    tokio::time::timeout(Duration::from_secs(10), async {
        // Served from memory; no error reaches the caller.
        assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        cache.set("n", b"new", None).await.unwrap();
        assert_eq!(cache.get("n").await.unwrap().as_deref(), Some(&b"new"[..]));
        assert_eq!(cache.get("never").await.unwrap(), None);
    })
    .await
    .expect("calls do not hang while Redis is down");
    assert!(cache.remote().stats().errors > 0);

    let _server = Server::start(port);
    eventually("writes reach Redis again", async || {
        cache.set("after", b"ok", None).await.is_ok()
            && cache.remote().get("after").await.ok().flatten().as_deref() == Some(&b"ok"[..])
    })
    .await;
}
