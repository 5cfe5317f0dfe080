//! The cost of one histogram record through the `metrics` facade: into a cortex
//! [`Metrics`] registry ([`MetricsRecorder`]) and into metrics-exporter-prometheus's
//! recorder, each by a kept handle and by the `histogram!` macro (a registration lookup
//! per record), beside a bare cortex [`Histogram`] and `hdrhistogram`'s `SyncHistogram`
//! recorder. One thread.
//!
//! Run: `cargo bench -p cortex-metrics --features recorder --bench recorder`.

use std::hint::black_box;
use std::time::Duration;

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

criterion_group!(benches, record);
criterion_main!(benches);
