//! The cost of recording one value into a histogram: ours, the `metrics` crate's histogram
//! behind its Prometheus recorder (handle and macro paths), and raw `hdrhistogram` behind
//! a `Mutex`, on one thread and with two threads recording into the same histogram.
//!
//! Run: `cargo bench --bench metrics_record`. Each group reports time per record per
//! thread, so "2 threads" shows what contention costs.

use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cortex_core::metrics::{Histogram, Metrics};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Latency-like values (1 µs .. 10 ms in ns), precomputed so every contender records the
/// same sequence and no generator sits in the timed loop.
fn values() -> &'static [u64; 1024] {
    static V: OnceLock<[u64; 1024]> = OnceLock::new();
    V.get_or_init(|| {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        std::array::from_fn(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1_000 + x % 10_000_000
        })
    })
}

/// The `metrics` crate's recorder, installed once (as a service would).
fn prometheus() -> &'static PrometheusHandle {
    static H: OnceLock<PrometheusHandle> = OnceLock::new();
    H.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).expect("no other recorder is installed");
        handle
    })
}

/// One contender: how it records value `v`.
type Record = Arc<dyn Fn(u64) + Send + Sync>;

fn contenders() -> Vec<(&'static str, Record)> {
    let ours = Arc::new(Histogram::new());
    let registry = Metrics::new();
    let op = registry.operation("bench.op");
    let handle = {
        prometheus();
        metrics::histogram!("bench_handle")
    };
    let hdr = Arc::new(Mutex::new(
        hdrhistogram::Histogram::<u64>::new(3).expect("3 significant figures are valid"),
    ));
    vec![
        ("cortex Histogram::record", {
            let h = ours.clone();
            Arc::new(move |v: u64| h.record(v)) as Record
        }),
        ("cortex Operation::record", {
            Arc::new(move |v: u64| op.record(Duration::from_nanos(v), true)) as Record
        }),
        ("cortex Metrics::record (by name)", {
            Arc::new(move |v: u64| registry.record("bench.op", Duration::from_nanos(v), true))
                as Record
        }),
        ("metrics handle", {
            Arc::new(move |v: u64| handle.record(v as f64)) as Record
        }),
        ("metrics macro", {
            Arc::new(|v: u64| metrics::histogram!("bench_macro").record(v as f64)) as Record
        }),
        ("hdrhistogram Mutex", {
            Arc::new(move |v: u64| {
                let mut h = hdr
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                // Values are within the histogram's auto-resizing range: record cannot fail.
                let _ = h.record(v);
            }) as Record
        }),
    ]
}

/// Time `iters` records on each of `threads` threads started together; the slowest
/// thread's time is the sample (time per record per thread).
fn run(record: &Record, threads: usize, iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let record = record.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let vals = values();
                barrier.wait();
                let start = Instant::now();
                for i in 0..iters {
                    record(black_box(vals[(i as usize + t * 512) & 1023]));
                }
                start.elapsed()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("bench thread panicked"))
        .max()
        .unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    for threads in [1usize, 2] {
        let mut group = c.benchmark_group(format!("record_one_value/{threads}_thread"));
        group
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(20);
        for (name, record) in contenders() {
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter_custom(|iters| {
                    let took = run(&record, threads, iters);
                    // The `metrics` recorder buffers raw values until a scrape: drain it
                    // outside the timed region so memory stays bounded, as scrapes do.
                    prometheus().run_upkeep();
                    took
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
