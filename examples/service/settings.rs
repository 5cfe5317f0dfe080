//! The service's own settings; every part's settings come from `CortexConfig::from_env`.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CORTEX_ADDR` | `127.0.0.1:8000` | where to listen (port 0: any free port) |
//! | `CORTEX_DATA_DIR` | `target/service-data` | where the SQLite file lives when `DATABASE_URL` is unset |
//! | `CORTEX_ADMIN_TOKEN` | random, printed once | bearer token of `/admin/*` |
//! | `CORTEX_CACHE` | `on` | `off` reads every workspace from the database (to measure the cache) |
//! | `CORTEX_BODY_LIMIT` | 65536 | largest request body, bytes (413 beyond) |
//! | `CORTEX_REQUEST_TIMEOUT` | 10 | seconds before a request is answered 504 |
//! | `CORTEX_SHUTDOWN_TIMEOUT` | 30 | seconds to finish requests and drain tasks at shutdown |
//! | `CORTEX_WARM_INTERVAL` | 300 | seconds between cache warmings of active users (0 = only at start) |
//! | `CORTEX_WARM_USERS` | 100 | active users warmed each time |
//! | `CORTEX_WORKER` | `on` | `off`: with Redis, enqueue durable tasks but run none here (an API-only instance) |
//! | `CORTEX_ACTIVITY_REFRESH` | 60 | PostgreSQL: seconds between refreshes of the user activity view |
//! | `COGNITION_SERVICE_URL` | - | MCP endpoint of the cognition service; summaries are made locally without it |
//! | `COGNITION_SUMMARY_TOOL` | `summarize` | the cognition service's tool that summarizes |
//! | `MEMORY_SERVICE_URL` | - | MCP endpoint of the memory service (connected at start, shown in `/ready`) |
//! | `LOG_LEVEL` | `info` | log filter when `RUST_LOG` is unset |
//! | `LOG_FORMAT` | `text` | `json`: one JSON object per line, span closes included (with their timings and the spans around them), for a log pipeline |
//! | `WORKER_THREADS` | cores | runtime worker threads |
//! | `WEB_CONCURRENCY` | - | read as `WORKER_THREADS` when that is unset (one process serves all) |
//! | `HTTP_KEEP_ALIVE` | 5 | `0` closes every connection after its response; any other value keeps connections open |

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub admin_token: Option<String>,
    pub cache: bool,
    pub body_limit: usize,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub warm_interval: Duration,
    pub warm_users: i64,
    pub worker: bool,
    pub log_level: String,
    /// `LOG_FORMAT=json`: JSON lines with span closes; else human-readable text.
    pub log_json: bool,
    pub worker_threads: Option<usize>,
    pub keep_alive: bool,
}

/// A variable that is set but does not parse.
#[derive(Debug)]
pub struct BadSetting {
    pub var: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl std::fmt::Display for BadSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={:?}: expected {}",
            self.var, self.value, self.expected
        )
    }
}

impl std::error::Error for BadSetting {}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse<T: std::str::FromStr>(
    name: &'static str,
    expected: &'static str,
) -> Result<Option<T>, BadSetting> {
    var(name)
        .map(|v| {
            v.trim().parse().map_err(|_| BadSetting {
                var: name,
                value: v.clone(),
                expected,
            })
        })
        .transpose()
}

fn secs(name: &'static str, default: f64) -> Result<Duration, BadSetting> {
    let value: f64 = parse(name, "seconds")?.unwrap_or(default);
    Duration::try_from_secs_f64(value).map_err(|_| BadSetting {
        var: name,
        value: value.to_string(),
        expected: "seconds, zero or more",
    })
}

/// `on` (the default) or `off`.
fn switch(name: &'static str) -> Result<bool, BadSetting> {
    match var(name).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("on" | "true" | "1") => Ok(true),
        Some("off" | "false" | "0") => Ok(false),
        Some(other) => Err(BadSetting {
            var: name,
            value: other.to_owned(),
            expected: "on or off",
        }),
    }
}

impl Settings {
    /// Every setting but the admin token, for `/admin/config`.
    pub fn public(&self) -> serde_json::Value {
        serde_json::json!({
            "addr": self.addr.to_string(),
            "data_dir": self.data_dir.display().to_string(),
            "cache": self.cache,
            "body_limit": self.body_limit,
            "request_timeout": self.request_timeout.as_secs_f64(),
            "shutdown_timeout": self.shutdown_timeout.as_secs_f64(),
            "warm_interval": self.warm_interval.as_secs_f64(),
            "warm_users": self.warm_users,
            "worker": self.worker,
            "log_level": self.log_level,
            "log_format": if self.log_json { "json" } else { "text" },
            "worker_threads": self.worker_threads,
            "keep_alive": self.keep_alive,
        })
    }

    pub fn from_env() -> Result<Self, BadSetting> {
        let cache = switch("CORTEX_CACHE")?;
        let worker = switch("CORTEX_WORKER")?;
        let worker_threads = match parse::<usize>("WORKER_THREADS", "a thread count")? {
            Some(n) => Some(n),
            None => parse("WEB_CONCURRENCY", "a thread count")?,
        };
        if worker_threads == Some(0) {
            return Err(BadSetting {
                var: "WORKER_THREADS",
                value: "0".into(),
                expected: "at least 1",
            });
        }
        let log_json = match var("LOG_FORMAT")
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(BadSetting {
                    var: "LOG_FORMAT",
                    value: other.to_owned(),
                    expected: "text or json",
                });
            }
        };
        let body_limit: usize = parse("CORTEX_BODY_LIMIT", "bytes")?.unwrap_or(64 * 1024);
        Ok(Self {
            addr: parse("CORTEX_ADDR", "host:port, e.g. 127.0.0.1:8000")?
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8000))),
            data_dir: var("CORTEX_DATA_DIR")
                .map_or_else(|| PathBuf::from("target/service-data"), PathBuf::from),
            admin_token: var("CORTEX_ADMIN_TOKEN"),
            cache,
            body_limit,
            request_timeout: secs("CORTEX_REQUEST_TIMEOUT", 10.0)?,
            shutdown_timeout: secs("CORTEX_SHUTDOWN_TIMEOUT", 30.0)?,
            warm_interval: secs("CORTEX_WARM_INTERVAL", 300.0)?,
            warm_users: parse("CORTEX_WARM_USERS", "a count")?.unwrap_or(100),
            worker,
            log_level: var("LOG_LEVEL").unwrap_or_else(|| "info".into()),
            log_json,
            worker_threads,
            keep_alive: secs("HTTP_KEEP_ALIVE", 5.0)? > Duration::ZERO,
        })
    }
}
