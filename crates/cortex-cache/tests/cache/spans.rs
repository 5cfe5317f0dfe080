//! The debug spans of the caches: a read inside a request's span shows up as its child
//! `cache.get` with `hit` recorded, and a cached call's load as `cache.load`.

use std::io;

use cortex_cache::{Cache, CachedCalls, MemoryConfig, MemoryStore};
use tracing::Instrument;

use cortex_support::test_util::spans::Capture;

#[tokio::test]
async fn a_memory_get_inside_a_request_records_hit_under_its_parent() {
    let (spans, _guard) = Capture::install();
    let cache = MemoryStore::new(MemoryConfig::default()).unwrap();
    async {
        cache.set("k", b"v", None).await.unwrap();
        assert!(cache.get("k").await.unwrap().is_some());
        assert!(cache.get("absent").await.unwrap().is_none());
        assert!(cache.delete("k").await.unwrap());
    }
    .instrument(tracing::info_span!("request"))
    .await;

    let gets = spans.named("cache.get");
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].parent, Some("request"));
    assert_eq!(gets[0].field("cache"), Some("memory"));
    assert_eq!(gets[0].field("hit"), Some("true"));
    assert_eq!(gets[1].field("hit"), Some("false"));
    assert_eq!(spans.one("cache.set").parent, Some("request"));
    assert_eq!(spans.one("cache.delete").parent, Some("request"));
}

#[tokio::test]
async fn a_cached_call_loads_in_a_cache_load_span_after_a_missed_get() {
    let (spans, _guard) = Capture::install();
    let calls = CachedCalls::new(MemoryStore::new(MemoryConfig::default()).unwrap());
    let v: u32 = async {
        calls
            .get_or_load("user:1", None, || async {
                tracing::debug_span!("db.query").in_scope(|| Ok::<_, io::Error>(7))
            })
            .await
            .unwrap()
    }
    .instrument(tracing::info_span!("request"))
    .await;
    assert_eq!(v, 7);

    let load = spans.one("cache.load");
    assert_eq!(load.parent, Some("request"));
    assert_eq!(load.field("key"), Some("user:1"));
    assert_eq!(load.field("outcome"), Some("loaded"));
    // The loader runs inside the load span.
    assert_eq!(spans.one("db.query").parent, Some("cache.load"));
    assert!(
        spans
            .named("cache.get")
            .iter()
            .any(|g| g.field("hit") == Some("false"))
    );
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_and_two_tier_gets_record_hit_namespace_and_tier() {
    use std::time::Duration;

    use cortex_cache::{RedisCache, RedisCacheConfig, TwoTierCache};

    use crate::shared_store::{namespace, pool_at, redis_url};

    let ns = namespace();
    let remote = RedisCache::new(
        pool_at(&redis_url(), Duration::from_secs(5)).await,
        RedisCacheConfig {
            namespace: ns.clone(),
            ..RedisCacheConfig::default()
        },
    )
    .unwrap();
    let cache =
        TwoTierCache::new(MemoryStore::new(MemoryConfig::default()).unwrap(), remote).unwrap();
    let (spans, _guard) = Capture::install();
    async {
        cache.set("k", b"v", None).await.unwrap();
        assert!(cache.get("k").await.unwrap().is_some());
        assert!(cache.get("absent").await.unwrap().is_none());
        cache.delete("k").await.unwrap();
    }
    .instrument(tracing::info_span!("request"))
    .await;

    let gets = spans.named("cache.get");
    let outer: Vec<_> = gets
        .iter()
        .filter(|g| g.parent == Some("request"))
        .collect();
    assert_eq!(outer.len(), 2, "{gets:?}");
    assert_eq!(outer[0].field("cache"), Some("two_tier"));
    assert_eq!(outer[0].field("namespace"), Some(ns.as_str()));
    assert_eq!(outer[0].field("hit"), Some("true"));
    // Which tier answered depends on whether the memory tier kept our own write.
    assert!(
        matches!(outer[0].field("tier"), Some("memory" | "redis")),
        "{outer:?}"
    );
    assert_eq!(outer[1].field("hit"), Some("false"));
    // The miss went on to Redis, in a child span of the two-tier read.
    let redis_gets: Vec<_> = gets
        .iter()
        .filter(|g| g.field("cache") == Some("redis"))
        .collect();
    assert!(
        redis_gets.iter().all(|g| g.parent == Some("cache.get")),
        "{gets:?}"
    );
    assert!(
        redis_gets.iter().any(|g| g.field("hit") == Some("false")),
        "{gets:?}"
    );
    let sets = spans.named("cache.set");
    assert!(
        sets.iter()
            .any(|s| s.field("cache") == Some("redis") && s.parent == Some("cache.set")),
        "{sets:?}"
    );
    assert!(!spans.named("cache.delete").is_empty());
}
