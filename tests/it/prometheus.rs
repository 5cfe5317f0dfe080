//! The example service as operators run it: a real Prometheus server scrapes two
//! instances, and the p99 of requests across both comes from the histogram buckets; the
//! exposition passes `promtool check metrics`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::Command;

use crate::service::Service;

/// A binary of Debian's `prometheus` package, which `scripts/services.sh` installs.
pub(crate) fn tool(name: &str, env: &str) -> PathBuf {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin").join(name));
    assert!(
        path.exists(),
        "{} is missing: run `eval \"$(scripts/services.sh)\"`, which installs Debian's prometheus package",
        path.display()
    );
    path
}

/// A free port on loopback for the Prometheus server.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Prometheus server scraping `targets` every second, killed when dropped.
struct Prometheus {
    _child: tokio::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(targets: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: cortex\n    static_configs:\n      - targets: [{list}]\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let child = Command::new(tool("prometheus", "PROMETHEUS"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start prometheus");
        Self {
            _child: child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// The instant vector of `query`, or `None` while Prometheus is not up yet.
    async fn query(&self, http: &reqwest::Client, query: &str) -> Option<Vec<Value>> {
        let res = http
            .get(format!("{}/api/v1/query?query={}", self.url, encode(query)))
            .send()
            .await
            .ok()?;
        let body: Value = res.json().await.ok()?;
        assert_eq!(body["status"], "success", "{query}: {body}");
        body["data"]["result"].as_array().cloned()
    }
}

/// `text` percent-encoded for a query string (every byte but the unreserved ones).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of one sample of an instant vector.
fn value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_computes_the_p99_across_two_instances_from_the_buckets() {
    let a = Service::start(&[]).await;
    let b = Service::start(&[]).await;
    let prometheus = Prometheus::start(&[a.addr(), b.addr()]).await;
    let http = a.http.clone();
    let query = "histogram_quantile(0.99, sum by (le) (rate(cortex_http_request_duration_seconds_bucket[30s])))";
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = None;
    loop {
        // Keep both instances busy, so the rate over the window is not zero.
        for s in [&a, &b] {
            for _ in 0..20 {
                assert_eq!(s.get("/health").await.status, 200);
            }
        }
        let up = prometheus.query(&http, "up").await.unwrap_or_default();
        let both_up = up.len() == 2 && up.iter().all(|s| value(s) == 1.0);
        if both_up && let Some(result) = prometheus.query(&http, query).await {
            if let [sample] = result.as_slice() {
                let p99 = value(sample);
                if p99.is_finite() {
                    assert!(p99 > 0.0, "{sample}");
                    break;
                }
            }
            last = Some(result);
        }
        assert!(
            Instant::now() < deadline,
            "no p99 across both instances within 90 s; up: {up:?}, last answer: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Both instances' series are in the sum: each has its own bucket series.
    let per_instance = prometheus
        .query(
            &http,
            "count by (instance) (cortex_http_request_duration_seconds_bucket)",
        )
        .await
        .unwrap();
    assert_eq!(per_instance.len(), 2, "{per_instance:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_finds_nothing_to_say_about_the_services_metrics() {
    let s = Service::start(&[]).await;
    // Traffic of every kind the service records: routes, an error, the batcher, the cache.
    for path in [
        "/health",
        "/users/1",
        "/users?ids=1,2",
        "/workspaces/1",
        "/nope",
    ] {
        s.get(path).await;
    }
    let text = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut check = Command::new(tool("promtool", "PROMTOOL"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    let mut stdin = check.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, text.as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = check.wait_with_output().await.unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n--- exposition ---\n{text}"
    );
}
