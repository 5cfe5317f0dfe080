//! The two-tier cache: coherence across "processes" (two caches with their own memory
//! tiers and Redis pools) through pub/sub, fills that race with writes, and what the
//! caller sees while Redis is down, restarted or frozen.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cortex_cache::{Cache, MemoryConfig, MemoryStore, RedisCache, RedisCacheConfig, TwoTierCache};
use tokio::sync::Barrier;

use crate::gated::GatedTier;
use crate::shared_store::{Server, free_port, namespace, pool_at, redis_url};

const READY: Duration = Duration::from_secs(5);

async fn remote(url: &str, namespace: &str) -> RedisCache {
    RedisCache::new(
        pool_at(url, Duration::from_millis(500)).await,
        RedisCacheConfig {
            namespace: namespace.to_owned(),
            ..RedisCacheConfig::default()
        },
    )
    .unwrap()
}

async fn two_tier(url: &str, namespace: &str) -> TwoTierCache<MemoryStore> {
    let remote = remote(url, namespace).await;
    TwoTierCache::new(MemoryStore::new(MemoryConfig::default()).unwrap(), remote).unwrap()
}

/// Wait (at most `within`) until `cond` holds.
async fn within(limit: Duration, what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn eventually(what: &str, cond: impl AsyncFnMut() -> bool) {
    within(Duration::from_secs(5), what, cond).await;
}

/// `SET` straight into Redis, bypassing every cache: a write whose invalidation nobody
/// hears.
async fn raw_set(url: &str, key: &str, value: &[u8]) {
    let pool = pool_at(url, Duration::from_secs(5)).await;
    let mut conn = pool.acquire().await.unwrap();
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async::<()>(&mut *conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_in_one_process_evict_the_others_memory_tier() {
    let ns = namespace();
    let url = redis_url();
    let a = two_tier(&url, &ns).await;
    let b = two_tier(&url, &ns).await;
    // Both listeners subscribed before the first publish: no sleep, no guess.
    a.ready(READY).await.unwrap();
    b.ready(READY).await.unwrap();

    a.set("k", b"v1", None).await.unwrap();
    // A read racing with the invalidation of a write may not fill memory (it cannot
    // tell whether what it read is older than the write), so let it arrive first.
    heard(&b, 1).await;
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
    heard(&a, 1).await;
    assert_eq!(a.get("x").await.unwrap().as_deref(), Some(&b"1"[..]));
    assert!(a.local().get("x").await.unwrap().is_some(), "a cached it");
    b.clear().await.unwrap();
    eventually("a's memory tier cleared after b's clear", async || {
        a.local().get("x").await.unwrap().is_none()
    })
    .await;
    assert_eq!(a.listener_stats().subscriptions, 1);
    assert_eq!(a.listener_stats().invalidations, 2);
}

/// `new` returns before the listener has subscribed; `ready` says when it has. A
/// write made right after `ready` returns is heard, with no sleep and no guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_ready_the_very_next_write_elsewhere_is_heard() {
    let (url, ns) = (redis_url(), namespace());
    let a = two_tier(&url, &ns).await;
    let b = two_tier(&url, &ns).await;
    b.ready(READY).await.unwrap();
    b.local().set("k", b"stale", None).await.unwrap();
    a.set("k", b"new", None).await.unwrap();
    eventually(
        "b's copy evicted by the first write after ready",
        async || b.local().get("k").await.unwrap().is_none(),
    )
    .await;
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"new"[..]));
}

/// Wait until `cache` has applied `n` invalidations from other processes.
async fn heard<L: Cache + 'static>(cache: &TwoTierCache<L>, n: u64) {
    eventually("the invalidation arrives", async || {
        cache.listener_stats().invalidations >= n
    })
    .await;
}

/// A read of `key` that has fetched `old` from Redis and is held just before it fills
/// memory; `release` lets the fill land, `finish` returns what the read answered.
struct HeldFill {
    gate: Arc<Barrier>,
    read: tokio::task::JoinHandle<Option<Vec<u8>>>,
}

impl HeldFill {
    async fn start(cache: &Arc<TwoTierCache<GatedTier>>, key: &'static str) -> Self {
        cache.local().arm();
        let gate = cache.local().gate();
        let reader = Arc::clone(cache);
        let read = tokio::spawn(async move { reader.get(key).await.unwrap() });
        gate.wait().await; // the read is now inside the memory tier's `set`
        Self { gate, read }
    }

    async fn finish(self) -> Option<Vec<u8>> {
        self.gate.wait().await;
        self.read.await.unwrap()
    }
}

