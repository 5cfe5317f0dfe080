//! Load tests against an in-process axum server on 127.0.0.1:0.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap should fail right there

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use cortex_load::{
    ErrorKind, LoadConfig, LoadError, LoadTest, Mode, Scenario, Summary, summary_path,
};
use tokio::sync::Mutex;

#[derive(Default)]
struct Server {
    hits: AtomicU64,
    /// When the one stall happens: the first `/stall` request after `stall_after`
    /// holds every `/stall` handler until `stall_until`.
    stall: Mutex<Option<Instant>>,
    started: Option<Instant>,
}

async fn ok(State(s): State<Arc<Server>>) -> &'static str {
    s.hits.fetch_add(1, SeqCst);
    "ok"
}

async fn fail(State(s): State<Arc<Server>>) -> StatusCode {
    s.hits.fetch_add(1, SeqCst);
    StatusCode::INTERNAL_SERVER_ERROR
}

async fn slow(State(s): State<Arc<Server>>) -> &'static str {
    s.hits.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    "late"
}

/// Answers and closes the connection: the client must reconnect for the next one.
async fn close(State(s): State<Arc<Server>>) -> impl axum::response::IntoResponse {
    s.hits.fetch_add(1, SeqCst);
    ([(axum::http::header::CONNECTION, "close")], "bye")
}

async fn echo(State(s): State<Arc<Server>>, body: String) -> String {
    s.hits.fetch_add(1, SeqCst);
    body
}

/// Every request waits while a 1 s global stall is on; the stall starts once, with the
/// first request after 1 s of serving.
async fn stall(State(s): State<Arc<Server>>) -> &'static str {
    s.hits.fetch_add(1, SeqCst);
    let until = {
        let mut stall = s.stall.lock().await;
        let now = Instant::now();
        let started = s.started.unwrap_or(now);
        if stall.is_none() && now.duration_since(started) >= Duration::from_secs(1) {
            *stall = Some(now + Duration::from_secs(1));
        }
        *stall
    };
    if let Some(until) = until
        && until > Instant::now()
    {
        tokio::time::sleep_until(until.into()).await;
    }
    "ok"
}

/// Start a server; returns its URL and state.
async fn server() -> (String, Arc<Server>) {
    let state = Arc::new(Server {
        started: Some(Instant::now()),
        ..Server::default()
    });
    let app = Router::new()
        .route("/ok", get(ok))
        .route("/fail", get(fail))
        .route("/slow", get(slow))
        .route("/echo", post(echo))
        .route("/close", get(close))
        .route("/stall", get(stall))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), state)
}

fn config(url: &str, scenarios: Vec<Scenario>, users: u32, per_user: u64) -> LoadConfig {
    LoadConfig {
        url: url.to_owned(),
        scenarios,
        users,
        requests_per_user: per_user,
        think_time: Some(Duration::ZERO),
        ..LoadConfig::default()
    }
}

mod bad_input;
mod cli;
#[cfg(feature = "tls")]
mod http2;
mod stop;
#[cfg(feature = "tls")]
mod tls;

