//! The durable queue on the real local Redis Cluster (`REDIS_CLUSTER_URLS`, from
//! `eval "$(scripts/services.sh cluster)"`), connected the way an application connects:
//! a `RedisConfig` with `cluster_urls`. Without `REDIS_CLUSTER_URLS` these tests fail,
//! saying how to start the cluster.
//!
//! The cluster is shared with other tests: every queue name is unique, nothing is
//! flushed, and a node this file kills is started again (also when the test fails) and
//! the cluster is healthy again before the test ends.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cortex_pool::{PoolMetrics, RedisConfig, RedisManagedConnection, RedisPool};
use cortex_tasks::durable::{DurableConfig, DurableQueue, Registry, Worker, key_prefix};
use cortex_tasks::{BoxError, Error, Priority, TaskId, TaskStatus};
use redis::aio::MultiplexedConnection;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::durable::{Proc, config, eventually, stop_proc, unique_name, worker_bin};
use crate::durable_keys::{cluster_seeds, key_slot, keys_naming, master_of};

/// A lock shared by this crate's tests on the cluster, across test processes (nextest
/// runs each test in a process of its own): the failover test holds it exclusively,
/// the others shared, so no test of this crate sees a master of its own failed over
/// under it. Taken within ten minutes (a 20 000-job failover run takes about 40 s),
/// held until the returned file is dropped.
pub(crate) async fn cluster_lock(exclusive: bool) -> std::fs::File {
    let path = std::env::temp_dir().join("cortex-tasks-cluster-tests.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let until = Instant::now() + Duration::from_secs(600);
    loop {
        let got = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match got {
            Ok(()) => return file,
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("lock {}: {e}", path.display()),
        }
    }
}

/// The Redis config of the local cluster, as `REDIS_CLUSTER_URLS` gives it.
fn cluster_config() -> RedisConfig {
    RedisConfig {
        cluster_urls: cluster_seeds(),
        ..RedisConfig::default()
    }
}

async fn cluster_queue(config: DurableConfig) -> DurableQueue {
    let redis = cluster_config();
    DurableQueue::connect(&redis, config)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach the Redis Cluster at {:?} ({e:?}): run \
                 `eval \"$(scripts/services.sh cluster)\"`",
                redis.cluster_urls
            )
        })
}

/// A slot-routing connection of the test's own (not the queue's).
async fn cluster_conn() -> RedisManagedConnection {
    let pool = RedisPool::with_metrics(cluster_config(), PoolMetrics::disabled())
        .await
        .expect("cluster pool");
    pool.dedicated_connection()
        .await
        .expect("cluster connection")
}

/// A plain connection to the first seed that answers now (a node may be down).
async fn seed_conn() -> MultiplexedConnection {
    for url in cluster_seeds() {
        let Ok(client) = redis::Client::open(url.as_str()) else {
            continue;
        };
        let conn = tokio::time::timeout(
            Duration::from_secs(2),
            client.get_multiplexed_async_connection(),
        )
        .await;
        if let Ok(Ok(mut conn)) = conn
            && redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok()
        {
            return conn;
        }
    }
    panic!(
        "no seed of {:?} answers: run `eval \"$(scripts/services.sh cluster)\"`",
        cluster_seeds()
    )
}