async fn gated(url: &str, ns: &str) -> Arc<TwoTierCache<GatedTier>> {
    let cache = TwoTierCache::new(GatedTier::new(), remote(url, ns).await).unwrap();
    cache.ready(READY).await.unwrap();
    Arc::new(cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_fill_never_replaces_this_process_own_newer_write() {
    let (url, ns) = (redis_url(), namespace());
    let cache = gated(&url, &ns).await;
    cache.remote().set("k", b"old", None).await.unwrap();

    let fill = HeldFill::start(&cache, "k").await;
    cache.set("k", b"new", None).await.unwrap();
    assert_eq!(fill.finish().await.as_deref(), Some(&b"old"[..]));

    // Read-your-write: the fill of "old", older than the write, did not stick.
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"new"[..]));
    assert_ne!(
        cache.local().get("k").await.unwrap().as_deref(),
        Some(&b"old"[..])
    );

    // The same race with a delete.
    cache.remote().set("k2", b"old", None).await.unwrap();
    let fill = HeldFill::start(&cache, "k2").await;
    assert!(cache.delete("k2").await.unwrap());
    assert_eq!(fill.finish().await.as_deref(), Some(&b"old"[..]));
    assert_eq!(
        cache.get("k2").await.unwrap(),
        None,
        "deleted stays deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_fill_never_replaces_another_process_newer_write() {
    let (url, ns) = (redis_url(), namespace());
    let cache = gated(&url, &ns).await;
    let other = two_tier(&url, &ns).await;
    other.ready(READY).await.unwrap();
    cache.remote().set("k", b"old", None).await.unwrap();

    let fill = HeldFill::start(&cache, "k").await;
    other.set("k", b"new", None).await.unwrap();
    eventually("the invalidation reached the filling process", async || {
        cache.listener_stats().invalidations >= 1
    })
    .await;
    assert_eq!(fill.finish().await.as_deref(), Some(&b"old"[..]));

    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"new"[..]));
    assert_ne!(
        cache.local().get("k").await.unwrap().as_deref(),
        Some(&b"old"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_an_outage_reads_come_from_memory_and_writes_fail_and_drop_the_copy() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let server = Server::start(port);
    let cache = two_tier(&url, &namespace()).await;
    cache.ready(READY).await.unwrap();
    cache.set("k", b"v", None).await.unwrap();
    cache.set("d", b"v", None).await.unwrap();
    cache.set("kept", b"v", None).await.unwrap();

    drop(server);
    tokio::time::timeout(Duration::from_secs(10), async {
        // Served from memory; a miss degrades to `None`.
        assert_eq!(cache.get("kept").await.unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(cache.get("never").await.unwrap(), None);
        // A write that did not reach Redis is an error, and leaves no copy behind to
        // be served as if it had landed (nor the old one it meant to replace).
        assert!(cache.set("k", b"new", None).await.is_err());
        assert_eq!(cache.local().get("k").await.unwrap(), None);
        assert_eq!(cache.get("k").await.unwrap(), None);
        // A delete (an invalidation after a database write) that did not land is an
        // error, not a quiet `false`; this process drops its copy all the same.
        assert!(cache.delete("d").await.is_err());
        assert_eq!(cache.local().get("d").await.unwrap(), None);
        assert!(cache.set("n", b"new", None).await.is_err());
        assert_eq!(cache.get("n").await.unwrap(), None);
    })
    .await
    .expect("calls do not hang while Redis is down");
    assert!(cache.remote().stats().errors > 0);

    let _server = Server::start(port);
    within(
        Duration::from_secs(10),
        "writes reach Redis again",
        async || {
            cache.set("after", b"ok", None).await.is_ok()
                && cache.remote().get("after").await.ok().flatten().as_deref() == Some(&b"ok"[..])
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_resubscribes_after_a_restart_and_clears_what_it_may_have_missed() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let ns = namespace();
    let server = Server::start(port);
    let a = two_tier(&url, &ns).await;
    let b = two_tier(&url, &ns).await;
    a.ready(READY).await.unwrap();
    b.ready(READY).await.unwrap();
    a.set("k", b"v1", None).await.unwrap();
    heard(&b, 1).await;
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(
        b.local().get("k").await.unwrap().as_deref(),
        Some(&b"v1"[..])
    );

    drop(server);
    eventually("b's listener notices the dead connection", async || {
        !b.listener_stats().live
    })
    .await;
    let _server = Server::start(port);
    // Redis came back empty and took a write b never heard of.
    raw_set(&url, &format!("{ns}k"), b"v2").await;
    within(Duration::from_secs(10), "b resubscribes", async || {
        let s = b.listener_stats();
        s.live && s.subscriptions >= 2
    })
    .await;
    assert_eq!(
        b.get("k").await.unwrap().as_deref(),
        Some(&b"v2"[..]),
        "the value cached before the restart is not served"
    );
    assert_eq!(
        b.local().get("k").await.unwrap().as_deref(),
        Some(&b"v2"[..])
    );

    // An invalidation sent after the restart reaches b.
    a.ready(Duration::from_secs(10)).await.unwrap();
    within(Duration::from_secs(10), "a's write lands", async || {
        a.set("k", b"v3", None).await.is_ok()
    })
    .await;
    eventually("b's copy evicted by a's write", async || {
        b.local().get("k").await.unwrap().as_deref() != Some(&b"v2"[..])
    })
    .await;
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"v3"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_gives_up_a_connection_that_stops_answering() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let server = Server::start(port);
    let cache = two_tier(&url, &namespace()).await;
    cache.ready(READY).await.unwrap();
    cache.set("k", b"v", None).await.unwrap();

    // The connection stays open but nothing answers: only a keepalive can tell.
    server.pause();
    within(Duration::from_secs(5), "the listener notices", async || {
        !cache.listener_stats().live
    })
    .await;
    tokio::time::timeout(Duration::from_secs(5), async {
        assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        assert!(
            cache.ready(Duration::from_millis(100)).await.is_err(),
            "not ready while frozen"
        );
    })
    .await
    .expect("no call hangs on a frozen server");

    server.resume();
    within(
        Duration::from_secs(10),
        "the listener resubscribes",
        async || {
            let s = cache.listener_stats();
            s.live && s.subscriptions >= 2
        },
    )
    .await;
    assert_eq!(
        cache.local().get("k").await.unwrap(),
        None,
        "resubscribing cleared what invalidations may have missed"
    );
    assert!(cache.listener_stats().failures >= 1);
}
