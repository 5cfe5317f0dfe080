//! Redis-backed tests run against the real server at `REDIS_URL` (default
//! `redis://127.0.0.1:6379`) and fail, naming the URL, when it is absent. The fault test
//! runs a private `redis-server` it starts and kills itself.

use std::collections::{BTreeMap, HashMap};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cortex_cache::{
    Cache, Compressed, CompressionConfig, Error, MAX_KEY_LEN, MemoryConfig, MemoryStore,
    RedisCache, RedisCacheConfig, TypedCache, key_for,
};
use cortex_metrics::Metrics;
use cortex_pool::{RedisConfig, RedisPool};
use serde::{Deserialize, Serialize};

pub(crate) fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A namespace no other test (or concurrent test run) uses.
pub(crate) fn namespace() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "cortex-test:{}:{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) async fn pool_at(url: &str, pool_timeout: Duration) -> RedisPool {
    let config = RedisConfig {
        url: url.to_owned(),
        pool_timeout,
        pool_size: 4,
        ..RedisConfig::default()
    };
    RedisPool::new(config)
        .await
        .unwrap_or_else(|e| panic!("these tests need Redis at {url} (set REDIS_URL): {e}"))
}

pub(crate) async fn cache_in(namespace: &str) -> RedisCache {
    let config = RedisCacheConfig {
        namespace: namespace.to_owned(),
        ..RedisCacheConfig::default()
    };
    RedisCache::new(pool_at(&redis_url(), Duration::from_secs(5)).await, config)
        .expect("a valid cache config")
}

