//! `metrics::counter!/gauge!/histogram!` through `MetricsRecorder` land in the registry.

use cortex_metrics::{Metrics, MetricsRecorder, SeriesKind};

#[test]
fn facade_macros_land_in_the_registry() {
    let registry = Metrics::new();
    let recorder = MetricsRecorder::new(registry.clone());
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("requests_total", "route" => "/a").increment(3);
        metrics::counter!("requests_total", "route" => "/a").absolute(10);
        // `absolute` never lowers a counter.
        metrics::counter!("requests_total", "route" => "/a").absolute(4);
        metrics::counter!("plain").increment(1);
        // Handles are kept per key: another label value is another series, and the
        // same key found again records into the same one.
        metrics::counter!("requests_total", "route" => "/b").increment(1);
        for _ in 0..2 {
            metrics::histogram!("hits_seconds", "route" => "/b").record(0.5);
        }
        let depth = metrics::gauge!("queue_depth", "queue" => "q");
        depth.set(5.0);
        depth.increment(2.0);
        depth.decrement(0.5);
        metrics::histogram!("wait_seconds", "pool" => "db").record(0.002);
        metrics::histogram!("batch_size").record(41.6);
        // A label name the registry refuses: a handle that records nothing.
        metrics::counter!("bad", "le" => "x").increment(1);
    });

    let text = registry.prometheus();
    for line in [
        "cortex_requests_total{route=\"/a\"} 10\n",
        "cortex_plain_total 1\n",
        "cortex_requests_total{route=\"/b\"} 1\n",
        "cortex_hits_seconds_count{route=\"/b\"} 2\n",
        "cortex_queue_depth{queue=\"q\"} 6.5\n",
        "cortex_wait_seconds_bucket{pool=\"db\",le=\"0.001\"} 0\n",
        "cortex_wait_seconds_bucket{pool=\"db\",le=\"0.0025\"} 1\n",
        "cortex_batch_size_sum 42\n",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
    assert!(!text.contains("cortex_bad"), "{text}");
    let snap = registry.snapshot();
    let wait = snap
        .series
        .iter()
        .find(|s| s.name == "wait_seconds")
        .unwrap();
    assert_eq!(wait.kind, SeriesKind::HistogramSeconds);
    assert_eq!(wait.histogram.as_ref().unwrap().total.count, 1);
}
