//! Components sharing one Redis never touch each other's keys: a cache's `clear` leaves
//! the durable queue's keys alone, and the queue's `purge` leaves the cache's.
//!
//! The first test runs on the Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`),
//! with the cache's default namespace, as a service would. The property test clears and
//! purges random namespaces and queues, which must not reach anyone's keys, so it runs on
//! a private `redis-server` it starts (and kills) itself.

use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cortex_core::cache::{Cache, RedisCache, RedisCacheConfig};
use cortex_core::pool::{RedisConfig, RedisPool};
use cortex_core::support::keyspace::{Component, overlaps};
use cortex_core::tasks::TaskStatus;
use cortex_core::tasks::durable::{DurableConfig, DurableQueue, Registry, Worker, key_prefix};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

async fn pool_at(url: &str) -> RedisPool {
    let config = RedisConfig {
        url: url.to_owned(),
        ..RedisConfig::default()
    };
    RedisPool::new(config)
        .await
        .unwrap_or_else(|e| panic!("this test needs Redis at {url} (set REDIS_URL): {e}"))
}

async fn queue_at(url: &str, name: &str, max_attempts: u32) -> DurableQueue {
    let config = DurableConfig {
        name: name.to_owned(),
        max_attempts,
        block: Duration::from_millis(100),
        retry_backoff: Duration::from_millis(10),
        ..DurableConfig::default()
    };
    DurableQueue::connect(url, config)
        .await
        .unwrap_or_else(|e| panic!("durable queue {name:?} on {url}: {e}"))
}

/// Every key under `prefix`, by `SCAN` (never `KEYS`, even in a test).
async fn keys_under(pool: &RedisPool, prefix: &str) -> BTreeSet<String> {
    let mut conn = pool.acquire().await.unwrap();
    let mut pattern = String::new();
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    let mut cursor = 0u64;
    let mut keys = BTreeSet::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut *conn)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// A handler registry: `ok` completes, `fail` fails (and dead-letters with one attempt).
fn registry(ran: &Arc<AtomicU64>) -> Registry {
    let mut reg = Registry::new();
    let counter = Arc::clone(ran);
    reg.register("ok", move |n: u64| {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok::<_, cortex_core::tasks::BoxError>(n)
        }
    });
    reg.register("fail", |_: u64| async {
        Err::<u64, _>(cortex_core::tasks::BoxError::from("refused"))
    });
    reg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_a_default_cache_leaves_queued_durable_tasks_to_run() {
    let url = redis_url();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("keyspace-{}-{nanos:x}", std::process::id());
    let queue = queue_at(&url, &name, 3).await;
    let pool = pool_at(&url).await;

    let mut ids = Vec::new();
    for n in 0..20u64 {
        ids.push(queue.enqueue("ok", &n).await.unwrap());
    }
    let prefix = key_prefix(&name).unwrap();
    let before = keys_under(&pool, &prefix).await;
    assert!(before.len() > 20, "streams and task records: {before:?}");

    // A cache with every setting at its default, cleared: what a service does at
    // deploy time or from an admin endpoint.
    let cache = RedisCache::new(pool.clone(), RedisCacheConfig::default()).unwrap();
    cache.set("page", b"cached", None).await.unwrap();
    assert!(cache.clear().await.unwrap() >= 1);
    assert_eq!(cache.get("page").await.unwrap(), None);
    let after = keys_under(&pool, &prefix).await;
    let lost: Vec<_> = before.difference(&after).collect();
    assert!(
        lost.is_empty(),
        "clearing the cache (namespace {:?}) deleted keys of durable queue {name:?}: {lost:?}",
        cache.config().namespace
    );

    let ran = Arc::new(AtomicU64::new(0));
    let worker = Worker::new(queue.clone(), registry(&ran)).spawn();
    for id in &ids {
        let info = queue
            .wait(*id, Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("task {id} of queue {name:?} after the cache clear: {e}"));
        assert_eq!(info.status, TaskStatus::Completed, "task {id}");
    }
    assert_eq!(ran.load(Ordering::Relaxed), 20);
    worker.shutdown(Duration::from_secs(5)).await;
    queue.purge().await.unwrap();
}

