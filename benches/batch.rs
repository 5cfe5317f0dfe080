//! `batch/lookup_100k`: 100 000 keyed lookups (1 000 tasks x 100 sequential loads)
//! through cortex-batch, async-graphql's `DataLoader` and direct per-key calls, against
//! one loader costing a yield plus ~20 µs of spinning per call (a stand-in for a round
//! trip). `batch/overhead_100k`: the same shape with a free loader on one thread, ours
//! against direct calls, to estimate our own cost per request.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
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

/// 1 000 tasks x 100 sequential lookups of distinct keys through `lookup`.
async fn drive<L, Fut>(lookup: L)
where
    L: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = u64> + Send,
{
    let mut set = JoinSet::new();
    for t in 0..TASKS {
        let lookup = lookup.clone();
        set.spawn(async move {
            for i in 0..PER_TASK {
                let k = t * PER_TASK + i;
                assert_eq!(black_box(lookup(k).await), k * 2);
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
        b.to_async(&rt).iter(|| {
            let batcher = Arc::new(ours(loader));
            drive(move |k| {
                let batcher = Arc::clone(&batcher);
                async move { batcher.load(k).await.expect("value") }
            })
        });
    });
    g.bench_function("async_graphql_dataloader", |b| {
        b.to_async(&rt).iter(|| {
            let dl = Arc::new(
                DataLoader::new(loader, tokio::spawn)
                    .max_batch_size(BATCH)
                    .delay(WAIT),
            );
            drive(move |k| {
                let dl = Arc::clone(&dl);
                async move { dl.load_one(k).await.expect("ok").expect("value") }
            })
        });
    });
    g.bench_function("direct", |b| {
        b.to_async(&rt)
            .iter(|| drive(move |k| async move { loader.fetch(&[k]).await[&k] }));
    });
    g.finish();
}

fn overhead_100k(c: &mut Criterion) {
    // One thread, so wall time is CPU time and the difference is our cost per request.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("batch/overhead_100k");
    g.throughput(Throughput::Elements(TASKS * PER_TASK));
    g.sample_size(10);
    g.bench_function("cortex_batch", |b| {
        b.to_async(&rt).iter(|| {
            let batcher = Arc::new(ours(Free));
            drive(move |k| {
                let batcher = Arc::clone(&batcher);
                async move { batcher.load(k).await.expect("value") }
            })
        });
    });
    g.bench_function("direct", |b| {
        b.to_async(&rt)
            .iter(|| drive(move |k| async move { black_box(k) * 2 }));
    });
    g.finish();
}

criterion_group!(benches, lookup_100k, overhead_100k);
criterion_main!(benches);
