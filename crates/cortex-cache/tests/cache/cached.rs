//! Cached calls with single-flight, against the real Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cortex_cache::{Cache, CachedCalls, Error};

use crate::shared_store::{cache_in, namespace};

const BOUND: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_run_the_loader_once() {
    let calls = Arc::new(CachedCalls::new(cache_in(&namespace()).await));
    let loads = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (calls, loads) = (calls.clone(), loads.clone());
            tokio::spawn(async move {
                calls
                    .get_or_load("hot", None, || async {
                        loads.fetch_add(1, SeqCst);
                        // Slow enough that the other 999 arrive while it runs.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Ok::<_, std::io::Error>(vec![1u32, 2, 3])
                    })
                    .await
            })
        })
        .collect();
    tokio::time::timeout(BOUND, async {
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), vec![1, 2, 3]);
        }
    })
    .await
    .expect("no caller hangs");
    assert_eq!(loads.load(SeqCst), 1, "the loader ran more than once");
    // Stored in Redis: a later call is a hit.
    let again: Vec<u32> = calls
        .get_or_load("hot", None, || async {
            Err::<Vec<u32>, _>(std::io::Error::other("must not load"))
        })
        .await
        .unwrap();
    assert_eq!(again, vec![1, 2, 3]);
    assert!(calls.cache().inner().exists("hot").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_waiter_gets_the_loader_error_and_nothing_is_stored() {
    let calls = Arc::new(CachedCalls::new(cache_in(&namespace()).await));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let calls = calls.clone();
            tokio::spawn(async move {
                calls
                    .get_or_load("bad", None, || async {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Err::<u32, _>(std::io::Error::other("backend down"))
                    })
                    .await
            })
        })
        .collect();
    for t in tasks {
        match tokio::time::timeout(BOUND, t).await.unwrap().unwrap() {
            Err(Error::Loader(e)) => assert!(e.to_string().contains("backend down")),
            other => panic!("expected the loader's error, got {other:?}"),
        }
    }
    assert!(!calls.cache().inner().exists("bad").await.unwrap());
}