async fn plain(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .expect("node url")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("node {url}: {e}"))
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// A whole queue life on the cluster, connected through `REDIS_CLUSTER_URLS`: the
/// check for tasks of the old key layout (whose keys span slots, so it runs per key),
/// enqueue at every priority, a run, a retry that then succeeds, a dead letter after
/// the last attempt, a cancel, stats, and purge (which scans every master) leaving
/// nothing on the master of the queue's slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_queue_runs_the_whole_lifecycle() {
    let _lock = cluster_lock(false).await;
    let cfg = DurableConfig {
        max_attempts: 2,
        retry_backoff: Duration::from_millis(50),
        ..config("cl-life")
    };
    let name = cfg.name.clone();
    let mut conn = cluster_conn().await;

    // A task left in the old layout refuses the start, found on its own slot's master.
    let old_stream = format!("cortex:tasks:{name}:stream:normal");
    let _: String = redis::cmd("XADD")
        .arg(&old_stream)
        .arg("*")
        .arg("id")
        .arg("1")
        .query_async(&mut conn)
        .await
        .expect("XADD old");
    match DurableQueue::connect(&cluster_config(), cfg.clone()).await {
        Err(Error::LegacyKeys {
            tasks: 1,
            dead_letters: 0,
            ..
        }) => {}
        other => panic!("expected LegacyKeys with one task, got {other:?}"),
    }
    let _: () = redis::cmd("UNLINK")
        .arg(&old_stream)
        .query_async(&mut conn)
        .await
        .expect("UNLINK old");

    let q = cluster_queue(cfg).await;
    let flaky_runs = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::new();
    registry.register("ok", |n: u64| async move { Ok::<_, BoxError>(n) });
    registry.register("fail", |_: u64| async {
        Err::<u64, _>(BoxError::from("always no"))
    });
    let runs = flaky_runs.clone();
    registry.register("flaky", move |n: u64| {
        let first = runs.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                Err(BoxError::from("first run fails"))
            } else {
                Ok(n)
            }
        }
    });
    let mut ids = Vec::new();
    for p in Priority::ALL {
        ids.extend(q.enqueue_many("ok", &[1u64, 2], p).await.expect("enqueue"));
    }
    let flaky = q.enqueue("flaky", &3u64).await.expect("enqueue");
    let dead = q.enqueue("fail", &0u64).await.expect("enqueue");
    let cancelled = q.enqueue("ok", &9u64).await.expect("enqueue");
    q.cancel(cancelled).await.expect("cancel");
    let worker = Worker::new(q.clone(), registry).spawn();
    for id in ids.iter().chain([&flaky, &dead]) {
        let info = q.wait(*id, Duration::from_secs(20)).await.expect("wait");
        assert!(info.status.is_finished(), "{id}: {info:?}");
    }
    let f = q.status(flaky).await.expect("status");
    assert_eq!((f.status, f.attempts), (TaskStatus::Completed, 2), "{f:?}");
    let d = q.status(dead).await.expect("status");
    assert_eq!((d.status, d.attempts), (TaskStatus::Failed, 2), "{d:?}");
    assert_eq!(
        q.status(cancelled).await.expect("status").status,
        TaskStatus::Cancelled
    );
    let letters = q.dead_letters(10).await.expect("dead letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        (letters[0].id, letters[0].error.as_str()),
        (dead, "always no")
    );
    let s = q.stats().await.expect("stats");
    assert_eq!(
        (
            s.enqueued,
            s.completed,
            s.failed,
            s.cancelled,
            s.retried,
            s.queued
        ),
        (9, 7, 1, 1, 2, 0),
        "{s:?}"
    );
    assert!(s.workers >= 1, "{s:?}");
    worker.shutdown(Duration::from_secs(5)).await;

    let slot = key_slot(&name);
    let master = master_of(&mut seed_conn().await, slot).await;
    let mut node = plain(&master).await;
    assert!(keys_naming(&mut node, &name).await.len() > 5);
    q.purge().await.expect("purge");
    let left = keys_naming(&mut node, &name).await;
    assert!(left.is_empty(), "purge left {left:?} on {master}");
}

/// Two queues whose slots are served by different masters run side by side, each on
/// its own master: every task of both completes, and each queue's keys sit on the
/// master of its slot only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cluster_queues_on_different_masters_run_side_by_side() {
    let _lock = cluster_lock(false).await;
    let mut seed = seed_conn().await;
    let first = config("cl-two-a");
    let first_master = master_of(&mut seed, key_slot(&first.name)).await;
    let mut second = None;
    for i in 0..64 {
        let cfg = config(&format!("cl-two-b{i}"));
        let m = master_of(&mut seed, key_slot(&cfg.name)).await;
        if m != first_master {
            second = Some((cfg, m));
            break;
        }
    }
    let (second, second_master) = second.expect("64 names all hash to one master");
    let names = [first.name.clone(), second.name.clone()];
    let masters = [first_master, second_master];
    let queues = [cluster_queue(first).await, cluster_queue(second).await];
    let mut workers = Vec::new();
    let mut ids = Vec::new();
    for q in &queues {
        let mut registry = Registry::new();
        registry.register("ok", |n: u64| async move { Ok::<_, BoxError>(n) });
        let payloads: Vec<u64> = (0..300).collect();
        ids.push(
            q.enqueue_many("ok", &payloads, Priority::Normal)
                .await
                .expect("enqueue"),
        );
        workers.push(Worker::new(q.clone(), registry).spawn());
    }
    for q in &queues {
        assert!(
            eventually(Duration::from_secs(30), || async {
                q.stats().await.expect("stats").completed == 300
            })
            .await,
            "{:?}",
            q.stats().await
        );
    }
    for (q, ids) in queues.iter().zip(&ids) {
        for id in ids.iter().step_by(37) {
            assert_eq!(
                q.status(*id).await.expect("status").status,
                TaskStatus::Completed
            );
        }
    }
    for w in workers {
        w.shutdown(Duration::from_secs(5)).await;
    }
    for i in 0..2 {
        let mut own = plain(&masters[i]).await;
        let mut other = plain(&masters[1 - i]).await;
        assert!(keys_naming(&mut own, &names[i]).await.len() > 3);
        assert!(keys_naming(&mut other, &names[i]).await.is_empty());
    }
    for q in &queues {
        q.purge().await.expect("purge");
    }
}

