//! The durable queue of cortex-tasks against apalis-redis, on one Redis, in one run.
//!
//! Each round runs both sides one after the other (the side that goes first alternates
//! from round to round, so a burst of load from elsewhere on the machine does not
//! always land on the same side), each on key namespaces of its own that no earlier
//! round used, and measures:
//!
//! * **deep**: `DEEP_JOBS` (20 000) no-op jobs enqueued at once (chunks of 1 000 sent
//!   concurrently), timed from the first enqueue until the backend has recorded every
//!   one as done (ours: the queue's `completed` counter; apalis: the size of its done
//!   set), in jobs per second;
//! * **shallow**: jobs enqueued one by one at a steady `RATE` (2 000/s) for `SECS` (10 s),
//!   each carrying the instant its enqueue call began; the handler records the time
//!   from there to its start. p50 and p99 of those.
//!
//! Both sides run 2 workers in this process, each with `CONCURRENCY` (64) jobs at once
//! and fetching up to `BATCH` (64) per round trip; an idle apalis worker polls every
//! `APALIS_POLL_MS` (1 ms, the best case for its latency; see [`Ticks`]). Settings of each side are printed at
//! the start of the run.
//!
//! Environment: `REDIS_URL` (default `redis://127.0.0.1:6379`), `ROUNDS` (3),
//! `DEEP_JOBS`, `RATE`, `SECS`, `CONCURRENCY`, `BATCH`, `APALIS_POLL_MS`; `ONLY=ours`
//! runs our side alone (to profile it).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_redis::{Config as ApalisConfig, RedisStorage};
use cortex_tasks::Priority;
use cortex_tasks::durable::{DurableConfig, DurableQueue, Registry, Worker};
use serde::{Deserialize, Serialize};

/// One job's payload: when its enqueue call began, in ns since [`BASE`] (0 for the deep
/// queue, whose jobs are not timed one by one).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Job {
    t: u64,
}

static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);
/// Jobs started by a handler (either side; the sides never run at once).
static STARTED: AtomicU64 = AtomicU64::new(0);
/// Enqueue-to-start latencies of the shallow phase, in ns.
static LATENCIES: Mutex<Vec<u64>> = Mutex::new(Vec::new());

