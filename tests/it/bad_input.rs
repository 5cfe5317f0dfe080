//! Bad input at every public boundary of the workspace: each documented environment
//! variable set to values it must refuse (in process through every config's
//! `from_env_source`, and through the example service's binary), and the example
//! service's HTTP routes fed bad ids, bodies, query values and priorities. Every
//! refusal must name what was wrong; nothing may panic, answer 5xx or stop the process.
//! Each sweep prints how many inputs it tried.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Stdio;
use std::time::Duration;

use cortex_core::support::env::{EnvSource, EnvVar, FromEnv};
use cortex_core::support::error_chain;
use cortex_core::{CortexConfig, batch, cache, dbtune, mcp, metrics, pool, profile, tasks};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::service::{Service, TOKEN, seed, service_bin};

// ---------------------------------------------------------------------------------
// Environment variables
// ---------------------------------------------------------------------------------

/// Not numbers at all, or out of every integer type's range.
const COUNT: &[&str] = &[
    "-1",
    "abc",
    "1e999",
    "  x",
    "99999999999999999999",
    "1.5",
    "0x10",
    "NaN",
];
/// A count that must be at least one.
const COUNT_MIN1: &[&str] = &["-1", "abc", "1e999", "  x", "99999999999999999999", "0"];
const DURATION: &[&str] = &[
    "10 parsecs",
    "-5s",
    "abc",
    "1e999",
    "NaN",
    "inf",
    "5 s s",
    "  x",
    "-1",
    "99999999999999999999h",
];
const BOOL: &[&str] = &["maybe", "2", "yes please", "  x", "-1", "truee"];
const FRACTION: &[&str] = &["-1", "abc", "NaN", "inf", "1e999", "-0.5"];
const BUCKETS: &[&str] = &[",,", "abc", "3,2,1", "1,1", "inf", "-1,NaN", "1,,2"];
const MEMORY: &[&str] = &["abc", "-1MB", "8XB", "8MB'; DROP TABLE x; --", "8 MB MB"];