/// Namespace fragments: run together, they make the prefixes that matter (`cortex:`,
/// `cortex:tasks:`, `cortex:tasks:<queue>:`, `cortex:cache:…`, `app` vs `app2:`) often,
/// and plenty of others.
const NS_PARTS: &[&str] = &[
    "cortex", "cortex:", "tasks", "tasks:", "cache", "cache:", ":", "q", "q:", "default", "app",
    "app2", "a", "*", "?", "[", "-", ".", "_", " ", "x:",
];

/// Queue name fragments, with characters a queue name must refuse.
const QUEUE_PARTS: &[&str] = &[
    "q", "default", "tasks", "cache", "cortex", "a", "app", ":", ".", "-", "_", "*", "9", " ",
    "stream", "task",
];

fn joined(parts: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(parts), 1..max).prop_map(|v| v.concat())
}

fn namespaces() -> impl Strategy<Value = String> {
    prop_oneof![
        joined(NS_PARTS, 6),
        // Always-valid shapes, so many pairs pass both validators.
        joined(NS_PARTS, 4).prop_map(|s| format!("cortex:cache:{s}:")),
        "[a-z0-9]{1,8}".prop_map(|s| format!("{s}:")),
    ]
}

fn queue_names() -> impl Strategy<Value = String> {
    prop_oneof![joined(QUEUE_PARTS, 5), "[a-zA-Z0-9_.-]{1,12}"]
}

/// Suffixes of the keys a queue writes under its prefix (see the key table of
/// `cortex_tasks::durable`), and some arbitrary ones.
fn queue_suffixes() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "stream:high",
            "stream:normal",
            "stream:low",
            "dead",
            "stats",
            "workers",
        ])
        .prop_map(str::to_owned),
        any::<u64>().prop_map(|id| format!("task:{id:016x}")),
        ".*",
    ]
}

fn cache_accepts(namespace: &str) -> bool {
    RedisCacheConfig {
        namespace: namespace.to_owned(),
        ..RedisCacheConfig::default()
    }
    .validate()
    .is_ok()
}

/// The queue's key prefix, when the queue accepts `name`.
fn queue_prefix(name: &str) -> Option<String> {
    let config = DurableConfig {
        name: name.to_owned(),
        ..DurableConfig::default()
    };
    config.validate().ok()?;
    let prefix = key_prefix(name).ok()?;
    Some(prefix)
}

