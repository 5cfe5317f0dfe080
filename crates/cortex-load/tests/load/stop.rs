//! Ctrl-C while users wait: an open-loop slot far ahead, a long think time, a long
//! ramp-up. Each wait ends at once on the stop, so the run ends and reports the
//! requests done so far instead of sleeping out its waits.

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use super::cli::{interrupt, stderr_lines, wait_bounded, wait_for_line};
use super::{server, wait_until_counted};

/// Liveness bound for the process to exit after Ctrl-C. Every wait below is longer
/// (19 s, 60 s, 15 s), so a wait that ignores the stop overruns it.
const EXIT_BOUND: Duration = Duration::from_secs(10);

/// Run `cortex-load <url>/ok --json <extra>`, Ctrl-C it a second after the first
/// request reached the server, and check it exits in time with the summary.
async fn interrupted_while_waiting(extra: &[&str]) {
    let (url, state) = server().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_cortex-load"))
        .arg(format!("{url}/ok"))
        .args(["--json", "--quiet"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let errs = stderr_lines(&mut child);
    wait_until_counted(
        &state.hits,
        1,
        &format!("{extra:?}: a request reaching the server"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let what = format!("{extra:?}");
    let (code, out) = tokio::task::spawn_blocking(move || {
        interrupt(&child);
        let code = wait_bounded(&mut child, EXIT_BOUND, &what);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
        (code, out)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{extra:?}: {out}");
    wait_for_line(&errs, "stopping (Ctrl-C)");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    let total = summary["total"].as_u64().unwrap();
    let hits = state.hits.load(SeqCst);
    assert!(total >= 1, "{extra:?}: {out}");
    // Requests cut short by the stop were never sent: what is counted reached the
    // server, and every one reached is counted (requests in flight finish).
    assert_eq!(total, hits, "{extra:?}: {out}");
    assert_eq!(summary["successes"].as_u64(), Some(total), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_ends_an_open_loop_slot_wait() {
    // 1 request per second over 20 connections: the 20th waits 19 s for its slot.
    interrupted_while_waiting(&["-q", "1", "-c", "20", "-n", "100"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_ends_a_think_time() {
    interrupted_while_waiting(&["--think-time", "60s", "-c", "2", "-n", "10"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_ends_a_ramp_up_wait() {
    // The 4th user starts 45 s in; the first thinks 60 s after its first request.
    interrupted_while_waiting(&[
        "--ramp-up",
        "60s",
        "--think-time",
        "60s",
        "-c",
        "4",
        "-z",
        "90s",
    ])
    .await;
}

/// A TLS handshake the server never answers: the connection is accepted and held
/// silent, so opening the user's connection waits until `--timeout` (60 s here)
/// unless the stop ends that wait.
#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_ends_a_connection_being_opened() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, SeqCst);
            held.push(socket);
        }
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_cortex-load"))
        .arg(format!("https://127.0.0.1:{port}/"))
        .args(["--json", "--quiet", "--insecure", "--timeout", "60s"])
        .args(["-c", "2", "-n", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let errs = stderr_lines(&mut child);
    // The preflight connection, then the users' own.
    wait_until_counted(&accepted, 3, "the preflight and both users connecting").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (code, out) = tokio::task::spawn_blocking(move || {
        interrupt(&child);
        let code = wait_bounded(&mut child, EXIT_BOUND, "TLS handshake");
        let mut out = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
        (code, out)
    })
    .await
    .unwrap();
    wait_for_line(&errs, "stopping (Ctrl-C)");
    // Nothing was sent, so nothing succeeded: the documented status 4, with the
    // summary of zero requests (the cut handshakes are not counted as failures).
    assert_eq!(code, 4, "{out}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["total"].as_u64(), Some(0), "{out}");
}
