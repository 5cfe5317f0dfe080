use std::collections::{HashMap, HashSet};
use std::future::poll_fn;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use cortex_batch::{BatchConfig, BatchFn, Batcher, Error, Loaded, batch_fn};
use cortex_metrics::Metrics;
use cortex_support::env::EnvSource;
use tokio::task::JoinSet;

/// Every async test runs under this bound, so a hang is a failure, not a stuck CI job.
async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("test hung")
}

/// Records every batch it sees; answers `key * 10` in order.
#[derive(Default)]
struct Recorder {
    batches: Mutex<Vec<Vec<u64>>>,
    active: AtomicUsize,
    max_active: AtomicUsize,
    cost: Duration,
}

/// The batcher's handle on a shared [`Recorder`].
struct Rec(Arc<Recorder>);

impl BatchFn for Rec {
    type Key = u64;
    type Value = u64;
    type Error = std::io::Error;

    async fn load(&self, keys: &[u64]) -> Result<Loaded<u64, u64>, Self::Error> {
        let this = &self.0;
        let now = this.active.fetch_add(1, SeqCst) + 1;
        this.max_active.fetch_max(now, SeqCst);
        this.batches
            .lock()
            .expect("recorder lock")
            .push(keys.to_vec());
        if this.cost.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(this.cost).await;
        }
        this.active.fetch_sub(1, SeqCst);
        Ok(keys.iter().map(|k| k * 10).collect::<Vec<_>>().into())
    }
}

fn recorder(cost: Duration) -> Arc<Recorder> {
    Arc::new(Recorder {
        cost,
        ..Recorder::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_loads_each_get_their_own_value() {
    bounded(async {
        let rec = recorder(Duration::from_millis(1));
        let b = Batcher::builder(Rec(Arc::clone(&rec)))
            .max_wait(Duration::from_millis(5))
            .max_in_flight(4)
            .build()
            .unwrap();
        let mut set = JoinSet::new();
        for k in 0..10_000u64 {
            let b = b.clone();
            set.spawn(async move { (k, b.load(k).await) });
        }
        while let Some(r) = set.join_next().await {
            let (k, v) = r.unwrap();
            assert_eq!(v.unwrap(), k * 10);
        }
        {
            let batches = rec.batches.lock().unwrap();
            assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 10_000);
            assert!(batches.len() < 10_000 / 10, "{} batches", batches.len());
            // No batch exceeds the maximum, and no more than max_in_flight load at once.
            assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= 50));
            assert!(rec.max_active.load(SeqCst) <= 4);
        }
        // A batch task holds its slot until its callers have had their turn.
        until(|| b.stats().in_flight == 0).await;
        let s = b.stats();
        assert_eq!((s.requests, s.pending, s.in_flight), (10_000, 0, 0));
    })
    .await;
}

#[tokio::test]
async fn no_batch_exceeds_max_size_with_load_many() {
    bounded(async {
        let rec = recorder(Duration::ZERO);
        let b = Batcher::builder(Rec(Arc::clone(&rec)))
            .max_batch_size(7)
            .max_in_flight(2)
            .build()
            .unwrap();
        let out = b.load_many(0..100).await;
        let values: Vec<u64> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(values, (0..100).map(|k| k * 10).collect::<Vec<_>>());
        let batches = rec.batches.lock().unwrap();
        assert!(batches.iter().all(|b| b.len() <= 7), "{batches:?}");
        assert!(rec.max_active.load(SeqCst) <= 2);
    })
    .await;
}

#[tokio::test]
async fn one_value_too_few_gives_every_request_of_the_batch_wrong_count() {
    bounded(async {
        let b = Batcher::builder(batch_fn(|keys: Vec<u64>| async move {
            Ok::<_, std::io::Error>(keys.iter().skip(1).copied().collect::<Vec<_>>())
        }))
        .build()
        .unwrap();
        for r in b.load_many([1, 2, 3]).await {
            assert!(matches!(
                r,
                Err(Error::WrongCount {
                    expected: 3,
                    got: 2
                })
            ));
        }
        assert_eq!(b.stats().errors, 3);
    })
    .await;
}

