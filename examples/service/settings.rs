//! The service's own settings; every part's settings come from `CortexConfig::from_env`.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CORTEX_ADDR` | `127.0.0.1:8000` | where to listen (port 0: any free port) |
//! | `CORTEX_DATA_DIR` | `target/service-data` | where the SQLite file lives when `DATABASE_URL` is unset (a directory, made if missing) |
//! | `CORTEX_ADMIN_TOKEN` | random, printed once | bearer token of `/admin/*` |
//! | `CORTEX_CACHE` | `on` | `off` reads every workspace from the database (to measure the cache) |
//! | `CORTEX_BODY_LIMIT` | 65536 | largest request body, bytes (413 beyond) |
//! | `CORTEX_REQUEST_TIMEOUT` | 10 | seconds before a request is answered 504 |
//! | `CORTEX_SHUTDOWN_TIMEOUT` | 30 | seconds to finish requests and drain tasks at shutdown |
//! | `CORTEX_WARM_INTERVAL` | 300 | seconds between cache warmings of active users (0 = only at start) |
//! | `CORTEX_WARM_USERS` | 100 | active users warmed each time (0 or more) |
//! | `CORTEX_WORKER` | `on` | `off`: with Redis, enqueue durable tasks but run none here (an API-only instance) |
//! | `CORTEX_ACTIVITY_REFRESH` | 60 | PostgreSQL: seconds between refreshes of the user activity view |
//! | `COGNITION_SERVICE_URL` | - | MCP endpoint of the cognition service; summaries are made locally without it |
//! | `COGNITION_SUMMARY_TOOL` | `summarize` | the cognition service's tool that summarizes |
//! | `MEMORY_SERVICE_URL` | - | MCP endpoint of the memory service (connected at start, shown in `/ready`) |
//! | `LOG_LEVEL` | `info` | log filter when `RUST_LOG` is unset (`info`, `warn,service=debug`, ...) |
//! | `LOG_FORMAT` | `text` | `json`: one JSON object per line, span closes included (with their timings and the spans around them), for a log pipeline |
//! | `WORKER_THREADS` | cores | runtime worker threads, 1 to 1024 |
//! | `WEB_CONCURRENCY` | - | read as `WORKER_THREADS` when that is unset (one process serves all) |
//! | `HTTP_KEEP_ALIVE` | 5 | `0` closes every connection after its response; any other value keeps connections open |

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The most runtime worker threads: a larger count is a typo, and tokio would try to
/// allocate and spawn them all at start (an out-of-memory abort, not an error).
const MAX_WORKER_THREADS: usize = 1024;

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
    /// `CORTEX_ACTIVITY_REFRESH` (PostgreSQL upkeep): checked here so a bad value stops
    /// the start naming it, whichever database is used.
    pub activity_refresh: Duration,
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
        // As given ("1e999", not the "inf" it parsed to).
        value: var(name).unwrap_or_else(|| value.to_string()),
        expected: "seconds, zero or more",
    })
}

/// A thread count from `name`: 1 to [`MAX_WORKER_THREADS`].
fn threads(name: &'static str) -> Result<Option<usize>, BadSetting> {
    let n = parse::<usize>(name, "a thread count, 1 to 1024")?;
    match n {
        Some(n) if !(1..=MAX_WORKER_THREADS).contains(&n) => Err(BadSetting {
            var: name,
            value: n.to_string(),
            expected: "a thread count, 1 to 1024",
        }),
        n => Ok(n),
    }
}

/// The data directory must be one: the nearest part of the path that exists is a
/// directory (the rest is made at start). Checked here so a file in the way is named
/// as this setting, not reported as a bare "Not a directory".
fn data_dir(name: &'static str) -> Result<PathBuf, BadSetting> {
    let dir = var(name).map_or_else(|| PathBuf::from("target/service-data"), PathBuf::from);
    let existing = dir
        .ancestors()
        .find(|p| !p.as_os_str().is_empty() && p.exists());
    if let Some(p) = existing.filter(|p| !p.is_dir()) {
        return Err(BadSetting {
            var: name,
            value: dir.display().to_string(),
            expected: if p == dir.as_path() {
                "a directory (this is a file)"
            } else {
                "a directory (a file is in the way on the path)"
            },
        });
    }
    Ok(dir)
}

/// A log filter as `tracing_subscriber::EnvFilter` reads it; a value it cannot parse
/// would otherwise be dropped for `info` without a word. `RUST_LOG`, which wins over
/// `LOG_LEVEL` when set, is checked the same way (it fell back to `LOG_LEVEL` silently).
fn log_level(name: &'static str) -> Result<String, BadSetting> {
    if let Some(filter) = var("RUST_LOG")
        && tracing_subscriber::EnvFilter::try_new(&filter).is_err()
    {
        return Err(BadSetting {
            var: "RUST_LOG",
            value: filter,
            expected: "a log filter, e.g. info or warn,service=debug",
        });
    }
    let level = var(name).unwrap_or_else(|| "info".into());
    match tracing_subscriber::EnvFilter::try_new(&level) {
        Ok(_) => Ok(level),
        Err(_) => Err(BadSetting {
            var: name,
            value: level,
            expected: "a log filter, e.g. info or warn,service=debug",
        }),
    }
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
            "activity_refresh": self.activity_refresh.as_secs_f64(),
            "log_level": self.log_level,
            "log_format": if self.log_json { "json" } else { "text" },
            "worker_threads": self.worker_threads,
            "keep_alive": self.keep_alive,
        })
    }

    pub fn from_env() -> Result<Self, BadSetting> {
        let cache = switch("CORTEX_CACHE")?;
        let worker = switch("CORTEX_WORKER")?;
        let worker_threads = match threads("WORKER_THREADS")? {
            Some(n) => Some(n),
            None => threads("WEB_CONCURRENCY")?,
        };
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
            data_dir: data_dir("CORTEX_DATA_DIR")?,
            admin_token: var("CORTEX_ADMIN_TOKEN"),
            cache,
            body_limit,
            request_timeout: secs("CORTEX_REQUEST_TIMEOUT", 10.0)?,
            shutdown_timeout: secs("CORTEX_SHUTDOWN_TIMEOUT", 30.0)?,
            warm_interval: secs("CORTEX_WARM_INTERVAL", 300.0)?,
            warm_users: match parse::<i64>("CORTEX_WARM_USERS", "a count, 0 or more")? {
                Some(n) if n < 0 => {
                    return Err(BadSetting {
                        var: "CORTEX_WARM_USERS",
                        value: n.to_string(),
                        expected: "a count, 0 or more",
                    });
                }
                n => n.unwrap_or(100),
            },
            worker,
            activity_refresh: secs("CORTEX_ACTIVITY_REFRESH", 60.0)?,
            log_level: log_level("LOG_LEVEL")?,
            log_json,
            worker_threads,
            keep_alive: secs("HTTP_KEEP_ALIVE", 5.0)? > Duration::ZERO,
        })
    }
}
