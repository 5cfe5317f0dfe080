//! The registry series of the in-process caches, as a scrape sees them: one family per
//! measure, the cache's name a `cache` label, and level gauges read at scrape time.

use cortex_cache::{Cache, MemoryConfig, MemoryStore, S3FifoCache};
use cortex_metrics::Metrics;

/// The scrape of `registry`, with `expected` among its lines (whole lines, exactly).
#[track_caller]
pub(crate) fn assert_line(registry: &Metrics, expected: &str) {
    let text = registry.prometheus();
    assert!(
        text.lines().any(|l| l == expected),
        "no line {expected:?} in:\n{text}"
    );
}

/// How many lines of the scrape of `registry` are exactly `expected`.
pub(crate) fn count_lines(registry: &Metrics, expected: &str) -> usize {
    registry
        .prometheus()
        .lines()
        .filter(|l| *l == expected)
        .count()
}

/// The value of the gauge `family{cache="<name>"}` in the scrape of `registry`.
fn gauge(registry: &Metrics, family: &str, name: &str) -> f64 {
    let prefix = format!("{family}{{cache=\"{name}\"}} ");
    let text = registry.prometheus();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in:\n{text}"));
    line.parse().unwrap()
}

fn memory(registry: &Metrics, name: &str, capacity: usize) -> MemoryStore {
    let config = MemoryConfig {
        capacity,
        ..MemoryConfig::default()
    };
    MemoryStore::with_metrics(config, registry, name).unwrap()
}

#[tokio::test]
async fn memory_store_counts_into_one_labeled_family_per_measure() {
    let registry = Metrics::new();
    let users = memory(&registry, "users", 2);
    let sessions = memory(&registry, "sessions", 10);

    users.set("a", b"1", None).await.unwrap();
    users.set("b", b"2", None).await.unwrap();
    users.set("a", b"1", None).await.unwrap(); // a replacement, not an eviction
    assert!(users.get("a").await.unwrap().is_some());
    assert!(users.get("nope").await.unwrap().is_none());
    users.set("c", b"3", None).await.unwrap(); // evicts `b`, least recently used
    assert!(users.delete("a").await.unwrap());
    sessions.set("s", b"x", None).await.unwrap();
    sessions.get("s").await.unwrap();
    sessions.get("s").await.unwrap();

    for line in [
        r#"cortex_cache_hits_total{cache="users"} 1"#,
        r#"cortex_cache_misses_total{cache="users"} 1"#,
        r#"cortex_cache_sets_total{cache="users"} 4"#,
        r#"cortex_cache_deletes_total{cache="users"} 1"#,
        r#"cortex_cache_evictions_total{cache="users"} 1"#,
        r#"cortex_cache_errors_total{cache="users"} 0"#,
        r#"cortex_cache_hits_total{cache="sessions"} 2"#,
        r#"cortex_cache_sets_total{cache="sessions"} 1"#,
        r#"cortex_cache_evictions_total{cache="sessions"} 0"#,
    ] {
        assert_line(&registry, line);
    }
    // Two caches are two series of one family, not two families.
    for family in [
        "hits_total",
        "misses_total",
        "sets_total",
        "evictions_total",
    ] {
        let ty = format!("# TYPE cortex_cache_{family} counter");
        assert_eq!(count_lines(&registry, &ty), 1, "{ty}");
    }
    assert_eq!(
        count_lines(&registry, "# TYPE cortex_cache_entries gauge"),
        1
    );
    let text = registry.prometheus();
    assert!(
        !text.contains("cortex_cache_users") && !text.contains("cortex_cache_sessions"),
        "an instance name in a series name:\n{text}"
    );
    assert_eq!(users.stats().evictions, 1);
}