/// Wait (at most 30 s) until `counter` reaches `n`, polling; `what` names the wait in
/// the failure. The child processes under test are only signalled once they work.
async fn wait_until_counted(counter: &AtomicU64, n: u64, what: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    while counter.load(SeqCst) < n {
        assert!(Instant::now() < until, "{what}: not seen within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tmp(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-{name}", std::process::id()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_request_counts_closed_loop() {
    let (url, state) = server().await;
    let s = LoadTest::new(config(&url, vec![Scenario::get("/ok")], 5, 7))
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(s.total, 35);
    assert_eq!(s.successes, 35);
    assert_eq!(s.failures, 0);
    assert_eq!(state.hits.load(SeqCst), 35);
    assert_eq!(s.mode, Mode::Closed);
    assert_eq!(s.bytes_received, 35 * 2);
    assert!(s.latency.min_ms > 0.0 && s.latency.min_ms <= s.latency.p50_ms);
    assert!(s.latency.p99_ms <= s.latency.max_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_request_counts_open_loop_with_body_and_headers() {
    let (url, state) = server().await;
    let mut echo = Scenario::get("/echo");
    echo.method = "POST".into();
    echo.payload = Some(serde_json::json!({"hello": "world"}));
    echo.headers.insert("x-test".into(), "1".into());
    let mut c = config(&url, vec![echo], 4, 10);
    c.rate = Some(500.0);
    c.token = Some("secret".into());
    let s = LoadTest::new(c).unwrap().run().await.unwrap();
    assert_eq!(s.total, 40);
    assert_eq!(s.successes, 40);
    assert_eq!(state.hits.load(SeqCst), 40);
    assert_eq!(s.mode, Mode::Open);
    // The echo returns the JSON body sent.
    assert_eq!(s.bytes_received, 40 * r#"{"hello":"world"}"#.len() as u64);
    // 40 requests at 500/s take about 80 ms: the schedule, not the speed, sets the pace.
    assert!(s.duration_secs >= 0.07, "{}", s.duration_secs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_grouped_by_endpoint_status_and_timeout() {
    let (url, _) = server().await;
    let mut c = config(
        &url,
        vec![Scenario::get("/fail"), Scenario::get("/slow")],
        2,
        12,
    );
    c.timeout = Duration::from_millis(200);
    let s = LoadTest::new(c).unwrap().run().await.unwrap();
    assert_eq!(s.total, 24);
    assert_eq!(s.failures, 24);
    assert_eq!(s.successes, 0);
    let fail = s.errors.iter().find(|e| e.endpoint == "/fail").unwrap();
    let slow = s.errors.iter().find(|e| e.endpoint == "/slow").unwrap();
    assert_eq!((fail.status, fail.error), (Some(500), None));
    assert_eq!((slow.status, slow.error), (None, Some(ErrorKind::Timeout)));
    assert_eq!(s.errors.len(), 2);
    let by_endpoint = |e: &str| s.endpoints.iter().find(|x| x.endpoint == e).unwrap();
    assert_eq!(fail.count, by_endpoint("/fail").total);
    assert_eq!(slow.count, by_endpoint("/slow").total);
    assert!(fail.count > 0 && slow.count > 0);
    // A timed-out request counts as at least the time waited.
    assert!(s.latency.max_ms >= 200.0);
    let report = s.report();
    assert!(
        report.contains("HTTP 500") && report.contains("timeout"),
        "{report}"
    );
    assert!(report.contains("0.00% success"), "{report}");
}

async fn mixed_run(url: &str, output: PathBuf) -> Summary {
    let mut c = config(
        url,
        vec![Scenario::get("/ok"), Scenario::get("/fail")],
        3,
        20,
    );
    c.output = Some(output);
    LoadTest::new(c).unwrap().run().await.unwrap()
}

/// Counts must be equal; floats only within rounding of the JSON text.
fn same_counts(file: &Summary, run: &Summary) {
    assert_eq!(
        (
            file.total,
            file.successes,
            file.failures,
            file.users,
            file.mode
        ),
        (run.total, run.successes, run.failures, run.users, run.mode)
    );
    assert_eq!(file.errors, run.errors);
    assert_eq!(file.endpoints, run.endpoints);
    assert!((file.latency.p99_ms - run.latency.p99_ms).abs() < 1e-9);
    assert_eq!(file.percentiles.len(), run.percentiles.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_streams_requests_and_summary() {
    let (url, _) = server().await;
    let path = tmp("out.json");
    let s = mixed_run(&url, path.clone()).await;
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let requests = v["requests"].as_array().unwrap();
    assert_eq!(requests.len() as u64, s.total);
    let ok = requests.iter().filter(|r| r["success"] == true).count() as u64;
    assert_eq!(ok, s.successes);
    assert!(s.successes > 0 && s.failures > 0);
    let summary: Summary = serde_json::from_value(v["summary"].clone()).unwrap();
    same_counts(&summary, &s);
    // A summary saved before the HTTP version was recorded still reads back.
    let mut older = v["summary"].clone();
    older
        .as_object_mut()
        .unwrap()
        .remove("http_version")
        .unwrap();
    let older: Summary = serde_json::from_value(older).unwrap();
    assert_eq!(older.http_version, cortex_load::HttpVersion::Http1);
    for r in requests {
        let status = r["status"].as_u64().unwrap();
        assert_eq!(r["success"] == true, status == 200);
        assert!(r["endpoint"] == "/ok" || r["endpoint"] == "/fail");
        assert!(r["timestamp_ms"].as_u64().unwrap() > 1_600_000_000_000);
    }
    let ids: std::collections::BTreeSet<u64> =
        requests.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len() as u64, s.total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_output_and_summary_sidecar() {
    let (url, _) = server().await;
    let path = tmp("out.csv");
    let s = mixed_run(&url, path.clone()).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "id,endpoint,method,status,duration_us,success,error,bytes,timestamp_ms"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len() as u64, s.total);
    assert!(rows.iter().all(|r| r.len() == 9));
    let ok = rows.iter().filter(|r| r[5] == "true").count() as u64;
    assert_eq!(ok, s.successes);
    let failed_500 = rows.iter().filter(|r| r[3] == "500").count() as u64;
    assert_eq!(failed_500, s.failures);
    let sidecar: Summary =
        serde_json::from_slice(&std::fs::read(summary_path(&path)).unwrap()).unwrap();
    same_counts(&sidecar, &s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txt_output_is_the_report() {
    let (url, _) = server().await;
    let path = tmp("out.txt");
    let s = mixed_run(&url, path.clone()).await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text, s.report());
    assert!(text.contains(&format!("{} total", s.total)));
    assert!(text.contains(&format!("{} failed", s.failures)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_shows_a_stall_that_closed_loop_hides() {
    let ((open_url, _), (closed_url, _)) = tokio::join!(server(), server());
    let run = |url: String, rate: Option<f64>| async move {
        let mut c = config(&url, vec![Scenario::get("/stall")], 4, 0);
        c.duration = Some(Duration::from_secs(3));
        c.rate = rate;
        // The closed loop paces itself like the open one: 4 users, 10 ms apart.
        c.think_time = Some(Duration::from_millis(10));
        LoadTest::new(c).unwrap().run().await.unwrap()
    };
    let (open, closed) = tokio::join!(run(open_url, Some(400.0)), run(closed_url, None));
    eprintln!(
        "stall: open p99 {:.1} ms, closed p99 {:.1} ms",
        open.latency.p99_ms, closed.latency.p99_ms
    );
    assert_eq!(open.mode, Mode::Open);
    assert_eq!(closed.mode, Mode::Closed);
    assert!(open.failures == 0 && closed.failures == 0);
    // Both saw the stall...
    assert!(open.latency.max_ms >= 900.0, "open {:?}", open.latency);
    assert!(
        closed.latency.max_ms >= 900.0,
        "closed {:?}",
        closed.latency
    );
    // ...but only the open loop reports it in its percentiles.
    assert!(open.latency.p99_ms >= 500.0, "open {:?}", open.latency);
    assert!(
        open.latency.p99_ms > 3.0 * closed.latency.p99_ms,
        "open {:?} closed {:?}",
        open.latency,
        closed.latency
    );
}

#[tokio::test]
async fn invalid_configs_are_refused_with_the_value() {
    let c = config("http://127.0.0.1:1", vec![], 1, 1);
    assert!(matches!(LoadTest::new(c), Err(LoadError::NoScenarios)));
    let c = config("http://127.0.0.1:1", vec![Scenario::get("/")], 0, 1);
    assert!(matches!(LoadTest::new(c), Err(LoadError::ZeroUsers(0))));
    let c = config("http://127.0.0.1:1", vec![Scenario::get("/")], 1, 0);
    assert!(matches!(LoadTest::new(c), Err(LoadError::ZeroRequests(0))));
    let c = config("ftp://127.0.0.1:1", vec![Scenario::get("/")], 1, 1);
    assert!(matches!(
        LoadTest::new(c),
        Err(LoadError::UnsupportedScheme { .. })
    ));
    let c = config("not a url", vec![Scenario::get("/")], 1, 1);
    let e = LoadTest::new(c).unwrap_err();
    assert!(e.to_string().contains("not a url"), "{e}");
    let mut s = Scenario::get("/");
    s.weight = f64::NAN;
    let e = LoadTest::new(config("http://127.0.0.1:1", vec![s], 1, 1)).unwrap_err();
    assert!(e.to_string().contains("weight NaN"), "{e}");
    let other = Scenario::get("http://other.example/steal");
    let e = LoadTest::new(config("http://127.0.0.1:1", vec![other], 1, 1)).unwrap_err();
    assert!(matches!(e, LoadError::BadEndpoint { .. }), "{e}");
}

#[cfg(not(feature = "tls"))]
#[test]
fn https_needs_the_tls_feature() {
    let c = config("https://127.0.0.1:9", vec![Scenario::get("/")], 1, 1);
    let e = LoadTest::new(c).unwrap_err();
    assert!(matches!(e, LoadError::TlsNotEnabled { .. }), "{e}");
    assert!(e.to_string().contains("`tls` feature"), "{e}");
    let (code, _, err) = cli(&[
        "--url",
        "https://127.0.0.1:9",
        "--users",
        "1",
        "--requests-per-user",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("`tls` feature"), "{err}");
}

#[tokio::test]
async fn unreachable_target_fails_before_the_run() {
    let port = free_port();
    let c = config(
        &format!("http://127.0.0.1:{port}"),
        vec![Scenario::get("/")],
        1,
        1,
    );
    let e = LoadTest::new(c).unwrap().run().await.unwrap_err();
    assert!(matches!(e, LoadError::Unreachable { .. }), "{e}");
}

/// A port nothing listens on: bound, then released.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cortex-load"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_zero_users() {
    let (code, _, err) = cli(&[
        "--url",
        "http://127.0.0.1:9",
        "--users",
        "0",
        "--requests-per-user",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("invalid users: 0"), "{err}");
}

#[test]
fn cli_durations_take_one_syntax_and_bad_ones_are_named() {
    for flag in ["--duration", "--ramp-up", "--think-time", "--timeout"] {
        let (code, _, err) = cli(&[
            "--url",
            "http://127.0.0.1:9",
            "--users",
            "1",
            "--requests-per-user",
            "1",
            flag,
            "soon",
        ]);
        assert_eq!(code, 2, "usage error for {flag}: {err}");
        assert!(err.contains("soon") && err.contains(flag), "{err}");
    }
}

#[test]
fn cli_malformed_scenario_file() {
    let path = tmp("bad-scenarios.json");
    std::fs::write(&path, "[\n  {\"name\": \"a\", \"endpoint\": \"/\",,}\n]").unwrap();
    let (code, _, err) = cli(&[
        "--url",
        "http://127.0.0.1:9",
        "--scenario-file",
        path.to_str().unwrap(),
        "--users",
        "1",
        "--requests-per-user",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("malformed scenario file"), "{err}");
    assert!(err.contains(path.to_str().unwrap()), "{err}");
    assert!(err.contains("line 2 column"), "{err}");
}

#[test]
fn cli_unreachable_url_and_bad_scheme() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = cli(&["--url", &url, "--users", "1", "--duration", "1s", "--quiet"]);
    assert_ne!(code, 0);
    assert!(err.contains("unreachable"), "{err}");
    let (code, _, err) = cli(&[
        "--url",
        "ftp://127.0.0.1:9",
        "--users",
        "1",
        "--requests-per-user",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("use http:// or https://"), "{err}");
    // Causes are printed after the error: "target ... is unreachable: <OS error>".
    let url = format!("http://127.0.0.1:{}", free_port());
    let (_, _, err) = cli(&["--url", &url, "--users", "1", "--requests-per-user", "1"]);
    assert!(err.contains("is unreachable: "), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_run_writes_report_output_and_plot() {
    let (url, state) = server().await;
    let out = tmp("cli.json");
    let plot = tmp("cli.svg");
    let (o, p) = (out.clone(), plot.clone());
    let (code, stdout, err) = tokio::task::spawn_blocking(move || {
        cli(&[
            "--url",
            &url,
            "--path",
            "/ok",
            "--users",
            "3",
            "--requests-per-user",
            "4",
            "--think-time",
            "1ms",
            "--header",
            "x-a: b",
            "--output",
            o.to_str().unwrap(),
            "--plot",
            p.to_str().unwrap(),
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("12 total, 12 succeeded"), "{stdout}");
    assert_eq!(state.hits.load(SeqCst), 12);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(v["summary"]["total"], 12);
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("Latency by percentile"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_runs_are_bounded_and_can_be_stopped() {
    let (url, state) = server().await;
    let mut c = config(&url, vec![Scenario::get("/ok")], 2, 0);
    c.duration = Some(Duration::from_millis(300));
    c.threads = 2;
    // Bounded: a 300 ms run that never ended would fail here instead of hanging.
    let test = LoadTest::new(c.clone()).unwrap();
    let s = tokio::time::timeout(Duration::from_secs(10), test.run())
        .await
        .expect("a 300 ms run ends")
        .unwrap();
    assert!(s.total > 0 && s.failures == 0);
    assert!(s.duration_secs < 5.0, "{}", s.duration_secs);
    assert_eq!(state.hits.load(SeqCst), s.total);

    // A 60 s run stopped after 200 ms.
    c.duration = Some(Duration::from_secs(60));
    let test = LoadTest::new(c).unwrap();
    let stop = test.stop_handle();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.stop();
    });
    let s = tokio::time::timeout(Duration::from_secs(30), test.run())
        .await
        .expect("a stopped run ends long before its 60 s")
        .unwrap();
    assert!(s.total > 0 && s.duration_secs < 30.0, "{}", s.duration_secs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_when_the_server_closes() {
    let (url, state) = server().await;
    let s = LoadTest::new(config(&url, vec![Scenario::get("/close")], 3, 10))
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!((s.total, s.successes), (30, 30), "{:?}", s.errors);
    assert_eq!(state.hits.load(SeqCst), 30);
}

/// A duration, think time or timeout too long to add to the clock (u64::MAX seconds,
/// accepted by the JSON and CLI duration parsers) must be refused by name before the
/// run: it used to pass validation and panic inside the run ("overflow when adding
/// duration to instant").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_past_the_clock_are_refused_not_a_panic() {
    let (url, _) = server().await;
    let huge = Duration::from_secs(u64::MAX);
    let base = config(&url, vec![Scenario::get("/ok")], 1, 2);
    for (name, c) in [
        (
            "duration",
            LoadConfig {
                duration: Some(huge),
                ..base.clone()
            },
        ),
        (
            "think_time",
            LoadConfig {
                think_time: Some(huge),
                ..base.clone()
            },
        ),
        (
            "timeout",
            LoadConfig {
                timeout: huge,
                ..base.clone()
            },
        ),
        (
            "ramp_up",
            LoadConfig {
                ramp_up: huge,
                users: 2,
                ..base.clone()
            },
        ),
    ] {
        // Run it if it is accepted: that is where the overflow was.
        let result = match LoadTest::new(c) {
            Ok(test) => test.run().await.map(|_| ()),
            Err(e) => Err(e),
        };
        let err = result.expect_err(name).to_string();
        assert!(err.contains(name), "{name}: {err}");
        assert!(err.contains(&format!("{}", u64::MAX)), "{name}: {err}");
    }
}
