//! The registry, its exports, the timing wrappers and the tower layer.

use std::time::Duration;

use cortex_metrics::{Metrics, MetricsConfig, OVERFLOW_SERIES, TrackedExt, track_op};

#[tokio::test]
async fn tracked_futures_record_success_error_panic_and_cancellation() {
    let metrics = Metrics::new();
    let ok: Result<u8, &str> = async { Ok(1) }.tracked_with(&metrics, "op").await;
    assert_eq!(ok, Ok(1));
    let _: Result<u8, &str> = async { Err("no") }.tracked_with(&metrics, "op").await;

    // A panic inside the future is a failure.
    let m = metrics.clone();
    let joined = tokio::spawn(async move {
        let r: Result<u8, &str> = async { panic!("boom") }.tracked_with(&m, "op").await;
        r
    })
    .await;
    assert!(joined.is_err());

    // A future cut short by a timeout is a failure.
    let slow = tokio::time::sleep(Duration::from_secs(5)).tracked_with(&metrics, "op");
    assert!(
        tokio::time::timeout(Duration::from_millis(5), slow)
            .await
            .is_err()
    );

    // A sync call, through a handle.
    let op = metrics.operation("op");
    assert_eq!(track_op(&op, || 2 + 2), 4);

    let s = metrics.operation("op").snapshot();
    assert_eq!(s.window.count, 5);
    assert_eq!((s.window.successes, s.window.errors), (2, 3));
    assert!((s.window.success_rate - 0.4).abs() < 1e-9);
    assert!(
        s.window.latency.max_ms >= 5.0,
        "the timed-out call took >= 5 ms"
    );
    assert_eq!(s.last.map(|l| l.success), Some(true));
}

#[test]
fn categories_roll_up_and_reset_keeps_totals() {
    let metrics = Metrics::new();
    let a = metrics.operation_in("db", "users.get");
    let b = metrics.operation_in("db", "users.list");
    let c = metrics.operation("cache.get");
    for i in 1..=10u64 {
        a.record(Duration::from_millis(i), true);
        b.record(Duration::from_millis(100), i % 2 == 0);
        c.record(Duration::from_micros(5), true);
    }
    let snap = metrics.snapshot();
    assert_eq!(snap.categories.len(), 1);
    let db = &snap.categories[0].window;
    assert_eq!((db.count, db.successes, db.errors), (20, 15, 5));
    assert!(
        (db.total_ms - (55.0 + 1000.0)).abs() < 1.0,
        "{}",
        db.total_ms
    );
    assert!((db.latency.max_ms - 100.0).abs() < 0.1);

    metrics.reset();
    a.record(Duration::from_millis(7), true);
    let snap = metrics.snapshot();
    let users = snap
        .operations
        .iter()
        .find(|o| o.name == "users.get")
        .unwrap();
    assert_eq!(users.window.count, 1);
    assert_eq!(users.total.count, 11);
    assert!((users.window.latency.p50_ms - 7.0).abs() < 0.01);
}

#[test]
fn series_caps_hold() {
    let config = MetricsConfig {
        max_endpoints: 3,
        ..MetricsConfig::default()
    };
    let metrics = Metrics::with_config(config).unwrap();
    for i in 0..10 {
        metrics.record_endpoint("GET", &format!("/r{i}"), 200, Duration::from_millis(1));
    }
    let snap = metrics.snapshot();
    assert_eq!(snap.endpoints.len(), 3);
    let other = snap
        .endpoints
        .iter()
        .find(|e| e.route == OVERFLOW_SERIES)
        .unwrap();
    assert_eq!(
        other.total.count, 8,
        "requests past the cap are kept, not dropped"
    );
    assert!(
        Metrics::with_config(MetricsConfig {
            namespace: "bad name".into(),
            ..Default::default()
        })
        .is_err()
    );
}

