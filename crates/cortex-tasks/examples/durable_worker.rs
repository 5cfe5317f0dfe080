//! A durable worker process, used by the multi-process tests.
//!
//! ```text
//! durable_worker --url redis://127.0.0.1:6379 --queue NAME [--concurrency N]
//!                [--visibility-timeout SECS] [--max-attempts N] [--backoff-ms MS]
//!                [--cluster redis://127.0.0.1:7000,redis://127.0.0.1:7001]
//! ```
//!
//! With `--cluster SEEDS` the worker talks to that Redis Cluster (as with
//! `REDIS_CLUSTER_URLS`) and `--url` is not used.
//!
//! Handlers: `echo` returns its payload; `sleep` `{"ms": n}` sleeps then returns it;
//! `fail` always errors; `record` pushes `{"pid": .., "payload": ..}` onto the list
//! `cortex:tasks:{queue}:test:ran` (so tests can count executions and tell processes
//! apart), sleeps `payload.ms` if given, and returns the payload; `count` `{"n": n}`
//! sleeps `payload.ms` if given, then adds one to field `n` of the hash
//! `cortex:tasks:{queue}:test:runs` (the queue's slot, so on a cluster it fails over
//! with the queue) and returns the payload: the effect log of the failover tests.
//!
//! Prints `ready {consumer}` once it reads tasks, and `stopped ..` on exit. Runs until
//! SIGTERM or until stdin closes, then shuts down gracefully.

use std::time::Duration;

use cortex_tasks::BoxError;
use cortex_tasks::durable::{DurableConfig, DurableQueue, Registry, Worker, key_prefix};
use serde_json::Value;
use tokio::io::AsyncReadExt;

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn parse<T: std::str::FromStr>(args: &[String], name: &str) -> Result<Option<T>, BoxError> {
    arg_value(args, name)
        .map(|v| {
            v.parse::<T>()
                .map_err(|_| format!("bad value {v:?} for {name}").into())
        })
        .transpose()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let url = arg_value(&args, "--url").unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let mut config = DurableConfig {
        name: arg_value(&args, "--queue").ok_or("--queue NAME is required")?,
        ..DurableConfig::default()
    };
    if let Some(n) = parse(&args, "--concurrency")? {
        config.concurrency = n;
    }
    if let Some(s) = parse::<f64>(&args, "--visibility-timeout")? {
        config.visibility_timeout = Duration::try_from_secs_f64(s)?;
    }
    if let Some(n) = parse(&args, "--max-attempts")? {
        config.max_attempts = n;
    }
    if let Some(ms) = parse(&args, "--backoff-ms")? {
        config.retry_backoff = Duration::from_millis(ms);
    }
    let ran_key = format!("{}test:ran", key_prefix(&config.name)?);
    let runs_key = format!("{}test:runs", key_prefix(&config.name)?);
    let cluster_urls = arg_value(&args, "--cluster")
        .map(|seeds| seeds.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let redis_config = cortex_pool::RedisConfig {
        url: url.clone(),
        cluster_urls,
        ..cortex_pool::RedisConfig::default()
    };
    let pool = cortex_pool::RedisPool::new(redis_config).await?;
    let queue = DurableQueue::connect(&pool, config).await?;
    // The handlers' own connection, in the pool's mode: on a cluster it follows the
    // queue's slot to a new master after a failover.
    let redis = pool.dedicated_connection().await?;
    let count_redis = redis.clone();

    let mut registry = Registry::new();
    registry
        .register("echo", |v: Value| async move { Ok::<_, BoxError>(v) })
        .register("sleep", |v: Value| async move {
            let ms = v.get("ms").and_then(Value::as_u64).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, BoxError>(v)
        })
        .register("fail", |_: Value| async move {
            Err::<Value, BoxError>("this task always fails".into())
        })
        .register("record", move |v: Value| {
            let mut redis = redis.clone();
            let key = ran_key.clone();
            async move {
                let line = serde_json::json!({"pid": std::process::id(), "payload": v}).to_string();
                redis::cmd("RPUSH")
                    .arg(&key)
                    .arg(line)
                    .query_async::<()>(&mut redis)
                    .await?;
                if let Some(ms) = v.get("ms").and_then(Value::as_u64) {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                Ok::<_, BoxError>(v)
            }
        });

    registry.register("count", move |v: Value| {
        let mut redis = count_redis.clone();
        let key = runs_key.clone();
        async move {
            if let Some(ms) = v.get("ms").and_then(Value::as_u64) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let n = v
                .get("n")
                .and_then(Value::as_u64)
                .ok_or("payload has no n")?;
            redis::cmd("HINCRBY")
                .arg(&key)
                .arg(n)
                .arg(1)
                .query_async::<()>(&mut redis)
                .await?;
            Ok::<_, BoxError>(v)
        }
    });

    let worker = Worker::new(queue, registry);
    println!("ready {}", worker.consumer());
    let handle = worker.spawn();

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            _ = term.recv() => break,
            n = stdin.read(&mut buf) => {
                if matches!(n, Ok(0) | Err(_)) {
                    break;
                }
            }
        }
    }
    let report = handle.shutdown(Duration::from_secs(10)).await;
    println!(
        "stopped finished_in_time {} aborted {}",
        report.finished_in_time,
        report.aborted.len()
    );
    Ok(())
}
