//! The generic object pool and the sync pool, through the public API.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cortex_pool::{Error, Manager, Pool, SyncPool};

/// No test may hang: every async body runs under this.
const BOUND: Duration = Duration::from_secs(20);

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(BOUND, f).await.expect("test hung")
}

/// Counts objects; recycling and validity can be made to fail.
#[derive(Default)]
struct Counting {
    next: AtomicUsize,
    fail_create: AtomicBool,
    fail_recycle: AtomicBool,
    invalid: AtomicBool,
}

impl Manager for Counting {
    type Object = usize;
    type Error = std::io::Error;

    async fn create(&self) -> Result<usize, std::io::Error> {
        if self.fail_create.load(SeqCst) {
            return Err(std::io::Error::other("refused"));
        }
        Ok(self.next.fetch_add(1, SeqCst))
    }

    async fn recycle(&self, _obj: &mut usize) -> Result<(), std::io::Error> {
        if self.fail_recycle.load(SeqCst) {
            return Err(std::io::Error::other("dirty"));
        }
        Ok(())
    }

    fn is_valid(&self, _obj: &usize) -> bool {
        !self.invalid.load(SeqCst)
    }
}

fn pool(max: usize) -> Pool<Counting> {
    Pool::builder(Counting::default())
        .max_size(max)
        .acquire_timeout(Duration::from_secs(10))
        .build()
        .expect("a valid pool config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_returns_when_holder_panics() {
    bounded(async {
        let pool = pool(2);
        let p = pool.clone();
        let res = tokio::spawn(async move {
            let _obj = p.acquire().await.unwrap();
            panic!("holder panics");
        })
        .await;
        assert!(res.unwrap_err().is_panic());
        let st = pool.stats();
        assert_eq!((st.size, st.idle, st.in_use), (1, 1, 0));
        let obj = pool.acquire().await.unwrap();
        assert_eq!(*obj, 0);
        assert_eq!(pool.stats().created, 1);
    })
    .await;
}

#[tokio::test]
async fn object_returns_when_future_is_cancelled() {
    bounded(async {
        let pool = pool(1);
        let res = tokio::time::timeout(Duration::from_millis(20), async {
            let _obj = pool.acquire().await.unwrap();
            tokio::time::sleep(Duration::from_secs(3600)).await;
        })
        .await;
        assert!(res.is_err());
        assert_eq!(pool.stats().idle, 1);
        assert_eq!(pool.stats().in_use, 0);
        let _obj = pool.acquire().await.unwrap();
        assert_eq!(pool.stats().created, 1);
    })
    .await;
}

#[tokio::test]
async fn exhausted_pool_times_out() {
    bounded(async {
        let pool = pool(1);
        let _held = pool.acquire().await.unwrap();
        let timeout = Duration::from_millis(50);
        match pool.acquire_within(timeout).await {
            Err(Error::Timeout { waited, max }) => {
                assert!(waited >= timeout, "waited {waited:?}");
                assert_eq!(max, 1);
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(pool.stats().timeouts, 1);
        assert_eq!(pool.stats().waiting, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_is_woken_on_release() {
    bounded(async {
        let pool = pool(1);
        let held = pool.acquire().await.unwrap();
        let p = pool.clone();
        let waiter = tokio::spawn(async move { *p.acquire().await.unwrap() });
        while pool.stats().waiting == 0 {
            tokio::task::yield_now().await;
        }
        drop(held);
        assert_eq!(waiter.await.unwrap(), 0);
        assert_eq!(pool.stats().created, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_waiters_do_not_lose_capacity() {
    bounded(async {
        let pool = pool(4);
        let held: Vec<_> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(pool.acquire().await.unwrap());
            }
            v
        };
        let waiters: Vec<_> = (0..100)
            .map(|_| {
                let p = pool.clone();
                tokio::spawn(async move { p.acquire().await.map(|_| ()) })
            })
            .collect();
        while pool.stats().waiting < 100 {
            tokio::task::yield_now().await;
        }
        // Release while the cancellations race with the hand-over.
        drop(held);
        for w in &waiters {
            w.abort();
        }
        for w in waiters {
            let _ = w.await;
        }
        assert_eq!(pool.stats().waiting, 0);
        let again: Vec<_> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(pool.acquire().await.unwrap());
            }
            v
        };
        assert_eq!(pool.stats().in_use, 4);
        drop(again);
        assert_eq!(pool.stats().idle, pool.stats().size);
    })
    .await;
}

#[tokio::test]
async fn cancelled_waiters_by_timeout_keep_capacity() {
    bounded(async {
        let pool = pool(2);
        let a = pool.acquire().await.unwrap();
        let b = pool.acquire().await.unwrap();
        for _ in 0..100 {
            let r = tokio::time::timeout(Duration::from_millis(1), pool.acquire()).await;
            assert!(r.is_err());
        }
        assert_eq!(pool.stats().waiting, 0);
        drop((a, b));
        let _a = pool.acquire().await.unwrap();
        let _b = pool.acquire().await.unwrap();
        assert_eq!(pool.stats().created, 2);
    })
    .await;
}

#[tokio::test]
async fn detach_frees_the_slot() {
    bounded(async {
        let pool = pool(1);
        let obj = pool.acquire().await.unwrap();
        let raw = cortex_pool::Object::detach(obj);
        assert_eq!(raw, 0);
        assert_eq!(pool.stats().size, 0);
        let obj = pool.acquire().await.unwrap();
        assert_eq!(*obj, 1);
        let s = pool.stats();
        assert_eq!((s.created, s.detached, s.closed), (2, 1, 1));
    })
    .await;
}

#[tokio::test]
async fn recycle_failure_drops_and_replaces() {
    bounded(async {
        let pool = pool(1);
        drop(pool.acquire().await.unwrap());
        pool.manager().fail_recycle.store(true, SeqCst);
        let obj = pool.acquire().await.unwrap();
        assert_eq!(*obj, 1);
        let s = pool.stats();
        assert_eq!(
            (s.created, s.recycle_failed, s.closed, s.size),
            (2, 1, 1, 1)
        );
    })
    .await;
}

#[tokio::test]
async fn invalid_object_is_dropped_and_replaced() {
    bounded(async {
        let pool = pool(1);
        drop(pool.acquire().await.unwrap());
        pool.manager().invalid.store(true, SeqCst);
        let obj = pool.acquire().await.unwrap();
        assert_eq!(*obj, 1);
        let s = pool.stats();
        assert_eq!((s.created, s.invalid, s.closed, s.size), (2, 1, 1, 1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_wakes_waiters() {
    bounded(async {
        let pool = pool(1);
        let held = pool.acquire().await.unwrap();
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let p = pool.clone();
                tokio::spawn(async move { p.acquire().await.map(|_| ()) })
            })
            .collect();
        while pool.stats().waiting < 8 {
            tokio::task::yield_now().await;
        }
        pool.close();
        for w in waiters {
            assert!(matches!(w.await.unwrap(), Err(Error::Closed)));
        }
        assert!(matches!(pool.acquire().await, Err(Error::Closed)));
        drop(held);
        let st = pool.stats();
        assert_eq!((st.size, st.idle, st.in_use), (0, 0, 0));
    })
    .await;
}

#[tokio::test]
async fn max_used_is_the_high_water_mark() {
    bounded(async {
        let pool = pool(8);
        let held: Vec<_> = {
            let mut v = Vec::new();
            for _ in 0..5 {
                v.push(pool.acquire().await.unwrap());
            }
            v
        };
        drop(held);
        let _one = pool.acquire().await.unwrap();
        let s = pool.stats();
        assert_eq!((s.max_used, s.in_use, s.created, s.reused), (5, 1, 5, 1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_never_exceed_max_size() {
    bounded(async {
        let pool = pool(4);
        let holding = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (pool, holding, peak) = (pool.clone(), holding.clone(), peak.clone());
                tokio::spawn(async move {
                    for i in 0..1000 {
                        let _obj = pool.acquire().await.unwrap();
                        let now = holding.fetch_add(1, SeqCst) + 1;
                        peak.fetch_max(now, SeqCst);
                        if i % 7 == 0 {
                            tokio::task::yield_now().await;
                        }
                        holding.fetch_sub(1, SeqCst);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(peak.load(SeqCst) <= 4);
        let s = pool.stats();
        assert!(s.created <= 4 && s.max_used <= 4);
        assert_eq!(s.created + s.reused, 64_000);
        assert_eq!((s.in_use, s.waiting), (0, 0));
        assert_eq!(s.size, s.idle);
        assert_eq!(s.size as u64, s.created);
    })
    .await;
}

#[tokio::test]
async fn create_error_does_not_leak_capacity() {
    bounded(async {
        let pool = pool(2);
        pool.manager().fail_create.store(true, SeqCst);
        for _ in 0..10 {
            assert!(matches!(pool.acquire().await, Err(Error::Backend { .. })));
        }
        let st = pool.stats();
        assert_eq!((st.size, st.in_use), (0, 0));
        pool.manager().fail_create.store(false, SeqCst);
        let _a = pool.acquire().await.unwrap();
        let _b = pool.acquire().await.unwrap();
        assert_eq!(pool.stats().created, 2);
    })
    .await;
}

#[test]
fn sync_pool_reuses_and_caps_idle() {
    let resets = Arc::new(AtomicUsize::new(0));
    let r = resets.clone();
    let pool = SyncPool::new(
        2,
        || Vec::<u8>::with_capacity(64),
        move |v: &mut Vec<u8>| {
            r.fetch_add(1, SeqCst);
            v.clear();
        },
    );
    let mut a = pool.acquire();
    a.push(1);
    drop(a);
    let b = pool.acquire();
    assert!(b.is_empty());
    assert_eq!((pool.stats().created, pool.stats().reused), (1, 1));
    let held: Vec<_> = (0..5).map(|_| pool.acquire()).collect();
    drop(b);
    drop(held);
    let s = pool.stats();
    assert_eq!((s.created, s.reused, s.idle, s.max_idle), (6, 1, 2, 2));
    assert!(resets.load(SeqCst) >= 2);
}

#[tokio::test]
async fn a_shorter_timeout_queued_behind_a_longer_one_still_fires() {
    let pool = pool(1);
    let held = pool.acquire().await.unwrap();
    // A long waiter first: the pool's sweeper plans to wake at its (late) deadline.
    let long = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.acquire_within(Duration::from_secs(60))
                .await
                .map(|_| ())
        })
    };
    tokio::task::yield_now().await;
    // A short waiter behind it must time out on its own deadline, not the long one's.
    let short = bounded(pool.acquire_within(Duration::from_millis(100))).await;
    assert!(
        matches!(short, Err(Error::Timeout { max: 1, .. })),
        "{short:?}"
    );
    assert_eq!(pool.stats().timeouts, 1);
    // The long waiter is still queued and gets the object when it comes back.
    drop(held);
    bounded(long).await.unwrap().unwrap();
    assert_eq!(pool.stats().waiting, 0);
}

/// Objects that count how many of them are alive.
struct Live(Arc<AtomicUsize>);

struct Alive(Arc<AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

impl Manager for Live {
    type Object = Alive;
    type Error = std::io::Error;

    async fn create(&self) -> Result<Alive, std::io::Error> {
        self.0.fetch_add(1, SeqCst);
        Ok(Alive(self.0.clone()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_dropped_after_a_wait_frees_its_objects_at_once() {
    bounded(async {
        let live = Arc::new(AtomicUsize::new(0));
        let pool = Pool::builder(Live(live.clone()))
            .max_size(1)
            .acquire_timeout(Duration::from_secs(3600))
            .build()
            .unwrap();
        let held = pool.acquire().await.unwrap();
        // A waiter starts the pool's sweeper, which sleeps until that waiter's (far)
        // deadline; the waiter is then served, leaving the sweeper asleep.
        let p = pool.clone();
        let waiter = tokio::spawn(async move { p.acquire().await.map(drop) });
        while pool.stats().waiting == 0 {
            tokio::task::yield_now().await;
        }
        drop(held);
        waiter.await.unwrap().unwrap();
        assert_eq!(live.load(SeqCst), 1, "the object waits idle in the pool");
        // Dropping the last handle drops the pool and its idle object now, not when
        // the sleeping sweeper wakes an hour later.
        drop(pool);
        assert_eq!(
            live.load(SeqCst),
            0,
            "the dropped pool still holds its object"
        );
    })
    .await;
}
