//! The command line as load tools spell it: positional URL and short flags, `--json`,
//! `.hgrm` output, `--fail-on` thresholds and the exit statuses, Ctrl-C. Every case
//! runs the built binary against the in-process server.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use super::{cli, free_port, server, tmp, wait_until_counted};

/// The documented exit statuses.
const USAGE: i32 = 2;
const THRESHOLD: i32 = 3;
const NO_SUCCESS: i32 = 4;
const INTERRUPTED: i32 = 130;

/// Run the binary off the runtime (the server runs on it).
async fn run(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || cli(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positional_url_and_short_flags_run_and_report() {
    let (url, state) = server().await;
    // -c users, -n total spread over them, -H repeatable.
    let target = format!("{url}/ok");
    let (code, out, err) = run(strings(&[
        &target, "-c", "3", "-n", "12", "-H", "x-a: b", "-H", "x-b:c", "--quiet",
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Load test: 3 users, closed loop, HTTP/1.1\n"),
        "{out}"
    );
    assert!(out.contains("12 total, 12 succeeded"), "{out}");
    assert_eq!(state.hits.load(SeqCst), 12);

    // -n not a multiple of -c: rounded up, and said so.
    let (code, out, err) = run(strings(&[&target, "-c", "4", "-n", "10", "--quiet"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("12 total, 12 succeeded"), "{out}");
    assert!(err.contains("-n 10 over 4 users: sending 12"), "{err}");

    // -m and -d: the body is sent (the echo answers it back).
    let echo = format!("{url}/echo");
    let (code, out, err) = run(strings(&[
        &echo,
        "-m",
        "POST",
        "-d",
        r#"{"a":1}"#,
        "--connections",
        "2",
        "-n",
        "4",
        "--json",
        "--quiet",
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["successes"], 4, "{out}");
    assert_eq!(v["bytes_received"], 4 * 7, "{out}");

    // -D: the body from a file.
    let body = tmp("body.json");
    std::fs::write(&body, r#"{"from": "file"}"#).unwrap();
    let (code, out, err) = run(strings(&[
        &echo,
        "-m",
        "POST",
        "-D",
        body.to_str().unwrap(),
        "-c",
        "1",
        "-n",
        "2",
        "--json",
        "--quiet",
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["successes"], 2, "{out}");
    assert_eq!(v["bytes_received"], 2 * r#"{"from":"file"}"#.len(), "{out}");

    // -z duration and -q rate (open loop): bounded by the duration.
    let (code, out, err) = run(strings(&[
        &target, "-c", "2", "-z", "500ms", "-q", "40", "--quiet",
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("open loop, 40 req/s target"), "{out}");

    // The long forms still work beside them, --url included.
    let (code, out, err) = run(strings(&[
        "--url",
        &url,
        "--path",
        "/ok",
        "--users",
        "2",
        "--requests-per-user",
        "3",
        "--think-time",
        "0",
        "--quiet",
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("6 total, 6 succeeded"), "{out}");

    // The URL's path and query are asked for as written (no trailing slash added).
    let (code, out, err) = run(strings(&[
        &format!("{url}/ok?x=1"),
        "-c",
        "1",
        "-n",
        "1",
        "--json",
        "--quiet",
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["endpoints"][0]["endpoint"], "/ok?x=1", "{out}");
    assert_eq!(v["successes"], 1, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_puts_only_the_summary_on_stdout() {
    let (url, _) = server().await;
    // Progress on: it must go to stderr, not into the JSON.
    let (code, out, err) = run(strings(&[
        &format!("{url}/ok"),
        "-c",
        "2",
        "-n",
        "20",
        "--json",
        "--fail-on",
        "error-rate>50%",
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {out}"));
    assert_eq!(v["total"], 20);
    assert_eq!(v["successes"], 20);
    assert_eq!(v["http_version"], "1.1", "plain http:// speaks HTTP/1.1");
    assert_eq!(v["thresholds"][0]["threshold"], "error-rate>50%");
    assert_eq!(v["thresholds"][0]["crossed"], false);
    // The summary part reads back as the library's type.
    let s: cortex_load::Summary = serde_json::from_value(v).unwrap();
    assert_eq!(s.total, 20);
}

/// `Value Percentile TotalCount 1/(1-Percentile)` rows of a `.hgrm` file.
fn hgrm_rows(text: &str) -> Vec<(f64, f64, u64)> {
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            assert!(cols.len() == 3 || cols.len() == 4, "row {l:?}");
            (
                cols[0].parse().unwrap(),
                cols[1].parse().unwrap(),
                cols[2].parse().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hgrm_file_has_the_table_and_footer() {
    let (url, state) = server().await;
    let path = tmp("latency.hgrm");
    let (code, _, err) = run(strings(&[
        &format!("{url}/ok"),
        "-c",
        "4",
        "-n",
        "400",
        "--quiet",
        "--hgrm",
        path.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&path).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"],
        "{text}"
    );
    let rows = hgrm_rows(&text);
    assert!(rows.len() > 10, "{text}");
    assert_eq!(rows[0].1, 0.0, "{text}");
    for w in rows.windows(2) {
        assert!(w[0].0 <= w[1].0, "values not monotone: {w:?}\n{text}");
        assert!(w[0].1 < w[1].1, "percentiles not increasing: {w:?}\n{text}");
        assert!(w[0].2 <= w[1].2, "counts not monotone: {w:?}\n{text}");
    }
    let last = rows[rows.len() - 1];
    assert_eq!((last.1, last.2), (1.0, 400), "{text}");
    assert_eq!(state.hits.load(SeqCst), 400, "the server saw every request");
    // HdrHistogram's format, as its log processors read it: every row but the last
    // has the 1/(1-Percentile) column matching its percentile; the last has none.
    for l in text.lines().skip(2).filter(|l| !l.starts_with('#')) {
        let cols: Vec<&str> = l.split_whitespace().collect();
        let p: f64 = cols[1].parse().unwrap();
        if p < 1.0 {
            assert_eq!(cols.len(), 4, "{l:?}");
            let inv: f64 = cols[3].parse().unwrap();
            assert!((inv - 1.0 / (1.0 - p)).abs() < 0.01, "{l:?}");
            assert_eq!(cols[1].split('.').nth(1).map(str::len), Some(12), "{l:?}");
        } else {
            assert_eq!(cols.len(), 3, "{l:?}");
        }
    }
    assert_eq!(
        text.lines().nth(1),
        Some(""),
        "a blank line after the header"
    );
    // Percentile levels follow HdrHistogram's ticks (5 per half distance): the first
    // rows step by 10% until 50%, then by 5% until 75%.
    let levels: Vec<f64> = rows.iter().map(|r| r.1).collect();
    for w in levels.windows(2).filter(|w| w[1] < 1.0) {
        let step = w[1] - w[0];
        let expected = 1.0 / (5.0 * 2f64.powi(((1.0 / (1.0 - w[0])).log2() + 1e-9) as i32 + 1));
        assert!(
            (step - expected).abs() < 1e-9,
            "step {step} after {} (expected {expected})\n{text}",
            w[0]
        );
    }
    // The count of a row is exact: TotalCount at level p covers at least p of all.
    for r in &rows {
        assert!(r.2 as f64 >= r.1 * 400.0 - 1e-6, "{r:?}\n{text}");
    }
    assert!(rows.iter().all(|r| r.0 > 0.0 && r.2 <= 400), "{text}");
    let footer: Vec<&str> = text.lines().filter(|l| l.starts_with("#[")).collect();
    assert_eq!(footer.len(), 3, "{text}");
    assert!(footer[0].starts_with("#[Mean    = ") && footer[0].contains(", StdDeviation   = "));
    assert!(
        footer[1].starts_with("#[Max     = ")
            && footer[1].ends_with("Total count    =          400]")
    );
    assert!(
        footer[2].starts_with("#[Buckets = ")
            && footer[2].contains("SubBuckets     =         2048]")
    );
    // The max of the footer is the last row's value.
    let max: f64 = footer[1]["#[Max     = ".len()..]
        .split(',')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(max, last.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_on_thresholds_set_the_exit_status() {
    let (url, _) = server().await;
    let target = format!("{url}/ok");
    let base = |extra: &[&str]| {
        let mut a = strings(&[&target, "-c", "2", "-n", "10", "--quiet"]);
        a.extend(strings(extra));
        a
    };
    let (code, out, err) = run(base(&["--fail-on", "p99>0ms"])).await;
    assert_eq!(code, THRESHOLD, "{err}");
    assert!(err.contains("threshold crossed: p99>0ms (p99 = "), "{err}");
    // The report still comes.
    assert!(out.contains("10 total"), "{out}");

    let (code, _, err) = run(base(&["--fail-on", "error-rate>50%"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("crossed"), "{err}");

    // Several: only the crossed one is named.
    let (code, _, err) = run(base(&[
        "--fail-on",
        "error-rate > 1%",
        "--fail-on",
        "rps<0.001",
        "--fail-on",
        "max>=0us",
    ]))
    .await;
    assert_eq!(code, THRESHOLD, "{err}");
    assert!(err.contains("threshold crossed: max>=0us"), "{err}");
    assert!(
        !err.contains("error-rate") && !err.contains("rps<"),
        "{err}"
    );

    // In the JSON too.
    let (code, out, err) = run(base(&[
        "--json",
        "--fail-on",
        "failures>0",
        "--fail-on",
        "p50>0ns",
    ]))
    .await;
    assert_eq!(code, THRESHOLD, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["thresholds"][0]["crossed"], false, "{out}");
    assert_eq!(v["thresholds"][1]["crossed"], true, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_where_every_request_fails_exits_non_zero() {
    let (url, state) = server().await;
    // Every answer is a 500.
    let (code, out, err) = run(strings(&[
        &format!("{url}/fail"),
        "-c",
        "2",
        "-n",
        "6",
        "--quiet",
    ]))
    .await;
    assert_eq!(code, NO_SUCCESS, "{err}");
    assert!(out.contains("6 total, 0 succeeded, 6 failed"), "{out}");
    assert!(err.contains("no request succeeded"), "{err}");
    assert_eq!(state.hits.load(SeqCst), 6);
    // A port that refuses every connection: the run cannot start.
    let closed = format!("http://127.0.0.1:{}/", free_port());
    let (code, _, err) = run(strings(&[&closed, "-c", "2", "-n", "6", "--quiet"])).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unreachable"), "{err}");
}

#[test]
fn bad_fail_on_is_a_usage_error_naming_it() {
    let url = format!("http://127.0.0.1:{}/", free_port());
    for bad in [
        "p99>250",
        "latency>1ms",
        "error-rate>1",
        "error-rate>101%",
        "p99=1ms",
        "p99>soon",
        "failures>1.5",
        "rps<fast",
        ">1ms",
    ] {
        let (code, _, err) = cli(&[&url, "-n", "1", "--fail-on", bad]);
        assert_eq!(code, USAGE, "{bad}: {err}");
        assert!(
            err.contains(bad) && err.contains("--fail-on"),
            "{bad}: {err}"
        );
    }
    // Two targets, or none: usage errors naming the flag.
    let (code, _, err) = cli(&[&url, "--url", &url, "-n", "1"]);
    assert_eq!(code, USAGE, "{err}");
    assert!(err.contains("--url"), "{err}");
    let (code, _, err) = cli(&[&url, "-n", "0"]);
    assert_eq!(code, USAGE, "{err}");
    assert!(err.contains("-n") || err.contains("--requests"), "{err}");
}

/// Send SIGINT to a child.
pub(super) fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -INT failed");
}

/// Wait for a child to exit, at most `bound`; kill it and fail if it does not.
pub(super) fn wait_bounded(child: &mut Child, bound: Duration, what: &str) -> i32 {
    let until = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: cortex-load did not exit within {bound:?} of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lines of the child's stderr, read on a thread.
pub(super) fn stderr_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Wait (bounded) for a stderr line containing `needle`.
pub(super) fn wait_for_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return,
            Ok(_) => {}
            Err(e) => panic!("no stderr line with {needle:?}: {e}"),
        }
    }
    panic!("no stderr line with {needle:?} within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_ends_the_run_and_still_reports() {
    let (url, state) = server().await;
    let hgrm = tmp("interrupted.hgrm");
    let output = tmp("interrupted.csv");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cortex-load"))
        .args([
            &format!("{url}/ok"),
            "-c",
            "2",
            "-z",
            "60s",
            "--quiet",
            "--threads",
            "1",
        ])
        .arg("--hgrm")
        .arg(&hgrm)
        .arg("--output")
        .arg(&output)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let errs = stderr_lines(&mut child);
    // Wait until requests flow (bounded), then about a second more.
    wait_until_counted(&state.hits, 1, "a request reaching the server").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    interrupt(&child);
    let code = tokio::task::spawn_blocking(move || {
        let code = wait_bounded(&mut child, Duration::from_secs(30), "one Ctrl-C");
        let mut out = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
        (code, out)
    })
    .await
    .unwrap();
    let (code, out) = code;
    assert_eq!(code, 0, "{out}");
    wait_for_line(&errs, "stopping (Ctrl-C)");
    assert!(
        out.contains("Requests:") && out.contains("Latency ms:"),
        "{out}"
    );
    let hgrm = std::fs::read_to_string(&hgrm).unwrap();
    assert!(hgrm.contains("#[Max     ="), "{hgrm}");
    let csv = std::fs::read_to_string(&output).unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cortex_load::summary_path(&output)).unwrap())
            .unwrap();
    let total = summary["total"].as_u64().unwrap();
    assert!(total > 0, "{summary}");
    assert_eq!(csv.lines().count() as u64, total + 1, "one row per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_exits_at_once() {
    let (url, state) = server().await;
    // Each /slow answer takes 2 s: after the first Ctrl-C the run waits for them.
    let mut child = Command::new(env!("CARGO_BIN_EXE_cortex-load"))
        .args([&format!("{url}/slow"), "-c", "2", "-z", "60s", "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let errs = stderr_lines(&mut child);
    wait_until_counted(&state.hits, 1, "a request reaching the server").await;
    let code = tokio::task::spawn_blocking(move || {
        interrupt(&child);
        wait_for_line(&errs, "stopping (Ctrl-C)");
        interrupt(&child);
        wait_bounded(&mut child, Duration::from_secs(30), "two Ctrl-C")
    })
    .await
    .unwrap();
    assert_eq!(code, INTERRUPTED);
}