#[tokio::test]
async fn a_panicking_loader_gives_errors_and_the_batcher_keeps_working() {
    bounded(async {
        let b = Batcher::builder(batch_fn(|keys: Vec<u64>| async move {
            assert!(!keys.contains(&13), "unlucky key");
            Ok::<_, std::io::Error>(keys)
        }))
        .build()
        .unwrap();
        for r in b.load_many([12, 13]).await {
            match r {
                Err(Error::LoaderPanicked(m)) => assert!(m.contains("unlucky"), "{m}"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(b.load(7).await.unwrap(), 7);
        // The slot comes back once the batch task has let its callers run (it takes
        // what they queue next).
        until(|| b.stats().in_flight == 0).await;
    })
    .await;
}

#[tokio::test]
async fn loader_error_goes_to_each_request_of_the_batch() {
    bounded(async {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let b = Batcher::builder(batch_fn(move |_keys: Vec<u64>| {
            c.fetch_add(1, SeqCst);
            async { Err::<Vec<u64>, _>(std::io::Error::other("db down")) }
        }))
        .build()
        .unwrap();
        let out = b.load_many([1, 2, 3]).await;
        assert_eq!(calls.load(SeqCst), 1);
        for r in &out {
            let Err(Error::Loader(e)) = r else {
                panic!("{r:?}")
            };
            assert_eq!(e.to_string(), "db down");
            // The message is the batcher's; the loader's error is its source.
            let err = r.as_ref().unwrap_err();
            assert_eq!(err.to_string(), "loader failed");
            let source = std::error::Error::source(err).map(ToString::to_string);
            assert_eq!(source.as_deref(), Some("db down"));
            assert!(err.is_retryable());
        }
        // One shared error, not three copies.
        let (Err(Error::Loader(a)), Err(Error::Loader(c))) = (&out[0], &out[2]) else {
            unreachable!()
        };
        assert!(Arc::ptr_eq(a, c));
    })
    .await;
}

#[tokio::test]
async fn by_key_answers_and_a_missing_key() {
    bounded(async {
        let b = Batcher::builder(batch_fn(|keys: Vec<u64>| async move {
            let map: HashMap<u64, String> = keys
                .into_iter()
                .filter(|k| k % 2 == 0)
                .map(|k| (k, format!("v{k}")))
                .collect();
            Ok::<_, std::io::Error>(map)
        }))
        .build()
        .unwrap();
        let out = b.load_many([2, 3, 4, 2]).await;
        assert_eq!(out[0].as_deref().unwrap(), "v2");
        assert!(matches!(out[1], Err(Error::Missing)));
        assert_eq!(out[2].as_deref().unwrap(), "v4");
        assert_eq!(out[3].as_deref().unwrap(), "v2");
    })
    .await;
}

#[tokio::test]
async fn duplicates_are_loaded_once() {
    bounded(async {
        let rec = recorder(Duration::ZERO);
        let b = Batcher::builder(Rec(Arc::clone(&rec))).build().unwrap();
        let out = b.load_many([5, 5, 6, 5, 6]).await;
        let values: Vec<u64> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(values, [50, 50, 60, 50, 60]);
        let batches = rec.batches.lock().unwrap();
        assert_eq!(*batches, vec![vec![5, 6]]);
        assert_eq!(b.stats().duplicates_saved, 3);
    })
    .await;
}

// Paused time: the clock moves only when every task waits on a timer, so the elapsed
// time below is exactly the sum of the waits the batcher made (no wall-clock noise).
#[tokio::test(start_paused = true)]
async fn an_idle_batcher_does_not_wait_for_max_wait() {
    let max_wait = Duration::from_secs(2);
    let rec = recorder(Duration::ZERO);
    let b = Batcher::builder(Rec(Arc::clone(&rec)))
        .max_wait(max_wait)
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    for k in 0..20 {
        assert_eq!(b.load(k).await.unwrap(), k * 10);
    }
    // Waiting max_wait even once would have moved the paused clock by 2 s.
    let waited = tokio::time::Instant::now() - start;
    assert_eq!(waited, Duration::ZERO, "sequential loads waited {waited:?}");
    assert_eq!(rec.batches.lock().unwrap().len(), 20);
}

#[tokio::test]
async fn a_partial_batch_fires_when_the_wait_runs_out() {
    bounded(async {
        // Key 0's batch never finishes, so key 1 can only be answered by its own
        // partial batch, fired when max_wait runs out (a slot is free, the batch is not
        // full, and no load finishes to take it).
        let b = Batcher::builder(batch_fn(|keys: Vec<u64>| async move {
            if keys.contains(&0) {
                std::future::pending::<()>().await;
            }
            Ok::<_, std::io::Error>(keys)
        }))
        .max_wait(Duration::from_millis(20))
        .build()
        .unwrap();
        let stuck = tokio::spawn({
            let b = b.clone();
            async move { b.load(0).await }
        });
        while b.stats().in_flight == 0 {
            tokio::task::yield_now().await;
        }
        let one = tokio::time::timeout(Duration::from_secs(10), b.load(1))
            .await
            .expect("key 1 unanswered after 10 s: its partial batch never fired (max_wait 20 ms)");
        assert_eq!(one.unwrap(), 1);
        stuck.abort();
    })
    .await;
}

/// Under overload callers give up, and a batch formed after a caller gave up must not
/// load its key (one formed before may: that race is allowed).
///
/// The check is exact on one thread. A caller records its key in `given_up` right
/// after its future, and with it its reply channel, is dropped: no task runs between
/// the two. The loader checks its keys when it is called, and the batcher calls it
/// from forming (or, for a batch handed to a new task, re-checking) the batch without
/// yielding. So a key the loader finds in `given_up` was given up before its batch was
/// formed. The loader holds every slot until half the callers have given up, so the
/// queue is sure to hold thousands of abandoned requests when the slots free up.
#[tokio::test(flavor = "current_thread")]
async fn a_caller_that_gave_up_is_never_loaded() {
    const N: u64 = 10_000;
    bounded(async {
        let given_up = Arc::new(Mutex::new(HashSet::new()));
        let late = Arc::new(Mutex::new(Vec::<u64>::new())); // loaded after their caller left
        let loaded = Arc::new(AtomicUsize::new(0));
        let b = Batcher::builder(batch_fn({
            let (given_up, late, loaded) = (
                Arc::clone(&given_up),
                Arc::clone(&late),
                Arc::clone(&loaded),
            );
            move |keys: Vec<u64>| {
                {
                    let gone = given_up.lock().unwrap();
                    let mut late = late.lock().unwrap();
                    late.extend(keys.iter().filter(|k| gone.contains(*k)));
                }
                loaded.fetch_add(keys.len(), SeqCst);
                let given_up = Arc::clone(&given_up);
                async move {
                    while (given_up.lock().unwrap().len() as u64) < N / 2 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Ok::<_, std::io::Error>(keys)
                }
            }
        }))
        .max_pending(N as usize)
        .max_in_flight(4)
        .build()
        .unwrap();
        let mut set = JoinSet::new();
        for k in 0..N {
            let (b, given_up) = (b.clone(), Arc::clone(&given_up));
            set.spawn(async move {
                let r = tokio::time::timeout(Duration::from_millis(5), b.load(k)).await;
                match r {
                    Ok(v) => assert_eq!(v.unwrap(), k),
                    Err(_) => {
                        given_up.lock().unwrap().insert(k);
                    }
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        // Callers that gave up are gone while their batches may still load or queue.
        while b.stats().in_flight + b.stats().pending > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let late = late.lock().unwrap();
        assert!(
            late.is_empty(),
            "the loader got {} keys whose callers had already given up, e.g. {:?}",
            late.len(),
            &late[..late.len().min(5)]
        );
        // Not vacuous: at most 4 batches of 50 were loading while N / 2 callers gave up,
        // so the rest of those were dropped from the queue unloaded.
        let s = b.stats();
        assert!(s.abandoned >= N / 2 - 200, "{s:?}");
        assert_eq!(s.requests, loaded.load(SeqCst) as u64);
        assert_eq!(s.requests + s.abandoned, N, "{s:?}");
        assert_eq!((s.pending, s.in_flight, s.saturated), (0, 0, 0));
    })
    .await;
}

#[tokio::test]
async fn a_load_past_max_pending_fails_at_once_with_saturated() {
    bounded(async {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let b = Batcher::builder(batch_fn({
            let (gate, seen) = (Arc::clone(&gate), Arc::clone(&seen));
            move |keys: Vec<u64>| {
                seen.lock().unwrap().extend(keys.iter().copied());
                let gate = Arc::clone(&gate);
                async move {
                    let _permit = gate.acquire().await;
                    Ok::<_, std::io::Error>(keys)
                }
            }
        }))
        .max_in_flight(1)
        .max_batch_size(2)
        .max_pending(3)
        .build()
        .unwrap();
        // Key 0 takes the only slot; keys 1 and 2 queue, each spawned once the one
        // before has queued, so the queue's order is known.
        let mut tasks = Vec::new();
        for k in 0..3u64 {
            let b2 = b.clone();
            tasks.push(tokio::spawn(async move { b2.load(k).await }));
            while b.stats().pending + (b.stats().requests as usize) < k as usize + 1 {
                tokio::task::yield_now().await;
            }
        }
        // One place left: key 3 queues, key 4 is refused.
        let many = tokio::spawn({
            let b = b.clone();
            async move { b.load_many([3, 4]).await }
        });
        while b.stats().pending < 3 {
            tokio::task::yield_now().await;
        }
        // Full: refused at once, not queued.
        match b.load(99).await {
            Err(e @ Error::Saturated { limit: 3 }) => assert!(e.is_retryable()),
            other => panic!("{other:?}"),
        }
        assert_eq!((b.stats().pending, b.stats().saturated), (3, 2));
        // Key 1's caller gives up (its future is dropped before the join completes),
        // so the front of the queue is abandoned and key 100 fits.
        let one = tasks.remove(1);
        one.abort();
        assert!(one.await.unwrap_err().is_cancelled());
        tasks.push(tokio::spawn({
            let b = b.clone();
            async move { b.load(100).await }
        }));
        while b.stats().abandoned == 0 {
            tokio::task::yield_now().await;
        }
        let s = b.stats();
        assert_eq!((s.pending, s.abandoned, s.saturated), (3, 1, 2), "{s:?}");
        gate.add_permits(100);
        let mut values = Vec::new();
        for t in tasks {
            values.push(t.await.unwrap().unwrap());
        }
        let many = many.await.unwrap();
        assert_eq!(many[0].as_ref().unwrap(), &3);
        assert!(matches!(many[1], Err(Error::Saturated { limit: 3 })));
        assert_eq!(values, [0, 2, 100]);
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(
            seen,
            [0, 2, 3, 100],
            "the loader got a refused or abandoned key"
        );
    })
    .await;
}

/// A batch task dropped before its first poll (its runtime shut down) must give back
/// its loading slot; else after `max_in_flight` of them no batch fires again. Each
/// round polls a load once inside `block_on` on a runtime of its own: that dispatches
/// a batch (a slot is free and the wait is zero) and spawns its task, and `block_on`
/// returns before the scheduler runs any task, so dropping the runtime drops the task
/// unpolled.
#[test]
fn a_batch_task_dropped_before_it_ran_gives_back_its_slot() {
    let rec = recorder(Duration::ZERO);
    let b = Batcher::builder(Rec(Arc::clone(&rec)))
        .max_in_flight(2)
        .max_wait(Duration::ZERO)
        .build()
        .unwrap();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    };
    for k in 0..2 {
        let rt = runtime();
        rt.block_on(async {
            let mut load = pin!(b.load(k));
            poll_fn(|cx| {
                assert!(load.as_mut().poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            assert_eq!(b.stats().in_flight, 1);
        });
        drop(rt);
    }
    let v = runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(10), b.load(7))
            .await
            .expect("no batch fired within 10 s after two batch tasks were dropped unpolled")
    });
    assert_eq!(v.unwrap(), 70);
    assert_eq!(*rec.batches.lock().unwrap(), [vec![7]]);
    assert_eq!(b.stats().in_flight, 0);
}

/// A caller whose batch task was dropped with its runtime (before it ran) is answered
/// `Closed`, not left waiting: the load is polled once on a runtime that is then
/// dropped, and polled to its end on another.
#[test]
fn a_caller_whose_batch_task_was_dropped_gets_closed() {
    let rec = recorder(Duration::ZERO);
    let b = Batcher::builder(Rec(Arc::clone(&rec))).build().unwrap();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    };
    let mut load = Box::pin(b.load(7));
    let rt = runtime();
    rt.block_on(poll_fn(|cx| {
        assert!(load.as_mut().poll(cx).is_pending());
        Poll::Ready(())
    }));
    drop(rt);
    let r = runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(10), load)
            .await
            .expect("the caller still waits 10 s after its batch task was dropped")
    });
    assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    assert!(rec.batches.lock().unwrap().is_empty());
    assert_eq!(b.stats().in_flight, 0);
}

#[tokio::test]
async fn request_timeout_gives_timeout() {
    bounded(async {
        let b = Batcher::builder(batch_fn(|keys: Vec<u64>| async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, std::io::Error>(keys)
        }))
        .request_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
        match b.load(1).await {
            Err(e @ Error::Timeout { waited }) => {
                assert!(waited >= Duration::from_millis(50));
                assert!(e.is_retryable());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(b.stats().timeouts, 1);
    })
    .await;
}

/// While every slot is held by a load that never ends, queued requests still end at
/// their deadline: the queue's timer answers them, no caller holds a timer of its own.
#[tokio::test]
async fn a_queued_request_times_out_while_every_slot_is_stuck() {
    bounded(async {
        let b = Batcher::builder(batch_fn(|keys: Vec<u64>| async move {
            std::future::pending::<()>().await;
            Ok::<_, std::io::Error>(keys)
        }))
        .max_in_flight(1)
        .request_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
        let stuck = tokio::spawn({
            let b = b.clone();
            async move { b.load(0).await }
        });
        until(|| b.stats().in_flight == 1).await;
        match b.load(1).await {
            Err(Error::Timeout { waited }) => assert!(waited >= Duration::from_millis(50)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(stuck.await.unwrap(), Err(Error::Timeout { .. })));
        let s = b.stats();
        assert_eq!((s.timeouts, s.requests, s.pending), (2, 1, 0), "{s:?}");
    })
    .await;
}

/// A request whose deadline passes while its batch loads gets `Timeout` then, and the
/// rest of the batch is answered when the load ends. Key 0 holds the only slot until
/// keys 1 and 2 are queued, half a timeout apart; they load together until key 1 has
/// timed out, well before key 2's deadline.
#[tokio::test]
async fn a_request_past_its_deadline_times_out_while_its_batch_loads_on() {
    bounded(async {
        let timeout = Duration::from_secs(1);
        let gates = [
            Arc::new(tokio::sync::Semaphore::new(0)),
            Arc::new(tokio::sync::Semaphore::new(0)),
        ];
        let seen = Arc::new(Mutex::new(Vec::new()));
        let b = Batcher::builder(batch_fn({
            let (seen, gates) = (Arc::clone(&seen), gates.clone());
            move |keys: Vec<u64>| {
                seen.lock().unwrap().push(keys.clone());
                let gate = Arc::clone(&gates[usize::from(!keys.contains(&0))]);
                async move {
                    let _open = gate.acquire().await;
                    Ok::<_, std::io::Error>(keys)
                }
            }
        }))
        .max_in_flight(1)
        .request_timeout(timeout)
        .build()
        .unwrap();
        let spawn = |k: u64| {
            let b = b.clone();
            tokio::spawn(async move { b.load(k).await })
        };
        let zero = spawn(0);
        until(|| b.stats().in_flight == 1).await;
        let one = spawn(1);
        until(|| b.stats().pending == 1).await;
        tokio::time::sleep(timeout / 2).await;
        let two = spawn(2);
        until(|| b.stats().pending == 2).await;
        gates[0].add_permits(1);
        assert_eq!(zero.await.unwrap().unwrap(), 0);
        // Key 1 ends at its deadline although its batch is still loading.
        match one.await.unwrap() {
            Err(Error::Timeout { waited }) => assert!(waited >= timeout),
            other => panic!("key 1: {other:?}"),
        }
        gates[1].add_permits(1);
        assert_eq!(two.await.unwrap().unwrap(), 2);
        assert_eq!(*seen.lock().unwrap(), [vec![0], vec![1, 2]]);
        assert_eq!(b.stats().timeouts, 1);
    })
    .await;
}

/// Natural batching: requests that arrive together while a batch loads go together as
/// soon as their burst is queued, not after that load or `max_wait`. Paused time, so
/// the elapsed time is exactly the loads waited for: key 0 loads for 10 ms alone
/// (idle), and keys 1 and 2, loaded while it does, take 10 ms more, not 20 ms (after
/// key 0's load) or a second (`max_wait`).
#[tokio::test(start_paused = true)]
async fn a_burst_while_a_batch_loads_goes_at_once_as_one_batch() {
    let rec = recorder(Duration::from_millis(10));
    let b = Batcher::builder(Rec(Arc::clone(&rec)))
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let zero = tokio::spawn({
        let b = b.clone();
        async move { b.load(0).await }
    });
    while b.stats().in_flight == 0 {
        tokio::task::yield_now().await;
    }
    let start = tokio::time::Instant::now();
    let (one, two) = tokio::join!(b.load(1), b.load(2));
    let waited = tokio::time::Instant::now() - start;
    assert_eq!((one.unwrap(), two.unwrap()), (10, 20));
    assert!(
        waited < Duration::from_millis(20),
        "keys 1 and 2 waited {waited:?}"
    );
    assert_eq!(zero.await.unwrap().unwrap(), 0);
    assert_eq!(*rec.batches.lock().unwrap(), [vec![0], vec![1, 2]]);
}

#[tokio::test]
async fn close_resolves_every_pending_request() {
    bounded(async {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = Arc::clone(&gate);
        let b = Batcher::builder(batch_fn(move |keys: Vec<u64>| {
            let g = Arc::clone(&g);
            async move {
                let _permit = g.acquire().await;
                Ok::<_, std::io::Error>(keys)
            }
        }))
        .max_in_flight(1)
        .max_wait(Duration::from_secs(60))
        .build()
        .unwrap();
        let mut set = JoinSet::new();
        for k in 0..100u64 {
            let b = b.clone();
            set.spawn(async move { (k, b.load(k).await) });
        }
        // Wait until the first batch is loading and the rest are queued.
        while b.stats().pending as u64 + b.stats().requests < 100 {
            tokio::task::yield_now().await;
        }
        let loading = b.stats().requests;
        b.close();
        assert!(matches!(b.load(1000).await, Err(Error::Closed)));
        gate.add_permits(1000);
        let (mut ok, mut closed) = (0, 0);
        while let Some(r) = set.join_next().await {
            match r.unwrap() {
                (k, Ok(v)) => {
                    assert_eq!(k, v);
                    ok += 1;
                }
                (_, Err(Error::Closed)) => closed += 1,
                (_, Err(e)) => panic!("{e}"),
            }
        }
        // The batch already loading finished; everything queued got Closed.
        assert_eq!(ok, loading);
        assert_eq!(ok + closed, 100);
        assert!(closed > 0);
        assert!(b.stats().closed);
    })
    .await;
}

#[tokio::test]
async fn stats_and_metrics_are_recorded() {
    bounded(async {
        let metrics = Metrics::new();
        let b = Batcher::builder(batch_fn(|keys: Vec<u64>| async move {
            let map: HashMap<u64, u64> = keys
                .into_iter()
                .filter(|k| *k != 3)
                .map(|k| (k, k))
                .collect();
            Ok::<_, std::io::Error>(map)
        }))
        .name("users")
        .with_metrics(metrics.clone())
        .max_batch_size(4)
        .build()
        .unwrap();
        let out = b.load_many(0..8).await;
        assert_eq!(out.iter().filter(|r| r.is_err()).count(), 1);
        let s = b.stats();
        assert_eq!((s.name.as_str(), s.requests, s.batches), ("users", 8, 2));
        assert_eq!((s.avg_batch_size, s.efficiency, s.errors), (4.0, 1.0, 1));
        // One family per measure, the batcher a label; durations in seconds.
        let text = metrics.prometheus();
        for line in [
            "# TYPE cortex_batch_requests_total counter\n",
            "cortex_batch_requests_total{batcher=\"users\"} 8\n",
            "cortex_batch_errors_total{batcher=\"users\"} 1\n",
            "# TYPE cortex_batch_size histogram\n",
            "cortex_batch_size_bucket{batcher=\"users\",le=\"2.5\"} 0\n",
            "cortex_batch_size_bucket{batcher=\"users\",le=\"5\"} 2\n",
            "cortex_batch_size_sum{batcher=\"users\"} 8\n",
            "cortex_batch_size_count{batcher=\"users\"} 2\n",
            "# TYPE cortex_batch_wait_seconds histogram\n",
            "cortex_batch_wait_seconds_count{batcher=\"users\"} 8\n",
            "# TYPE cortex_batch_load_seconds histogram\n",
            "cortex_batch_load_seconds_bucket{batcher=\"users\",le=\"+Inf\"} 2\n",
            "cortex_batch_load_seconds_count{batcher=\"users\"} 2\n",
            "# TYPE cortex_batch_pending gauge\n",
            "cortex_batch_pending{batcher=\"users\"} 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(
            !text.contains("users_"),
            "the name is in a family name:\n{text}"
        );
        let users = [("batcher", "users")];
        assert_eq!(
            metrics
                .counter_with("batch.requests", &users)
                .unwrap()
                .total(),
            8
        );
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"efficiency\":1.0"), "{json}");
    })
    .await;
}

#[tokio::test]
async fn without_a_registry_the_global_one_records_under_the_name() {
    bounded(async {
        let b = Batcher::builder(batch_fn(|keys: Vec<u64>| async move {
            Ok::<_, std::io::Error>(keys)
        }))
        .name("batch_it_global_default")
        .build()
        .unwrap();
        let out = b.load_many(0..3).await;
        assert!(out.iter().all(Result::is_ok));
        let global = cortex_metrics::global();
        let labels = [("batcher", "batch_it_global_default")];
        assert_eq!(
            global
                .counter_with("batch.requests", &labels)
                .unwrap()
                .total(),
            3
        );
        assert!(
            global
                .prometheus()
                .contains("cortex_batch_requests_total{batcher=\"batch_it_global_default\"} 3\n")
        );
        assert_eq!(b.stats().name, "batch_it_global_default");
    })
    .await;
}

/// Keys through a batcher named `name` recording into `metrics`, answered in order.
fn echo_batcher(metrics: &Metrics, name: &str) -> Batcher<impl BatchFn<Key = u64, Value = u64>> {
    Batcher::builder(batch_fn(|keys: Vec<u64>| async move {
        Ok::<_, std::io::Error>(keys)
    }))
    .name(name)
    .with_metrics(metrics.clone())
    .build()
    .unwrap()
}

#[tokio::test]
async fn two_batchers_are_two_series_of_one_family() {
    bounded(async {
        let metrics = Metrics::new();
        let users = echo_batcher(&metrics, "users");
        let orders = echo_batcher(&metrics, "orders");
        assert!(users.load_many(0..3).await.iter().all(Result::is_ok));
        assert!(orders.load_many(0..2).await.iter().all(Result::is_ok));
        let text = metrics.prometheus();
        for family in [
            "# TYPE cortex_batch_requests_total counter\n",
            "# TYPE cortex_batch_load_seconds histogram\n",
            "# TYPE cortex_batch_pending gauge\n",
        ] {
            assert_eq!(text.matches(family).count(), 1, "{family:?} in\n{text}");
        }
        for line in [
            "cortex_batch_requests_total{batcher=\"orders\"} 2\n",
            "cortex_batch_requests_total{batcher=\"users\"} 3\n",
            "cortex_batch_load_seconds_count{batcher=\"orders\"} 1\n",
            "cortex_batch_load_seconds_count{batcher=\"users\"} 1\n",
            "cortex_batch_size_sum{batcher=\"orders\"} 2\n",
            "cortex_batch_size_sum{batcher=\"users\"} 3\n",
            "cortex_batch_pending{batcher=\"orders\"} 0\n",
            "cortex_batch_pending{batcher=\"users\"} 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    })
    .await;
}

/// Polls `cond` until it holds (within the test's [`bounded`] time).
async fn until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pending_gauge_counts_queued_requests_and_is_nan_once_dropped() {
    bounded(async {
        let metrics = Metrics::new();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let entered = Arc::new(AtomicUsize::new(0));
        let (g, e) = (Arc::clone(&gate), Arc::clone(&entered));
        let b = Batcher::builder(batch_fn(move |keys: Vec<u64>| {
            let (gate, entered) = (Arc::clone(&g), Arc::clone(&e));
            async move {
                entered.fetch_add(1, SeqCst);
                // Each load waits for the test to open the gate.
                gate.acquire().await.unwrap().forget();
                Ok::<_, std::io::Error>(keys)
            }
        }))
        .name("slow")
        .with_metrics(metrics.clone())
        .max_in_flight(1)
        .build()
        .unwrap();
        let pending = |m: &Metrics| {
            m.prometheus()
                .lines()
                .find(|l| l.starts_with("cortex_batch_pending{batcher=\"slow\"}"))
                .map(str::to_owned)
        };
        assert_eq!(
            pending(&metrics).as_deref(),
            Some("cortex_batch_pending{batcher=\"slow\"} 0")
        );

        // The first load is dispatched at once (idle) and holds the only slot ...
        let mut set = JoinSet::new();
        let first = b.clone();
        set.spawn(async move { first.load(0).await });
        until(|| entered.load(SeqCst) == 1).await;
        // ... so the next three queue for the next dispatch.
        for k in 1..=3 {
            let b = b.clone();
            set.spawn(async move { b.load(k).await });
        }
        until(|| b.stats().pending == 3).await;
        assert_eq!(
            pending(&metrics).as_deref(),
            Some("cortex_batch_pending{batcher=\"slow\"} 3")
        );

        gate.add_permits(2);
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
        assert_eq!(
            entered.load(SeqCst),
            2,
            "the three queued loaded as one batch"
        );
        assert_eq!(
            pending(&metrics).as_deref(),
            Some("cortex_batch_pending{batcher=\"slow\"} 0")
        );

        // Gone: the gauge says so instead of a stale level (the batch task may hold
        // the batcher a moment after the last answer).
        drop(b);
        until(|| {
            pending(&metrics).as_deref() == Some("cortex_batch_pending{batcher=\"slow\"} NaN")
        })
        .await;
    })
    .await;
}

#[test]
fn config_from_env_names_the_variable() {
    let from = |vars: &[(&str, &str)]| {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| map.get(k).cloned();
        BatchConfig::from_env_source_prefixed("USER_LOOKUP", &EnvSource::from_fn(&lookup))
    };
    let c = from(&[
        ("USER_LOOKUP_BATCH_SIZE", "20"),
        ("USER_LOOKUP_BATCH_WAIT", "250ms"),
        ("USER_LOOKUP_BATCH_MAX_PENDING", "500"),
    ])
    .unwrap();
    assert_eq!(
        (c.max_batch_size, c.max_wait, c.max_pending),
        (20, Duration::from_millis(250), 500)
    );
    assert_eq!(BatchConfig::default().max_pending, 10_000);
    assert_eq!(from(&[]).unwrap(), BatchConfig::default());
    for (var, bad) in [
        ("USER_LOOKUP_BATCH_SIZE", "lots"),
        ("USER_LOOKUP_BATCH_SIZE", "0"),
        ("USER_LOOKUP_BATCH_WAIT", "-1"),
        ("USER_LOOKUP_BATCH_MAX_IN_FLIGHT", "0"),
        ("USER_LOOKUP_BATCH_MAX_PENDING", "0"),
        ("USER_LOOKUP_BATCH_TIMEOUT", "soon"),
    ] {
        let err = from(&[(var, bad)]).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig { key, .. } if key == var),
            "{err}"
        );
        assert!(err.to_string().contains(var), "{err}");
    }
    assert!(
        Batcher::new(
            batch_fn(|k: Vec<u8>| async move { Ok::<_, std::io::Error>(k) }),
            BatchConfig {
                max_batch_size: 0,
                ..BatchConfig::default()
            }
        )
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_batch_holds_distinct_keys_and_counts_add_up() {
    bounded(async {
        let keys_seen = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&keys_seen);
        let b = Batcher::builder(batch_fn(move |keys: Vec<u32>| {
            let distinct: HashSet<_> = keys.iter().collect();
            assert_eq!(distinct.len(), keys.len(), "a key twice in one batch");
            seen.fetch_add(keys.len(), SeqCst);
            async move {
                tokio::task::yield_now().await;
                Ok::<_, std::io::Error>(keys)
            }
        }))
        .build()
        .unwrap();
        let mut set = JoinSet::new();
        for i in 0..1000u32 {
            let b = b.clone();
            set.spawn(async move { assert_eq!(b.load(i % 10).await.unwrap(), i % 10) });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        // Duplicates across batches are loaded again (no cache); within a batch once.
        let s = b.stats();
        assert_eq!(s.requests, 1000);
        assert_eq!(keys_seen.load(SeqCst) as u64, 1000 - s.duplicates_saved);
        assert!(s.duplicates_saved > 0);
    })
    .await;
}

#[cfg(feature = "tower")]
#[tokio::test]
async fn tower_layer_batches_single_key_requests() {
    use tower::{Layer, ServiceExt};
    bounded(async {
        let inner = tower::service_fn(|keys: Vec<u64>| async move {
            Ok::<_, std::io::Error>(keys.into_iter().map(|k| k + 1).collect::<Vec<_>>())
        });
        let metrics = Metrics::new();
        let layer = cortex_batch::BatchLayer::new(BatchConfig::default(), "inc")
            .unwrap()
            .with_metrics(metrics.clone());
        let svc = layer.layer(inner);
        let mut set = JoinSet::new();
        for k in 0..200u64 {
            let svc = svc.clone();
            set.spawn(async move { (k, svc.oneshot(k).await) });
        }
        while let Some(r) = set.join_next().await {
            let (k, v) = r.unwrap();
            assert_eq!(v.unwrap(), k + 1);
        }
        assert!(svc.batcher().stats().batches < 200);
        let text = metrics.prometheus();
        assert!(
            text.contains("cortex_batch_requests_total{batcher=\"inc\"} 200\n"),
            "{text}"
        );
        assert!(
            text.contains("cortex_batch_pending{batcher=\"inc\"} 0\n"),
            "{text}"
        );
        let mut svc = svc;
        svc.batcher().close();
        assert!(matches!(svc.ready().await, Err(Error::Closed)));
    })
    .await;
}