#[tokio::test]
async fn memory_store_gauges_read_its_levels_and_nan_once_dropped() {
    let registry = Metrics::new();
    let users = memory(&registry, "users", 100);
    let other = memory(&registry, "other", 100);
    assert_line(&registry, r#"cortex_cache_entries{cache="users"} 0"#);
    assert_line(&registry, r#"cortex_cache_size_bytes{cache="users"} 0"#);

    for i in 0..7 {
        users.set(&format!("k{i}"), &[0; 100], None).await.unwrap();
    }
    users.delete("k0").await.unwrap();
    users.increment("n", 3).await.unwrap();
    other.set("x", b"y", None).await.unwrap();
    assert_eq!(users.len(), 7);
    assert_eq!(gauge(&registry, "cortex_cache_entries", "users"), 7.0);
    assert_eq!(
        gauge(&registry, "cortex_cache_size_bytes", "users"),
        users.bytes() as f64
    );
    assert_eq!(
        users.bytes(),
        6 * (2 + 100 + MemoryStore::ENTRY_OVERHEAD) + (1 + 1 + MemoryStore::ENTRY_OVERHEAD)
    );
    assert_eq!(gauge(&registry, "cortex_cache_entries", "other"), 1.0);

    users.clear().await.unwrap();
    assert_line(&registry, r#"cortex_cache_entries{cache="users"} 0"#);
    users.set("again", b"1", None).await.unwrap();
    assert_line(&registry, r#"cortex_cache_entries{cache="users"} 1"#);

    drop(users);
    assert_line(&registry, r#"cortex_cache_entries{cache="users"} NaN"#);
    assert_line(&registry, r#"cortex_cache_size_bytes{cache="users"} NaN"#);
    assert_line(&registry, r#"cortex_cache_entries{cache="other"} 1"#);

    // A new cache of the same name takes the series over.
    let users = memory(&registry, "users", 100);
    users.set("k", b"v", None).await.unwrap();
    assert_line(&registry, r#"cortex_cache_entries{cache="users"} 1"#);
}

#[tokio::test]
async fn memory_store_counts_evictions_by_the_byte_bound() {
    let registry = Metrics::new();
    let config = MemoryConfig {
        capacity: 1_000,
        max_bytes: 1024,
        ..MemoryConfig::default()
    };
    let m = MemoryStore::with_metrics(config, &registry, "small").unwrap();
    // Each weighs 2 + 400 + 160 = 562 bytes: only one fits under 1024.
    for i in 0..5 {
        m.set(&format!("k{i}"), &[1; 400], None).await.unwrap();
    }
    assert_eq!(m.len(), 1);
    assert_line(
        &registry,
        r#"cortex_cache_evictions_total{cache="small"} 4"#,
    );
    assert_line(&registry, r#"cortex_cache_entries{cache="small"} 1"#);
    assert_line(&registry, r#"cortex_cache_size_bytes{cache="small"} 562"#);
    // A value too heavy for the whole bound is not cached; the entry it replaces is
    // dropped, which is no eviction.
    m.set("k4", &[1; 2000], None).await.unwrap();
    assert_eq!(m.stats().evictions, 4);
    assert_line(&registry, r#"cortex_cache_entries{cache="small"} 0"#);
}

#[test]
fn s3fifo_counts_into_labeled_families() {
    let registry = Metrics::new();
    let users = S3FifoCache::builder()
        .capacity(1)
        .metrics(&registry, "users")
        .build()
        .unwrap();
    let hot = S3FifoCache::builder()
        .capacity(100)
        .metrics(&registry, "hot")
        .build()
        .unwrap();
    users.insert(1u64, 1u64);
    users.get(&1);
    users.get(&2);
    users.insert(2, 2); // capacity 1: evicts key 1
    hot.insert(1u64, 1u64);
    hot.get(&1);
    hot.get(&1);
    for line in [
        r#"cortex_cache_hits_total{cache="users"} 1"#,
        r#"cortex_cache_misses_total{cache="users"} 1"#,
        r#"cortex_cache_evictions_total{cache="users"} 1"#,
        r#"cortex_cache_hits_total{cache="hot"} 2"#,
        r#"cortex_cache_misses_total{cache="hot"} 0"#,
        "# TYPE cortex_cache_hits_total counter",
    ] {
        assert_line(&registry, line);
    }
    assert_eq!(
        count_lines(&registry, "# TYPE cortex_cache_hits_total counter"),
        1
    );
    assert!(!registry.prometheus().contains("cortex_cache_users"));
}

#[test]
fn s3fifo_gauges_read_its_levels_and_nan_once_dropped() {
    let registry = Metrics::new();
    let cache = S3FifoCache::builder()
        .capacity(1_000)
        .shards(4)
        .metrics(&registry, "users")
        .build()
        .unwrap();
    assert_line(&registry, r#"cortex_cache_entries{cache="users"} 0"#);
    cache.insert(0u64, String::new());
    let one = gauge(&registry, "cortex_cache_size_bytes", "users");
    assert!(one >= 1.0, "one entry weighs {one}");
    for k in 1..300u64 {
        cache.insert(k, k.to_string());
    }
    for k in 0..50 {
        cache.remove(&k);
    }
    cache.get_or_insert_with(5_000, || "new".to_owned());
    assert_eq!(cache.len(), 251);
    assert_eq!(gauge(&registry, "cortex_cache_entries", "users"), 251.0);
    assert_eq!(
        gauge(&registry, "cortex_cache_size_bytes", "users"),
        251.0 * one
    );
    assert_eq!(cache.stats().entries, 251);
    // Past the capacity the gauge stays at the entry count.
    for k in 10_000..12_000u64 {
        cache.insert(k, String::new());
    }
    assert_eq!(
        gauge(&registry, "cortex_cache_entries", "users"),
        cache.len() as f64
    );
    assert!(cache.len() <= 1_000);
    cache.clear();
    assert_line(&registry, r#"cortex_cache_entries{cache="users"} 0"#);
    assert_line(&registry, r#"cortex_cache_size_bytes{cache="users"} 0"#);
    cache.insert(1, "x".to_owned());
    drop(cache);
    assert_line(&registry, r#"cortex_cache_entries{cache="users"} NaN"#);
    assert_line(&registry, r#"cortex_cache_size_bytes{cache="users"} NaN"#);
}

#[tokio::test]
async fn a_cache_built_without_a_registry_registers_nothing() {
    let registry = Metrics::new();
    let m = MemoryStore::new(MemoryConfig::default()).unwrap();
    m.set("a", b"1", None).await.unwrap();
    let s = S3FifoCache::new(10).unwrap();
    s.insert(1u64, 1u64);
    assert!(!registry.prometheus().contains("cortex_cache"));
    // Nor into the global registry: an unnamed cache's counts must not merge with
    // another's.
    assert!(
        !cortex_metrics::global()
            .prometheus()
            .contains("cortex_cache_")
    );
}