/// The values each documented variable must refuse. Every variable of every config's
/// `VARS` must be here or in [`ANY_STRING`]: a new variable fails the sweep until it is
/// classified.
fn bad_values(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        // Counts where zero means something (none, off, unlimited).
        "DB_STATEMENT_CACHE_SIZE"
        | "DB_REPLICA_POOL_SIZE"
        | "CACHE_MEMORY_MAX_BYTES"
        | "CACHE_S3FIFO_SHARDS"
        | "MCP_MAX_RETRIES"
        | "MCP_BREAKER_FAILURES"
        | "METRICS_MAX_ENDPOINTS"
        | "METRICS_MAX_OPERATIONS"
        | "MEMORY_HIGH_THRESHOLD_MB"
        | "TASKS_MAX_RECORDS"
        | "TASKS_DEAD_LETTER_CAP"
        | "TASKS_MAX_QUEUE_SIZE"
        | "MEMORY_SNAPSHOT_COUNT"
        | "DB_CONNECTION_LIMIT"
        | "MCP_CACHE_CAPACITY"
        | "BATCH_MAX_PENDING" => COUNT,
        // Their sum is the pool's ceiling: u32::MAX plus the other's default overflows.
        "DB_POOL_SIZE" | "DATABASE_POOL_SIZE" | "DB_MAX_OVERFLOW" | "DATABASE_MAX_OVERFLOW" => &[
            "-1",
            "abc",
            "1e999",
            "  x",
            "99999999999999999999",
            "1.5",
            "4294967295",
        ],
        // Its table is allocated for the whole capacity when the store is built.
        "CACHE_MEMORY_CAPACITY" => &[
            "-1",
            "abc",
            "1e999",
            "  x",
            "99999999999999999999",
            "0",
            "18446744073709551615",
            "1000000000",
        ],
        "REDIS_POOL_SIZE"
        | "CACHE_S3FIFO_CAPACITY"
        | "TASKS_MAX_WORKERS"
        | "TASKS_CONCURRENCY"
        | "TASKS_MAX_ATTEMPTS"
        | "BATCH_SIZE"
        | "BATCH_MAX_IN_FLIGHT"
        | "MCP_POOL_SIZE"
        | "MCP_SESSION_CONCURRENCY" => COUNT_MIN1,
        "DB_POOL_TIMEOUT"
        | "DATABASE_POOL_TIMEOUT"
        | "DB_POOL_RECYCLE"
        | "DB_POOL_IDLE_TIMEOUT"
        | "DB_STATEMENT_TIMEOUT"
        | "DATABASE_STATEMENT_TIMEOUT"
        | "DB_COMMAND_TIMEOUT"
        | "DB_LEAK_THRESHOLD"
        | "DB_REPLICA_MAX_LAG"
        | "DB_REPLICA_CHECK_INTERVAL"
        | "DB_CONNECTION_WAIT"
        | "DB_CONNECTION_RETRY_AFTER"
        | "REDIS_POOL_TIMEOUT"
        | "REDIS_POOL_RECYCLE"
        | "REDIS_POOL_IDLE_TIMEOUT"
        | "REDIS_LEAK_THRESHOLD"
        | "CACHE_DEFAULT_TTL"
        | "CACHE_MEMORY_DEFAULT_TTL"
        | "CACHE_S3FIFO_TTL"
        | "MEMORY_SNAPSHOT_INTERVAL"
        | "METRICS_RESET_INTERVAL"
        | "TASKS_ENQUEUE_TIMEOUT"
        | "TASKS_TASK_TIMEOUT"
        | "TASKS_RETENTION"
        | "TASKS_VISIBILITY_TIMEOUT"
        | "TASKS_STATS_INTERVAL"
        | "TASKS_OP_TIMEOUT"
        | "BATCH_WAIT"
        | "BATCH_TIMEOUT"
        | "BATCH_SLOW"
        | "MCP_CONNECT_TIMEOUT"
        | "MCP_REQUEST_TIMEOUT"
        | "MCP_CALL_TIMEOUT"
        | "MCP_RETRY_DELAY"
        | "MCP_MAX_RETRY_DELAY"
        | "MCP_BREAKER_COOLDOWN"
        | "MCP_HEDGE_AFTER"
        | "MCP_SLOW_CALL"
        | "MCP_CACHE_TTL" => DURATION,
        "DB_POOL_PRE_PING"
        | "DB_ECHO"
        | "DB_ASYNC_COMMIT"
        | "REDIS_POOL_PRE_PING"
        | "CACHE_DEGRADE_ON_ERROR"
        | "ENABLE_MEMORY_PROFILING"
        | "METRICS_EXPORT_SUMMARIES"
        | "METRICS_EXPORT_PROCESS" => BOOL,
        "PERFORMANCE_MEDIAN_THRESHOLD"
        | "PERFORMANCE_P95_THRESHOLD"
        | "PERFORMANCE_THROUGHPUT_THRESHOLD" => FRACTION,
        "METRICS_HISTOGRAM_BUCKETS" | "METRICS_VALUE_BUCKETS" => BUCKETS,
        "DB_WORK_MEM" | "DB_MAINTENANCE_WORK_MEM" => MEMORY,
        "DATABASE_URL" => &[
            "not a url",
            "mysql://h/db",
            "http://127.0.0.1/db",
            "redis://127.0.0.1",
            "  x",
        ],
        "DB_REPLICA_URLS" => &[
            ",,",
            "not a url",
            "redis://127.0.0.1:6379",
            "postgres://h/db,not a url",
            "sqlite::memory:",
        ],
        "REDIS_URL" => &[
            "not a url",
            "http://127.0.0.1:6379",
            "postgres://h/db",
            "  x",
        ],
        "REDIS_CLUSTER_URLS" => &[
            ",",
            "not a url",
            "http://127.0.0.1:7000",
            "redis://127.0.0.1:7000,nope",
            "redis+unix:///tmp/r.sock",
            "redis://127.0.0.1:7000,rediss://127.0.0.1:7001",
        ],
        "DB_APPLICATION_NAME" => &["a b", "x'; DROP TABLE t; --", "a\u{7}b", "é"],
        "DB_TIMEZONE" => &["Europe/Paris'; --", "a b", "UTC;"],
        "METRICS_NAMESPACE" => &["a b", "1abc", "a-b", "*", "ns:x"],
        "CACHE_NAMESPACE" => &["a b:", "a\u{7}:", "cortex:", "cortex:tasks:q:", "*"],
        "TASKS_QUEUE_NAME" => &[
            "a b",
            "*",
            "q{1}",
            "tasks:x",
            "0123456789012345678901234567890123456789012345678901234567890123456789",
        ],
        "TASKS_PRIORITY_POLICY" => &["fair", "1,2", "-1,2,3", "0,0,0", ",,", "a,b,c", "NaN,1,1"],
        "MCP_TLS_CA_FILE" => &["/nonexistent/ca.pem", "/", "/dev/null/x"],
        "MCP_STDIO_ENV" => &["*", "A=B", "a b", "PRE*FIX", "X,\u{0}"],
        "DBTUNE_PLAN_ROLE" => &["a b", "1role", "r;drop", "x'y"],
        "DBTUNE_PLAN_USERS" => &["a b", "ok,1bad", "x'y", "u;v"],
        _ => return None,
    })
}

/// Variables that take any string, with the reason.
const ANY_STRING: &[(&str, &str)] = &[
    (
        "PERFORMANCE_BASELINE_FILE",
        "a path, created when the baselines are first written",
    ),
    ("CORTEX_ADMIN_TOKEN", "a secret: any bytes are a token"),
    (
        "COGNITION_SUMMARY_TOOL",
        "a tool name of the remote service, which answers an unknown one with an error",
    ),
];

