//! Single-flight edge cases of `CachedCalls` over the in-process store (no Redis):
//! cancelled leaders, hung loaders, invalidation during a load, huge TTLs.

use std::future::pending;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cortex_cache::{Cache, CachedCalls, Error, MemoryConfig, MemoryStore};
use tokio::sync::{Barrier, Notify};

use crate::gated::GatedTier;

/// Bound on anything that must not hang; generous for a loaded machine.
const BOUND: Duration = Duration::from_secs(10);

fn memory() -> MemoryStore {
    MemoryStore::new(MemoryConfig::default()).unwrap()
}

fn calls() -> Arc<CachedCalls<MemoryStore>> {
    Arc::new(CachedCalls::new(memory()))
}

/// A loader that signals `started` and then never finishes.
fn hung(
    started: Arc<Notify>,
) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = io::Result<u32>> + Send>> {
    move || {
        Box::pin(async move {
            started.notify_one();
            pending::<io::Result<u32>>().await
        })
    }
}

#[tokio::test]
async fn dropping_the_leader_mid_load_leaves_no_entry_and_the_next_call_loads() {
    let calls = calls();
    let started = Arc::new(Notify::new());
    let mut leader = Box::pin(calls.get_or_load("k", None, hung(started.clone())));
    tokio::select! {
        _ = &mut leader => panic!("a hung load finished"),
        () = started.notified() => {}
    }
    assert_eq!(calls.in_flight(), 1, "the load is in flight");
    drop(leader);
    assert_eq!(
        calls.in_flight(),
        0,
        "the cancelled load left its entry behind"
    );

    let loads = AtomicUsize::new(0);
    let v: u32 = tokio::time::timeout(
        BOUND,
        calls.get_or_load("k", None, || async {
            loads.fetch_add(1, SeqCst);
            Ok::<_, io::Error>(7)
        }),
    )
    .await
    .expect("the next call does not wait on the dropped load")
    .unwrap();
    assert_eq!((v, loads.load(SeqCst)), (7, 1), "the next call loads again");
    assert_eq!(calls.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_a_dropped_leader_take_over_with_one_load() {
    let calls = calls();
    let started = Arc::new(Notify::new());
    let mut leader = Box::pin(calls.get_or_load("k", None, hung(started.clone())));
    tokio::select! {
        _ = &mut leader => panic!("a hung load finished"),
        () = started.notified() => {}
    }
    let loads = Arc::new(AtomicUsize::new(0));
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let (calls, loads) = (calls.clone(), loads.clone());
            tokio::spawn(async move {
                calls
                    .get_or_load("k", None, || async move {
                        loads.fetch_add(1, SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, io::Error>(7u32)
                    })
                    .await
            })
        })
        .collect();
    // Let the waiters join the leader's load, then cancel the leader.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(loads.load(SeqCst), 0, "the waiters wait on the leader");
    drop(leader);
    for w in waiters {
        let v = tokio::time::timeout(BOUND, w)
            .await
            .expect("a waiter hangs")
            .unwrap()
            .unwrap();
        assert_eq!(v, 7);
    }
    assert_eq!(
        loads.load(SeqCst),
        1,
        "one waiter took over, the others joined it"
    );
    assert_eq!(calls.in_flight(), 0);
}

#[tokio::test]
async fn a_hung_loader_is_cut_off_with_a_typed_timeout() {
    let timeout = Duration::from_millis(200);
    let calls = CachedCalls::new(memory()).load_timeout(timeout);
    let started = Arc::new(Notify::new());
    let got = tokio::time::timeout(BOUND, calls.get_or_load("k", None, hung(started.clone())))
        .await
        .expect("the leader's own load is not bounded");
    match got {
        Err(Error::LoadTimeout { key, timeout: t }) => {
            assert_eq!((key.as_str(), t), ("k", timeout))
        }
        other => panic!("expected LoadTimeout, got {other:?}"),
    }
    // The load was cut off after it started, not refused before it ran.
    assert!(
        tokio::time::timeout(Duration::ZERO, started.notified())
            .await
            .is_ok(),
        "the loader never ran"
    );
    assert_eq!(calls.in_flight(), 0);
    assert!(!calls.cache().inner().exists("k").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_on_a_hung_loader_get_a_typed_timeout() {
    let timeout = Duration::from_millis(200);
    let calls = Arc::new(CachedCalls::new(memory()).load_timeout(timeout));
    let started = Arc::new(Notify::new());
    let leader = tokio::spawn({
        let (calls, started) = (calls.clone(), started.clone());
        async move { calls.get_or_load("k", None, hung(started)).await }
    });
    started.notified().await;
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let calls = calls.clone();
            tokio::spawn(async move {
                calls
                    .get_or_load("k", None, || async { Ok::<_, io::Error>(1u32) })
                    .await
            })
        })
        .collect();
    for w in waiters.into_iter().chain([leader]) {
        match tokio::time::timeout(BOUND, w)
            .await
            .expect("a caller hangs")
            .unwrap()
        {
            Err(Error::LoadTimeout { .. }) => {}
            other => panic!("expected LoadTimeout, got {other:?}"),
        }
    }
    assert_eq!(calls.in_flight(), 0);
}

#[tokio::test]
async fn waiters_give_up_on_a_leader_that_is_never_polled_again() {
    let timeout = Duration::from_millis(200);
    let calls = CachedCalls::new(memory()).load_timeout(timeout);
    let started = Arc::new(Notify::new());
    // The leader starts its load, then its future is kept but never polled again (a
    // stuck task): its own timeout cannot fire, so the waiters must bound themselves.
    let mut leader = Box::pin(calls.get_or_load("k", None, hung(started.clone())));
    tokio::select! {
        _ = &mut leader => panic!("a hung load finished"),
        () = started.notified() => {}
    }
    let waited = tokio::time::timeout(
        BOUND,
        calls.get_or_load("k", None, || async { Ok::<_, io::Error>(1u32) }),
    )
    .await
    .expect("a waiter on a stuck leader hangs");
    assert!(
        matches!(waited, Err(Error::LoadTimeout { .. })),
        "expected LoadTimeout, got {waited:?}"
    );
    // The stuck load is abandoned: the next caller loads for itself.
    let v: u32 = tokio::time::timeout(
        BOUND,
        calls.get_or_load("k", None, || async { Ok::<_, io::Error>(2u32) }),
    )
    .await
    .expect("the next call waits on the stuck load")
    .unwrap();
    assert_eq!(v, 2);
    drop(leader);
    assert_eq!(calls.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_during_a_load_is_not_undone_by_its_set() {
    let calls = calls();
    let started = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let leader = tokio::spawn({
        let (calls, started, release) = (calls.clone(), started.clone(), release.clone());
        async move {
            calls
                .get_or_load("k", None, || async move {
                    started.wait().await;
                    release.wait().await;
                    Ok::<_, io::Error>("old".to_owned())
                })
                .await
        }
    });
    started.wait().await;
    // The data behind "k" changes while the old value is being loaded.
    calls.invalidate("k").await.unwrap();
    release.wait().await;
    let old = tokio::time::timeout(BOUND, leader)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(old, "old", "the load still answers its own caller");
    assert!(
        !calls.cache().inner().exists("k").await.unwrap(),
        "a load started before invalidate() stored its value"
    );
    let v: String = calls
        .get_or_load("k", None, || async { Ok::<_, io::Error>("new".to_owned()) })
        .await
        .unwrap();
    assert_eq!(v, "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_after_invalidate_does_not_join_the_older_load() {
    let calls = calls();
    let started = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let leader = tokio::spawn({
        let (calls, started, release) = (calls.clone(), started.clone(), release.clone());
        async move {
            calls
                .get_or_load("k", None, || async move {
                    started.wait().await;
                    release.wait().await;
                    Ok::<_, io::Error>("old".to_owned())
                })
                .await
        }
    });
    started.wait().await;
    calls.invalidate("k").await.unwrap();
    let fresh: String = tokio::time::timeout(
        BOUND,
        calls.get_or_load("k", None, || async { Ok::<_, io::Error>("new".to_owned()) }),
    )
    .await
    .expect("the call after invalidate() waited on the older load")
    .unwrap();
    assert_eq!(fresh, "new");
    release.wait().await;
    assert_eq!(leader.await.unwrap().unwrap(), "old");
    let stored: Option<String> = calls.cache().get("k").await.unwrap();
    assert_eq!(
        stored.as_deref(),
        Some("new"),
        "the older load overwrote the newer value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_while_the_value_is_being_stored_wins() {
    let calls = Arc::new(CachedCalls::new(GatedTier::new()));
    calls.cache().inner().arm();
    let gate = calls.cache().inner().gate();
    let leader = tokio::spawn({
        let calls = calls.clone();
        async move {
            calls
                .get_or_load("gated", None, || async { Ok::<_, io::Error>(1u32) })
                .await
        }
    });
    // The load is done and its `set` is on the wire when the invalidation comes.
    gate.wait().await;
    calls.invalidate("gated").await.unwrap();
    gate.wait().await;
    assert_eq!(
        tokio::time::timeout(BOUND, leader)
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        1
    );
    assert!(
        !calls.cache().inner().exists("gated").await.unwrap(),
        "a set that raced invalidate() left the old value"
    );
}

#[tokio::test]
async fn a_huge_ttl_with_jitter_does_not_panic() {
    let calls = CachedCalls::new(memory()).ttl_jitter(0.5);
    for key in ["a", "b", "c"] {
        let v: u32 = calls
            .get_or_load(key, Some(Duration::MAX), || async { Ok::<_, io::Error>(1) })
            .await
            .unwrap();
        assert_eq!(v, 1);
        assert!(
            calls.cache().inner().exists(key).await.unwrap(),
            "{key} stored"
        );
    }
    let plain = CachedCalls::new(memory());
    let v: u32 = plain
        .get_or_load("k", Some(Duration::MAX), || async { Ok::<_, io::Error>(2) })
        .await
        .unwrap();
    assert_eq!(v, 2);
    assert!(plain.cache().inner().exists("k").await.unwrap());
}

#[tokio::test]
async fn stale_while_revalidate_takes_a_huge_stale_window() {
    let calls = Arc::new(CachedCalls::new(memory()));
    let v: u32 = calls
        .get_or_load_stale("k", Duration::from_secs(60), Duration::MAX, || async {
            Ok::<_, io::Error>(3)
        })
        .await
        .unwrap();
    assert_eq!(v, 3);
    assert!(calls.cache().inner().exists("k").await.unwrap());
}
