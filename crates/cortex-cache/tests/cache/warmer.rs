//! Warming and TTL jitter against the real Redis.

use std::sync::Arc;
use std::time::Duration;

use cortex_cache::{Cache, CachedCalls, Warmer, warm};

use crate::shared_store::{cache_in, namespace};

#[tokio::test]
async fn warming_loads_every_item_and_counts_the_failures() {
    let calls = Arc::new(CachedCalls::new(cache_in(&namespace()).await));
    let report = warm(0..200u32, 8, |id| {
        let calls = calls.clone();
        async move {
            calls
                .refresh(&format!("user:{id}"), None, || async move {
                    if id == 13 {
                        Err(std::io::Error::other("user 13 is gone"))
                    } else {
                        Ok(format!("user {id}"))
                    }
                })
                .await
                .map(|_: String| ())
        }
    })
    .await;
    assert_eq!(
        (report.attempted, report.warmed, report.failed),
        (200, 199, 1)
    );
    let store = calls.cache().inner();
    assert!(store.exists("user:0").await.unwrap());
    assert!(store.exists("user:199").await.unwrap());
    assert!(!store.exists("user:13").await.unwrap());
}

#[tokio::test]
async fn a_periodic_warmer_runs_until_stopped() {
    let warmer = Warmer::spawn(
        Duration::from_millis(20),
        Duration::from_millis(10),
        || async { warm(0..3u8, 2, |_| async { Ok::<_, std::io::Error>(()) }).await },
    );
    tokio::time::timeout(Duration::from_secs(10), async {
        while warmer.stats().runs < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("three runs within 10 s");
    warmer.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let runs = warmer.stats().runs;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(warmer.stats().runs, runs, "no run after stop");
    assert_eq!(warmer.stats().warmed, runs * 3);
}

#[tokio::test]
async fn ttl_jitter_spreads_expiry_within_its_bound() {
    let cache = cache_in(&namespace()).await;
    let calls = CachedCalls::new(cache.clone()).ttl_jitter(0.5);
    let mut ttls = Vec::new();
    for i in 0..20 {
        let key = format!("j{i}");
        let _: u32 = calls
            .get_or_load(&key, Some(Duration::from_secs(100)), || async {
                Ok::<_, std::io::Error>(1)
            })
            .await
            .unwrap();
        let mut conn = cache.pool().acquire().await.unwrap();
        let pttl: i64 = redis::cmd("PTTL")
            .arg(cache.full_key(&key))
            .query_async(&mut *conn)
            .await
            .unwrap();
        assert!((99_000..=150_000).contains(&pttl), "{pttl}");
        ttls.push(pttl / 1000);
    }
    ttls.sort_unstable();
    ttls.dedup();
    assert!(ttls.len() > 5, "TTLs are spread: {ttls:?}");
}
