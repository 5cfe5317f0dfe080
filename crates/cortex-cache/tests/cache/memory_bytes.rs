//! The byte bound of `MemoryStore`, and TTLs too large for an `Instant`.

use std::collections::HashMap;
use std::time::Duration;

use cortex_cache::{Cache, Error, MemoryConfig, MemoryStore};
use cortex_support::{EnvSource, FromEnv};

fn store(max_bytes: usize) -> MemoryStore {
    MemoryStore::new(MemoryConfig {
        capacity: 1_000_000,
        max_bytes,
        ..MemoryConfig::default()
    })
    .unwrap()
}

/// What the store counts for one entry.
fn weight(key: &str, value_len: usize) -> usize {
    key.len() + value_len + MemoryStore::ENTRY_OVERHEAD
}

#[tokio::test]
async fn the_byte_bound_holds_after_many_inserts_of_varying_size() {
    const MAX: usize = 64 * 1024;
    let m = store(MAX);
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..20_000u64 {
        let r = next();
        // Values of 0 B to 8 KiB under 500 keys (so many replacements, larger or
        // smaller), now and then a value larger than the whole bound, a delete or a
        // counter.
        let key = format!("key:{}", r % 500);
        match i % 50 {
            0 => {
                m.set(&key, &vec![1; MAX + 1], None).await.unwrap();
            }
            1 => {
                m.delete(&key).await.unwrap();
            }
            2 => {
                m.increment(&format!("n:{}", r % 300), 1).await.unwrap();
            }
            _ => {
                let len = (r >> 20) as usize % 8193;
                m.set(&key, &vec![7; len], None).await.unwrap();
                // The entry just written always fits, so it is there.
                assert_eq!(m.get(&key).await.unwrap().map(|v| v.len()), Some(len));
            }
        }
        assert!(
            m.bytes() <= MAX,
            "{} bytes held after op {i}, bound {MAX}",
            m.bytes()
        );
    }
    // Entries are evicted, not the bound given up: the store is still well used.
    assert!(m.bytes() > MAX / 2, "only {} bytes held", m.bytes());
}

#[tokio::test]
async fn eviction_under_the_byte_bound_follows_lru_order() {
    let v = vec![0u8; 1000];
    let w = weight("a", v.len());
    let m = store(3 * w);
    for k in ["a", "b", "c"] {
        m.set(k, &v, None).await.unwrap();
    }
    assert_eq!(m.bytes(), 3 * w);
    assert!(m.get("a").await.unwrap().is_some()); // `b` is now least recently used
    m.set("d", &v, None).await.unwrap();
    assert_eq!(
        m.get("b").await.unwrap().map(|v| v.len()),
        None,
        "the LRU entry stayed"
    );
    for k in ["a", "c", "d"] {
        assert!(m.exists(k).await.unwrap(), "{k} evicted");
    }
    assert_eq!((m.len(), m.bytes()), (3, 3 * w));
    // One value as heavy as two entries pushes out the two least recently used.
    m.set("e", &vec![0u8; v.len() + w], None).await.unwrap();
    assert_eq!(m.bytes(), 3 * w);
    assert!(!m.exists("a").await.unwrap() && !m.exists("c").await.unwrap());
    assert!(m.exists("d").await.unwrap() && m.exists("e").await.unwrap());
    assert_eq!(m.clear().await.unwrap(), 2);
    assert_eq!(m.bytes(), 0);
}

#[tokio::test]
async fn an_entry_heavier_than_the_bound_is_not_cached_and_drops_the_old_value() {
    let m = store(4096);
    m.set("k", b"small", None).await.unwrap();
    m.set("other", b"v", None).await.unwrap();
    let too_big = 4096 - MemoryStore::ENTRY_OVERHEAD; // plus the key: one byte over
    m.set("k", &vec![0u8; too_big], None).await.unwrap();
    assert_eq!(
        m.get("k").await.unwrap().map(|v| v.len()),
        None,
        "a value too big was kept"
    );
    assert_eq!(
        m.get("other").await.unwrap().as_deref(),
        Some(&b"v"[..]),
        "others stay"
    );
    assert_eq!(m.bytes(), weight("other", 1));
    // Exactly the bound fits.
    m.set("k", &vec![0u8; too_big - 1], None).await.unwrap();
    assert!(m.exists("k").await.unwrap());
    assert_eq!(m.bytes(), 4096);
    assert!(!m.exists("other").await.unwrap());
}

#[test]
fn max_bytes_comes_from_the_environment_and_is_checked() {
    let from = |vars: &[(&str, &str)]| {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = move |k: &str| map.get(k).cloned();
        MemoryConfig::from_env_source(&EnvSource::from_fn(&lookup))
    };
    assert_eq!(from(&[]).unwrap().max_bytes, 64 * 1024 * 1024);
    let c = from(&[("CACHE_MEMORY_MAX_BYTES", "1000000")]).unwrap();
    assert_eq!(c.max_bytes, 1_000_000);
    for bad in ["0", "lots", "-1", "100"] {
        let err = from(&[("CACHE_MEMORY_MAX_BYTES", bad)]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidConfig {
                    key: "CACHE_MEMORY_MAX_BYTES",
                    ..
                }
            ),
            "{bad}: {err}"
        );
    }
    let err = MemoryStore::new(MemoryConfig {
        max_bytes: 0,
        ..MemoryConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("CACHE_MEMORY_MAX_BYTES"), "{err}");
}

#[tokio::test]
async fn a_ttl_too_large_for_the_clock_means_no_expiry() {
    let m = store(1 << 20);
    m.set("k", b"v", Some(Duration::MAX)).await.unwrap();
    assert_eq!(m.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    let d = MemoryStore::new(MemoryConfig {
        default_ttl: Some(Duration::MAX),
        ..MemoryConfig::default()
    })
    .unwrap();
    d.set("k", b"v", None).await.unwrap();
    assert_eq!(d.increment("n", 2).await.unwrap(), 2);
    assert!(d.exists("k").await.unwrap() && d.exists("n").await.unwrap());
}