async fn raw<T: redis::FromRedisValue>(cache: &RedisCache, cmd: &str, key: &str) -> T {
    let url = redis_url();
    let mut conn = cache.pool().acquire().await.expect(&url);
    redis::cmd(cmd)
        .arg(cache.full_key(key))
        .query_async(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{cmd} {key} on {url}: {e}"))
}

#[tokio::test]
async fn ttl_expires_on_the_server() {
    let cache = cache_in(&namespace()).await;
    cache
        .set("short", b"v", Some(Duration::from_millis(200)))
        .await
        .unwrap();
    cache.set("default", b"v", None).await.unwrap();
    assert!(cache.exists("short").await.unwrap());
    let pttl: i64 = raw(&cache, "PTTL", "default").await;
    assert!(
        (290_000..=300_000).contains(&pttl),
        "default TTL, got {pttl} ms"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(cache.get("short").await.unwrap(), None);
    assert!(!cache.exists("short").await.unwrap());
    assert_eq!(
        cache.get("default").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    cache.clear().await.unwrap();
}

#[tokio::test]
async fn clear_removes_one_namespace_only() {
    let base = namespace();
    // `a*` must be matched literally, not as a glob that also covers `abc`.
    let a = cache_in(&format!("{base}a*:")).await;
    let b = cache_in(&format!("{base}abc:")).await;
    let keys: Vec<String> = (0..1200).map(|i| format!("k{i}")).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"x"[..])).collect();
    a.set_many(&items, None).await.unwrap();
    b.set_many(&items[..5], None).await.unwrap();
    assert_eq!(a.clear().await.unwrap(), 1200);
    assert_eq!(a.stats().deletes, 1200);
    assert!(!a.exists("k0").await.unwrap());
    assert!(b.exists("k0").await.unwrap());
    assert_eq!(b.clear().await.unwrap(), 5);
    assert_eq!(a.clear().await.unwrap(), 0);
}

#[tokio::test]
async fn increment_counts_and_expires() {
    let cache = cache_in(&namespace()).await;
    assert_eq!(cache.increment("n", 5).await.unwrap(), 5);
    assert_eq!(cache.increment("n", -2).await.unwrap(), 3);
    let pttl: i64 = raw(&cache, "PTTL", "n").await;
    assert!(pttl > 0, "a new counter gets the default TTL, got {pttl}");
    cache.set("s", b"text", None).await.unwrap();
    assert!(matches!(
        cache.increment("s", 1).await,
        Err(Error::NotAnInteger { .. })
    ));
    cache.clear().await.unwrap();
}

#[tokio::test]
async fn get_many_and_set_many_round_trip() {
    let cache = cache_in(&namespace()).await;
    cache
        .set_many(&[("a", b"1"), ("b", b"22"), ("c", b"")], None)
        .await
        .unwrap();
    let got = cache.get_many(&["a", "missing", "b", "c"]).await.unwrap();
    assert_eq!(
        got,
        vec![
            Some(b"1".to_vec()),
            None,
            Some(b"22".to_vec()),
            Some(Vec::new())
        ]
    );
    assert!(cache.get_many(&[]).await.unwrap().is_empty());
    let s = cache.stats();
    assert_eq!((s.sets, s.hits, s.misses), (3, 3, 1));
    assert!(cache.delete("a").await.unwrap());
    assert!(!cache.delete("a").await.unwrap());
    cache.clear().await.unwrap();
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    tags: Vec<String>,
}

#[tokio::test]
async fn typed_json_round_trip() {
    let cache = TypedCache::new(cache_in(&namespace()).await);
    let user = User {
        id: 7,
        name: "Ada".into(),
        tags: vec!["admin".into()],
    };
    cache.set("u7", &user, None).await.unwrap();
    assert_eq!(cache.get::<User>("u7").await.unwrap(), Some(user));
    assert_eq!(cache.get_or("u8", 41u32).await.unwrap(), 41);
    cache.inner().set("bad", b"{not json", None).await.unwrap();
    assert!(matches!(
        cache.get::<User>("bad").await,
        Err(Error::Serde { key, .. }) if key == "bad"
    ));
    cache.inner().clear().await.unwrap();
}

#[tokio::test]
async fn compression_stores_smaller_and_reads_back() {
    let registry = Metrics::new();
    let cache = Compressed::with_metrics(
        cache_in(&namespace()).await,
        CompressionConfig::default(),
        &registry,
        "pages",
    );
    let big = "the quick brown fox jumps over the lazy dog ".repeat(233);
    assert!(big.len() >= 10_000);
    cache.set("big", big.as_bytes(), None).await.unwrap();
    cache.set("small", b"tiny", None).await.unwrap();
    let stored: usize = raw(cache.inner(), "STRLEN", "big").await;
    assert!(stored < big.len() / 4, "stored {stored} of {}", big.len());
    assert_eq!(
        cache.get("big").await.unwrap().as_deref(),
        Some(big.as_bytes())
    );
    // The small value is stored raw: one header byte, then the value.
    let small = cache.inner().get("small").await.unwrap().unwrap();
    assert_eq!(small, b"\0tiny");
    assert_eq!(
        cache.get("small").await.unwrap().as_deref(),
        Some(&b"tiny"[..])
    );
    let many = cache.get_many(&["big", "small"]).await.unwrap();
    assert_eq!(many[0].as_deref(), Some(big.as_bytes()));
    let c = cache.stats().compression.unwrap();
    assert_eq!((c.items, c.compressed, c.uncompressed), (2, 1, 1));
    assert!(c.bytes_saved > 8_000 && c.ratio < 0.25, "{c:?}");
    for line in [
        r#"cortex_cache_compressed_total{cache="pages"} 1"#,
        r#"cortex_cache_uncompressed_total{cache="pages"} 1"#,
    ] {
        crate::metrics::assert_line(&registry, line);
    }
    let saved = registry
        .counter_with("cache.bytes_saved", &[("cache", "pages")])
        .unwrap()
        .total();
    assert!(saved > 8_000, "{saved}");
    // The wrapper has no level gauges: it cannot count what the wrapped cache holds.
    assert!(!registry.prometheus().contains("cortex_cache_entries"));
    cache.clear().await.unwrap();
}

#[test]
fn keys_are_canonical_and_long_ones_hashed() {
    let mut hm = HashMap::new();
    let mut bt = BTreeMap::new();
    for i in (0..20).rev() {
        hm.insert(format!("f{i:02}"), i);
        bt.insert(format!("f{i:02}"), i);
    }
    let short = key_for("q", &(1, "a", HashMap::from([("z", 1), ("a", 2)]))).unwrap();
    assert_eq!(short, r#"q:[1,"a",{"a":2,"z":1}]"#);
    let k1 = key_for("report", &hm).unwrap();
    assert_eq!(k1, key_for("report", &bt).unwrap());
    assert!(k1.starts_with("report:sha256:"));
    let hex = &k1["report:sha256:".len()..];
    assert_eq!(hex.len(), 64);
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    bt.insert("f00".into(), 99);
    assert_ne!(k1, key_for("report", &bt).unwrap());
    let edge = "x".repeat(MAX_KEY_LEN - 4);
    assert_eq!(key_for("p", &edge).unwrap().len(), MAX_KEY_LEN);
    assert!(
        key_for("p", &format!("{edge}y"))
            .unwrap()
            .starts_with("p:sha256:")
    );
    let bad = HashMap::from([((1, 2), 3)]);
    assert!(matches!(key_for("p", &bad), Err(Error::Serde { .. })));
}

#[tokio::test]
async fn memory_store_ttl_and_capacity() {
    let m = MemoryStore::new(MemoryConfig {
        capacity: 2,
        ..MemoryConfig::default()
    })
    .unwrap();
    m.set("a", b"1", None).await.unwrap();
    m.set("b", b"2", None).await.unwrap();
    assert!(m.get("a").await.unwrap().is_some()); // `b` is now least recently used
    m.set("c", b"3", None).await.unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m.get("b").await.unwrap(), None);
    assert!(m.exists("a").await.unwrap() && m.exists("c").await.unwrap());

    m.set("a", b"1", Some(Duration::from_millis(50)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(m.get("a").await.unwrap(), None);
    assert!(!m.exists("a").await.unwrap());
    assert_eq!(m.clear().await.unwrap(), 1);
    let s = m.stats();
    assert_eq!((s.hits, s.misses, s.sets), (1, 2, 4));

    let d = MemoryStore::new(MemoryConfig {
        capacity: 10,
        default_ttl: Some(Duration::from_millis(50)),
        ..MemoryConfig::default()
    })
    .unwrap();
    d.set("x", b"1", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!d.exists("x").await.unwrap());
}

#[tokio::test]
async fn stats_reach_the_metrics_registry() {
    let registry = Metrics::new();
    let pool = pool_at(&redis_url(), Duration::from_secs(5)).await;
    let cache = RedisCache::builder(pool.clone())
        .namespace(namespace())
        .metrics(&registry, "sessions")
        .build()
        .unwrap();
    let bad = RedisCache::builder(pool).namespace("has space:").build();
    assert!(matches!(
        bad,
        Err(Error::InvalidConfig {
            key: "CACHE_NAMESPACE",
            ..
        })
    ));
    let other = RedisCache::with_metrics(
        pool_at(&redis_url(), Duration::from_secs(5)).await,
        RedisCacheConfig {
            namespace: namespace(),
            ..RedisCacheConfig::default()
        },
        &registry,
        "profiles",
    )
    .unwrap();
    cache.set("k", b"v", None).await.unwrap();
    cache.get("k").await.unwrap();
    cache.get("nope").await.unwrap();
    assert!(cache.delete("k").await.unwrap());
    other.get("k").await.unwrap();
    for line in [
        r#"cortex_cache_hits_total{cache="sessions"} 1"#,
        r#"cortex_cache_misses_total{cache="sessions"} 1"#,
        r#"cortex_cache_sets_total{cache="sessions"} 1"#,
        r#"cortex_cache_deletes_total{cache="sessions"} 1"#,
        r#"cortex_cache_errors_total{cache="sessions"} 0"#,
        r#"cortex_cache_misses_total{cache="profiles"} 1"#,
        r#"cortex_cache_hits_total{cache="profiles"} 0"#,
    ] {
        crate::metrics::assert_line(&registry, line);
    }
    assert_eq!(
        crate::metrics::count_lines(&registry, "# TYPE cortex_cache_misses_total counter"),
        1
    );
    // Redis knows its entry count and evictions, the client does not without a scan:
    // no gauges, no eviction series.
    let text = registry.prometheus();
    assert!(
        !text.contains("cortex_cache_entries")
            && !text.contains("cortex_cache_size_bytes")
            && !text.contains("cortex_cache_evictions"),
        "{text}"
    );
    cache.clear().await.unwrap();
    other.clear().await.unwrap();
}

/// A private `redis-server`, killed when dropped so a failing test never leaks it.
pub(crate) struct Server {
    child: Child,
}

impl Server {
    pub(crate) fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the fault test needs `redis-server` on PATH");
        let server = Self { child };
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Server {
    /// Freeze the server (`SIGSTOP`): its connections stay open but nothing answers, as
    /// when a network path silently dies.
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    /// Undo [`pause`](Self::pause).
    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("`kill` on PATH");
        assert!(status.success(), "kill {sig} redis-server");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    listener.local_addr().expect("a bound address").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_faults_degrade_reads_to_misses_fail_writes_and_recover() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let server = Server::start(port);
    let pool = pool_at(&url, Duration::from_millis(500)).await;
    let config = RedisCacheConfig {
        namespace: namespace(),
        ..RedisCacheConfig::default()
    };
    let cache = RedisCache::new(pool.clone(), config.clone()).unwrap();
    let strict = RedisCache::new(
        pool,
        RedisCacheConfig {
            degrade_on_error: false,
            ..config
        },
    )
    .unwrap();
    cache.set("k", b"v", None).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));

    drop(server);
    tokio::time::timeout(Duration::from_secs(10), async {
        // Reads degrade to misses...
        assert_eq!(cache.get("k").await.unwrap(), None);
        assert!(!cache.exists("k").await.unwrap());
        assert_eq!(cache.get_many(&["k", "j"]).await.unwrap(), vec![None, None]);
        // ...writes and deletes never pretend to have landed, cooling down or not.
        let failed = |what: &str, e: Error| assert!(e.is_backend(), "{what}: {e}");
        failed("set", cache.set("k", b"w", None).await.unwrap_err());
        failed("delete", cache.delete("k").await.unwrap_err());
        failed(
            "set_many",
            cache.set_many(&[("a", b"1")], None).await.unwrap_err(),
        );
        failed("increment", cache.increment("n", 1).await.unwrap_err());
        failed("clear", cache.clear().await.unwrap_err());
        assert!(strict.get("k").await.is_err(), "degrade off returns errors");
        // Right after a fault the store is left alone: no connect attempt, no wait.
        assert!(
            matches!(strict.get("k").await, Err(Error::Unavailable { .. })),
            "a tripped cache answers at once"
        );
        failed("delete", cache.delete("k").await.unwrap_err()); // trips it, if not yet
        assert!(
            matches!(cache.delete("k").await, Err(Error::Unavailable { .. })),
            "a delete while cooling down is an error, not a quiet `false`"
        );
    })
    .await
    .expect("calls must not hang while Redis is down");
    assert!(cache.stats().errors >= 10, "{:?}", cache.stats());
    assert!(strict.stats().errors >= 1);

    let _server = Server::start(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if cache.set("k", b"back", None).await.is_ok()
            && cache.get("k").await.unwrap().as_deref() == Some(&b"back"[..])
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cache did not recover within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The strict cache recovers too, once its cool-down has passed.
    loop {
        match strict.get("k").await {
            Ok(v) => {
                assert_eq!(v.as_deref(), Some(&b"back"[..]));
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "strict cache did not recover: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Redis restart kills the connection the cache shares, while the cache is idle.
/// The next read or delete goes through on a fresh connection instead of failing, and
/// the store is not declared down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_deletes_survive_a_restart_between_calls() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let server = Server::start(port);
    let cache = RedisCache::new(
        pool_at(&url, Duration::from_secs(2)).await,
        RedisCacheConfig {
            namespace: namespace(),
            ..RedisCacheConfig::default()
        },
    )
    .unwrap();
    cache.set("k", b"v", None).await.unwrap();
    drop(server);
    let _server = Server::start(port);
    assert_eq!(cache.get("k").await.unwrap(), None, "the restart lost it");
    assert_eq!(cache.stats().errors, 0, "{:?}", cache.stats());
    cache.set("k", b"w", None).await.unwrap();
    drop(_server);
    let _server = Server::start(port);
    assert!(!cache.delete("k").await.unwrap());
    assert_eq!(cache.stats().errors, 0, "{:?}", cache.stats());
}

#[tokio::test]
async fn namespaces_reaching_other_components_are_refused() {
    let pool = pool_at(&redis_url(), Duration::from_secs(5)).await;
    let default = RedisCache::builder(pool.clone()).build().unwrap();
    assert_eq!(default.config().namespace, "cortex:cache:");
    assert_eq!(default.full_key("k"), "cortex:cache:k");
    // `cortex:` is a prefix of the durable queue's `cortex:tasks:…`; `cortex:tasks:x:`
    // is inside it; `app` would also clear `app2:…`.
    for bad in [
        "cortex:",
        "cortex",
        "cortex:tasks:",
        "cortex:tasks:x:",
        "cortex:x:",
        "app",
    ] {
        let built = RedisCache::builder(pool.clone()).namespace(bad).build();
        match built {
            Err(
                e @ Error::InvalidConfig {
                    key: "CACHE_NAMESPACE",
                    ..
                },
            ) => assert!(e.to_string().contains(&format!("{bad:?}")), "{e}"),
            other => panic!("namespace {bad:?} accepted: {other:?}"),
        }
        let config = RedisCacheConfig {
            namespace: bad.to_owned(),
            ..RedisCacheConfig::default()
        };
        assert!(RedisCache::new(pool.clone(), config).is_err(), "{bad:?}");
    }
    for good in ["cortex:cache:users:", "sessions:", "app2:"] {
        RedisCache::builder(pool.clone())
            .namespace(good)
            .build()
            .unwrap();
    }
}
