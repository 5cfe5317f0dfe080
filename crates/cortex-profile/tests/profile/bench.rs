//! Benchmarks, baselines and the regression check.

use std::time::Duration;

use cortex_profile::{
    Baselines, BenchResult, Benchmark, Error, Metric, RegressionThresholds, Verdict, compare,
};

/// A synthetic result with the given median, p95 (ns) and throughput.
fn result(name: &str, median_ns: u64, p95_ns: u64, ops_per_sec: f64) -> BenchResult {
    BenchResult {
        name: name.to_owned(),
        iterations: 100,
        total_ns: median_ns * 100,
        min_ns: median_ns / 2,
        max_ns: p95_ns * 2,
        mean_ns: median_ns,
        median_ns,
        p95_ns,
        p99_ns: p95_ns,
        stddev_ns: 0.0,
        ops_per_sec,
    }
}

fn baselines_with(base: &BenchResult) -> Baselines {
    let mut b = Baselines::new();
    b.update(base);
    b
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.1
}

#[test]
fn slower_median_is_a_regression_with_right_deltas() {
    let baselines = baselines_with(&result("query", 1_000_000, 2_000_000, 1000.0));
    let now = result("query", 1_250_000, 2_100_000, 800.0);
    let report = baselines.check(&[now], &RegressionThresholds::default());
    let op = &report.operations[0];
    assert_eq!(op.verdict, Verdict::Regressed);
    assert!(op.breached.contains(&Metric::Median));
    assert!(!op.breached.contains(&Metric::P95), "p95 +5% is within 15%");
    let d = op.deltas.expect("deltas for a known operation");
    assert!(close(d.median_pct, 25.0), "{d:?}");
    assert!(close(d.p95_pct, 5.0), "{d:?}");
    assert!(close(d.throughput_pct, -20.0), "{d:?}");
    assert!(report.has_regressions());
    let text = report.to_string();
    assert!(
        text.contains("REGRESSED") && text.contains("query"),
        "{text}"
    );
    assert!(text.contains("+25.0%"), "{text}");
}

#[test]
fn p95_only_regression_is_detected() {
    let baselines = baselines_with(&result("cache.get", 1_000_000, 2_000_000, 1000.0));
    let now = result("cache.get", 1_000_000, 2_400_000, 1000.0);
    let report = baselines.check(&[now], &RegressionThresholds::default());
    let op = &report.operations[0];
    assert_eq!(op.verdict, Verdict::Regressed);
    assert_eq!(op.breached, vec![Metric::P95]);
    assert!(close(op.deltas.expect("deltas").p95_pct, 20.0));
}

#[test]
fn five_percent_slowdown_is_not_flagged() {
    let baselines = baselines_with(&result("query", 1_000_000, 2_000_000, 1000.0));
    let now = result("query", 1_050_000, 2_100_000, 952.4);
    let report = baselines.check(&[now], &RegressionThresholds::default());
    assert_eq!(report.operations[0].verdict, Verdict::Ok);
    assert!(report.operations[0].breached.is_empty());
    assert!(!report.has_regressions());

    // Exactly at the threshold is not "over" it.
    let at_limit = result("query", 1_100_000, 2_300_000, 900.0);
    let report = baselines.check(&[at_limit], &RegressionThresholds::default());
    assert_eq!(report.operations[0].verdict, Verdict::Ok, "{report}");
}

#[test]
fn throughput_drop_is_detected() {
    let baselines = baselines_with(&result("batch", 1_000_000, 2_000_000, 1000.0));
    let now = result("batch", 1_000_000, 2_000_000, 850.0);
    let report = baselines.check(&[now], &RegressionThresholds::default());
    let op = &report.operations[0];
    assert_eq!(op.verdict, Verdict::Regressed);
    assert_eq!(op.breached, vec![Metric::Throughput]);
    assert!(close(op.deltas.expect("deltas").throughput_pct, -15.0));
}

#[test]
fn custom_thresholds_apply() {
    let baselines = baselines_with(&result("query", 1_000_000, 2_000_000, 1000.0));
    let now = result("query", 1_250_000, 2_000_000, 1000.0);
    let lenient = RegressionThresholds {
        median: 0.30,
        ..RegressionThresholds::default()
    };
    assert!(!baselines.check(&[now], &lenient).has_regressions());
}

#[test]
fn new_operation_is_new_not_regressed() {
    let baselines = baselines_with(&result("query", 1_000_000, 2_000_000, 1000.0));
    let report = baselines.check(
        &[result("brand.new", 9_000_000, 9_000_000, 10.0)],
        &RegressionThresholds::default(),
    );
    let op = &report.operations[0];
    assert_eq!(op.verdict, Verdict::New);
    assert!(op.deltas.is_none() && op.breached.is_empty());
    assert!(!report.has_regressions());
    assert!(report.to_string().contains("(no baseline)"));
}

