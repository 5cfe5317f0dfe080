//! The cost of recording one value into a histogram: ours, the `metrics` crate's histogram
//! behind its Prometheus recorder (handle and macro paths), raw `hdrhistogram` behind a
//! `Mutex`, and `hdrhistogram::sync` (one `Recorder` per thread, merged by `refresh`), on
//! one thread and with two threads recording into the same logical histogram.
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

/// How one thread records value `v` into a contender.
type Record = Box<dyn FnMut(u64) + Send>;

/// One contender: `make` gives each thread its recorder (outside the timed region), and
/// `publish` is what its users must do after recording before a reader sees the values
/// (timed; nothing for most).
struct Contender {
    name: &'static str,
    make: Box<dyn Fn() -> Record + Send + Sync>,
    publish: Option<Box<dyn Fn() + Send + Sync>>,
}

fn shared(name: &'static str, record: impl Fn(u64) + Send + Sync + 'static) -> Contender {
    let record = Arc::new(record);
    Contender {
        name,
        make: Box::new(move || {
            let record = record.clone();
            Box::new(move |v: u64| record(v)) as Record
        }),
        publish: None,
    }
}

fn contenders() -> Vec<Contender> {
    let ours = Histogram::new();
    let registry = Metrics::new();
    let op = registry.operation("bench.op");
    let handle = {
        prometheus();
        metrics::histogram!("bench_handle")
    };
    let hdr = Mutex::new(
        hdrhistogram::Histogram::<u64>::new(3).expect("3 significant figures are valid"),
    );
    // hdrhistogram's concurrent recorder: each thread records into a `Recorder` of its
    // own; its values reach the `SyncHistogram` when the reader calls `refresh` (every
    // recorder hands over its local histogram at its next record, or when dropped).
    let sync = Arc::new(Mutex::new(
        hdrhistogram::Histogram::<u64>::new(3)
            .expect("3 significant figures are valid")
            .into_sync(),
    ));
    let refresh = sync.clone();
    vec![
        shared("cortex Histogram::record", move |v| ours.record(v)),
        shared("cortex Operation::record", move |v| {
            op.record(Duration::from_nanos(v), true)
        }),
        shared("cortex Metrics::record (by name)", move |v| {
            registry.record("bench.op", Duration::from_nanos(v), true)
        }),
        shared("metrics handle", move |v| handle.record(v as f64)),
        shared("metrics macro", |v| {
            metrics::histogram!("bench_macro").record(v as f64)
        }),
        shared("hdrhistogram Mutex", move |v| {
            let mut h = hdr
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Values are within the histogram's auto-resizing range: record cannot fail.
            let _ = h.record(v);
        }),
        Contender {
            name: "hdrhistogram::sync Recorder",
            make: Box::new(move || {
                let mut recorder = sync
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .recorder();
                // Auto-resizing: record cannot fail.
                Box::new(move |v: u64| {
                    let _ = recorder.record(v);
                }) as Record
            }),
            publish: Some(Box::new(move || {
                // The recorders are dropped by now (their histograms are in the channel):
                // this merges them and does not wait.
                refresh
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .refresh_timeout(Duration::from_secs(1));
            })),
        },
    ]
}

/// Time `iters` records on each of `threads` threads started together; the slowest
/// thread's time, plus the contender's `publish`, is the sample (time per record per
/// thread). Each thread makes its recorder itself, so a per-thread recorder sits in
/// that thread's memory and not beside another thread's (which would put two threads'
/// counters on one cache line), and drops it inside its timed region (for
/// hdrhistogram::sync that hands its local histogram over).
fn run(contender: &Contender, threads: usize, iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(threads));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = barrier.clone();
                s.spawn(move || {
                    let mut record = (contender.make)();
                    let vals = values();
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        record(black_box(vals[(i as usize + t * 512) & 1023]));
                    }
                    drop(record);
                    start.elapsed()
                })
            })
            .collect();
        let slowest = handles
            .into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .max()
            .unwrap_or_default();
        let start = Instant::now();
        if let Some(publish) = &contender.publish {
            publish();
        }
        slowest + start.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    for threads in [1usize, 2] {
        let mut group = c.benchmark_group(format!("record_one_value/{threads}_thread"));
        group
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(20);
        for contender in contenders() {
            group.bench_function(BenchmarkId::from_parameter(contender.name), |b| {
                b.iter_custom(|iters| {
                    let took = run(&contender, threads, iters);
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
