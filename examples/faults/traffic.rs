//! The traffic the suite sends and what came back: cortex-load's per-request records
//! (one run per instance) and the ledger, the suite's own posts, which keep every
//! accepted task's message id so each one can be looked up afterwards.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::Fail;

/// One request, from either source. Times are Unix milliseconds.
#[derive(Clone, Debug)]
pub struct Rec {
    /// Which instance it went to (0 or 1).
    pub instance: usize,
    pub post: bool,
    /// 0 when no answer came.
    pub status: u16,
    /// `timeout`, `connect`, `http`, or the JSON error code of a 5xx.
    pub error: Option<String>,
    pub start_ms: u64,
    pub dur_ms: f64,
}

impl Rec {
    pub fn end_ms(&self) -> u64 {
        self.start_ms + self.dur_ms.ceil() as u64
    }

    pub fn failed(&self) -> bool {
        self.status == 0 || self.status >= 500
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The mixed scenario: cached and uncached reads, a page of messages, and posted
/// messages (each enqueues a durable summary task).
pub fn scenario(user: i64, workspace: i64, conversation: i64) -> Value {
    json!([
        { "name": "read workspace", "endpoint": format!("/workspaces/{workspace}"), "weight": 50 },
        { "name": "user's workspaces", "endpoint": format!("/users/{user}/workspaces"), "weight": 15 },
        { "name": "page of messages", "endpoint": format!("/conversations/{conversation}/messages?limit=20"), "weight": 15 },
        { "name": "workspace summary", "endpoint": format!("/workspaces/{workspace}/summary"), "weight": 5 },
        {
            "name": "post a message",
            "endpoint": format!("/conversations/{conversation}/messages"),
            "method": "POST",
            "payload": { "sender_id": user, "content": "load message" },
            "weight": 15
        }
    ])
}

/// One cortex-load run against one instance, writing every request to a CSV file.
pub struct LoadRun {
    pub instance: usize,
    pub csv: PathBuf,
    child: Child,
}

impl LoadRun {
    /// Closed loop, so a record's duration is the service's answer time, not time
    /// spent queued in the load generator.
    pub fn start(
        bin: &Path,
        instance: usize,
        base: &str,
        scenario: &Path,
        users: u32,
        duration: Duration,
        dir: &Path,
    ) -> Result<Self, Fail> {
        let csv = dir.join(format!("load{instance}.csv"));
        let child = Command::new(bin)
            .args(["--url", base, "--scenario-file"])
            .arg(scenario)
            .args(["--users", &users.to_string()])
            .args(["--duration", &format!("{}ms", duration.as_millis())])
            .args([
                "--think-time",
                "20ms",
                "--timeout",
                "10s",
                "--threads",
                "1",
                "--quiet",
            ])
            .arg("--output")
            .arg(&csv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.join(format!("load{instance}.log")))
                    .map_err(Fail::io("load log"))?,
            )
            .kill_on_drop(true)
            .spawn()
            .map_err(Fail::io("spawn cortex-load"))?;
        Ok(Self {
            instance,
            csv,
            child,
        })
    }

    /// Wait for the run to end (bounded) and read its records.
    pub async fn finish(mut self, bound: Duration) -> Result<Vec<Rec>, Fail> {
        let status = tokio::time::timeout(bound, self.child.wait())
            .await
            .map_err(|_| Fail(format!("cortex-load did not end within {bound:?}")))?
            .map_err(Fail::io("cortex-load"))?;
        if !status.success() {
            return Err(Fail(format!("cortex-load exited with {status}")));
        }
        read_csv(&self.csv, self.instance)
    }
}

/// cortex-load's CSV: `id,endpoint,method,status,duration_us,success,error,bytes,timestamp_ms`.
/// The endpoint may be quoted and hold commas, so fields are taken from both ends.
fn read_csv(path: &Path, instance: usize) -> Result<Vec<Rec>, Fail> {
    let text = std::fs::read_to_string(path).map_err(Fail::io("read the load records"))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let bad = || {
            Fail(format!(
                "{}:{}: not a record: {line}",
                path.display(),
                n + 1
            ))
        };
        let mut back = line.rsplitn(7, ',');
        let ts: u64 = back.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let _bytes = back.next().ok_or_else(bad)?;
        let error = back.next().ok_or_else(bad)?;
        let _success = back.next().ok_or_else(bad)?;
        let dur_us: u64 = back.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let status = back.next().ok_or_else(bad)?;
        let front = back.next().ok_or_else(bad)?;
        let method = front.rsplit(',').next().ok_or_else(bad)?;
        out.push(Rec {
            instance,
            post: method.trim_matches('"') == "POST",
            status: if status.is_empty() {
                0
            } else {
                status.parse().map_err(|_| bad())?
            },
            error: (!error.is_empty()).then(|| error.to_owned()),
            start_ms: ts,
            dur_ms: dur_us as f64 / 1000.0,
        });
    }
    Ok(out)
}

/// A post the suite made itself, with the ids it was answered.
#[derive(Clone, Debug)]
pub struct Posted {
    pub rec: Rec,
    pub message_id: Option<i64>,
    pub task_id: Option<String>,
}

/// The suite's own posts: the exact list of accepted tasks.
#[derive(Clone)]
pub struct Ledger {
    http: reqwest::Client,
    conversation: i64,
    user: i64,
    pub posts: Arc<Mutex<Vec<Posted>>>,
}

impl Ledger {
    pub fn new(conversation: i64, user: i64) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(8)
                .build()
                .expect("an HTTP client"),
            conversation,
            user,
            posts: Arc::default(),
        }
    }

    /// Post one message to `base` and record the answer.
    pub async fn post(&self, instance: usize, base: &str) {
        let start_ms = now_ms();
        let started = std::time::Instant::now();
        let answer = self
            .http
            .post(format!(
                "{base}/conversations/{}/messages",
                self.conversation
            ))
            .json(&json!({ "sender_id": self.user, "content": "ledger message" }))
            .send()
            .await;
        let (status, body, error) = match answer {
            Ok(r) => {
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                (status, body, None)
            }
            Err(e) if e.is_timeout() => (0, Value::Null, Some("timeout".to_owned())),
            Err(e) if e.is_connect() => (0, Value::Null, Some("connect".to_owned())),
            Err(_) => (0, Value::Null, Some("http".to_owned())),
        };
        let error = error.or_else(|| {
            (status >= 500).then(|| {
                body["error"]["code"]
                    .as_str()
                    .unwrap_or("no code")
                    .to_owned()
            })
        });
        let posted = Posted {
            rec: Rec {
                instance,
                post: true,
                status,
                error,
                start_ms,
                dur_ms: started.elapsed().as_secs_f64() * 1000.0,
            },
            message_id: (status == 201)
                .then(|| body["message"]["id"].as_i64())
                .flatten(),
            task_id: body["task_id"].as_str().map(str::to_owned),
        };
        self.posts.lock().expect("ledger lock").push(posted);
    }

    /// Post every `every` to the instances in turn until `stop` is set; each post is
    /// its own task, so one that waits does not hold the others up.
    pub fn run(
        &self,
        bases: Vec<String>,
        every: Duration,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> tokio::task::JoinHandle<()> {
        let ledger = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            let mut posts = tokio::task::JoinSet::new();
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let instance = n % bases.len();
                let base = bases[instance].clone();
                let ledger = ledger.clone();
                posts.spawn(async move { ledger.post(instance, &base).await });
                n += 1;
                while posts.try_join_next().is_some() {}
            }
            while posts.join_next().await.is_some() {}
        })
    }
}