/// Variables `from_env_source` takes as text and the pool checks when it is built
/// (still before serving): swept through the service binary, with these values.
const CHECKED_AT_BUILD: &[(&str, &[&str])] = &[
    ("REDIS_CLIENT_NAME", &["a b", "x\ny", "é"]),
    ("REDIS_TLS_CA_FILE", &["/nonexistent/ca.pem", "/"]),
    // The scheme is checked in the config, the rest of the URL by the driver.
    ("DATABASE_URL", &["postgres://[::1", "postgres://h:port/db"]),
];

/// Aliases named in the variables' documentation: read like the names they stand for.
const ALIASES: &[EnvVar] = &[
    EnvVar {
        name: "DATABASE_POOL_SIZE",
        default: "10",
        doc: "alias of DB_POOL_SIZE",
    },
    EnvVar {
        name: "DATABASE_MAX_OVERFLOW",
        default: "20",
        doc: "alias of DB_MAX_OVERFLOW",
    },
    EnvVar {
        name: "DATABASE_POOL_TIMEOUT",
        default: "30s",
        doc: "alias of DB_POOL_TIMEOUT",
    },
    EnvVar {
        name: "DATABASE_STATEMENT_TIMEOUT",
        default: "30s",
        doc: "alias of DB_STATEMENT_TIMEOUT",
    },
];

