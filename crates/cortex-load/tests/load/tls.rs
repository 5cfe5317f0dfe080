//! `https://` targets (feature `tls`): a CA and a server certificate made with the
//! `openssl` command, an in-process axum server behind tokio-rustls, and load tests
//! that trust the CA, trust only the web roots, or skip verification.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use axum::Router;
use axum::routing::get;
use cortex_load::{ErrorKind, LoadConfig, LoadError, LoadTest, Scenario};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// Run `openssl` with fixed arguments in `dir`; fails loudly (with its stderr) when the
/// command is missing or fails: the test needs it.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the `openssl` command is needed to make test certificates");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`) and a server certificate for `localhost` and `127.0.0.1` signed by
/// it (`server.pem`, `server.key`), P-256 keys, in `dir`.
fn make_certificates(dir: &Path) {
    let p256 = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    openssl(
        dir,
        &[
            &["req", "-x509", "-nodes", "-days", "2"][..],
            &p256,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=cortex-load test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[
            &["req", "-new", "-nodes"][..],
            &p256,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
}

/// axum over tokio-rustls: the TLS handshake happens in `accept`; a failed one is
/// counted and the next connection accepted.
pub(super) struct TlsListener {
    pub(super) tcp: TcpListener,
    pub(super) acceptor: TlsAcceptor,
    pub(super) failed_handshakes: Arc<AtomicU64>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, addr),
                Err(_) => {
                    self.failed_handshakes.fetch_add(1, SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

struct HttpsServer {
    url: String,
    ca: PathBuf,
    hits: Arc<AtomicU64>,
    failed_handshakes: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

/// A test CA and server certificate made in `dir` (see [`make_certificates`]), and
/// the rustls server configuration serving that certificate (no ALPN set).
pub(super) fn server_config(dir: &Path) -> ServerConfig {
    make_certificates(dir);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap()
}

async fn https_server() -> HttpsServer {
    let dir = tempfile::tempdir().unwrap();
    let config = server_config(dir.path());
    let hits = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&hits);
    let app = Router::new().route(
        "/ok",
        get(move || {
            counted.fetch_add(1, SeqCst);
            async { "ok over tls" }
        }),
    );
    let failed_handshakes = Arc::new(AtomicU64::new(0));
    let listener = TlsListener {
        tcp: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        acceptor: TlsAcceptor::from(Arc::new(config)),
        failed_handshakes: Arc::clone(&failed_handshakes),
    };
    let port = listener.tcp.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    HttpsServer {
        url: format!("https://localhost:{port}"),
        ca: dir.path().join("ca.pem"),
        hits,
        failed_handshakes,
        _dir: dir,
    }
}

fn https_config(url: &str) -> LoadConfig {
    LoadConfig {
        url: url.to_owned(),
        scenarios: vec![Scenario::get("/ok")],
        users: 2,
        requests_per_user: 5,
        think_time: Some(std::time::Duration::ZERO),
        ..LoadConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_ca_succeeds_and_without_it_fails_as_tls() {
    let server = https_server().await;

    // Trusting the CA that signed the server's certificate: every request succeeds,
    // over one kept-alive TLS connection per user.
    let trusted = LoadConfig {
        ca_file: Some(server.ca.clone()),
        ..https_config(&server.url)
    };
    let s = LoadTest::new(trusted).unwrap().run().await.unwrap();
    assert_eq!((s.total, s.successes), (10, 10), "{:?}", s.errors);
    assert_eq!(s.bytes_received, 10 * "ok over tls".len() as u64);
    assert_eq!(server.hits.load(SeqCst), 10);
    // The run's pre-flight check opens and drops a plain TCP connection: the server
    // counts that as a failed handshake.
    let failed_before = server.failed_handshakes.load(SeqCst);

    // The same server with only the bundled web roots: the certificate is not trusted,
    // every request fails with the typed kind `Tls`, and none reaches the handler.
    let s = LoadTest::new(https_config(&server.url))
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!((s.total, s.failures), (10, 10));
    assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
    assert_eq!(
        (s.errors[0].status, s.errors[0].error, s.errors[0].count),
        (None, Some(ErrorKind::Tls), 10)
    );
    assert!(s.report().contains("tls"), "{}", s.report());
    assert_eq!(
        server.hits.load(SeqCst),
        10,
        "no request got past the handshake"
    );
    assert!(
        server.failed_handshakes.load(SeqCst) >= failed_before + 2,
        "the pre-flight and at least one refused handshake"
    );

    // --insecure: no verification, every request succeeds.
    let insecure = LoadConfig {
        insecure: true,
        ..https_config(&server.url)
    };
    let s = LoadTest::new(insecure).unwrap().run().await.unwrap();
    assert_eq!((s.total, s.successes), (10, 10), "{:?}", s.errors);
    assert_eq!(server.hits.load(SeqCst), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_target_is_checked_against_the_ip_in_the_certificate() {
    let server = https_server().await;
    let by_ip = LoadConfig {
        ca_file: Some(server.ca.clone()),
        ..https_config(&server.url.replace("localhost", "127.0.0.1"))
    };
    let s = LoadTest::new(by_ip).unwrap().run().await.unwrap();
    assert_eq!((s.total, s.successes), (10, 10), "{:?}", s.errors);
}

#[tokio::test]
async fn a_bad_ca_file_is_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("not-a-ca.pem");
    std::fs::write(&bad, "hello\n").unwrap();
    let c = LoadConfig {
        ca_file: Some(bad.clone()),
        ..https_config("https://127.0.0.1:9")
    };
    match LoadTest::new(c) {
        Err(e @ LoadError::CaFile { .. }) => {
            assert!(e.to_string().contains(bad.to_str().unwrap()), "{e}");
            assert!(!e.is_retryable());
        }
        other => panic!("expected CaFile: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_takes_cacert_and_insecure() {
    let server = https_server().await;
    let run = |extra: Vec<String>| {
        let url = server.url.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec![
                "--url".to_owned(),
                url,
                "--path".to_owned(),
                "/ok".to_owned(),
                "--users".to_owned(),
                "2".to_owned(),
                "--requests-per-user".to_owned(),
                "3".to_owned(),
                "--think-time".to_owned(),
                "0".to_owned(),
                "--quiet".to_owned(),
            ];
            args.extend(extra);
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
    };
    let ca = server.ca.to_str().unwrap().to_owned();
    let (code, stdout, stderr) = run(vec!["--cacert".into(), ca]).await.unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("6 total, 6 succeeded"), "{stdout}");
    let (code, stdout, stderr) = run(vec!["--insecure".into()]).await.unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("6 total, 6 succeeded"), "{stdout}");
    // The positional URL and short flags over HTTPS.
    let (url, ca) = (format!("{}/ok", server.url), server.ca.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_cortex-load"))
            .args([&url, "-c", "2", "-n", "4", "--quiet", "--cacert"])
            .arg(&ca)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("4 total, 4 succeeded"), "{stdout}");
    // Not trusted: every handshake fails. The report says why, and since no request
    // succeeded the exit status is 4.
    let (code, stdout, stderr) = run(vec![]).await.unwrap();
    assert_eq!(code, Some(4), "no request succeeded: {stderr}");
    assert!(stdout.contains("tls"), "{stdout}");
    assert!(stderr.contains("no request succeeded"), "{stderr}");
}
