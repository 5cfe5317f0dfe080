//! `batch/lookup_100k`: 100 000 keyed lookups (1 000 tasks x 100 sequential loads)
//! through cortex-batch, async-graphql's `DataLoader` and direct per-key calls, against
//! one loader costing a yield plus ~20 µs of spinning per call (a stand-in for a round
//! trip). `batch/overhead_100k`: the same shape with a free loader on one thread, timed
//! by the thread's CPU time, ours against direct calls, to estimate our own cost per
//! request. `batch/latency_bound`:
//! 256 concurrent callers, each doing sequential lookups of distinct keys, against a
//! backend whose every call sleeps 1 ms (a round trip that waits rather than works),
//! through cortex-batch, `DataLoader` and direct calls; the backend calls each made
//! are printed once per contender, after the group.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use async_graphql::dataloader::{DataLoader, Loader};
use cortex_core::batch::{BatchFn, Batcher, Loaded};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::task::JoinSet;

const TASKS: u64 = 1_000;
const PER_TASK: u64 = 100;
const BATCH: usize = 50;
const WAIT: Duration = Duration::from_millis(1); // DataLoader's default delay

/// The one loader every contender calls: a fixed cost per call, values by key.
#[derive(Clone, Copy)]
struct RoundTrip {
    cost: Duration,
}

impl RoundTrip {
    async fn fetch(&self, keys: &[u64]) -> HashMap<u64, u64> {
        if !self.cost.is_zero() {
            tokio::task::yield_now().await;
            let start = Instant::now();
            while start.elapsed() < self.cost {
                std::hint::spin_loop();
            }
        }
        keys.iter().map(|&k| (k, k * 2)).collect()
    }
}

impl BatchFn for RoundTrip {
    type Key = u64;
    type Value = u64;
    type Error = Infallible;

    async fn load(&self, keys: &[u64]) -> Result<Loaded<u64, u64>, Infallible> {
        Ok(Loaded::ByKey(self.fetch(keys).await))
    }
}

impl Loader<u64> for RoundTrip {
    type Value = u64;
    type Error = Infallible;

    async fn load(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, Infallible> {
        Ok(self.fetch(keys).await)
    }
}

/// A loader that costs nothing: answers in order, so the direct call is just `k * 2`.
#[derive(Clone, Copy)]
struct Free;

impl BatchFn for Free {
    type Key = u64;
    type Value = u64;
    type Error = Infallible;

    async fn load(&self, keys: &[u64]) -> Result<Loaded<u64, u64>, Infallible> {
        Ok(Loaded::InOrder(keys.iter().map(|k| k * 2).collect()))
    }
}

/// One way to look a key up. Each task owns a clone and borrows it for every lookup,
/// so no contender pays a reference count per lookup that the others do not.
trait Lookup: Clone + Send + Sync + 'static {
    fn get(&self, k: u64) -> impl Future<Output = u64> + Send;
}

/// Through our batcher.
struct Ours<F: BatchFn>(Batcher<F>);

impl<F: BatchFn> Clone for Ours<F> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<F: BatchFn<Key = u64, Value = u64>> Lookup for Ours<F> {
    async fn get(&self, k: u64) -> u64 {
        self.0.load(k).await.expect("value")
    }
}

/// Through async-graphql's `DataLoader`.
struct Dl<L: Loader<u64>>(Arc<DataLoader<L>>);

impl<L: Loader<u64>> Clone for Dl<L> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<L: Loader<u64, Value = u64, Error = Infallible>> Lookup for Dl<L> {
    async fn get(&self, k: u64) -> u64 {
        self.0.load_one(k).await.expect("ok").expect("value")
    }
}

/// A direct call of the loader for one key.
#[derive(Clone)]
struct Direct<T>(T);

impl Lookup for Direct<RoundTrip> {
    async fn get(&self, k: u64) -> u64 {
        self.0.fetch(&[k]).await[&k]
    }
}

impl Lookup for Direct<Free> {
    async fn get(&self, k: u64) -> u64 {
        black_box(k) * 2
    }
}

impl Lookup for Direct<Sleepy> {
    async fn get(&self, k: u64) -> u64 {
        self.0.fetch(&[k]).await[0]
    }
}