/// Starts `scripts/services.sh cluster-start <port>` when dropped while armed, so a
/// node this test killed comes back even when the test fails half-way.
struct Revive {
    port: u16,
    armed: bool,
}

fn services_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services.sh")
}

/// Runs `scripts/services.sh args` without holding up the runtime (the sampler keeps
/// running), bounded by two minutes (the script waits for the cluster's lock).
async fn services(args: &[&str]) {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new("bash")
            .arg(services_script())
            .args(args)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("services.sh {args:?} took over 2 minutes"))
    .expect("run scripts/services.sh");
    assert!(
        out.status.success(),
        "services.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Revive {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::process::Command::new("bash")
                .arg(services_script())
                .args(["cluster-start", &self.port.to_string()])
                .output();
        }
    }
}

/// Waits (bounded) until every node of the cluster answers, says `cluster_state:ok`,
/// and every replica's link to its master is up.
async fn wait_cluster_healthy(limit: Duration) {
    let healthy = eventually(limit, || async {
        for url in cluster_seeds() {
            let Ok(client) = redis::Client::open(url.as_str()) else {
                return false;
            };
            let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_secs(1),
                client.get_multiplexed_async_connection(),
            )
            .await
            else {
                return false;
            };
            let info: String = match redis::cmd("CLUSTER").arg("INFO").query_async(&mut c).await {
                Ok(i) => i,
                Err(_) => return false,
            };
            if !info.contains("cluster_state:ok") {
                return false;
            }
            let repl: String = match redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut c)
                .await
            {
                Ok(i) => i,
                Err(_) => return false,
            };
            if repl.contains("role:slave") && !repl.contains("master_link_status:up") {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        healthy,
        "the cluster did not become healthy within {limit:?}"
    );
}

/// The master serving `slot` now and a replica of it that is not failing, both as
/// `redis://host:port`. Asked again (for up to 30 s) while the answer does not hold
/// together: other tests on the shared cluster may be moving masters meanwhile.
async fn master_and_replica(slot: u16) -> (String, String) {
    let mut last = String::new();
    for _ in 0..60 {
        let master = master_of(&mut seed_conn().await, slot).await;
        match replica_of(&master).await {
            Ok(replica) => return (master, replica),
            Err(e) => last = format!("{master}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("no healthy replica of the master of slot {slot} within 30 s: {last}")
}

async fn replica_of(master: &str) -> redis::RedisResult<String> {
    let mut m = plain(master).await;
    let id: String = redis::cmd("CLUSTER")
        .arg("MYID")
        .query_async(&mut m)
        .await?;
    let lines: Vec<String> = redis::cmd("CLUSTER")
        .arg("REPLICAS")
        .arg(&id)
        .query_async(&mut m)
        .await?;
    for line in &lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 2 && !f[2].contains("fail") {
            let addr = f[1].split(['@', ',']).next().unwrap_or_default();
            return Ok(format!("redis://{addr}"));
        }
    }
    Err(redis::RedisError::from((
        redis::ErrorKind::Client,
        "no healthy replica",
        format!("{lines:?}"),
    )))
}

/// A `durable_worker` process on the cluster.
async fn spawn_cluster_proc(queue: &str, extra: &[&str]) -> Proc {
    let seeds = cluster_seeds().join(",");
    let mut child = Command::new(worker_bin())
        .args(["--cluster", &seeds, "--queue", queue])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn durable_worker");
    let pid = child.id().expect("child pid");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("worker process printed nothing within 30 s")
        .expect("read worker stdout");
    assert!(
        first.as_deref().is_some_and(|l| l.starts_with("ready ")),
        "unexpected first line from worker: {first:?}"
    );
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Proc { child, pid }
}

fn env_u64(key: &str, default: u64) -> u64 {
    match std::env::var(key) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// `(when, finished)` samples of the queue's counters (completed + failed), taken every
/// 50 ms by a background task; `when` is when the read was sent, so a sample dated
/// after an event was read after it. Failed reads (during an outage) leave no sample.
#[derive(Clone, Default)]
struct Samples(Arc<Mutex<Vec<(Instant, u64)>>>);

impl Samples {
    fn last(&self) -> Option<(Instant, u64)> {
        self.0.lock().unwrap().last().copied()
    }
    /// The first sample after `t` whose count exceeds `n`.
    fn first_above(&self, t: Instant, n: u64) -> Option<(Instant, u64)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(at, c)| *at > t && *c > n)
            .copied()
    }
    /// The first sample taken after `t`.
    fn first_after(&self, t: Instant) -> Option<(Instant, u64)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(at, _)| *at > t)
            .copied()
    }
    /// Jobs per second between the samples nearest `from` and `to`.
    fn rate(&self, from: Instant, to: Instant) -> f64 {
        let s = self.0.lock().unwrap();
        let a = s.iter().find(|(at, _)| *at >= from);
        let b = s.iter().rev().find(|(at, _)| *at <= to);
        match (a, b) {
            (Some((ta, ca)), Some((tb, cb))) if tb > ta => {
                (cb.saturating_sub(*ca)) as f64 / (*tb - *ta).as_secs_f64()
            }
            _ => f64::NAN,
        }
    }
}

