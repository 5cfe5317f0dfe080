//! In-memory get-or-insert on a Zipf(1.0) trace: ours vs moka (sync and future) vs
//! quick_cache, one criterion group per thread count.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cortex_core::cache::S3FifoCache;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const KEYS: usize = 100_000;
const CAPACITY: usize = 10_000;
const TRACE_LEN: usize = 1 << 21;
/// Operations per thread per criterion iteration.
const CHUNK: usize = 1024;

/// A Zipf(1.0) trace over `KEYS` keys: inverse CDF by binary search, SplitMix64 driven,
/// fixed seed so every contender sees the same keys.
fn zipf_trace() -> Vec<u64> {
    let mut cdf = Vec::with_capacity(KEYS);
    let mut acc = 0.0;
    for rank in 1..=KEYS {
        acc += 1.0 / rank as f64;
        cdf.push(acc);
    }
    let mut state = 0x5EED_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    (0..TRACE_LEN)
        .map(|_| {
            let u = (next() >> 11) as f64 / (1u64 << 53) as f64 * acc;
            // Scramble ranks so hot keys are not small consecutive integers.
            let rank = cdf.partition_point(|&c| c < u) as u64;
            rank.wrapping_mul(0x2545_F491_4F6C_DD1D)
        })
        .collect()
}

trait Contender: Sync {
    /// Get; on miss insert. True on a hit.
    fn op(&self, key: u64) -> bool;
}

impl Contender for S3FifoCache<u64, u64> {
    #[inline]
    fn op(&self, key: u64) -> bool {
        if self.get(&key).is_some() {
            return true;
        }
        self.insert(key, key);
        false
    }
}

impl Contender for quick_cache::sync::Cache<u64, u64> {
    #[inline]
    fn op(&self, key: u64) -> bool {
        if self.get(&key).is_some() {
            return true;
        }
        self.insert(key, key);
        false
    }
}

impl Contender for moka::sync::Cache<u64, u64> {
    #[inline]
    fn op(&self, key: u64) -> bool {
        if self.get(&key).is_some() {
            return true;
        }
        self.insert(key, key);
        false
    }
}

async fn moka_future_op(cache: &moka::future::Cache<u64, u64>, key: u64) -> bool {
    if cache.get(&key).await.is_some() {
        return true;
    }
    cache.insert(key, key).await;
    false
}

fn ours() -> S3FifoCache<u64, u64> {
    // `SHARDS=n` overrides the default shard count, to study contention.
    match std::env::var("SHARDS").ok().and_then(|v| v.parse().ok()) {
        Some(n) => S3FifoCache::builder().capacity(CAPACITY).shards(n).build(),
        None => S3FifoCache::new(CAPACITY),
    }
    .expect("capacity > 0")
}
fn quick() -> quick_cache::sync::Cache<u64, u64> {
    quick_cache::sync::Cache::new(CAPACITY)
}
fn moka_sync() -> moka::sync::Cache<u64, u64> {
    moka::sync::Cache::new(CAPACITY as u64)
}
fn moka_future() -> moka::future::Cache<u64, u64> {
    moka::future::Cache::new(CAPACITY as u64)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

/// Hit ratio over the whole trace after one warm-up pass, single-threaded.
fn hit_ratios(trace: &[u64]) {
    let ratio = |op: &dyn Fn(u64) -> bool| {
        trace.iter().for_each(|&k| {
            op(k);
        });
        let hits = trace.iter().filter(|&&k| op(k)).count();
        hits as f64 / trace.len() as f64
    };
    let c = ours();
    eprintln!("hit ratio ours (S3-FIFO)    {:.4}", ratio(&|k| c.op(k)));
    let c = quick();
    eprintln!("hit ratio quick_cache::sync {:.4}", ratio(&|k| c.op(k)));
    let c = moka_sync();
    eprintln!("hit ratio moka::sync        {:.4}", ratio(&|k| c.op(k)));
    let c = moka_future();
    let rt = rt();
    eprintln!(
        "hit ratio moka::future      {:.4}",
        ratio(&|k| rt.block_on(moka_future_op(&c, k)))
    );
}

/// Run `iters * CHUNK` ops on each of `threads` threads, each walking its own part of
/// the trace from a shared cursor; returns the slowest thread's time.
fn run_threads(
    threads: usize,
    iters: u64,
    cursor: &AtomicUsize,
    trace: &[u64],
    work: &(dyn Fn(&[u64], usize, usize) + Sync),
) -> Duration {
    let n = iters as usize * CHUNK;
    let start = cursor.fetch_add(n, Relaxed);
    // All threads start the clock together, so the measured window is truly concurrent.
    let barrier = std::sync::Barrier::new(threads);
    let barrier = &barrier;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let from = start + t * (TRACE_LEN / threads);
                s.spawn(move || {
                    barrier.wait();
                    let t0 = Instant::now();
                    work(trace, from, n);
                    t0.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .max()
            .unwrap_or_default()
    })
}

fn walk(c: &dyn Contender, trace: &[u64], from: usize, n: usize) {
    let mask = TRACE_LEN - 1;
    for i in from..from + n {
        black_box(c.op(trace[i & mask]));
    }
}

fn bench(c: &mut Criterion) {
    let trace = zipf_trace();
    hit_ratios(&trace);
    let trace = &trace[..];
    for threads in [1usize, 2] {
        let mut g = c.benchmark_group(format!("get_or_insert_zipf1.0/{threads}t"));
        g.throughput(Throughput::Elements((CHUNK * threads) as u64));

        let cache = ours();
        walk(&cache, trace, 0, TRACE_LEN);
        let cursor = AtomicUsize::new(0);
        g.bench_function("cortex S3FifoCache", |b| {
            b.iter_custom(|iters| {
                run_threads(threads, iters, &cursor, trace, &|t, f, n| {
                    walk(&cache, t, f, n)
                })
            })
        });

        let cache = quick();
        walk(&cache, trace, 0, TRACE_LEN);
        g.bench_function("quick_cache::sync", |b| {
            b.iter_custom(|iters| {
                run_threads(threads, iters, &cursor, trace, &|t, f, n| {
                    walk(&cache, t, f, n)
                })
            })
        });

        let cache = moka_sync();
        walk(&cache, trace, 0, TRACE_LEN);
        g.bench_function("moka::sync", |b| {
            b.iter_custom(|iters| {
                run_threads(threads, iters, &cursor, trace, &|t, f, n| {
                    walk(&cache, t, f, n)
                })
            })
        });

        let cache = moka_future();
        rt().block_on(async {
            for &k in trace {
                moka_future_op(&cache, k).await;
            }
        });
        g.bench_function("moka::future", |b| {
            b.iter_custom(|iters| {
                run_threads(threads, iters, &cursor, trace, &|t, from, n| {
                    let mask = TRACE_LEN - 1;
                    rt().block_on(async {
                        for i in from..from + n {
                            black_box(moka_future_op(&cache, t[i & mask]).await);
                        }
                    })
                })
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
