//! Classic histograms, labeled series, gauges, OpenMetrics and `promtool check metrics`.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};

use cortex_metrics::prometheus::Format;
use cortex_metrics::{Metrics, MetricsConfig, OVERFLOW_SERIES};

type Parsed = MetricsExposition<PrometheusType, PrometheusValue>;

fn parse(text: &str) -> Parsed {
    openmetrics_parser::prometheus::parse_prometheus(text)
        .unwrap_or_else(|e| panic!("exposition does not parse: {e:?}\n{text}"))
}

/// The value of the sample of `family` whose labels include all of `labels`.
fn value(p: &Parsed, family: &str, labels: &[(&str, &str)]) -> PrometheusValue {
    p.families
        .get(family)
        .unwrap_or_else(|| panic!("no family {family}"))
        .iter_samples()
        .find(|s| {
            let set = s.get_labelset().unwrap();
            labels
                .iter()
                .all(|(k, v)| set.get_label_value(k) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no {family}{labels:?}"))
        .value
        .clone()
}

/// Bucket counts by bound, the count and the sum of a histogram sample.
fn histogram(v: PrometheusValue) -> (Vec<(f64, f64)>, u64, f64) {
    match v {
        PrometheusValue::Histogram(h) => (
            h.buckets
                .iter()
                .map(|b| (b.upper_bound, b.count.as_f64()))
                .collect(),
            h.count.unwrap(),
            h.sum.unwrap().as_f64(),
        ),
        other => panic!("expected a histogram, got {other:?}"),
    }
}

fn number(v: PrometheusValue) -> f64 {
    match v {
        PrometheusValue::Counter(c) => c.value.as_f64(),
        PrometheusValue::Gauge(g) => g.as_f64(),
        other => panic!("expected a number, got {other:?}"),
    }
}

#[test]
fn histogram_buckets_count_every_value_at_or_below_their_bound() {
    let les = vec![0.001, 0.002, 0.005, 0.01, 0.1];
    let config = MetricsConfig {
        histogram_buckets: les.clone(),
        value_buckets: vec![10.0, 100.0, 1000.0],
        export_process: false,
        ..Default::default()
    };
    let metrics = Metrics::with_config(config).unwrap();
    let h = metrics.histogram_seconds("db.query");
    let op = metrics.operation("load");
    // Values spread over the layout, none within 0.1% of a bound (there the HDR bucket
    // may straddle it), plus values exactly at bounds below 2048 for value histograms.
    let micros: Vec<u64> = (1..=400).map(|i| i * 37 + 3).collect();
    for us in &micros {
        h.record_duration(Duration::from_micros(*us));
        op.record(Duration::from_micros(*us), us % 2 == 0);
    }
    let sizes = metrics.histogram("batch.size");
    for v in [1u64, 10, 10, 11, 100, 999, 1000, 1001, 5000] {
        sizes.record(v);
    }

    let text = metrics.prometheus();
    let p = parse(&text);
    for family in [
        ("cortex_db_query_seconds", vec![]),
        (
            "cortex_operation_duration_seconds",
            vec![("operation", "load")],
        ),
    ] {
        let (buckets, count, sum) = histogram(value(&p, family.0, &family.1));
        assert_eq!(count, micros.len() as u64);
        let mut expected: Vec<(f64, f64)> = les
            .iter()
            .map(|le| {
                let n = micros.iter().filter(|us| **us as f64 / 1e6 <= *le).count();
                (*le, n as f64)
            })
            .collect();
        expected.push((f64::INFINITY, micros.len() as f64));
        assert_eq!(buckets, expected, "{}", family.0);
        let exact: f64 = micros.iter().map(|us| *us as f64 / 1e6).sum();
        assert!((sum - exact).abs() <= exact * 0.001, "sum {sum} vs {exact}");
    }
    // Values at the bounds are counted under them (exact below 2048).
    let (buckets, count, sum) = histogram(value(&p, "cortex_batch_size", &[]));
    assert_eq!(
        buckets,
        vec![
            (10.0, 3.0),
            (100.0, 5.0),
            (1000.0, 7.0),
            (f64::INFINITY, 9.0)
        ]
    );
    assert_eq!(count, 9);
    // Exact below 2048; 5000 is summed as its bucket's midpoint.
    assert!((sum - 8132.0).abs() <= 8132.0 * 0.001, "sum {sum}");
    // Cumulative since start: a window reset does not touch them.
    metrics.reset();
    assert_eq!(
        histogram(value(
            &parse(&metrics.prometheus()),
            "cortex_batch_size",
            &[]
        ))
        .1,
        9
    );
}

#[test]
fn labeled_series_share_one_family_and_bad_label_names_are_errors() {
    let metrics = Metrics::new();
    metrics
        .counter_with("cache.hits", &[("cache", "users")])
        .unwrap()
        .add(2);
    metrics
        .counter_with("cache.hits", &[("cache", "a \"quoted\"\\\nname")])
        .unwrap()
        .add(3);
    // Label order does not matter: one series.
    let a = metrics
        .histogram_seconds_with("rpc", &[("peer", "x"), ("method", "get")])
        .unwrap();
    let b = metrics
        .histogram_seconds_with("rpc", &[("method", "get"), ("peer", "x")])
        .unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    a.record_duration(Duration::from_millis(3));
    metrics
        .histogram_with("payload", &[("dir", "in")])
        .unwrap()
        .record(300);

    let text = metrics.prometheus();
    let p = parse(&text);
    let hits = &p.families["cortex_cache_hits_total"];
    assert_eq!(hits.family_type, PrometheusType::Counter);
    assert_eq!(hits.iter_samples().count(), 2, "{text}");
    assert_eq!(
        text.matches("# TYPE cortex_cache_hits_total counter")
            .count(),
        1
    );
    assert_eq!(
        number(value(&p, "cortex_cache_hits_total", &[("cache", "users")])),
        2.0
    );
    assert_eq!(
        number(value(
            &p,
            "cortex_cache_hits_total",
            &[("cache", "a \"quoted\"\\\nname")]
        )),
        3.0
    );
    let (_, count, _) = histogram(value(
        &p,
        "cortex_rpc_seconds",
        &[("method", "get"), ("peer", "x")],
    ));
    assert_eq!(count, 1);
    assert_eq!(
        histogram(value(&p, "cortex_payload", &[("dir", "in")])).1,
        1
    );

    for bad in ["9x", "a-b", "", "__x", "le", "quantile"] {
        let err = metrics.counter_with("c", &[(bad, "v")]).unwrap_err();
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        assert!(!err.is_retryable());
    }
    // A repeated name is refused, also when a series of the first pair exists.
    metrics.gauge_with("g", &[("a", "1")]).unwrap().set(1.0);
    assert!(metrics.gauge_with("g", &[("a", "1"), ("a", "2")]).is_err());
    assert!(metrics.gauge_with("g", &[("a", "1"), ("a", "1")]).is_err());
    assert!(metrics.gauge_fn("g", &[("a-b", "1")], || 1.0).is_err());
}

#[test]
fn gauges_set_and_callbacks_are_exported_and_snapshotted() {
    let metrics = Metrics::new();
    let depth = metrics
        .gauge_with("queue.depth", &[("queue", "mail")])
        .unwrap();
    depth.set(10.0);
    depth.dec();
    depth.add(0.5);
    metrics.gauge("temperature").set(-3.25);
    let idle = Arc::new(AtomicUsize::new(4));
    let weak = Arc::downgrade(&idle);
    metrics
        .gauge_fn("pool.idle", &[("pool", "db")], move || {
            weak.upgrade()
                .map_or(f64::NAN, |n| n.load(Ordering::Relaxed) as f64)
        })
        .unwrap();

    let p = parse(&metrics.prometheus());
    assert_eq!(
        p.families["cortex_queue_depth"].family_type,
        PrometheusType::Gauge
    );
    assert_eq!(
        number(value(&p, "cortex_queue_depth", &[("queue", "mail")])),
        9.5
    );
    assert_eq!(number(value(&p, "cortex_temperature", &[])), -3.25);
    assert_eq!(
        number(value(&p, "cortex_pool_idle", &[("pool", "db")])),
        4.0
    );
    // Read when scraped, not when registered.
    idle.store(7, Ordering::Relaxed);
    let p = parse(&metrics.prometheus());
    assert_eq!(
        number(value(&p, "cortex_pool_idle", &[("pool", "db")])),
        7.0
    );
    // A new callback for the series takes over.
    metrics
        .gauge_fn("pool.idle", &[("pool", "db")], || 1.0)
        .unwrap();
    let snap = metrics.snapshot();
    let s = snap.series.iter().find(|s| s.name == "pool.idle").unwrap();
    assert_eq!(
        (s.value, s.labels.clone()),
        (1.0, vec![("pool".to_owned(), "db".to_owned())])
    );
    // The process gauges, on Linux.
    #[cfg(target_os = "linux")]
    assert!(number(value(&p, "process_resident_memory_bytes", &[])) > 0.0);
}

#[test]
fn label_sets_of_one_name_are_capped_with_an_overflow_series() {
    let config = MetricsConfig {
        max_operations: 3,
        ..Default::default()
    };
    let metrics = Metrics::with_config(config).unwrap();
    for i in 0..10 {
        metrics
            .counter_with("req", &[("user", &i.to_string())])
            .unwrap()
            .increment();
    }
    let p = parse(&metrics.prometheus());
    let family = &p.families["cortex_req_total"];
    // Two own series plus the overflow one, which took the other eight.
    assert_eq!(family.iter_samples().count(), 3);
    assert_eq!(
        number(value(&p, "cortex_req_total", &[("user", OVERFLOW_SERIES)])),
        8.0
    );
}

#[test]
fn openmetrics_names_counters_without_total_and_ends_with_eof() {
    let metrics = Metrics::new();
    metrics
        .counter_with("jobs", &[("queue", "q")])
        .unwrap()
        .add(2);
    metrics.gauge("depth").set(1.0);
    metrics.histogram_seconds("wait").record(1_500_000);
    metrics
        .operation("op")
        .record(Duration::from_millis(1), true);
    metrics.record_endpoint("GET", "/x", 200, Duration::from_millis(1));
    let text = metrics.exposition(Format::OpenMetrics);
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE cortex_jobs counter\n"), "{text}");
    assert!(
        text.contains("cortex_jobs_total{queue=\"q\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE cortex_http_requests counter\n"),
        "{text}"
    );
    assert!(!text.contains("# TYPE cortex_jobs_total"), "{text}");
    let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&text)
        .unwrap_or_else(|e| panic!("OpenMetrics does not parse: {e:?}\n{text}"));
    let families: HashMap<_, _> = parsed
        .families
        .iter()
        .map(|(name, f)| (name.clone(), f.family_type))
        .collect();
    assert_eq!(
        families.get("cortex_wait_seconds"),
        Some(&openmetrics_parser::OpenMetricsType::Histogram)
    );
    assert_eq!(
        families.get("cortex_jobs"),
        Some(&openmetrics_parser::OpenMetricsType::Counter)
    );
    // Prometheus text stays the default.
    assert!(!metrics.prometheus().contains("# EOF"));
}

/// A registry with every kind of family, colliding names included; with `mixed`, a
/// family with both an unlabeled and labeled series (valid Prometheus text, which the
/// OpenMetrics parser of the dev-dependencies refuses).
fn everything(mixed: bool) -> Metrics {
    let config = MetricsConfig {
        export_summaries: true,
        ..Default::default()
    };
    let metrics = Metrics::with_config(config).unwrap();
    metrics
        .operation_in("db", "users.by_id")
        .record(Duration::from_millis(3), true);
    metrics
        .operation("cache.get")
        .record(Duration::from_micros(40), false);
    metrics.record_endpoint("GET", "/users/{id}", 200, Duration::from_millis(12));
    metrics.record_endpoint("BREW", "/pot", 418, Duration::from_millis(2));
    metrics.histogram("batch.size").record(17);
    metrics.histogram("batch_size").record(18);
    metrics.histogram("operation_duration_seconds").record(1);
    metrics
        .histogram_seconds("pool.db.acquire_wait")
        .record(2_000_000);
    metrics
        .histogram_seconds("pool_db_acquire_wait")
        .record(3_000_000);
    if mixed {
        metrics.counter("cache.hits").add(5);
    }
    metrics.counter("cache_hits").add(6);
    metrics.counter("http.requests").add(1);
    metrics
        .counter_with("cache.hits", &[("cache", "users \"u\"\\\n")])
        .unwrap()
        .add(2);
    metrics.gauge("cache.hits").set(3.0);
    metrics.gauge("depth").set(3.0);
    metrics
        .gauge_with("pool.size", &[("pool", "db"), ("state", "idle")])
        .unwrap()
        .set(4.0);
    metrics
        .gauge_fn("pool.waiting", &[("pool", "db")], || 0.0)
        .unwrap();
    metrics
        .histogram_with("payload.bytes", &[("dir", "in")])
        .unwrap()
        .record(512);
    metrics
        .histogram_seconds_with("rpc", &[("peer", "a")])
        .unwrap()
        .record(1_000);
    metrics
}

/// `promtool check metrics` of `text` must succeed and report nothing, except lint
/// findings containing one of `allowed` (promtool exits 3 for lint findings only, 1 for
/// text that does not parse).
fn promtool_check(text: &str, allowed: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/metrics/promtool.sh");
    let mut child = Command::new("bash")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    // The script bounds every step with `timeout`.
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let only_allowed_lint = out.status.code() == Some(3)
        && stdout.trim().is_empty()
        && stderr
            .lines()
            .all(|l| allowed.iter().any(|a| l.contains(a)));
    assert!(
        (out.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty())
            || only_allowed_lint,
        "promtool check metrics: {}\nstdout: {stdout}\nstderr: {stderr}\ninput:\n{text}",
        out.status
    );
}

#[test]
fn promtool_check_metrics_finds_nothing_to_report() {
    let text = everything(true).prometheus();
    // Every kind is there, collisions told apart.
    for needle in [
        "# TYPE cortex_operation_duration_seconds histogram",
        "# TYPE cortex_operation_duration_window_seconds summary",
        "# TYPE cortex_http_request_duration_seconds histogram",
        "# TYPE cortex_batch_size histogram",
        "# TYPE cortex_pool_db_acquire_wait_seconds histogram",
        "# TYPE cortex_pool_size gauge",
        "# TYPE process_resident_memory_bytes gauge",
        "cortex_batch_size_",
    ] {
        assert!(text.contains(needle), "no {needle:?} in\n{text}");
    }
    promtool_check(&text, &[]);
    // Arbitrary names, label names and values (the property tests' generator, with a
    // fixed seed): the same text every run, checked once per run, not per case. The
    // text must parse; naming style is the caller's choice (`camelCase` label names,
    // `_ms` in a name, a gauge the caller named `x_total`), so only those lints may be
    // reported.
    promtool_check(
        &crate::escaping::generated_exposition(),
        &[
            "should be written in 'snake_case'",
            "should not contain abbreviated units",
            "metrics should not have \"_",
        ],
    );
    // The OpenMetrics rendering of the same registry parses as OpenMetrics.
    let om = everything(false).exposition(Format::OpenMetrics);
    openmetrics_parser::openmetrics::parse_openmetrics(&om)
        .unwrap_or_else(|e| panic!("OpenMetrics does not parse: {e:?}\n{om}"));
}

#[cfg(feature = "tower")]
#[tokio::test]
async fn the_metrics_route_answers_openmetrics_when_asked() {
    use tower::ServiceExt;

    let metrics = Metrics::new();
    metrics.counter("c").increment();
    let app = cortex_metrics::http::routes(metrics);
    for (accept, content_type, eof) in [
        (None, cortex_metrics::prometheus::CONTENT_TYPE, false),
        (
            Some("application/openmetrics-text; version=1.0.0,text/plain;q=0.5"),
            cortex_metrics::prometheus::OPENMETRICS_CONTENT_TYPE,
            true,
        ),
        (
            Some("text/plain"),
            cortex_metrics::prometheus::CONTENT_TYPE,
            false,
        ),
    ] {
        let mut req = http::Request::get("/metrics");
        if let Some(a) = accept {
            req = req.header(http::header::ACCEPT, a);
        }
        let res = app
            .clone()
            .oneshot(req.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()[http::header::CONTENT_TYPE], content_type);
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert_eq!(body.ends_with("# EOF\n"), eof, "{accept:?}: {body}");
    }
}