#[tokio::test]
async fn a_cancelled_loader_does_not_strand_its_waiters() {
    let calls = Arc::new(CachedCalls::new(cache_in(&namespace()).await));
    // The first caller starts a slow load and is cancelled by its timeout.
    let first = tokio::time::timeout(
        Duration::from_millis(50),
        calls.get_or_load("k", None, || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, std::io::Error>(0u32)
        }),
    )
    .await;
    assert!(first.is_err());
    // The next caller loads for itself instead of waiting on the abandoned load.
    let v: u32 = tokio::time::timeout(
        BOUND,
        calls.get_or_load("k", None, || async { Ok::<_, std::io::Error>(7u32) }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(v, 7);
}

#[tokio::test]
async fn refresh_bypasses_and_invalidate_forgets() {
    let calls = CachedCalls::new(cache_in(&namespace()).await);
    let ok = |v: u32| move || async move { Ok::<_, std::io::Error>(v) };
    assert_eq!(calls.get_or_load("k", None, ok(1)).await.unwrap(), 1u32);
    assert_eq!(
        calls.get_or_load("k", None, ok(2)).await.unwrap(),
        1u32,
        "cached"
    );
    assert_eq!(
        calls.refresh("k", None, ok(3)).await.unwrap(),
        3u32,
        "bypass"
    );
    assert_eq!(calls.get_or_load("k", None, ok(4)).await.unwrap(), 3u32);
    assert!(calls.invalidate("k").await.unwrap());
    assert_eq!(calls.get_or_load("k", None, ok(5)).await.unwrap(), 5u32);

    let skip_empty_calls = CachedCalls::new(cache_in(&namespace()).await).skip_empty(true);
    let empty = || async { Ok::<_, std::io::Error>(Vec::<u32>::new()) };
    assert!(
        skip_empty_calls
            .get_or_load("e", None, empty)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !skip_empty_calls.cache().inner().exists("e").await.unwrap(),
        "empty not stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_values_are_served_while_one_reload_runs() {
    let calls = Arc::new(CachedCalls::new(cache_in(&namespace()).await));
    let loads = Arc::new(AtomicUsize::new(0));
    // Fresh for a second, reloads take half a second: wide margins for a busy machine.
    let fresh = Duration::from_secs(1);
    let stale = Duration::from_secs(30);
    let get = |version: u32| {
        let (calls, loads) = (calls.clone(), loads.clone());
        async move {
            calls
                .get_or_load_stale("v", fresh, stale, move || async move {
                    loads.fetch_add(1, SeqCst);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    Ok::<_, std::io::Error>(version)
                })
                .await
                .unwrap()
        }
    };
    assert_eq!(get(1).await, 1, "nothing cached: the caller loads");
    assert_eq!(get(2).await, 1, "fresh: served from the cache");
    assert_eq!(loads.load(SeqCst), 1);

    tokio::time::sleep(fresh + Duration::from_millis(50)).await;
    // Stale: 50 readers get the old value at once; one background reload runs.
    let readers: Vec<_> = (0..50).map(|_| tokio::spawn(get(2))).collect();
    for r in readers {
        assert_eq!(r.await.unwrap(), 1, "stale value served without waiting");
    }
    tokio::time::timeout(BOUND, async {
        while get(3).await != 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the background reload lands");
    assert_eq!(
        loads.load(SeqCst),
        2,
        "one reload for all the stale readers"
    );
}

/// The Redis cache, whose next `get` (when armed) waits at the gate after its answer:
/// a caller delayed between its miss and joining the load.
struct Gated {
    inner: cortex_cache::RedisCache,
    armed: std::sync::atomic::AtomicBool,
    reached: tokio::sync::Notify,
    gate: tokio::sync::Notify,
}

impl Cache for Gated {
    async fn get(&self, key: &str) -> cortex_cache::Result<Option<Vec<u8>>> {
        let answer = self.inner.get(key).await;
        if self.armed.swap(false, SeqCst) {
            self.reached.notify_one();
            self.gate.notified().await;
        }
        answer
    }
    async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> cortex_cache::Result<()> {
        self.inner.set(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> cortex_cache::Result<bool> {
        self.inner.delete(key).await
    }
    async fn exists(&self, key: &str) -> cortex_cache::Result<bool> {
        self.inner.exists(key).await
    }
    async fn clear(&self) -> cortex_cache::Result<u64> {
        self.inner.clear().await
    }
    async fn increment(&self, key: &str, by: i64) -> cortex_cache::Result<i64> {
        self.inner.increment(key, by).await
    }
    fn stats(&self) -> cortex_cache::CacheStats {
        self.inner.stats()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_missed_just_before_another_load_stored_does_not_load_again() {
    let calls = Arc::new(CachedCalls::new(Gated {
        inner: cache_in(&namespace()).await,
        armed: std::sync::atomic::AtomicBool::new(true),
        reached: tokio::sync::Notify::new(),
        gate: tokio::sync::Notify::new(),
    }));
    let loads = Arc::new(AtomicUsize::new(0));
    let load = |loads: Arc<AtomicUsize>| {
        move || async move {
            loads.fetch_add(1, SeqCst);
            Ok::<_, std::io::Error>(7u32)
        }
    };
    // The late caller misses, then is held until the other caller's load has stored
    // its value and ended.
    let late = tokio::spawn({
        let (calls, loads) = (calls.clone(), loads.clone());
        async move { calls.get_or_load("k", None, load(loads)).await }
    });
    tokio::time::timeout(BOUND, calls.cache().inner().reached.notified())
        .await
        .expect("the late caller reads");
    let first = calls
        .get_or_load("k", None, load(loads.clone()))
        .await
        .unwrap();
    assert_eq!(first, 7);
    assert_eq!(calls.in_flight(), 0, "the first load has ended");
    calls.cache().inner().gate.notify_one();
    let second = tokio::time::timeout(BOUND, late)
        .await
        .expect("no caller hangs")
        .unwrap()
        .unwrap();
    assert_eq!(second, 7);
    assert_eq!(
        loads.load(SeqCst),
        1,
        "the late caller loaded a value that was stored already"
    );
}