#[test]
fn prometheus_output_parses_with_a_real_exposition_parser() {
    use openmetrics_parser::{PrometheusType, PrometheusValue};

    let metrics = Metrics::new();
    let weird = "load \"quoted\" \\ back\nslash";
    metrics
        .operation_in("db", weird)
        .record(Duration::from_millis(2), true);
    metrics
        .operation("cache.get")
        .record(Duration::from_micros(300), false);
    metrics.record_endpoint("GET", "/users/{id}", 200, Duration::from_millis(4));
    metrics.record_endpoint("GET", "/users/{id}", 404, Duration::from_millis(1));
    metrics.histogram("batch.size").record(50);
    metrics.counter("cache.hits").add(7);

    let text = metrics.prometheus();
    let exposition = openmetrics_parser::prometheus::parse_prometheus(&text)
        .unwrap_or_else(|e| panic!("exposition does not parse: {e:?}\n{text}"));
    let family = |name: &str| {
        exposition
            .families
            .get(name)
            .unwrap_or_else(|| panic!("no family {name} in\n{text}"))
    };
    let sample = |name: &str, label: &str, value: &str| {
        family(name)
            .iter_samples()
            .find(|s| s.get_labelset().unwrap().get_label_value(label) == Some(value))
            .unwrap_or_else(|| panic!("no {name}{{{label}={value:?}}} in\n{text}"))
            .value
            .clone()
    };

    let ops = family("cortex_operation_duration_seconds");
    assert_eq!(ops.family_type, PrometheusType::Histogram);
    assert!(!ops.help.is_empty());
    // The escaped label value comes back exactly; 2 ms is in every bucket from 2.5 ms.
    match sample("cortex_operation_duration_seconds", "operation", weird) {
        PrometheusValue::Histogram(h) => {
            assert_eq!(h.count, Some(1));
            let at = |le: f64| {
                h.buckets
                    .iter()
                    .find(|b| b.upper_bound == le)
                    .unwrap_or_else(|| panic!("no bucket {le} in {h:?}"))
                    .count
                    .as_f64()
            };
            assert_eq!((at(0.001), at(0.0025), at(f64::INFINITY)), (0.0, 1.0, 1.0));
            let sum = h.sum.as_ref().unwrap().as_f64();
            assert!((sum - 0.002).abs() <= 0.002 * 0.001, "sum {sum}");
        }
        other => panic!("expected a histogram, got {other:?}"),
    }
    match sample("cortex_operation_errors_total", "operation", "cache.get") {
        PrometheusValue::Counter(c) => assert_eq!(c.value.as_f64(), 1.0),
        other => panic!("expected a counter, got {other:?}"),
    }
    match sample("cortex_http_requests_total", "status", "404") {
        PrometheusValue::Counter(c) => assert_eq!(c.value.as_f64(), 1.0),
        other => panic!("expected a counter, got {other:?}"),
    }
    match sample(
        "cortex_http_request_duration_seconds",
        "route",
        "/users/{id}",
    ) {
        PrometheusValue::Histogram(h) => assert_eq!(h.count, Some(2)),
        other => panic!("expected a histogram, got {other:?}"),
    }
    assert_eq!(
        family("cortex_cache_hits_total").family_type,
        PrometheusType::Counter
    );
    assert_eq!(
        family("cortex_batch_size").family_type,
        PrometheusType::Histogram
    );
    assert!(
        !text.contains("_window"),
        "summaries are off by default:\n{text}"
    );

    // With summaries on, each histogram also gets its window quantiles.
    let config = cortex_metrics::MetricsConfig {
        export_summaries: true,
        ..Default::default()
    };
    let metrics = Metrics::with_config(config).unwrap();
    metrics
        .operation_in("db", weird)
        .record(Duration::from_millis(2), true);
    metrics.histogram("batch.size").record(50);
    let text = metrics.prometheus();
    let exposition = openmetrics_parser::prometheus::parse_prometheus(&text)
        .unwrap_or_else(|e| panic!("exposition does not parse: {e:?}\n{text}"));
    let window = &exposition.families["cortex_operation_duration_window_seconds"];
    match &window.iter_samples().next().unwrap().value {
        PrometheusValue::Summary(s) => {
            assert_eq!(s.count, Some(1));
            let p50 = s
                .quantiles
                .iter()
                .find(|q| q.quantile == 0.5)
                .unwrap()
                .value
                .as_f64();
            assert!((p50 - 0.002).abs() <= 0.002 * 0.001, "p50 {p50}");
        }
        other => panic!("expected a summary, got {other:?}"),
    }
    assert_eq!(
        exposition.families["cortex_batch_size_window"].family_type,
        PrometheusType::Summary
    );
}

#[test]
fn json_export_round_trips() {
    let metrics = Metrics::new();
    metrics.record("x", Duration::from_millis(1), true);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.json");
    metrics.export_json(&path).unwrap();
    let back: cortex_metrics::MetricsSnapshot =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(back.operations[0].name, "x");
    assert_eq!(back.operations[0].total.count, 1);
    let err = metrics
        .export_json(dir.path().join("missing/dir/m.json"))
        .unwrap_err();
    assert!(err.to_string().contains("missing/dir"), "{err}");
}

#[cfg(feature = "tower")]
mod layer {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use cortex_metrics::{MetricsLayer, UNMATCHED_ROUTE};
    use http::{Request, StatusCode};
    use tower::ServiceExt;

    #[tokio::test]
    async fn layer_records_route_templates_not_raw_paths() {
        let metrics = Metrics::new();
        let app = Router::new()
            .route("/users/{id}", get(|| async { "user" }))
            .merge(cortex_metrics::http::routes(metrics.clone()))
            .layer(MetricsLayer::new(metrics.clone()));
        for path in ["/users/42", "/users/43", "/nope/1", "/nope/2"] {
            let req = Request::get(path).body(Body::empty()).unwrap();
            app.clone().oneshot(req).await.unwrap();
        }
        let snap = metrics.snapshot();
        let routes: Vec<_> = snap.endpoints.iter().map(|e| e.route.as_str()).collect();
        assert!(routes.contains(&"/users/{id}"), "{routes:?}");
        assert!(
            !routes.iter().any(|r| r.contains("42")),
            "raw path recorded: {routes:?}"
        );
        let users = snap
            .endpoints
            .iter()
            .find(|e| e.route == "/users/{id}")
            .unwrap();
        assert_eq!(users.total.statuses.get(&200), Some(&2));
        let unmatched = snap
            .endpoints
            .iter()
            .find(|e| e.route == UNMATCHED_ROUTE)
            .unwrap();
        assert_eq!(unmatched.total.statuses.get(&404), Some(&2));

        // The endpoints answer: JSON snapshot, Prometheus text, reset.
        let res = app
            .clone()
            .oneshot(
                Request::get("/metrics/performance")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        let snap: cortex_metrics::MetricsSnapshot = serde_json::from_slice(&body).unwrap();
        assert!(snap.endpoints.iter().any(|e| e.route == "/users/{id}"));
        let res = app
            .clone()
            .oneshot(
                Request::post("/metrics/performance/reset")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let users = metrics.snapshot();
        let users = users
            .endpoints
            .iter()
            .find(|e| e.route == "/users/{id}")
            .unwrap();
        assert_eq!((users.window.count, users.total.count), (0, 2));
        let res = app
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains("route=\"/users/{id}\""));
    }
}
