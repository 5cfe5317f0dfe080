//! Durable jobs per second on one Redis server and on a Redis Cluster, side by side in
//! one run.
//!
//! ```text
//! eval "$(scripts/services.sh)"; eval "$(scripts/services.sh cluster)"
//! cargo run --release -p cortex-tasks --features durable --example durable_throughput -- \
//!     [--jobs 20000] [--concurrency 64]
//! ```
//!
//! For each setup it enqueues `--jobs` no-op tasks (batches of 500), then runs them
//! with in-process workers (`--concurrency` each, batch 64) and prints the enqueue rate
//! and the run rate (first start to last completion, read from the queue's counters):
//!
//! * `single`: one queue on the server at `REDIS_URL`, one worker;
//! * `cluster`: one queue on the cluster of `REDIS_CLUSTER_URLS` (it lives on the
//!   master serving its slot), one worker;
//! * `cluster x3`: three queues whose slots are on three different masters, one worker
//!   each, the jobs split between them (how a service spreads load over a cluster).
//!
//! Every queue has a fresh name and is purged afterwards; nothing else is touched.

use std::time::{Duration, Instant};

use cortex_pool::{RedisConfig, RedisPool};
use cortex_tasks::durable::{DurableConfig, DurableQueue, Registry, Worker};
use cortex_tasks::{BoxError, Priority};

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn parse(args: &[String], name: &str, default: usize) -> Result<usize, BoxError> {
    match arg_value(args, name) {
        Some(v) => v
            .parse()
            .map_err(|_| format!("bad value {v:?} for {name}").into()),
        None => Ok(default),
    }
}

fn config(name: String, concurrency: usize) -> DurableConfig {
    DurableConfig {
        name,
        concurrency,
        batch: 64,
        block: Duration::from_millis(100),
        ..DurableConfig::default()
    }
}

/// The queue name for setup `tag`, number `i`, unique to this run.
fn name(tag: &str, i: usize) -> String {
    format!("throughput-{tag}-{}-{i}", std::process::id())
}

/// Enqueues `jobs` split over `queues`, runs them with one worker per queue, and
/// returns (enqueues per second, jobs per second).
async fn measure(queues: &[DurableQueue], jobs: usize) -> Result<(f64, f64), BoxError> {
    let per_queue = jobs / queues.len();
    let payloads: Vec<u64> = (0..500).collect();
    let started = Instant::now();
    for q in queues {
        let mut left = per_queue;
        while left > 0 {
            let n = left.min(payloads.len());
            q.enqueue_many("noop", &payloads[..n], Priority::Normal)
                .await?;
            left -= n;
        }
    }
    let enqueue_rate = (per_queue * queues.len()) as f64 / started.elapsed().as_secs_f64();

    let run_started = Instant::now();
    let mut workers = Vec::new();
    for q in queues {
        let mut registry = Registry::new();
        registry.register("noop", |n: u64| async move { Ok::<_, BoxError>(n) });
        workers.push(Worker::new(q.clone(), registry).spawn());
    }
    let deadline = run_started + Duration::from_secs(600);
    'wait: loop {
        let mut done = 0;
        for q in queues {
            done += q.stats().await?.completed as usize;
        }
        if done >= per_queue * queues.len() {
            break 'wait;
        }
        if Instant::now() >= deadline {
            return Err(format!("only {done} jobs finished in 600 s").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let run_rate = (per_queue * queues.len()) as f64 / run_started.elapsed().as_secs_f64();
    for w in workers {
        w.shutdown(Duration::from_secs(10)).await;
    }
    for q in queues {
        q.purge().await?;
    }
    Ok((enqueue_rate, run_rate))
}

/// `host:port` of the master serving `slot`, from `CLUSTER SLOTS`.
async fn master_of(conn: &mut cortex_pool::RedisConnection, slot: u16) -> Result<String, BoxError> {
    use redis::Value;
    let ranges: Vec<Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    for range in &ranges {
        if let Value::Array(r) = range
            && let [Value::Int(lo), Value::Int(hi), Value::Array(master), ..] = r.as_slice()
            && (*lo..=*hi).contains(&i64::from(slot))
            && let [host, Value::Int(port), ..] = master.as_slice()
        {
            let host = match host {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::SimpleString(s) => s.clone(),
                other => return Err(format!("CLUSTER SLOTS host {other:?}").into()),
            };
            return Ok(format!("{host}:{port}"));
        }
    }
    Err(format!("no master serves slot {slot}").into())
}

/// Three queue names whose slots are served by three different masters.
async fn names_on_every_master(pool: &RedisPool) -> Result<Vec<String>, BoxError> {
    let mut conn = pool.acquire().await?;
    let mut seen = Vec::new();
    let mut names = Vec::new();
    for i in 0..256 {
        let candidate = name("cluster3", i);
        let key = cortex_tasks::durable::key_prefix(&candidate)?;
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&key)
            .query_async(&mut *conn)
            .await?;
        let master = master_of(&mut conn, slot).await?;
        if !seen.contains(&master) {
            seen.push(master);
            names.push(candidate);
            if names.len() == 3 {
                return Ok(names);
            }
        }
    }
    Err("256 queue names did not reach three masters".into())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let jobs = parse(&args, "--jobs", 20_000)?;
    let concurrency = parse(&args, "--concurrency", 64)?;
    let single = RedisConfig {
        url: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned()),
        ..RedisConfig::default()
    };
    let seeds = std::env::var("REDIS_CLUSTER_URLS").map_err(
        |_| "REDIS_CLUSTER_URLS is not set: run `eval \"$(scripts/services.sh cluster)\"`",
    )?;
    let cluster = RedisConfig {
        cluster_urls: seeds.split(',').map(str::to_owned).collect(),
        ..RedisConfig::default()
    };
    let cluster_pool = RedisPool::new(cluster.clone()).await?;

    println!("| setup | queues | jobs | enqueue/s | jobs/s |");
    println!("|---|---|---|---|---|");
    let q = DurableQueue::connect(&single, config(name("single", 0), concurrency)).await?;
    let (e, r) = measure(&[q], jobs).await?;
    println!("| single | 1 | {jobs} | {e:.0} | {r:.0} |");
    let q = DurableQueue::connect(&cluster_pool, config(name("cluster", 0), concurrency)).await?;
    let (e, r) = measure(&[q], jobs).await?;
    println!("| cluster | 1 | {jobs} | {e:.0} | {r:.0} |");
    let mut queues = Vec::new();
    for n in names_on_every_master(&cluster_pool).await? {
        queues.push(DurableQueue::connect(&cluster_pool, config(n, concurrency)).await?);
    }
    let (e, r) = measure(&queues, jobs).await?;
    println!("| cluster x3 | 3 | {} | {e:.0} | {r:.0} |", jobs / 3 * 3);
    Ok(())
}
