//! HTTP/2 (feature `tls`, which includes `http2`): an axum server that serves both
//! HTTP/1.1 and HTTP/2 (over TLS with ALPN, and h2c with prior knowledge on plain TCP)
//! and counts the version of every request it gets, so each test sees which protocol
//! the load went over.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use axum::Router;
use axum::extract::State;
use axum::http::Version;
use axum::routing::any;
use cortex_load::{HttpVersion, LoadConfig, LoadTest, Scenario};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::tls::{TlsListener, server_config};

/// Requests seen, by HTTP version.
#[derive(Default)]
struct Seen {
    h1: AtomicU64,
    h2: AtomicU64,
    other: AtomicU64,
}

impl Seen {
    fn counts(&self) -> (u64, u64, u64) {
        (
            self.h1.load(SeqCst),
            self.h2.load(SeqCst),
            self.other.load(SeqCst),
        )
    }
}

/// Counts the version and answers the request body, or `ok` without one.
async fn count_version(State(s): State<Arc<Seen>>, version: Version, body: String) -> String {
    match version {
        Version::HTTP_11 => &s.h1,
        Version::HTTP_2 => &s.h2,
        _ => &s.other,
    }
    .fetch_add(1, SeqCst);
    if body.is_empty() {
        "ok".to_owned()
    } else {
        body
    }
}