/// Every pair the two validators accept is disjoint: no key the queue can write starts
/// with the cache's namespace (so `SCAN MATCH <namespace>*` in `clear` never returns
/// one), no key the cache can write starts with the queue's prefix (so `purge` never
/// returns one), and no accepted namespace can ever reach the queues' reserved prefix.
#[test]
fn accepted_namespaces_and_queue_names_never_share_a_key() {
    let accepted_pairs = std::cell::Cell::new(0u32);
    let mut runner = TestRunner::new(Config {
        cases: 4000,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(namespaces(), queue_names(), queue_suffixes(), ".*"),
            |(ns, name, suffix, cache_key)| {
                let (Some(prefix), true) = (queue_prefix(&name), cache_accepts(&ns)) else {
                    return Ok(());
                };
                accepted_pairs.set(accepted_pairs.get() + 1);
                prop_assert!(
                    !overlaps(&ns, Component::Tasks.reserved_prefix()),
                    "cache namespace {ns:?} reaches the queues' keys"
                );
                prop_assert!(!overlaps(&ns, &prefix), "{ns:?} vs queue {prefix:?}");
                let queue_key = format!("{prefix}{suffix}");
                prop_assert!(
                    !queue_key.starts_with(&ns),
                    "cache {ns:?} would clear {queue_key:?}"
                );
                let cache_key = format!("{ns}{cache_key}");
                prop_assert!(
                    !cache_key.starts_with(&prefix),
                    "queue {name:?} would purge {cache_key:?}"
                );
                Ok(())
            },
        )
        .unwrap();
    let accepted_pairs = accepted_pairs.get();
    assert!(
        accepted_pairs > 500,
        "only {accepted_pairs} accepted pairs: the strategy tests too little"
    );
    // And the refusals that matter, by name.
    for ns in [
        "cortex:",
        "cortex",
        "cortex:tasks:",
        "cortex:tasks:q:",
        "app",
    ] {
        assert!(!cache_accepts(ns), "{ns:?}");
    }
    assert!(cache_accepts(&RedisCacheConfig::default().namespace));
}

/// A private `redis-server`, killed when dropped so a failing test never leaks it.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("this test needs `redis-server` on PATH");
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Against real Redis: for random accepted pairs, a queue that has run tasks (streams,
/// task records, dead letters, counters, worker list) and a cache with entries; clearing
/// the cache leaves every key of the queue, and purging the queue every key of the
/// cache.
#[test]
fn on_redis_a_clear_or_purge_of_one_never_removes_a_key_of_the_other() {
    let server = Server::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pool = rt.block_on(pool_at(&server.url));
    let accepted = (namespaces(), queue_names())
        .prop_filter("pairs both validators accept", |(ns, name)| {
            cache_accepts(ns) && queue_prefix(name).is_some()
        });
    let mut runner = TestRunner::new(Config {
        cases: 12,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&accepted, |(ns, name)| {
            rt.block_on(one_case(&server.url, &pool, &ns, &name));
            Ok(())
        })
        .unwrap();
}

async fn one_case(url: &str, pool: &RedisPool, ns: &str, name: &str) {
    let mut conn = pool.acquire().await.unwrap();
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let prefix = key_prefix(name).unwrap();

    // Every kind of key the queue writes.
    let queue = queue_at(url, name, 1).await;
    let ids = vec![
        queue.enqueue("ok", &1u64).await.unwrap(),
        queue.enqueue("ok", &2u64).await.unwrap(),
        queue.enqueue("fail", &3u64).await.unwrap(),
    ];
    let worker = Worker::new(queue.clone(), registry(&Arc::default())).spawn();
    for id in &ids {
        let info = queue.wait(*id, Duration::from_secs(10)).await.unwrap();
        assert!(info.status.is_finished(), "task {id}: {:?}", info.status);
    }
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(queue.dead_letters(10).await.unwrap().len(), 1);

    let cache = RedisCache::new(
        pool.clone(),
        RedisCacheConfig {
            namespace: ns.to_owned(),
            ..RedisCacheConfig::default()
        },
    )
    .unwrap();
    let fill = async || {
        for k in ["k", "stream:high", "task:1", "dead", ":", "*"] {
            cache.set(k, b"v", None).await.unwrap();
        }
    };
    fill().await;

    let all = keys_under(pool, "").await;
    let queue_keys = keys_under(pool, &prefix).await;
    let cache_keys = keys_under(pool, ns).await;
    assert!(
        queue_keys.len() >= 6,
        "queue {name:?} wrote too little: {queue_keys:?}"
    );
    assert_eq!(cache_keys.len(), 6, "{cache_keys:?}");
    assert!(
        queue_keys.is_disjoint(&cache_keys),
        "shared keys: {:?}",
        queue_keys.intersection(&cache_keys).collect::<Vec<_>>()
    );
    let union: BTreeSet<String> = queue_keys.union(&cache_keys).cloned().collect();
    assert_eq!(
        union, all,
        "every key belongs to one of the two (the queue's keys are all under {prefix:?})"
    );

    assert_eq!(cache.clear().await.unwrap(), 6);
    assert_eq!(
        keys_under(pool, "").await,
        queue_keys,
        "cache {ns:?} cleared a key of queue {name:?}"
    );

    fill().await;
    queue.purge().await.unwrap();
    assert_eq!(
        keys_under(pool, "").await,
        cache_keys,
        "queue {name:?} purged a key of cache {ns:?}"
    );
}
