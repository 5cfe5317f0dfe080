//! Series caps: input chosen by a client or by data (HTTP methods, routes, names) can
//! never grow the registry past its caps, however many distinct values arrive and
//! however many threads insert them at once.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use cortex_metrics::{Metrics, MetricsConfig, OVERFLOW_SERIES};

const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

fn capped(max_endpoints: usize, max_operations: usize) -> Metrics {
    Metrics::with_config(MetricsConfig {
        max_endpoints,
        max_operations,
        ..MetricsConfig::default()
    })
    .unwrap()
}

/// Every method label is a standard method, `OTHER`, or the overflow series.
fn assert_methods_bounded(metrics: &Metrics) {
    let methods: BTreeSet<String> = metrics
        .snapshot()
        .endpoints
        .into_iter()
        .map(|e| e.method)
        .collect();
    for m in &methods {
        assert!(
            STANDARD_METHODS.contains(&m.as_str()) || m == "OTHER" || m == OVERFLOW_SERIES,
            "method {m:?} recorded as its own value"
        );
    }
}

#[test]
fn methods_outside_the_standard_set_share_one_value() {
    let metrics = Metrics::new();
    for m in ["M0", "M1", "get", "PROPFIND", "OTHER"] {
        metrics.record_endpoint(m, "/x", 200, Duration::from_millis(1));
    }
    metrics.record_endpoint("GET", "/x", 200, Duration::from_millis(1));
    let snap = metrics.snapshot();
    let methods: Vec<(&str, u64)> = snap
        .endpoints
        .iter()
        .map(|e| (e.method.as_str(), e.total.count))
        .collect();
    assert_eq!(methods, [("GET", 1), ("OTHER", 5)], "{methods:?}");
}

#[test]
fn fifty_thousand_client_chosen_methods_stay_within_the_endpoint_cap() {
    let _heavy = crate::CPU_HEAVY.blocking_read();
    let metrics = Metrics::new();
    let cap = metrics.config().max_endpoints;
    for i in 0..50_000 {
        metrics.record_endpoint(&format!("M{i}"), "/items", 200, Duration::from_micros(50));
        // Routes past the cap as well: the overflow takes them all.
        metrics.record_endpoint("GET", &format!("/r{i}"), 200, Duration::from_micros(50));
    }
    let snap = metrics.snapshot();
    assert!(
        snap.endpoints.len() <= cap,
        "series count {} exceeds the cap {cap}",
        snap.endpoints.len()
    );
    let recorded: u64 = snap.endpoints.iter().map(|e| e.total.count).sum();
    assert_eq!(
        recorded, 100_000,
        "requests past the cap are kept, not dropped"
    );
    let overflow: Vec<_> = snap
        .endpoints
        .iter()
        .filter(|e| e.route == OVERFLOW_SERIES)
        .collect();
    assert_eq!(overflow.len(), 1, "one overflow series");
    assert_methods_bounded(&metrics);
}

#[test]
fn caps_hold_under_concurrent_inserts() {
    let _heavy = crate::CPU_HEAVY.blocking_read();
    const THREADS: usize = 8;
    const PER_THREAD: usize = 2_000;
    const CAP: usize = 50;
    let metrics = capped(CAP, CAP);
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let metrics = metrics.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..PER_THREAD {
                    let name = format!("t{t}.n{i}");
                    let d = Duration::from_micros(10);
                    metrics.record(&name, d, true);
                    metrics.operation_in(&format!("cat{t}.{i}"), &format!("c.{name}"));
                    metrics.histogram(&name).record(1);
                    metrics.counter(&name).increment();
                    metrics.record_endpoint(&format!("M{t}.{i}"), &format!("/{name}"), 200, d);
                    metrics.record_endpoint("GET", &format!("/{name}"), 200, d);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let snap = metrics.snapshot();
    let total = (THREADS * PER_THREAD) as u64;
    for (what, len) in [
        ("operations", snap.operations.len()),
        ("categories", snap.categories.len()),
        ("histograms", snap.histograms.len()),
        ("counters", snap.counters.len()),
        ("endpoints", snap.endpoints.len()),
    ] {
        assert!(len <= CAP, "{what}: {len} series exceed the cap {CAP}");
    }
    // Nothing recorded was lost to the caps.
    let ops: u64 = snap.operations.iter().map(|o| o.total.count).sum();
    assert_eq!(ops, total);
    let hist: u64 = snap.histograms.iter().map(|h| h.total.count).sum();
    assert_eq!(hist, total);
    let counted: u64 = snap.counters.iter().map(|c| c.total).sum();
    assert_eq!(counted, total);
    let requests: u64 = snap.endpoints.iter().map(|e| e.total.count).sum();
    assert_eq!(requests, 2 * total);
    assert_methods_bounded(&metrics);
}

#[test]
fn the_overflow_operation_belongs_to_no_caller_category() {
    let metrics = capped(10, 3);
    for i in 0..10 {
        metrics.operation_in(&format!("cat{i}"), &format!("op{i}"));
    }
    let snap = metrics.snapshot();
    assert_eq!(snap.operations.len(), 3);
    let other = snap
        .operations
        .iter()
        .find(|o| o.name == OVERFLOW_SERIES)
        .unwrap();
    // Not the category of whichever caller happened to overflow first.
    assert_eq!(other.category, None);
}

/// A subscriber that counts WARN events on the thread it is installed on.
struct CountWarnings(Arc<AtomicUsize>);

impl tracing::Subscriber for CountWarnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn overflow_logs_a_rate_limited_warning() {
    let warnings = Arc::new(AtomicUsize::new(0));
    let subscriber = CountWarnings(warnings.clone());
    let metrics = capped(5, 5);
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..10_000 {
            metrics.record_endpoint("GET", &format!("/r{i}"), 200, Duration::from_micros(1));
            metrics.record(&format!("op{i}"), Duration::from_micros(1), true);
        }
    });
    let n = warnings.load(Ordering::Relaxed);
    // One per family (endpoints, operations) per period, not one per record.
    assert!(n >= 2, "no warning when the caps were reached ({n})");
    assert!(
        n <= 4,
        "{n} warnings for 20 000 overflowing records: not rate limited"
    );
}

#[cfg(feature = "tower")]
mod layer {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use cortex_metrics::MetricsLayer;
    use http::{Method, Request};
    use tower::{Service, ServiceExt};

    #[tokio::test]
    async fn fifty_thousand_methods_through_the_layer_stay_within_the_cap() {
        let _heavy = crate::CPU_HEAVY.read().await;
        let metrics = Metrics::new();
        let cap = metrics.config().max_endpoints;
        let mut app = Router::new()
            .route(
                "/items",
                get(|| async { "items" }).fallback(|| async { "any" }),
            )
            .layer(MetricsLayer::new(metrics.clone()));
        for i in 0..50_000 {
            let method = Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
            let req = Request::builder()
                .method(method)
                .uri("/items")
                .body(Body::empty())
                .unwrap();
            ServiceExt::<Request<Body>>::ready(&mut app)
                .await
                .unwrap()
                .call(req)
                .await
                .unwrap();
        }
        let snap = metrics.snapshot();
        assert!(
            snap.endpoints.len() <= cap,
            "series count {} exceeds the cap {cap}",
            snap.endpoints.len()
        );
        let recorded: u64 = snap.endpoints.iter().map(|e| e.total.count).sum();
        assert_eq!(recorded, 50_000);
        assert_methods_bounded(&metrics);
    }
}