#[test]
fn exit_code_fails_only_on_regression() {
    let baselines = baselines_with(&result("query", 1_000_000, 2_000_000, 1000.0));
    let t = RegressionThresholds::default();
    let bad = baselines.check(&[result("query", 2_000_000, 4_000_000, 500.0)], &t);
    let good = baselines.check(&[result("query", 1_000_000, 2_000_000, 1000.0)], &t);
    assert!(bad.has_regressions() && !good.has_regressions());
    let debug = |c: std::process::ExitCode| format!("{c:?}");
    assert_eq!(
        debug(bad.exit_code()),
        debug(std::process::ExitCode::FAILURE)
    );
    assert_eq!(
        debug(good.exit_code()),
        debug(std::process::ExitCode::SUCCESS)
    );
    assert_ne!(debug(bad.exit_code()), debug(good.exit_code()));
}

#[test]
fn baselines_round_trip_through_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("performance_baselines.json");
    assert!(Baselines::load(&path).expect("missing file").is_empty());

    let mut baselines = Baselines::new();
    baselines.update(&result("a", 1_000, 2_000, 1e6));
    baselines.update(&result("b", 5_000, 9_000, 2e5));
    baselines.save(&path).expect("save");
    let loaded = Baselines::load(&path).expect("load");
    assert_eq!(loaded, baselines);
    let a = loaded.get("a").expect("a stored");
    assert_eq!((a.median_ns, a.p95_ns, a.iterations), (1_000, 2_000, 100));
    assert!(a.recorded_at > 1_600_000_000, "unix seconds");

    // Update replaces and keeps the others; no temp file is left behind.
    baselines.update(&result("a", 1_500, 2_500, 6e5));
    baselines.save(&path).expect("save again");
    let loaded = Baselines::load(&path).expect("load again");
    assert_eq!(loaded.get("a").map(|b| b.median_ns), Some(1_500));
    assert_eq!(loaded.len(), 2);
    let files = std::fs::read_dir(dir.path()).expect("list").count();
    assert_eq!(files, 1);
}

#[test]
fn malformed_file_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("broken.json");
    std::fs::write(&path, b"{ not json").expect("write");
    let err = Baselines::load(&path).unwrap_err();
    assert!(
        matches!(&err, Error::Json { path: p, .. } if *p == path),
        "{err}"
    );
    assert!(err.to_string().contains("broken.json"), "{err}");

    // A directory cannot be read as a file: an I/O error, also naming the path.
    let err = Baselines::load(dir.path()).unwrap_err();
    assert!(matches!(&err, Error::Io { .. }), "{err}");
}

#[tokio::test]
async fn sleep_of_2ms_is_measured() {
    let r = Benchmark::new("sleep")
        .warmup(2)
        .iterations(10)
        .run(|| tokio::time::sleep(Duration::from_millis(2)))
        .await
        .expect("benchmark");
    assert_eq!(r.iterations, 10);
    assert!(r.median() >= Duration::from_millis(2), "{r}");
    assert!(r.min() >= Duration::from_millis(2), "{r}");
    assert!(r.ops_per_sec <= 500.0, "{r}");
    assert!(r.min_ns <= r.median_ns && r.median_ns <= r.p95_ns && r.p95_ns <= r.p99_ns);
    assert!(r.p99_ns <= r.max_ns);
}

#[test]
fn warmup_does_not_count() {
    let mut calls = 0u32;
    let r = Benchmark::new("count")
        .warmup(7)
        .iterations(13)
        .run_sync(|| {
            calls += 1;
            calls
        })
        .expect("benchmark");
    assert_eq!(calls, 20);
    assert_eq!(r.iterations, 13);
}

#[tokio::test]
async fn zero_iterations_is_rejected() {
    let err = Benchmark::new("x")
        .iterations(0)
        .run(|| async {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { what: "iterations", value, .. } if value == "0"),
        "{err}"
    );
}

#[test]
fn compare_sorts_by_median_fastest_first() {
    let results = [
        result("slow", 3_000_000, 4_000_000, 333.0),
        result("fast", 1_000_000, 2_000_000, 1000.0),
        result("mid", 2_350_000, 3_000_000, 425.0),
    ];
    let table = compare(&results);
    let names: Vec<&str> = table.rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["fast", "mid", "slow"]);
    assert_eq!(table.rows[0].relative, 1.0);
    assert!((table.rows[1].relative - 2.35).abs() < 1e-9);
    let text = table.to_string();
    assert!(text.contains("1.00x"), "{text}");
    assert!(text.contains("2.35x slower"), "{text}");
    assert!(text.contains("3.00x slower"), "{text}");
    assert!(compare(&[]).rows.is_empty());
}
