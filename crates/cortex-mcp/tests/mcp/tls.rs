//! `https://` endpoints (feature `tls`) against the test server over TLS, with a
//! private certificate authority made for the test by the `openssl` command.

use std::path::{Path, PathBuf};
use std::process::Command;

use cortex_mcp::testing::TestServer;
use cortex_mcp::{Endpoint, Error, McpClient, McpClientConfig};
use cortex_metrics::Metrics;
use serde_json::json;

/// A CA (`ca.pem`) and a server certificate it signed for 127.0.0.1
/// (`server.pem`, `server.key`), in a fresh directory.
fn make_certificates() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cortex-mcp-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509"][..],
            &ec,
            &["-days", "2", "-subj", "/CN=cortex test CA"],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
        [
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        ]
        .concat(),
        vec![
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
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("the openssl command (scripts/services.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

async fn connect(url: &str, ca: Option<&Path>) -> Result<McpClient, Error> {
    let config = McpClientConfig {
        pool_size: 1,
        max_retries: 0,
        tls_ca_file: ca.map(Path::to_path_buf),
        ..McpClientConfig::default()
    };
    McpClient::builder("tls", Endpoint::http(url))
        .config(config)
        .metrics(&Metrics::new())
        .build()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca_and_only_with_it() {
    let dir = make_certificates();
    let server = TestServer::start_tls(&dir.join("server.pem"), &dir.join("server.key"))
        .await
        .unwrap();
    let url = server.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let client = connect(&url, Some(&dir.join("ca.pem"))).await.unwrap();
    let r = client
        .call_tool("echo", json!({ "message": "sealed" }))
        .await
        .unwrap();
    assert_eq!(r.content[0].as_text().unwrap().text, "Echo: sealed");
    assert_eq!(server.tool_calls(), 1);
    // The client names its crypto provider itself: the process-wide default stays the
    // application's choice (none here).
    assert!(
        rustls::crypto::CryptoProvider::get_default().is_none(),
        "building an HTTPS client installed a process-wide rustls provider"
    );

    // Without the CA the server's certificate is not trusted: no session, no call.
    let err = connect(&url, None).await.unwrap_err();
    assert!(matches!(&err, Error::Connect { .. }), "{err}");
    assert_eq!(server.tool_calls(), 1);

    // A file that is not a certificate bundle is named in the error.
    let err = connect(&url, Some(&dir.join("server.ext")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("MCP_TLS_CA_FILE"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