struct Server {
    /// `https://localhost:port` or `http://127.0.0.1:port`.
    url: String,
    seen: Arc<Seen>,
    ca: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

fn app(seen: &Arc<Seen>) -> Router {
    Router::new()
        .route("/v", any(count_version))
        .with_state(Arc::clone(seen))
}

/// An HTTPS server offering `alpn` (in order of preference). axum serves HTTP/1.1
/// and HTTP/2 on any connection, whatever ALPN said: the version counts show what the
/// client chose to speak.
async fn https_server(alpn: &[&[u8]]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = server_config(dir.path());
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let seen = Arc::new(Seen::default());
    let listener = TlsListener {
        tcp: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        acceptor: TlsAcceptor::from(Arc::new(config)),
        failed_handshakes: Arc::default(),
    };
    let port = listener.tcp.local_addr().unwrap().port();
    let router = app(&seen);
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Server {
        url: format!("https://localhost:{port}"),
        seen,
        ca: Some(dir.path().join("ca.pem")),
        _dir: Some(dir),
    }
}

/// A plain-TCP server speaking HTTP/1.1 and HTTP/2 with prior knowledge (h2c).
async fn h2c_server() -> Server {
    let seen = Arc::new(Seen::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = app(&seen);
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Server {
        url: format!("http://127.0.0.1:{port}"),
        seen,
        ca: None,
        _dir: None,
    }
}

fn config(server: &Server, version: HttpVersion, scenario: Scenario) -> LoadConfig {
    LoadConfig {
        url: server.url.clone(),
        scenarios: vec![scenario],
        users: 2,
        requests_per_user: 5,
        think_time: Some(std::time::Duration::ZERO),
        ca_file: server.ca.clone(),
        http_version: version,
        ..LoadConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_speaks_what_alpn_negotiates_unless_told() {
    let server = https_server(&[b"h2", b"http/1.1"]).await;
    let run = |version, scenario| LoadTest::new(config(&server, version, scenario));

    // auto: the server prefers h2, so every request goes over HTTP/2.
    let s = run(HttpVersion::Auto, Scenario::get("/v"))
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!((s.total, s.successes), (10, 10), "{:?}", s.errors);
    assert_eq!(s.bytes_received, 10 * 2);
    assert_eq!(server.seen.counts(), (0, 10, 0));
    assert_eq!(s.http_version, HttpVersion::Http2);

    // A JSON body over HTTP/2, answered back: sent and counted whole.
    let mut post = Scenario::get("/v");
    post.method = "POST".into();
    post.payload = Some(serde_json::json!({"over": "h2"}));
    let s = run(HttpVersion::Http2, post).unwrap().run().await.unwrap();
    assert_eq!((s.total, s.successes), (10, 10), "{:?}", s.errors);
    assert_eq!(s.bytes_received, 10 * r#"{"over":"h2"}"#.len() as u64);
    assert_eq!(server.seen.counts(), (0, 20, 0));

    // 1.1: ALPN offers only http/1.1.
    let s = run(HttpVersion::Http1, Scenario::get("/v"))
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!((s.total, s.successes), (10, 10), "{:?}", s.errors);
    assert_eq!(server.seen.counts(), (10, 20, 0));
    assert_eq!(s.http_version, HttpVersion::Http1);

    // A server that offers only http/1.1 gets HTTP/1.1 from auto.
    let h1_only = https_server(&[b"http/1.1"]).await;
    let s = LoadTest::new(config(&h1_only, HttpVersion::Auto, Scenario::get("/v")))
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!((s.total, s.successes), (10, 10), "{:?}", s.errors);
    assert_eq!(h1_only.seen.counts(), (10, 0, 0));
    assert_eq!(s.http_version, HttpVersion::Http1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_http1_unless_http2_is_forced() {
    let server = h2c_server().await;
    let s = LoadTest::new(config(&server, HttpVersion::Auto, Scenario::get("/v")))
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!((s.total, s.successes), (10, 10), "{:?}", s.errors);
    assert_eq!(server.seen.counts(), (10, 0, 0));
    assert_eq!(s.http_version, HttpVersion::Http1);
    let s = LoadTest::new(config(&server, HttpVersion::Http2, Scenario::get("/v")))
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!((s.total, s.successes), (10, 10), "{:?}", s.errors);
    assert_eq!(server.seen.counts(), (10, 10, 0));
    assert_eq!(s.http_version, HttpVersion::Http2);
}

/// Run the binary with `args`; returns the exit code, stdout and stderr.
async fn cli(args: Vec<String>) -> (Option<i32>, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_cortex-load"))
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn args(url: &str, extra: &[&str]) -> Vec<String> {
    [&[url, "-c", "2", "-n", "6", "--quiet"][..], extra]
        .concat()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_http2_flags() {
    let tls = https_server(&[b"h2", b"http/1.1"]).await;
    let url = format!("{}/v", tls.url);
    let ca = tls.ca.clone().unwrap();
    let ca = ca.to_str().unwrap();

    let (code, stdout, stderr) = cli(args(&url, &["--cacert", ca])).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("6 total, 6 succeeded"), "{stdout}");
    assert!(
        stdout.contains(", HTTP/2\n"),
        "the report names the version: {stdout}"
    );
    assert_eq!(tls.seen.counts(), (0, 6, 0), "ALPN picked h2");
    let (code, stdout, stderr) = cli(args(&url, &["--cacert", ca, "--json"])).await;
    assert_eq!(code, Some(0), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["http_version"], "2", "{stdout}");
    assert_eq!(tls.seen.counts(), (0, 12, 0));

    let (code, stdout, stderr) = cli(args(
        &url,
        &["--cacert", ca, "--http-version", "1.1", "--json"],
    ))
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["http_version"], "1.1", "{stdout}");
    assert_eq!(tls.seen.counts(), (6, 12, 0));

    let h2c = h2c_server().await;
    let url = format!("{}/v", h2c.url);
    let (code, stdout, stderr) = cli(args(&url, &["--http2"])).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(", HTTP/2\n"), "{stdout}");
    let (code, stdout, stderr) = cli(args(&url, &["--http-version", "2", "--json"])).await;
    assert_eq!(code, Some(0), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["http_version"], "2", "{stdout}");
    assert_eq!(h2c.seen.counts(), (0, 12, 0), "h2c with prior knowledge");

    // Usage errors name the value; nothing is sent.
    let (code, _, stderr) = cli(args(&url, &["--http-version", "3"])).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("\"3\""), "{stderr}");
    let (code, _, stderr) = cli(args(&url, &["--http2", "--http-version", "1.1"])).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(h2c.seen.counts(), (0, 12, 0));
}
