//! The cost of one histogram record through the `metrics` facade: into a cortex
//! [`Metrics`] registry ([`MetricsRecorder`]) and into metrics-exporter-prometheus's
//! recorder, each by a kept handle and by the `histogram!` macro (a registration lookup
//! per record), beside a bare cortex [`Histogram`] and `hdrhistogram`'s `SyncHistogram`
//! recorder; one thread, then two threads recording into the same histogram at once
//! (the time per record per thread: the slower thread's wall time / records).
//!
//! Run: `cargo bench -p cortex-metrics --features recorder --bench recorder`.

use std::hint::black_box;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use cortex_metrics::{Histogram, Metrics, MetricsRecorder};
use criterion::{Criterion, criterion_group, criterion_main};
use metrics_exporter_prometheus::PrometheusBuilder;

/// Latency-like values (1 µs .. 10 ms in ns), so no generator sits in the timed loop.
fn values() -> Vec<u64> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1_000 + x % 10_000_000
        })
        .collect()
}

fn record(c: &mut Criterion) {
    let ns = values();
    let secs: Vec<f64> = ns.iter().map(|v| *v as f64 / 1e9).collect();
    let mut g = c.benchmark_group("histogram record via metrics facade");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);

    let bare = Histogram::new();
    let mut i = 0usize;
    g.bench_function("cortex Histogram::record (no facade)", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            bare.record(black_box(ns[i]));
        })
    });

    let ours = MetricsRecorder::new(Metrics::new());
    let theirs = PrometheusBuilder::new().build_recorder();
    for (name, recorder) in [
        ("cortex MetricsRecorder", &ours as &dyn metrics::Recorder),
        (
            "metrics-exporter-prometheus",
            &theirs as &dyn metrics::Recorder,
        ),
    ] {
        metrics::with_local_recorder(recorder, || {
            let handle = metrics::histogram!("bench_handle_seconds");
            g.bench_function(format!("{name}: handle"), |b| {
                b.iter(|| {
                    i = (i + 1) & 1023;
                    handle.record(black_box(secs[i]));
                })
            });
            g.bench_function(format!("{name}: histogram! macro"), |b| {
                b.iter(|| {
                    i = (i + 1) & 1023;
                    metrics::histogram!("bench_macro_seconds", "peer" => "a")
                        .record(black_box(secs[i]));
                })
            });
        });
    }

    let mut sync: hdrhistogram::sync::SyncHistogram<u64> = hdrhistogram::Histogram::new(3)
        .expect("3 significant figures are valid")
        .into_sync();
    let mut rec = sync.recorder();
    g.bench_function("hdrhistogram SyncHistogram recorder", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            rec.record(black_box(ns[i])).expect("values fit");
        })
    });
    g.finish();
    drop(rec);
    sync.refresh_timeout(Duration::from_secs(1));
}

/// Run `record(state, i)` `iters` times on each of two threads started together, each
/// with its own `state` (a per-thread recorder, or nothing for a shared histogram); the
/// wall time from the start signal until both are done.
fn two_threads<S: Send>(
    iters: u64,
    states: [S; 2],
    record: &(dyn Fn(&mut S, usize) + Sync),
) -> Duration {
    let barrier = Barrier::new(3);
    std::thread::scope(|s| {
        for mut state in states {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for i in 0..iters as usize {
                    record(&mut state, i & 1023);
                }
            });
        }
        barrier.wait();
        // The scope joins both threads before it returns.
        Instant::now()
    })
    .elapsed()
}

fn record_two_threads(c: &mut Criterion) {
    let ns = values();
    let secs: Vec<f64> = ns.iter().map(|v| *v as f64 / 1e9).collect();
    let mut g = c.benchmark_group("histogram record via metrics facade, 2 threads");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);

    let bare = Histogram::new();
    g.bench_function("cortex Histogram::record (no facade)", |b| {
        b.iter_custom(|iters| two_threads(iters, [(), ()], &|_, i| bare.record(black_box(ns[i]))))
    });

    let ours = MetricsRecorder::new(Metrics::new());
    let theirs = PrometheusBuilder::new().build_recorder();
    let upkeep = theirs.handle();
    for (name, recorder) in [
        ("cortex MetricsRecorder", &ours as &dyn metrics::Recorder),
        (
            "metrics-exporter-prometheus",
            &theirs as &dyn metrics::Recorder,
        ),
    ] {
        let handle = metrics::with_local_recorder(recorder, || {
            metrics::histogram!("bench_two_threads_seconds")
        });
        g.bench_function(format!("{name}: handle"), |b| {
            b.iter_custom(|iters| {
                let took = two_threads(iters, [(), ()], &|_, i| handle.record(black_box(secs[i])));
                // Its records wait in a shared buffer until upkeep (a scrape) drains
                // them; drain between samples, outside the timed region, as scrapes would.
                upkeep.run_upkeep();
                took
            })
        });
    }

    // The fair concurrent peer: one recorder per thread, merged when the reader
    // refreshes (outside the timed region).
    let mut sync: hdrhistogram::sync::SyncHistogram<u64> = hdrhistogram::Histogram::new(3)
        .expect("3 significant figures are valid")
        .into_sync();
    g.bench_function("hdrhistogram SyncHistogram recorder", |b| {
        b.iter_custom(|iters| {
            let recorders = [sync.recorder(), sync.recorder()];
            let took = two_threads(iters, recorders, &|rec, i| {
                rec.record(black_box(ns[i])).expect("values fit");
            });
            sync.refresh_timeout(Duration::from_secs(1));
            took
        })
    });

    let mutex = Mutex::new(
        hdrhistogram::Histogram::<u64>::new(3).expect("3 significant figures are valid"),
    );
    g.bench_function("hdrhistogram behind a Mutex", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, [(), ()], &|_, i| {
                mutex
                    .lock()
                    .expect("not poisoned")
                    .record(black_box(ns[i]))
                    .expect("values fit");
            })
        })
    });
    g.finish();
}

criterion_group!(benches, record, record_two_threads);
criterion_main!(benches);