/// One config read from the environment: its variables and a reader that keeps only
/// the error chain.
struct EnvConfig {
    name: &'static str,
    vars: &'static [EnvVar],
    read: fn(&EnvSource<'_>) -> Result<(), String>,
    /// Part of `CortexConfig`, so it is also read through `CortexConfig::from_env_source`.
    in_cortex: bool,
}

fn read<T>(env: &EnvSource<'_>) -> Result<(), String>
where
    T: FromEnv,
    T::Error: std::error::Error + 'static,
{
    T::from_env_source(env)
        .map(drop)
        .map_err(|e| error_chain(&e))
}

fn config<T>(name: &'static str, in_cortex: bool) -> EnvConfig
where
    T: FromEnv,
    T::Error: std::error::Error + 'static,
{
    EnvConfig {
        name,
        vars: T::VARS,
        read: read::<T>,
        in_cortex,
    }
}

/// Every config of the workspace that reads the environment. `McpClientFactory::VARS`
/// is a pattern (`<NAME>_SERVICE_URL`), swept through the service's
/// `COGNITION_SERVICE_URL` and `MEMORY_SERVICE_URL`.
fn env_configs() -> Vec<EnvConfig> {
    vec![
        config::<metrics::MetricsConfig>("MetricsConfig", true),
        config::<profile::ProfilerConfig>("ProfilerConfig", true),
        config::<profile::BaselineConfig>("BaselineConfig", false),
        config::<pool::DbConfig>("DbConfig", true),
        EnvConfig {
            name: "DbConfig (aliases)",
            vars: ALIASES,
            read: read::<pool::DbConfig>,
            in_cortex: true,
        },
        config::<pool::RedisConfig>("RedisConfig", true),
        config::<pool::LimiterConfig>("LimiterConfig", true),
        config::<cache::MemoryConfig>("MemoryConfig", true),
        config::<cache::RedisCacheConfig>("RedisCacheConfig", true),
        config::<cache::S3FifoConfig>("S3FifoConfig", false),
        config::<tasks::TaskQueueConfig>("TaskQueueConfig", false),
        config::<tasks::PriorityQueueConfig>("PriorityQueueConfig", true),
        config::<tasks::durable::DurableConfig>("DurableConfig", true),
        config::<batch::BatchConfig>("BatchConfig", true),
        config::<mcp::McpClientConfig>("McpClientConfig", true),
        config::<dbtune::advisor::AdviseOptions>("AdviseOptions", false),
    ]
}

/// What a variable needs beside it to be read at all: replicas only beside a
/// PostgreSQL primary, the Redis settings only when Redis is configured.
fn context(name: &str) -> Vec<(&'static str, &'static str)> {
    let mut env = Vec::new();
    if name.starts_with("DB_REPLICA") {
        env.push(("DATABASE_URL", "postgres://cortex@127.0.0.1:5432/cortex"));
    }
    if name == "REDIS_TLS_CA_FILE" {
        // Read for TLS connections only.
        env.push(("REDIS_URL", "rediss://127.0.0.1:6379"));
    } else if name.starts_with("REDIS_") && name != "REDIS_URL" && name != "REDIS_CLUSTER_URLS" {
        env.push(("REDIS_URL", "redis://127.0.0.1:6379"));
    }
    env
}

/// A read of one config from one environment, as its error chain.
type Reader<'a> = dyn Fn() -> Result<(), String> + 'a;

/// Runs `f`, turning a panic into an error that says so.
fn no_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|p| format!("PANICKED: {}", cortex_core::support::panic_message(&*p)))
}

#[test]
fn every_documented_variable_refuses_bad_values_by_name() {
    let configs = env_configs();
    let mut failures = Vec::new();
    let mut pairs = 0usize;
    let mut any_string = Vec::new();
    for c in &configs {
        for var in c.vars {
            let Some(values) = bad_values(var.name) else {
                if CHECKED_AT_BUILD.iter().any(|(n, _)| *n == var.name) {
                    continue;
                }
                if ANY_STRING.iter().any(|(n, _)| *n == var.name) {
                    any_string.push(var.name);
                } else {
                    failures.push(format!(
                        "{} ({}): not classified; add its bad values to bad_values() or \
                         list it in ANY_STRING with the reason",
                        var.name, c.name
                    ));
                }
                continue;
            };
            for value in values {
                pairs += 1;
                let mut vars: HashMap<&str, &str> = context(var.name).into_iter().collect();
                vars.insert(var.name, value);
                let lookup = |k: &str| vars.get(k).map(|v| (*v).to_owned());
                let env = EnvSource::from_fn(&lookup);
                let mut readers: Vec<(&str, Box<Reader<'_>>)> =
                    vec![(c.name, Box::new(|| (c.read)(&env)))];
                if c.in_cortex {
                    readers.push((
                        "CortexConfig",
                        Box::new(|| {
                            CortexConfig::from_env_source(&env)
                                .map(drop)
                                .map_err(|e| error_chain(&e))
                        }),
                    ));
                }
                for (reader, f) in readers {
                    match no_panic(f) {
                        Err(panic) => {
                            failures.push(format!("{}={value:?} ({reader}): {panic}", var.name))
                        }
                        Ok(Ok(())) => {
                            failures.push(format!("{}={value:?} ({reader}): accepted", var.name))
                        }
                        Ok(Err(text)) if !text.contains(var.name) => failures.push(format!(
                            "{}={value:?} ({reader}): the error does not name it: {text}",
                            var.name
                        )),
                        Ok(Err(_)) => {}
                    }
                }
            }
        }
    }
    // `<PREFIX>_BATCH_*`: one prefix per batch type (docs/MIGRATING.md names
    // `USER_LOOKUP_BATCH_SIZE`); the error names the prefixed variable.
    for var in batch::BatchConfig::VARS {
        let name = format!("USER_LOOKUP_{}", var.name);
        for value in bad_values(var.name).unwrap_or_default() {
            pairs += 1;
            let lookup = |k: &str| (k == name).then(|| (*value).to_owned());
            let env = EnvSource::from_fn(&lookup);
            let read = || {
                batch::BatchConfig::from_env_source_prefixed("USER_LOOKUP", &env)
                    .map(drop)
                    .map_err(|e| error_chain(&e))
            };
            match no_panic(read) {
                Err(panic) => failures.push(format!("{name}={value:?}: {panic}")),
                Ok(Ok(())) => failures.push(format!("{name}={value:?}: accepted")),
                Ok(Err(text)) if !text.contains(&name) => failures.push(format!(
                    "{name}={value:?}: the error does not name it: {text}"
                )),
                Ok(Err(_)) => {}
            }
        }
    }
    eprintln!(
        "env sweep, in process: {pairs} (variable, value) pairs over {} configs; any string: {any_string:?}",
        configs.len()
    );
    assert!(
        pairs >= 300,
        "only {pairs} pairs: did the VARS lists shrink?"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The service's own variables, from the table at the top of its settings module: a
/// variable added there is swept (or must be classified) without editing this test.
fn service_vars() -> Vec<String> {
    include_str!("../../examples/service/settings.rs")
        .lines()
        .filter_map(|l| l.strip_prefix("//! | `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name.to_owned()))
        .collect()
}

fn service_bad_values(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "CORTEX_ADDR" => &[
            "not an addr",
            "127.0.0.1",
            "127.0.0.1:99999",
            "300.1.1.1:80",
            ":80",
        ],
        "CORTEX_DATA_DIR" => &["/dev/null/x", "/proc/version/data"],
        "CORTEX_CACHE" | "CORTEX_WORKER" => &["maybe", "2", "of"],
        "CORTEX_BODY_LIMIT" => &["-1", "abc", "1e999", "99999999999999999999"],
        "CORTEX_REQUEST_TIMEOUT"
        | "CORTEX_SHUTDOWN_TIMEOUT"
        | "CORTEX_WARM_INTERVAL"
        | "HTTP_KEEP_ALIVE"
        | "CORTEX_ACTIVITY_REFRESH" => &["-5", "abc", "1e999", "NaN", "10 parsecs"],
        "CORTEX_WARM_USERS" => &["-1", "abc", "99999999999999999999"],
        "COGNITION_SERVICE_URL" | "MEMORY_SERVICE_URL" => &["not a url", "redis://", "ftp://x"],
        "LOG_LEVEL" | "RUST_LOG" => &["[[[=xx", "x=loud", "info,=,"],
        "LOG_FORMAT" => &["xml", "JSONL"],
        "WORKER_THREADS" | "WEB_CONCURRENCY" => &["0", "-1", "abc", "99999999999", "100000"],
        _ => return None,
    })
}

/// One run of the service binary in SQLite mode with `var=value`: it must exit
/// non-zero, in time, naming `var` and without a panic.
async fn refused_at_start(var: &str, value: &str) -> Result<(), String> {
    let data = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(service_bin());
    for v in [
        "DATABASE_URL",
        "DB_REPLICA_URLS",
        "REDIS_URL",
        "REDIS_CLUSTER_URLS",
        "COGNITION_SERVICE_URL",
        "MEMORY_SERVICE_URL",
        "RUST_LOG",
    ] {
        cmd.env_remove(v);
    }
    cmd.env("CORTEX_ADDR", "127.0.0.1:0")
        .env("CORTEX_DATA_DIR", data.path())
        .env("CORTEX_ADMIN_TOKEN", TOKEN)
        .env("LOG_LEVEL", "warn");
    for (k, v) in context(var) {
        cmd.env(k, v);
    }
    cmd.env(var, value)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .map_err(|_| "still running after 60 s: the value was accepted".to_owned())?
        .map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = stderr
        .chars()
        .rev()
        .take(600)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    match out.status.code() {
        None => Err(format!("killed by a signal ({}): {tail}", out.status)),
        Some(0) => Err(format!("exited 0: {tail}")),
        Some(101) => Err(format!("exit 101 (a panic): {tail}")),
        Some(_) if stderr.contains("panicked") => Err(format!("panicked: {tail}")),
        Some(_) if !stderr.contains(var) => Err(format!("stderr does not name it: {tail}")),
        Some(_) => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_refuses_bad_settings_by_name_and_exits() {
    let mut cases: Vec<(String, &'static str)> = Vec::new();
    let mut failures = Vec::new();
    let mut any_string = Vec::new();
    // `RUST_LOG` is named in the table (it wins over `LOG_LEVEL`) but has no row.
    let vars: Vec<String> = service_vars()
        .into_iter()
        .chain(["RUST_LOG".to_owned()])
        .collect();
    assert!(
        vars.len() >= 15,
        "the settings table has {} rows",
        vars.len()
    );
    for var in &vars {
        match service_bad_values(var) {
            Some(values) => cases.extend(values.iter().map(|v| (var.clone(), *v))),
            None if ANY_STRING.iter().any(|(n, _)| n == var) => any_string.push(var.clone()),
            None => failures.push(format!(
                "{var}: not classified; add it to service_bad_values() or ANY_STRING"
            )),
        }
    }
    // The library variables, through the real program: the first bad value of each
    // variable of every config the service reads.
    for c in env_configs().iter().filter(|c| c.in_cortex) {
        for var in c.vars {
            if let Some(values) = bad_values(var.name) {
                cases.push((var.name.to_owned(), values[0]));
            }
        }
    }
    // Values that parse but must not reach the build (an allocation abort, a panic).
    cases.push(("CACHE_MEMORY_CAPACITY".to_owned(), "18446744073709551615"));
    cases.push(("CACHE_MEMORY_CAPACITY".to_owned(), "1000000000"));
    for (var, values) in CHECKED_AT_BUILD {
        cases.extend(values.iter().map(|v| ((*var).to_owned(), *v)));
    }
    let tried = cases.len();
    // A few at a time: each is a process start on a two-core machine.
    for chunk in cases.chunks(6) {
        let runs = chunk
            .iter()
            .map(|(var, value)| async move { (var, value, refused_at_start(var, value).await) });
        for (var, value, result) in futures_util::future::join_all(runs).await {
            if let Err(why) = result {
                failures.push(format!("{var}={value:?}: {why}"));
            }
        }
    }
    eprintln!(
        "env sweep, service binary: {tried} (variable, value) runs; any string: {any_string:?}"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// One run of the service binary with a count at the top of its type: it must either
/// start serving (the value is taken) or exit non-zero naming `var`; never a panic,
/// an abort or a hang.
async fn starts_or_refuses(var: &str, value: &str) -> Result<&'static str, String> {
    use tokio::io::AsyncBufReadExt;
    let data = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(service_bin());
    for v in [
        "DATABASE_URL",
        "DB_REPLICA_URLS",
        "REDIS_URL",
        "REDIS_CLUSTER_URLS",
        "COGNITION_SERVICE_URL",
        "MEMORY_SERVICE_URL",
        "RUST_LOG",
    ] {
        cmd.env_remove(v);
    }
    cmd.env("CORTEX_ADDR", "127.0.0.1:0")
        .env("CORTEX_DATA_DIR", data.path())
        .env("CORTEX_ADMIN_TOKEN", TOKEN)
        .env("LOG_LEVEL", "warn");
    for (k, v) in context(var) {
        cmd.env(k, v);
    }
    cmd.env(var, value)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    let stdout = child.stdout.take().expect("stdout piped");
    let first = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::io::BufReader::new(stdout).lines().next_line().await
    })
    .await
    .map_err(|_| "neither served nor exited within 60 s".to_owned())?
    .map_err(|e| e.to_string())?;
    if first.as_deref().is_some_and(|l| l.contains("listening on")) {
        let _ = child.kill().await;
        return Ok("served");
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .map_err(|_| "printed but neither served nor exited within 60 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = stderr.chars().take(600).collect();
    match out.status.code() {
        None => Err(format!("killed by a signal ({}): {tail}", out.status)),
        Some(0) => Err(format!("exited 0 without serving: {tail}")),
        Some(101) => Err(format!("exit 101 (a panic): {tail}")),
        Some(_) if stderr.contains("panicked") => Err(format!("panicked: {tail}")),
        Some(_) if !stderr.contains(var) => Err(format!("stderr does not name it: {tail}")),
        Some(_) => Ok("refused"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_at_the_top_of_their_type_start_or_are_refused_never_crash() {
    let mut cases = Vec::new();
    for c in env_configs().iter().filter(|c| c.in_cortex) {
        for var in c.vars {
            if matches!(bad_values(var.name), Some(v) if v == COUNT || v == COUNT_MIN1)
                || var.name.ends_with("POOL_SIZE")
                || var.name.ends_with("MAX_OVERFLOW")
                || var.name == "CACHE_MEMORY_CAPACITY"
            {
                for value in ["4294967295", "18446744073709551615"] {
                    cases.push((var.name, value));
                }
            }
        }
    }
    // The ceiling just under u32::MAX: it passed the sum check and aborted in the build.
    cases.push(("DB_POOL_SIZE", "4294967275"));
    let (mut served, mut refused) = (0, 0);
    let mut failures = Vec::new();
    for chunk in cases.chunks(4) {
        let runs = chunk
            .iter()
            .map(|(var, value)| async move { (var, value, starts_or_refuses(var, value).await) });
        for (var, value, result) in futures_util::future::join_all(runs).await {
            match result {
                Ok("served") => served += 1,
                Ok(_) => refused += 1,
                Err(why) => failures.push(format!("{var}={value:?}: {why}")),
            }
        }
    }
    eprintln!(
        "env sweep, huge counts through the service binary: {} runs, {served} served, {refused} refused",
        cases.len()
    );
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------

/// Ids that are not a resource's: non-numeric, negative, zero, past `i64`, unknown.
const BAD_IDS: &[&str] = &[
    "abc",
    "-1",
    "0",
    "9223372036854775808",
    "99999999999999999999999",
    "1.5",
    "1e3",
    "%20",
    "0x1",
    "999999",
    "9223372036854775807",
    "-9223372036854775809",
];

/// Bodies that are not JSON, or JSON of the wrong shape.
fn bad_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let nested = |open: &str, n: usize| open.repeat(n).into_bytes();
    vec![
        ("truncated", b"{\"name\": ".to_vec()),
        ("truncated string", b"{\"name\": \"ab".to_vec()),
        ("nonsense", b"nonsense".to_vec()),
        ("close only", b"]".to_vec()),
        ("empty", Vec::new()),
        ("null", b"null".to_vec()),
        ("array", b"[]".to_vec()),
        ("string", b"\"str\"".to_vec()),
        ("number", b"42".to_vec()),
        ("wrong types", br#"{"name": [], "email": 5, "content": {}, "topic": 1, "owner_id": "x", "sender_id": "x"}"#.to_vec()),
        ("trailing garbage", b"{} x".to_vec()),
        ("two objects", b"{}{}".to_vec()),
        ("invalid utf-8", vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}']),
        ("nul byte", b"{\"name\": \"a\0b\", \"email\": \"a@b.c\"}".to_vec()),
        // Under the 1024-byte limit, past the JSON parser's depth limit.
        ("deep arrays", nested("[", 1_000)),
        ("deep objects", nested("{\"a\":", 200)),
        // Over the limit as well.
        ("deep arrays, oversized", nested("[", 10_000)),
        ("deep objects, oversized", nested("{\"a\":", 10_000)),
        ("deep closed", {
            let mut b = nested("[", 5_000);
            b.extend(nested("]", 5_000));
            b
        }),
        ("huge number", b"{\"owner_id\": 1e999999, \"sender_id\": 99999999999999999999999}".to_vec()),
    ]
}

/// Values no documented query parameter takes.
const BAD_QUERY: &[&str] = &[
    "abc",
    "-1",
    "0",
    "99999999999999999999999",
    "1.5",
    "%00",
    "%FF",
    "NaN",
];

/// Values of `x-cortex-written-lsn` that are not a decimal WAL position.
const BAD_LSNS: &[&str] = &["zz", "-1", "0/16B3748", "18446744073709551616", "1.5", ""];

const BAD_PRIORITIES: &[&str] = &[
    "urgent",
    "HIGHEST",
    "0",
    "-1",
    "999",
    "hi%20gh",
    "%00",
    "high,low",
    "%E2%98%83",
    "nan",
];

/// Sends `body` over a raw connection, chunked or with its length; the status and the
/// JSON body. A client library may report an error instead of the 413 when the server
/// answers before it read the whole body; this reads whatever came back.
async fn raw(addr: &str, method: &str, path: &str, body: &[u8], chunked: bool) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\nconnection: close\r\n"
    )
    .into_bytes();
    if chunked {
        req.extend(b"transfer-encoding: chunked\r\n\r\n");
        for c in body.chunks(256) {
            req.extend(format!("{:x}\r\n", c.len()).into_bytes());
            req.extend(c);
            req.extend(b"\r\n");
        }
        req.extend(b"0\r\n\r\n");
    } else {
        req.extend(format!("content-length: {}\r\n\r\n", body.len()).into_bytes());
        req.extend(body);
    }
    // The server may answer 413 and close before it read everything: a failed write is fine.
    let _ = conn.write_all(&req).await;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut reply))
        .await
        .expect("no reply to the chunked request within 30 s")
        .ok();
    let text = String::from_utf8_lossy(&reply);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or_else(|| Value::String(text.clone().into_owned()));
    (status, body)
}

/// A body each JSON route accepts (so an id sweep tests the id alone).
fn valid_body(path: &str, uid: i64) -> Value {
    if path.ends_with("/messages") {
        json!({"sender_id": uid, "content": "hi"})
    } else if path.starts_with("/conversations") || path.ends_with("/conversations") {
        json!({"topic": "t"})
    } else {
        json!({"name": "n"})
    }
}

/// A reply that is a client error with a JSON error code, never 5xx.
fn client_error(what: &str, status: u16, body: &Value, failures: &mut Vec<String>) {
    if !(400..500).contains(&status) {
        failures.push(format!("{what}: {status} {body}"));
    } else if body["error"]["code"].as_str().is_none_or(str::is_empty) {
        failures.push(format!(
            "{what}: {status} without a JSON error code: {body}"
        ));
    }
}

#[tokio::test]
async fn http_routes_answer_bad_input_with_4xx_json_and_stay_up() {
    const LIMIT: usize = 1024;
    let mut s = Service::start(&[("CORTEX_BODY_LIMIT", "1024")]).await;
    let (uid, wid, cid) = seed(&s).await;
    let spec = s.get("/openapi.json").await;
    assert_eq!(spec.status, 200);
    let paths = spec.body["paths"].as_object().expect("paths").clone();
    let mut failures = Vec::new();
    let mut tried = 0usize;
    let mut routes_with_ids = 0;
    let mut body_routes = 0;

    // An id that exists for each kind of resource, so a body or query is the only bad part.
    let good_id = |path: &str| -> String {
        let id = if path.starts_with("/users") {
            uid
        } else if path.starts_with("/workspaces") {
            wid
        } else {
            cid
        };
        path.replace("{id}", &id.to_string())
    };

    for (path, item) in &paths {
        for (method, op) in item.as_object().unwrap() {
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let has_body = op.get("requestBody").is_some();
            let request = |path: &str, body: Option<Vec<u8>>| {
                let mut req = s
                    .http
                    .request(method.clone(), format!("{}{path}", s.url))
                    .bearer_auth(TOKEN);
                if let Some(body) = body {
                    req = req.header("content-type", "application/json").body(body);
                }
                req
            };
            // Path ids.
            if path.contains("{id}") {
                routes_with_ids += 1;
                for id in BAD_IDS {
                    let p = path.replace("{id}", id);
                    // A body the route takes, so the id is the only bad part.
                    let body = has_body.then(|| valid_body(path, uid).to_string().into_bytes());
                    let r = s.send(request(&p, body)).await;
                    tried += 1;
                    client_error(&format!("{method} {p}"), r.status, &r.body, &mut failures);
                    // Resource ids are i64: anything else is a bad path. Task ids are
                    // 1 to 16 hex digits: other text is a bad task id, hex an unknown one.
                    let code = r.body["error"]["code"].as_str().unwrap_or_default();
                    let expected = if path.starts_with("/admin/tasks") {
                        matches!((r.status, code), (400, "bad_task_id") | (404, "not_found"))
                    } else if id.parse::<i64>().is_err() {
                        (r.status, code) == (400, "bad_path")
                    } else {
                        matches!((r.status, code), (404, "not_found") | (422, "validation"))
                    };
                    if !expected {
                        failures.push(format!("{method} {p}: unexpected {} {}", r.status, r.body));
                    }
                }
            }
            // Query parameters.
            let queries: Vec<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "query" && p["name"] != "priority")
                        .filter_map(|p| p["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            for q in queries {
                for v in BAD_QUERY {
                    // `name` and `metadata` take text (a metadata filter is JSON): a bad one is
                    // still a 4xx or an empty page, never a 5xx.
                    let p = format!("{}?{q}={v}", good_id(path));
                    let r = s.send(request(&p, has_body.then(|| b"{}".to_vec()))).await;
                    tried += 1;
                    if r.status >= 500 {
                        failures.push(format!("{method} {p}: {} {}", r.status, r.body));
                    } else if r.status >= 400 {
                        client_error(&format!("{method} {p}"), r.status, &r.body, &mut failures);
                    } else if !matches!(q, "name" | "metadata" | "owner_id" | "ids") {
                        failures.push(format!("{method} {p}: accepted ({})", r.status));
                    }
                }
            }
            // Bodies.
            if has_body {
                body_routes += 1;
                let p = good_id(path);
                for (what, body) in bad_bodies() {
                    let r = if body.len() > LIMIT {
                        let (status, body) = raw(s.addr(), method.as_str(), &p, &body, false).await;
                        crate::service::Reply {
                            status,
                            headers: Default::default(),
                            body,
                        }
                    } else {
                        s.send(request(&p, Some(body))).await
                    };
                    tried += 1;
                    let want: &[(u16, &str)] = &[
                        (400, "malformed_json"),
                        (422, "invalid_body"),
                        (422, "validation"),
                        (413, "payload_too_large"),
                    ];
                    if !want
                        .iter()
                        .any(|(st, code)| r.status == *st && r.body["error"]["code"] == *code)
                    {
                        failures.push(format!("{method} {p} [{what}]: {} {}", r.status, r.body));
                    }
                }
                // Oversized: valid JSON above CORTEX_BODY_LIMIT, with and without a length.
                let big = json!({"name": "x".repeat(LIMIT * 4), "content": "y", "email": "a@b.c"})
                    .to_string()
                    .into_bytes();
                // With its length, and chunked (no length announces it: the limit must
                // hold while reading).
                for chunked in [false, true] {
                    let (status, body) = raw(s.addr(), method.as_str(), &p, &big, chunked).await;
                    tried += 1;
                    if status != 413 || body["error"]["code"] != "payload_too_large" {
                        failures.push(format!(
                            "{method} {p} [oversized, chunked: {chunked}]: {status} {body}"
                        ));
                    }
                }
            }
        }
    }

    // The read-your-writes header every operation documents: a decimal WAL position.
    // Sent last, so an operation that wrongly ignored it (a DELETE) cannot spoil the
    // cases above.
    for (path, item) in &paths {
        for method in item.as_object().unwrap().keys() {
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            for lsn in BAD_LSNS {
                let p = good_id(path);
                let req = s
                    .http
                    .request(method.clone(), format!("{}{p}", s.url))
                    .bearer_auth(TOKEN)
                    .header("x-cortex-written-lsn", *lsn);
                let r = s.send(req).await;
                tried += 1;
                if r.status != 400 || r.body["error"]["code"] != "bad_written_lsn" {
                    failures.push(format!(
                        "{method} {p} x-cortex-written-lsn: {lsn:?}: {} {}",
                        r.status, r.body
                    ));
                }
            }
        }
    }

    // Priorities of a new message.
    let msgs = format!("/conversations/{cid}/messages");
    for p in BAD_PRIORITIES {
        let r = s
            .post(
                &format!("{msgs}?priority={p}"),
                json!({"sender_id": uid, "content": "hi"}),
            )
            .await;
        tried += 1;
        if r.status != 400 || r.body["error"]["code"] != "bad_priority" {
            failures.push(format!("priority={p}: {} {}", r.status, r.body));
        }
    }
    let long = "z".repeat(10_000);
    let r = s
        .post(
            &format!("{msgs}?priority={long}"),
            json!({"sender_id": uid, "content": "hi"}),
        )
        .await;
    tried += 1;
    if r.status != 400 || r.body["error"]["code"] != "bad_priority" {
        failures.push(format!("priority=z*10000: {} {}", r.status, r.body));
    }

    eprintln!(
        "http sweep: {tried} requests over {routes_with_ids} operations with an id and {body_routes} with a body"
    );
    assert!(
        routes_with_ids >= 15 && body_routes >= 6,
        "{routes_with_ids} id routes, {body_routes} body routes"
    );
    s.assert_alive().await;
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