/// Waits (bounded by `limit`) until the sampled completed count reaches `n`.
async fn wait_completed(samples: &Samples, n: u64, limit: Duration) -> bool {
    eventually(limit, || async {
        samples.last().is_some_and(|(_, c)| c >= n)
    })
    .await
}

/// **Failover under load.** `CORTEX_FAILOVER_JOBS` jobs (default 2 000; 20 000 for
/// the long form) of the `count` handler run on two `durable_worker` processes, each
/// job adding one to its own field of the effect log (a hash in the queue's slot). At a
/// fifth of them done, the master serving the queue's slot is failed over gracefully
/// (`CLUSTER FAILOVER` on its replica); at half, the new master is killed outright
/// (`SIGKILL`, `scripts/services.sh cluster-kill`), and its replica takes over after
/// the cluster's node timeout. Afterwards, from Redis and from the effect log: every
/// accepted job is completed and ran at least once, or is failed and in the
/// dead-letter stream with its error; no job is lost; nothing is left in the streams.
/// Jobs that ran twice (their outcome was written on the killed master but not yet on
/// its replica, or their entry was reclaimed while its worker could not refresh it)
/// are counted and printed: the handler is idempotent per job id, so they are harmless.
///
/// Every job is enqueued, and confirmed replicated (`WAIT`), before the first failover:
/// Redis replicates asynchronously, so an enqueue confirmed just before a crash could
/// be lost with the crashed master, which no client can prevent without `WAIT`.
///
/// Prints the recovery times (failover or kill until jobs complete again) and jobs/s
/// before and after each. The killed node is started again, and the cluster is
/// healthy again, before the test ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_jobs_survive_a_graceful_failover_and_a_master_kill() {
    let jobs = env_u64("CORTEX_FAILOVER_JOBS", 2_000);
    let task_ms = env_u64("CORTEX_FAILOVER_TASK_MS", 20);
    let name = unique_name("cl-failover");
    let cfg = DurableConfig {
        name: name.clone(),
        visibility_timeout: Duration::from_secs(3),
        max_attempts: 20,
        retry_backoff: Duration::from_millis(100),
        block: Duration::from_millis(200),
        ..DurableConfig::default()
    };
    let slot = key_slot(&name);
    let prefix = key_prefix(&name).expect("valid name");
    let runs_key = format!("{prefix}test:runs");
    let _lock = cluster_lock(true).await;
    // Another test may have just failed a node over: start from a healthy cluster.
    wait_cluster_healthy(Duration::from_secs(90)).await;
    let q = cluster_queue(cfg).await;

    // Enqueue everything, then make sure the master's replica has it.
    let mut accepted: Vec<(TaskId, u64)> = Vec::with_capacity(jobs as usize);
    let enqueue_started = Instant::now();
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(500) {
        let payloads: Vec<_> = chunk
            .iter()
            .map(|n| json!({"n": n, "ms": task_ms}))
            .collect();
        let ids = q
            .enqueue_many("count", &payloads, Priority::Normal)
            .await
            .expect("enqueue");
        accepted.extend(ids.into_iter().zip(chunk.iter().copied()));
    }
    let enqueue_secs = enqueue_started.elapsed().as_secs_f64();
    let master = master_of(&mut seed_conn().await, slot).await;
    let mut m = plain(&master).await;
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}test:mark"))
        .arg(1)
        .query_async(&mut m)
        .await
        .expect("SET mark");
    let acked: u64 = redis::cmd("WAIT")
        .arg(1)
        .arg(10_000)
        .query_async(&mut m)
        .await
        .expect("WAIT");
    assert_eq!(
        acked, 1,
        "the replica of {master} did not confirm the enqueues"
    );

    let extra = [
        "--concurrency",
        "8",
        "--visibility-timeout",
        "3",
        "--max-attempts",
        "20",
        "--backoff-ms",
        "100",
    ];
    let procs = [
        spawn_cluster_proc(&name, &extra).await,
        spawn_cluster_proc(&name, &extra).await,
    ];
    let run_started = Instant::now();

    let samples = Samples::default();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (q, samples, sampling) = (q.clone(), samples.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::SeqCst) {
                let sent = Instant::now();
                if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), q.stats()).await {
                    samples
                        .0
                        .lock()
                        .unwrap()
                        .push((sent, s.completed + s.failed));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let limit = Duration::from_secs(120 + jobs * task_ms / 1000);

    // Phase 1: graceful failover of the queue's master.
    assert!(
        wait_completed(&samples, jobs / 5, limit).await,
        "a fifth of the jobs did not finish within {limit:?}"
    );
    let (_, replica) = master_and_replica(slot).await;
    let (_, before_fo) = samples.last().expect("a sample");
    let fo_at = Instant::now();
    let _: String = redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .query_async(&mut plain(&replica).await)
        .await
        .expect("CLUSTER FAILOVER");
    assert!(
        eventually(Duration::from_secs(30), || async {
            master_of(&mut seed_conn().await, slot).await == replica
        })
        .await,
        "{replica} did not take over slot {slot} within 30 s"
    );
    let switched = fo_at.elapsed();
    assert!(
        eventually(limit, || async {
            samples.first_above(fo_at, before_fo).is_some()
        })
        .await,
        "no job completed after the graceful failover"
    );
    let (fo_back_at, _) = samples.first_above(fo_at, before_fo).expect("sample");
    let graceful_recovery = fo_back_at - fo_at;
    let rate_before_fo = samples.rate(run_started, fo_at);

    // Phase 2: kill the new master outright.
    assert!(
        wait_completed(&samples, jobs / 2, limit).await,
        "half of the jobs did not finish within {limit:?}"
    );
    let rate_between = samples.rate(fo_back_at, Instant::now());
    // The master of the slot now: the promoted replica, unless another test on the
    // shared cluster moved it since.
    let killed_port = port_of(&master_of(&mut seed_conn().await, slot).await);
    let mut revive = Revive {
        port: killed_port,
        armed: true,
    };
    services(&["cluster-kill", &killed_port.to_string()]).await;
    // Dated once the script has sent SIGKILL (it may first wait for the cluster's
    // lock): the last count read before then is the count at the kill.
    let kill_at = Instant::now();
    let before_kill = samples
        .0
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(t, _)| *t < kill_at)
        .map(|(_, c)| *c)
        .expect("a sample before the kill");
    let remaining_at_kill = jobs - before_kill.min(jobs);
    let recovery_limit = Duration::from_secs(90);
    if !eventually(recovery_limit, || async {
        samples.first_above(kill_at, before_kill).is_some()
    })
    .await
    {
        // Say which side is stuck: the test's queue connection, or the workers.
        let fresh = cluster_queue(DurableConfig {
            name: name.clone(),
            ..DurableConfig::default()
        })
        .await
        .stats()
        .await;
        panic!(
            "no job completed within {recovery_limit:?} of killing port {killed_port}: \
             {before_kill} finished before; last sample {:?} s after the kill; a fresh \
             connection reads {fresh:?}",
            samples
                .last()
                .map(|(t, c)| (t.saturating_duration_since(kill_at).as_secs_f64(), c))
        );
    }
    let (back_at, _) = samples.first_above(kill_at, before_kill).expect("sample");
    let kill_recovery = back_at - kill_at;
    let first_answer = samples
        .first_after(kill_at)
        .map(|(t, _)| t - kill_at)
        .expect("sample");
    assert!(
        wait_completed(&samples, jobs, limit).await,
        "only {:?} of {jobs} jobs finished within {limit:?}",
        samples.last()
    );
    let done_at = samples.last().expect("sample").0;
    let rate_after_kill = samples.rate(back_at, done_at);
    sampling.store(false, Ordering::SeqCst);
    sampler.await.expect("sampler");
    for p in procs {
        stop_proc(p).await;
    }

    // Restart the killed node (it rejoins as a replica) and wait for a healthy cluster.
    services(&["cluster-start", &killed_port.to_string()]).await;
    revive.armed = false;
    wait_cluster_healthy(Duration::from_secs(90)).await;

    // What Redis says: counters, streams, records, dead letters; and the effect log.
    let s = q.stats().await.expect("stats");
    let mut conn = cluster_conn().await;
    let runs: HashMap<u64, u64> = redis::cmd("HGETALL")
        .arg(&runs_key)
        .query_async(&mut conn)
        .await
        .expect("HGETALL runs");
    let letters = q
        .dead_letters(jobs as usize + 10)
        .await
        .expect("dead letters");
    let dead: HashMap<TaskId, String> = letters.iter().map(|d| (d.id, d.error.clone())).collect();
    let mut statuses = Vec::with_capacity(accepted.len());
    for chunk in accepted.chunks(1000) {
        let mut pipe = redis::pipe();
        for (id, _) in chunk {
            pipe.cmd("HGET")
                .arg(format!("{prefix}task:{id}"))
                .arg("status");
        }
        let got: Vec<Option<String>> = pipe.query_async(&mut conn).await.expect("HGET statuses");
        statuses.extend(got);
    }
    let (mut completed, mut failed, mut lost, mut duplicates, mut ran_twice) = (0, 0, 0, 0, 0);
    let mut lost_examples = Vec::new();
    for ((id, n), status) in accepted.iter().zip(&statuses) {
        let ran = runs.get(n).copied().unwrap_or(0);
        match status.as_deref() {
            Some("completed") if ran >= 1 => completed += 1,
            Some("failed") if dead.get(id).is_some_and(|e| !e.is_empty()) => failed += 1,
            other => {
                lost += 1;
                if lost_examples.len() < 5 {
                    lost_examples.push((*id, *n, other.map(str::to_owned), ran));
                }
            }
        }
        if ran > 1 {
            ran_twice += 1;
            duplicates += ran - 1;
        }
    }
    let wanted: HashSet<u64> = accepted.iter().map(|(_, n)| *n).collect();
    let strangers: Vec<&u64> = runs.keys().filter(|n| !wanted.contains(n)).collect();
    println!(
        "failover under load: jobs {jobs} (task {task_ms} ms, 2 processes x 8), enqueued in \
         {enqueue_secs:.2} s; graceful: slot moved in {:.2} s, jobs completing again {:.2} s \
         after CLUSTER FAILOVER; kill: {remaining_at_kill} jobs left, first answer {:.2} s, \
         jobs completing again {:.2} s after the kill; jobs/s before failover {rate_before_fo:.0}, \
         between {rate_between:.0}, after kill recovery {rate_after_kill:.0}; completed \
         {completed}, failed (dead letters) {failed}, lost {lost}, ran more than once \
         {ran_twice} ({duplicates} extra runs); stats {s:?}",
        switched.as_secs_f64(),
        graceful_recovery.as_secs_f64(),
        first_answer.as_secs_f64(),
        kill_recovery.as_secs_f64(),
    );
    assert_eq!(
        lost, 0,
        "lost jobs (id, n, status, runs): {lost_examples:?}"
    );
    assert!(
        strangers.is_empty(),
        "runs of jobs never enqueued: {strangers:?}"
    );
    assert_eq!(completed + failed, jobs, "every job accounted for");
    assert_eq!(
        (s.enqueued, s.completed + s.failed, s.queued, s.running),
        (jobs, jobs, 0, 0),
        "{s:?}"
    );
    assert_eq!(s.failed, failed, "{s:?}");
    assert_eq!(letters.len() as u64, failed, "{letters:?}");
    q.purge().await.expect("purge");
}