/// 1 000 tasks x 100 sequential lookups of distinct keys through `lookup`.
async fn drive<L: Lookup>(lookup: L) {
    let mut set = JoinSet::new();
    for t in 0..TASKS {
        let lookup = lookup.clone();
        set.spawn(async move {
            for i in 0..PER_TASK {
                let k = t * PER_TASK + i;
                assert_eq!(black_box(lookup.get(k).await), k * 2);
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("task");
    }
}

fn ours<F: BatchFn>(loader: F) -> Batcher<F> {
    Batcher::builder(loader)
        .max_batch_size(BATCH)
        .max_wait(WAIT)
        .build()
        .expect("valid config")
}

fn lookup_100k(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let loader = RoundTrip {
        cost: Duration::from_micros(20),
    };
    let mut g = c.benchmark_group("batch/lookup_100k");
    g.throughput(Throughput::Elements(TASKS * PER_TASK));
    g.sample_size(10);
    g.bench_function("cortex_batch", |b| {
        b.to_async(&rt).iter(|| drive(Ours(ours(loader))));
    });
    g.bench_function("async_graphql_dataloader", |b| {
        b.to_async(&rt).iter(|| {
            drive(Dl(Arc::new(
                DataLoader::new(loader, tokio::spawn)
                    .max_batch_size(BATCH)
                    .delay(WAIT),
            )))
        });
    });
    g.bench_function("direct", |b| {
        b.to_async(&rt).iter(|| drive(Direct(loader)));
    });
    g.finish();
}

/// This thread's time on a CPU so far (`/proc/thread-self/schedstat`), or `None`
/// where the file is missing.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// `iters` runs of `f` on the current-thread runtime `rt` (every task runs on this
/// thread), timed by this thread's CPU time, or wall time where that is unavailable.
/// On a shared machine the time other processes take from the core is not ours.
fn cpu_timed<Fut: Future>(
    rt: &tokio::runtime::Runtime,
    iters: u64,
    mut f: impl FnMut() -> Fut,
) -> Duration {
    let (cpu, wall) = (thread_cpu(), Instant::now());
    for _ in 0..iters {
        rt.block_on(f());
    }
    match (cpu, thread_cpu()) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => wall.elapsed(),
    }
}

fn overhead_100k(c: &mut Criterion) {
    // One thread, timed by its CPU time, so the difference is our cost per request.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("batch/overhead_100k");
    g.throughput(Throughput::Elements(TASKS * PER_TASK));
    g.sample_size(10);
    g.bench_function("cortex_batch", |b| {
        b.iter_custom(|iters| cpu_timed(&rt, iters, || drive(Ours(ours(Free)))));
    });
    g.bench_function("direct", |b| {
        b.iter_custom(|iters| cpu_timed(&rt, iters, || drive(Direct(Free))));
    });
    g.finish();
}

const CALLERS: u64 = 256;
const PER_CALLER: u64 = 40;

/// A backend bound by latency: every call sleeps 1 ms, however many keys it carries,
/// and is counted, as are the keys asked for.
#[derive(Clone, Default)]
struct Sleepy {
    calls: Arc<AtomicU64>,
    keys: Arc<AtomicU64>,
}

impl Sleepy {
    async fn fetch(&self, keys: &[u64]) -> Vec<u64> {
        self.calls.fetch_add(1, Relaxed);
        self.keys.fetch_add(keys.len() as u64, Relaxed);
        tokio::time::sleep(Duration::from_millis(1)).await;
        keys.iter().map(|&k| k * 2).collect()
    }

    /// `(calls, keys)` so far.
    fn counts(&self) -> (u64, u64) {
        (self.calls.load(Relaxed), self.keys.load(Relaxed))
    }
}

impl BatchFn for Sleepy {
    type Key = u64;
    type Value = u64;
    type Error = Infallible;

    async fn load(&self, keys: &[u64]) -> Result<Loaded<u64, u64>, Infallible> {
        Ok(Loaded::InOrder(self.fetch(keys).await))
    }
}

impl Loader<u64> for Sleepy {
    type Value = u64;
    type Error = Infallible;

    async fn load(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, Infallible> {
        let values = self.fetch(keys).await;
        Ok(keys.iter().copied().zip(values).collect())
    }
}

/// `CALLERS` concurrent callers x `PER_CALLER` sequential lookups of distinct keys.
async fn callers<L: Lookup>(lookup: L) {
    let mut set = JoinSet::new();
    for c in 0..CALLERS {
        let lookup = lookup.clone();
        set.spawn(async move {
            for i in 0..PER_CALLER {
                let k = c * PER_CALLER + i;
                assert_eq!(black_box(lookup.get(k).await), k * 2);
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("caller");
    }
}

fn latency_bound(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // One backend per contender, so each one's counts are its own.
    let (ours_be, dl_be, direct_be) = (Sleepy::default(), Sleepy::default(), Sleepy::default());
    let mut g = c.benchmark_group("batch/latency_bound");
    g.throughput(Throughput::Elements(CALLERS * PER_CALLER));
    g.sample_size(10);
    g.bench_function("cortex_batch", |b| {
        // Defaults but for the size and wait the batchers share.
        b.to_async(&rt)
            .iter(|| callers(Ours(ours(ours_be.clone()))));
    });
    g.bench_function("async_graphql_dataloader", |b| {
        b.to_async(&rt).iter(|| {
            callers(Dl(Arc::new(
                DataLoader::new(dl_be.clone(), tokio::spawn)
                    .max_batch_size(BATCH)
                    .delay(WAIT),
            )))
        });
    });
    g.bench_function("direct", |b| {
        b.to_async(&rt).iter(|| callers(Direct(direct_be.clone())));
    });
    g.finish();
    // Outside the timed loop: backend calls per 1 000 lookups, over every iteration
    // criterion ran (warm-up included), so the three are comparable whatever their
    // iteration counts.
    for (name, be) in [
        ("cortex_batch", &ours_be),
        ("async_graphql_dataloader", &dl_be),
        ("direct", &direct_be),
    ] {
        let (calls, keys) = be.counts();
        if keys == 0 {
            continue; // filtered out of this run
        }
        println!(
            "batch/latency_bound/{name}: {calls} backend calls for {keys} lookups, {:.1} per 1000",
            calls as f64 * 1000.0 / keys.max(1) as f64
        );
    }
}

criterion_group!(benches, lookup_100k, overhead_100k, latency_bound);
criterion_main!(benches);