fn now_ns() -> u64 {
    u64::try_from(BASE.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// What both sides' handlers do: note the start, and its latency for a timed job.
fn on_start(job: Job) {
    if job.t != 0 {
        let lat = now_ns().saturating_sub(job.t);
        LATENCIES.lock().expect("latencies").push(lat);
    }
    STARTED.fetch_add(1, Ordering::Relaxed);
}

#[derive(Clone, Copy, Debug)]
struct Settings {
    deep_jobs: u64,
    rate: u64,
    secs: u64,
    concurrency: usize,
    batch: usize,
    apalis_poll: Duration,
}

impl Settings {
    fn shallow_jobs(&self) -> u64 {
        self.rate * self.secs
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Measure {
    deep_rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// How long the harness waits for the last job of a phase before giving up.
const PHASE_LIMIT: Duration = Duration::from_secs(120);
const CHUNK: u64 = 1000;

/// Polls `done` until it reaches `target`; panics past [`PHASE_LIMIT`].
async fn wait_for<F, Fut>(what: &str, target: u64, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = u64>,
{
    let until = Instant::now() + PHASE_LIMIT;
    loop {
        let d = done().await;
        if d >= target {
            return;
        }
        assert!(
            Instant::now() < until,
            "{what}: {d} of {target} done after {PHASE_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Sends `n` shallow jobs at `rate` per second through `enqueue`, each spawned on its
/// own so a slow reply does not hold the next send back.
async fn steady<F, Fut>(s: Settings, enqueue: F)
where
    F: Fn(Job) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let n = s.shallow_jobs();
    let gap = Duration::from_secs(1) / u32::try_from(s.rate).expect("RATE fits u32");
    let t0 = tokio::time::Instant::now();
    let mut sent = Vec::with_capacity(n as usize);
    for i in 0..n {
        tokio::time::sleep_until(t0 + gap * u32::try_from(i).expect("job index fits u32")).await;
        sent.push(tokio::spawn(enqueue(Job { t: now_ns() })));
    }
    for h in sent {
        h.await.expect("enqueue task");
    }
}

fn percentiles() -> (f64, f64) {
    let mut l = std::mem::take(&mut *LATENCIES.lock().expect("latencies"));
    l.sort_unstable();
    let at = |q: f64| {
        let i = ((l.len() as f64 * q).ceil() as usize).clamp(1, l.len()) - 1;
        l[i] as f64 / 1e6
    };
    (at(0.50), at(0.99))
}

async fn ours(url: &str, s: Settings, ns: &str) -> Measure {
    let config = DurableConfig {
        name: ns.to_owned(),
        concurrency: s.concurrency,
        batch: s.batch,
        result_ttl: Duration::from_secs(120),
        ..DurableConfig::default()
    };
    let q = DurableQueue::connect(url, config)
        .await
        .unwrap_or_else(|e| panic!("cannot reach Redis at {url}: {e}"));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let mut reg = Registry::new();
            reg.register("noop", |job: Job| async move {
                on_start(job);
                Ok::<_, cortex_tasks::BoxError>(())
            });
            Worker::new(q.clone(), reg).spawn()
        })
        .collect();
    let completed = || {
        let q = q.clone();
        async move { q.stats().await.expect("stats").completed }
    };

    // Deep.
    let payloads = vec![Job::default(); CHUNK as usize];
    let t0 = Instant::now();
    let chunks =
        (0..s.deep_jobs / CHUNK).map(|_| q.enqueue_many("noop", &payloads, Priority::Normal));
    for r in futures_util::future::join_all(chunks).await {
        r.expect("enqueue");
    }
    let enqueued = t0.elapsed();
    wait_for("ours deep", s.deep_jobs, completed).await;
    if std::env::var_os("QVA_DEBUG").is_some() {
        eprintln!("ours: enqueued in {enqueued:?}, all done in {:?}", t0.elapsed());
    }
    let deep_rate = s.deep_jobs as f64 / t0.elapsed().as_secs_f64();

    // Shallow.
    LATENCIES.lock().expect("latencies").clear();
    let qq = q.clone();
    steady(s, move |job| {
        let q = qq.clone();
        async move {
            q.enqueue("noop", &job).await.expect("enqueue");
        }
    })
    .await;
    wait_for("ours shallow", s.deep_jobs + s.shallow_jobs(), completed).await;
    let (p50_ms, p99_ms) = percentiles();

    for w in workers {
        w.shutdown(Duration::from_secs(5)).await;
    }
    q.purge().await.expect("purge");
    Measure {
        deep_rate,
        p50_ms,
        p99_ms,
    }
}

async fn apalis_noop(job: Job) -> Result<(), BoxDynError> {
    on_start(job);
    Ok(())
}

/// The idle poll of an apalis worker: a tick every `every`.
///
/// Not apalis's own `poll_with_interval`: its strategy (like `PollWith` with any
/// stream) does not poll its timer again after a tick, so a tick that comes together
/// with an empty fetch reply leaves the worker asleep until its next heartbeat (30 s;
/// seen here as shallow runs that stall). This stream asks to be polled once more
/// after each tick, which arms the next one.
struct Ticks {
    every: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Ticks {
    fn new(every: Duration) -> Self {
        Self {
            every,
            sleep: Box::pin(tokio::time::sleep(every)),
        }
    }
}

impl futures_util::Stream for Ticks {
    type Item = ();

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let next = tokio::time::Instant::now() + self.every;
        self.sleep.as_mut().reset(next);
        cx.waker().wake_by_ref();
        Poll::Ready(Some(()))
    }
}

/// A connection for apalis: its `connect` with a 30 s response timeout (ours uses its
/// `op_timeout`, 5 s) instead of the redis crate's 500 ms, which a push of 1 000 jobs
/// while 19 others wait can exceed on a busy machine.
async fn apalis_conn(url: &str) -> apalis_redis::ConnectionManager {
    let client = redis::Client::open(url).expect("apalis client");
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(30)));
    client
        .get_connection_manager_with_config(config)
        .await
        .expect("apalis connect")
}

async fn apalis(url: &str, s: Settings, ns: &str) -> Measure {
    let config = ApalisConfig::default().queue(ns).batch_size(s.batch);
    // Producer: one multiplexed connection (as ours), pushing through the storage.
    let conn = apalis_conn(url).await;
    let producer: RedisStorage<Job> = RedisStorage::new(conn.clone()).with_config(config.clone());
    let mut stop = Vec::new();
    let mut running = Vec::new();
    for w in 0..2 {
        // A connection per worker, polling every `APALIS_POLL_MS` when idle:
        // apalis-redis 1.0 files every push under its scheduled set (run at "now"),
        // which publishes no wake-up message, so a worker learns of new jobs only by
        // fetching (the pubsub factory never wakes it for them).
        let wconn = apalis_conn(url).await;
        let backend = RedisStorage::<Job>::new(wconn)
            .with_config(config.clone())
            .poll_with_stream(Ticks::new(s.apalis_poll));
        let worker = WorkerBuilder::new(format!("{ns}-w{w}"))
            .backend(backend)
            .concurrency(s.concurrency)
            .on_event(|ctx, ev| {
                if std::env::var_os("APALIS_EVENTS").is_some() {
                    eprintln!("apalis {}: {ev:?}", ctx.name());
                }
            })
            .build(apalis_noop);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        stop.push(tx);
        running.push(tokio::spawn(worker.run_until(async move {
            let _ = rx.await;
            Ok::<(), WorkerError>(())
        })));
    }
    let done_key = config.done_jobs_set();
    let done = || {
        let mut c = conn.clone();
        let key = done_key.clone();
        async move {
            redis::cmd("SCARD")
                .arg(&key)
                .query_async::<u64>(&mut c)
                .await
                .expect("SCARD")
        }
    };

    // Deep.
    let t0 = Instant::now();
    let chunks = (0..s.deep_jobs / CHUNK).map(|_| {
        let mut p = producer.clone();
        async move {
            p.push_bulk(vec![Job::default(); CHUNK as usize])
                .await
                .expect("apalis push_bulk");
        }
    });
    futures_util::future::join_all(chunks).await;
    wait_for("apalis deep", s.deep_jobs, done).await;
    let deep_rate = s.deep_jobs as f64 / t0.elapsed().as_secs_f64();

    // Shallow.
    LATENCIES.lock().expect("latencies").clear();
    let pp = producer.clone();
    steady(s, move |job| {
        let mut p = pp.clone();
        async move {
            p.push(job).await.expect("apalis push");
        }
    })
    .await;
    wait_for("apalis shallow", s.deep_jobs + s.shallow_jobs(), done).await;
    let (p50_ms, p99_ms) = percentiles();

    for tx in stop {
        let _ = tx.send(());
    }
    for h in running {
        match tokio::time::timeout(Duration::from_secs(10), h).await {
            Ok(r) => {
                if let Err(e) = r.expect("apalis worker task") {
                    eprintln!("apalis worker ended with {e}");
                }
            }
            Err(_) => eprintln!("apalis worker did not stop within 10 s"),
        }
    }
    purge_prefix(&conn, ns).await;
    Measure {
        deep_rate,
        p50_ms,
        p99_ms,
    }
}

/// Deletes every key under `prefix` (apalis keeps its keys as `<queue>:…`).
async fn purge_prefix(conn: &apalis_redis::ConnectionManager, prefix: &str) {
    let mut c = conn.clone();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await
            .expect("SCAN");
        if !keys.is_empty() {
            redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<u64>(&mut c)
                .await
                .expect("UNLINK");
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[tokio::main]
async fn main() {
    LazyLock::force(&BASE);
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let rounds = env_num("ROUNDS", 3).max(1);
    let s = Settings {
        deep_jobs: env_num("DEEP_JOBS", 20_000).max(CHUNK) / CHUNK * CHUNK,
        rate: env_num("RATE", 2000).max(1),
        secs: env_num("SECS", 10).max(1),
        concurrency: env_num("CONCURRENCY", 64).max(1) as usize,
        batch: env_num("BATCH", 64).max(1) as usize,
        apalis_poll: Duration::from_millis(env_num("APALIS_POLL_MS", 1).max(1)),
    };
    println!(
        "deep: {} no-op jobs enqueued at once (chunks of {CHUNK}, sent concurrently), until all are recorded done",
        s.deep_jobs
    );
    println!(
        "shallow: {} jobs/s for {} s ({} jobs), enqueue-to-start latency",
        s.rate,
        s.secs,
        s.shallow_jobs()
    );
    println!(
        "ours:   cortex-tasks DurableQueue, 2 Workers, concurrency {} and batch {} each, result_ttl 120 s, other settings default",
        s.concurrency, s.batch
    );
    println!(
        "apalis: apalis-redis RedisStorage, 2 Workers (a connection each), .concurrency({}), Config batch_size {}, a poll every {:?} when idle, other settings default (lock_tasks, persist_results, emit_events on)",
        s.concurrency, s.batch, s.apalis_poll
    );
    println!();
    let pid = std::process::id();
    let mut rows = Vec::new();
    for round in 1..=rounds {
        let ns_ours = format!("qva-ours-{pid}-{round}");
        let ns_apalis = format!("qva-apalis-{pid}-{round}");
        // `ONLY=ours` (for profiling one side) runs ours alone.
        if std::env::var("ONLY").as_deref() == Ok("ours") {
            let o = ours(&url, s, &ns_ours).await;
            println!(
                "ours: deep {:.0} jobs/s, shallow p50 {:.2} ms p99 {:.2} ms",
                o.deep_rate, o.p50_ms, o.p99_ms
            );
            continue;
        }
        let (o, a) = if round % 2 == 1 {
            let o = ours(&url, s, &ns_ours).await;
            let a = apalis(&url, s, &ns_apalis).await;
            (o, a)
        } else {
            let a = apalis(&url, s, &ns_apalis).await;
            let o = ours(&url, s, &ns_ours).await;
            (o, a)
        };
        eprintln!("round {round} done");
        rows.push((o, a));
    }
    if rows.is_empty() {
        return;
    }
    println!(
        "| round | ours deep jobs/s | apalis deep jobs/s | deep ratio | ours p50 / p99 ms | apalis p50 / p99 ms | p50 ratio (apalis/ours) | p99 ratio (apalis/ours) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let (mut deep, mut p50, mut p99) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (o, a)) in rows.iter().enumerate() {
        let d = o.deep_rate / a.deep_rate;
        let r50 = a.p50_ms / o.p50_ms;
        let r99 = a.p99_ms / o.p99_ms;
        deep.push(d);
        p50.push(r50);
        p99.push(r99);
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} | {:.2} |",
            i + 1,
            o.deep_rate,
            a.deep_rate,
            d,
            o.p50_ms,
            o.p99_ms,
            a.p50_ms,
            a.p99_ms,
            r50,
            r99
        );
    }
    let ours_deep = median(rows.iter().map(|(o, _)| o.deep_rate).collect());
    println!();
    println!(
        "median over {rounds} rounds: ours deep {ours_deep:.0} jobs/s; deep ratio (ours/apalis) {:.2}; p50 ratio (apalis/ours) {:.2}; p99 ratio (apalis/ours) {:.2}",
        median(deep),
        median(p50),
        median(p99)
    );
    println!("(ratios above 1 mean ours is ahead)");
}
