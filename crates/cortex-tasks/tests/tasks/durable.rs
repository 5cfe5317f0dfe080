//! The durable backend against a real Redis (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`). An unreachable Redis fails the tests; it never skips them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cortex_tasks::durable::{DurableConfig, DurableQueue, Registry, Worker, key_prefix};
use cortex_tasks::{BoxError, Error, Priority, TaskId, TaskStatus, admin};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub(crate) fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub(crate) fn unique_name(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!(
        "test-{test}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000
    )
}

pub(crate) fn config(test: &str) -> DurableConfig {
    DurableConfig {
        name: unique_name(test),
        block: Duration::from_millis(200),
        ..DurableConfig::default()
    }
}

/// Connects through a `RedisConfig`, as an application does.
pub(crate) async fn connect(config: DurableConfig) -> DurableQueue {
    let url = redis_url();
    let redis = cortex_pool::RedisConfig {
        url: url.clone(),
        ..cortex_pool::RedisConfig::default()
    };
    match DurableQueue::connect(&redis, config).await {
        Ok(q) => q,
        Err(e) => panic!(
            "cannot reach Redis at {url} ({e}); start it with `bash scripts/services.sh start` or set REDIS_URL"
        ),
    }
}

/// Polls `check` every 20 ms until it returns true or `limit` passes.
pub(crate) async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn completed_count(q: &DurableQueue) -> u64 {
    q.stats().await.expect("stats").completed
}

pub(crate) fn worker_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .join("examples")
        .join("durable_worker");
    assert!(
        bin.exists(),
        "{} is missing: build the examples first (`cargo test` does, but not with `--all-targets`: run `cargo build -p cortex-tasks --examples`)",
        bin.display()
    );
    bin
}

pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) pid: u32,
}

pub(crate) async fn spawn_proc(queue: &str, extra: &[&str]) -> Proc {
    let mut child = Command::new(worker_bin())
        .args(["--url", &redis_url(), "--queue", queue])
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
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Proc { child, pid }
}

/// Closes stdin: the worker shuts down gracefully.
pub(crate) async fn stop_proc(mut p: Proc) {
    drop(p.child.stdin.take());
    let status = tokio::time::timeout(Duration::from_secs(30), p.child.wait())
        .await
        .expect("worker process exits within 30 s of stdin closing")
        .expect("wait for worker");
    assert!(status.success(), "worker exited with {status}");
}

/// Executions recorded by the `record` handler: `(pid, n)` in order.
async fn recorded(q: &DurableQueue, queue: &str) -> Vec<(u32, u64)> {
    let mut conn = redis::Client::open(redis_url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let lines: Vec<String> = redis::cmd("LRANGE")
        .arg(format!(
            "{}test:ran",
            key_prefix(queue).expect("valid name")
        ))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("LRANGE");
    let _ = q;
    lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("record line is JSON");
            (
                u32::try_from(v["pid"].as_u64().expect("pid")).expect("pid fits"),
                v["payload"]["n"].as_u64().expect("n"),
            )
        })
        .collect()
}

/// A queue made from a `RedisPool` connects with the pool's client (the one place a
/// URL becomes a client), and its worker runs tasks over connections made from it; a
/// URL Redis does not accept is a config error naming `REDIS_URL`, with the password
/// redacted, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_connects_through_a_redis_pool() {
    let url = redis_url();
    let pool = cortex_pool::RedisPool::new(cortex_pool::RedisConfig {
        url: url.clone(),
        ..cortex_pool::RedisConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("this test needs Redis at {url} (set REDIS_URL): {e}"));
    let q = DurableQueue::connect(&pool, config("pool"))
        .await
        .expect("connect through the pool");
    let mut reg = Registry::new();
    reg.register("inc", |n: u64| async move { Ok::<_, BoxError>(n + 1) });
    let metrics = cortex_metrics::Metrics::new();
    let worker = Worker::new(q.clone(), reg).metrics(&metrics).spawn();
    let id = q.enqueue("inc", &41u64).await.expect("enqueue");
    let info = q.wait(id, Duration::from_secs(30)).await.expect("wait");
    assert_eq!(
        (info.status, info.result),
        (TaskStatus::Completed, Some(json!(42)))
    );
    // The outcome is counted once its batch is recorded; the series carry the queue's
    // name, in the registry the worker was given.
    assert!(
        eventually(Duration::from_secs(10), || async {
            worker.stats().processed == 1
        })
        .await,
        "{:?}",
        worker.stats()
    );
    let stats = worker.stats();
    assert_eq!(
        (
            stats.queue.as_str(),
            stats.running,
            stats.held,
            stats.unflushed
        ),
        (q.config().name.as_str(), 0, 0, 0),
        "{stats:?}"
    );
    let labels = [("queue", q.config().name.as_str())];
    let completed = |m: &cortex_metrics::Metrics| {
        m.counter_with("durable.completed", &labels)
            .unwrap()
            .total()
    };
    assert_eq!(completed(&metrics), 1);
    assert_eq!(completed(cortex_metrics::global()), 0);
    assert!(
        worker
            .shutdown(Duration::from_secs(5))
            .await
            .aborted
            .is_empty()
    );
    q.purge().await.expect("purge");

    let bad = cortex_pool::RedisConfig {
        url: "nope://user:hunter2@host".into(),
        ..cortex_pool::RedisConfig::default()
    };
    match DurableQueue::connect(&bad, config("pool-bad")).await {
        Err(Error::InvalidConfig { key, value, .. }) => {
            assert_eq!(key, "REDIS_URL");
            assert!(!value.contains("hunter2"), "{value}");
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_tasks_complete_with_exact_counters() {
    let mut cfg = config("thousand");
    cfg.concurrency = 32;
    let q = connect(cfg).await;
    let mut reg = Registry::new();
    reg.register("double", |n: u64| async move { Ok::<_, BoxError>(n * 2) });
    let payloads: Vec<u64> = (0..1000).collect();
    let mut ids = Vec::new();
    for chunk in payloads.chunks(250) {
        ids.extend(
            q.enqueue_many("double", chunk, Priority::Normal)
                .await
                .expect("enqueue"),
        );
    }
    assert_eq!(ids.len(), 1000);
    let worker = Worker::new(q.clone(), reg).spawn();
    assert!(
        eventually(Duration::from_secs(60), || async {
            completed_count(&q).await == 1000
        })
        .await,
        "not all 1000 tasks completed within 60 s: {:?}",
        q.stats().await
    );
    for (n, id) in ids.iter().enumerate() {
        let info = q.status(*id).await.expect("status");
        assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
        assert_eq!(info.result, Some(json!(n as u64 * 2)));
        assert_eq!(info.attempts, 1);
        assert_eq!(info.name, "double");
        assert_eq!(info.priority, Some(Priority::Normal));
        assert!(info.started_at.is_some() && info.finished_at.is_some());
    }
    let report = worker.shutdown(Duration::from_secs(5)).await;
    assert!(report.aborted.is_empty());
    let s = q.stats().await.expect("stats");
    assert_eq!(
        (
            s.enqueued,
            s.completed,
            s.failed,
            s.cancelled,
            s.retried,
            s.queued,
            s.running
        ),
        (1000, 1000, 0, 0, 0, 0, 0),
        "{s:?}"
    );
    q.purge().await.expect("purge");
    assert!(matches!(q.status(ids[0]).await, Err(Error::UnknownTask(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_split_the_work_and_run_each_task_once() {
    let cfg = config("split");
    let name = cfg.name.clone();
    let q = connect(cfg).await;
    let a = spawn_proc(&name, &["--concurrency", "16"]).await;
    let b = spawn_proc(&name, &["--concurrency", "16"]).await;
    let payloads: Vec<Value> = (0..2000u64).map(|n| json!({ "n": n })).collect();
    for chunk in payloads.chunks(500) {
        q.enqueue_many("record", chunk, Priority::Normal)
            .await
            .expect("enqueue");
    }
    assert!(
        eventually(Duration::from_secs(120), || async {
            completed_count(&q).await == 2000
        })
        .await,
        "not all 2000 tasks completed within 120 s: {:?}",
        q.stats().await
    );
    let runs = recorded(&q, &name).await;
    let (pa, pb) = (a.pid, b.pid);
    stop_proc(a).await;
    stop_proc(b).await;

    let mut per_task: HashMap<u64, usize> = HashMap::new();
    let mut per_pid: HashMap<u32, usize> = HashMap::new();
    for (pid, n) in &runs {
        *per_task.entry(*n).or_default() += 1;
        *per_pid.entry(*pid).or_default() += 1;
    }
    assert_eq!(per_task.len(), 2000, "every task ran");
    assert!(per_task.values().all(|&c| c == 1), "some task ran twice");
    assert!(
        per_pid.get(&pa).copied().unwrap_or(0) > 0 && per_pid.get(&pb).copied().unwrap_or(0) > 0,
        "both processes ran tasks: {per_pid:?}"
    );
    let s = q.stats().await.expect("stats");
    assert_eq!((s.completed, s.failed, s.queued), (2000, 0, 0), "{s:?}");
    q.purge().await.expect("purge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_worker_loses_nothing_and_acked_tasks_never_rerun() {
    let cfg = config("sigkill");
    let name = cfg.name.clone();
    let q = connect(cfg).await;
    let args = ["--concurrency", "4", "--visibility-timeout", "2"];
    let mut victim = spawn_proc(&name, &args).await;
    let survivor = spawn_proc(&name, &args).await;
    let payloads: Vec<Value> = (0..24u64).map(|n| json!({ "n": n, "ms": 400 })).collect();
    let ids = q
        .enqueue_many("record", &payloads, Priority::Normal)
        .await
        .expect("enqueue");
    let victim_pid = victim.pid;
    assert!(
        eventually(Duration::from_secs(30), || async {
            recorded(&q, &name)
                .await
                .iter()
                .any(|(pid, _)| *pid == victim_pid)
        })
        .await,
        "the victim never started a task"
    );
    victim.child.kill().await.expect("SIGKILL the victim");

    for id in &ids {
        let info = q.wait(*id, Duration::from_secs(60)).await.expect("status");
        assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
    }
    let runs = recorded(&q, &name).await;
    stop_proc(survivor).await;

    let mut by_task: HashMap<u64, Vec<u32>> = HashMap::new();
    for (pid, n) in runs {
        by_task.entry(n).or_default().push(pid);
    }
    assert_eq!(by_task.len(), 24, "every task ran");
    let mut rerun = 0;
    for (n, pids) in &by_task {
        match pids.as_slice() {
            [_] => {}
            // Run twice only when the first run was on the killed worker, never acked.
            [first, second] if *first == victim_pid && *second != victim_pid => rerun += 1,
            other => panic!("task {n} ran {other:?} (victim {victim_pid})"),
        }
    }
    assert!(
        rerun > 0,
        "the victim was killed mid-task, so some task had to be rerun"
    );
    q.purge().await.expect("purge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_tasks_are_dead_lettered_after_max_attempts() {
    let mut cfg = config("dead");
    cfg.max_attempts = 3;
    cfg.retry_backoff = Duration::from_millis(10);
    let q = connect(cfg).await;
    let mut reg = Registry::new();
    reg.register("fail", |_: Value| async move {
        Err::<Value, BoxError>("boom".into())
    })
    .register("panic", |_: Value| async move {
        if true {
            panic!("kaboom");
        }
        Ok::<Value, BoxError>(Value::Null)
    })
    .register("typed", |n: u64| async move { Ok::<_, BoxError>(n) });
    let fail = q.enqueue("fail", &json!({"k": 1})).await.expect("enqueue");
    let panic = q.enqueue("panic", &json!(null)).await.expect("enqueue");
    let unknown = q.enqueue("nobody", &json!(7)).await.expect("enqueue");
    let bad_payload = q
        .enqueue("typed", &json!("not a number"))
        .await
        .expect("enqueue");
    let worker = Worker::new(q.clone(), reg).spawn();

    let info = q.wait(fail, Duration::from_secs(20)).await.expect("status");
    assert_eq!(info.status, TaskStatus::Failed, "{info:?}");
    assert_eq!(info.attempts, 3);
    assert_eq!(info.error.as_deref(), Some("boom"));

    let info = q
        .wait(panic, Duration::from_secs(20))
        .await
        .expect("status");
    assert_eq!(info.status, TaskStatus::Failed, "{info:?}");
    assert_eq!(info.attempts, 3);
    assert_eq!(info.error.as_deref(), Some("panicked: kaboom"));

    for id in [unknown, bad_payload] {
        let info = q.wait(id, Duration::from_secs(20)).await.expect("status");
        assert_eq!(info.status, TaskStatus::Failed, "{info:?}");
        assert_eq!(info.attempts, 1, "no retry can help: {info:?}");
    }

    let dead = q.dead_letters(10).await.expect("dead letters");
    assert_eq!(dead.len(), 4, "{dead:?}");
    let d = dead
        .iter()
        .find(|d| d.id == fail)
        .expect("fail is dead-lettered");
    assert_eq!(
        (d.handler.as_str(), &d.payload, d.error.as_str(), d.attempts),
        ("fail", &json!({"k": 1}), "boom", 3)
    );
    let d = dead
        .iter()
        .find(|d| d.id == unknown)
        .expect("unknown handler dead-lettered");
    assert!(
        d.error.contains("no handler registered for \"nobody\""),
        "{d:?}"
    );
    let s = q.stats().await.expect("stats");
    assert_eq!(
        (s.failed, s.retried, s.completed, s.queued),
        (4, 4, 0, 0),
        "{s:?}"
    );
    worker.shutdown(Duration::from_secs(5)).await;
    q.purge().await.expect("purge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_tasks_never_run() {
    let q = connect(config("cancel")).await;
    let ran = Arc::new(AtomicUsize::new(0));
    let mut reg = Registry::new();
    let counter = ran.clone();
    reg.register("count", move |_: Value| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, BoxError>(()) }
    })
    .register("nap", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(())
    });

    let doomed = q.enqueue("count", &json!(1)).await.expect("enqueue");
    q.cancel(doomed).await.expect("cancel a queued task");
    assert_eq!(
        q.status(doomed).await.expect("status").status,
        TaskStatus::Cancelled
    );
    let worker = Worker::new(q.clone(), reg).spawn();
    let sentinel = q.enqueue("count", &json!(2)).await.expect("enqueue");
    let info = q
        .wait(sentinel, Duration::from_secs(20))
        .await
        .expect("status");
    assert_eq!(info.status, TaskStatus::Completed);
    assert!(
        eventually(Duration::from_secs(10), || async {
            q.stats().await.expect("stats").queued == 0
        })
        .await,
        "the cancelled entry was not acknowledged"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 1, "only the sentinel ran");
    assert_eq!(
        q.status(doomed).await.expect("status").status,
        TaskStatus::Cancelled
    );
    assert!(matches!(
        q.cancel(sentinel).await,
        Err(Error::AlreadyFinished(id)) if id == sentinel
    ));

    // A running task is aborted at the worker's next check.
    let long = q.enqueue("nap", &60_000u64).await.expect("enqueue");
    assert!(
        eventually(Duration::from_secs(10), || async {
            q.status(long).await.expect("status").status == TaskStatus::Running
        })
        .await
    );
    q.cancel(long).await.expect("cancel a running task");
    let info = q.wait(long, Duration::from_secs(10)).await.expect("status");
    assert_eq!(info.status, TaskStatus::Cancelled, "{info:?}");

    let unknown = TaskId::from_u64(0xdead_beef);
    assert!(matches!(q.cancel(unknown).await, Err(Error::UnknownTask(id)) if id == unknown));
    assert!(matches!(q.status(unknown).await, Err(Error::UnknownTask(id)) if id == unknown));

    // The admin routes over the same queue.
    let (status, body) = admin::durable_get(&q, &long.to_string()).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("cancelled")));
    assert_eq!(admin::durable_get(&q, "deadbeef").await.0, 404);
    assert_eq!(admin::durable_get(&q, "not-an-id").await.0, 400);
    assert_eq!(
        admin::durable_cancel(&q, &sentinel.to_string()).await.0,
        404
    );
    let (status, body) = admin::durable_list(&q).await;
    assert_eq!(
        (status, body["stats"]["cancelled"].as_u64()),
        (200, Some(2))
    );
    let s = q.stats().await.expect("stats");
    assert_eq!((s.cancelled, s.completed), (2, 1), "{s:?}");
    let report = worker.shutdown(Duration::from_secs(5)).await;
    assert!(report.aborted.is_empty());
    q.purge().await.expect("purge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_aborts_late_tasks_and_another_worker_finishes_them() {
    let mut cfg = config("shutdown");
    cfg.visibility_timeout = Duration::from_secs(1);
    cfg.concurrency = 8;
    let q = connect(cfg).await;
    let mut slow = Registry::new();
    slow.register("nap", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(ms)
    });
    let first = Worker::new(q.clone(), slow).spawn();
    let short = q
        .enqueue_many("nap", &[500u64, 500], Priority::High)
        .await
        .expect("enqueue");
    let long = q
        .enqueue_many("nap", &[600_000u64, 600_000, 600_000], Priority::Low)
        .await
        .expect("enqueue");
    let all: Vec<TaskId> = short.iter().chain(&long).copied().collect();
    assert!(
        eventually(Duration::from_secs(10), || async {
            for id in &all {
                if q.status(*id).await.expect("status").status != TaskStatus::Running {
                    return false;
                }
            }
            true
        })
        .await,
        "the five tasks did not all start"
    );
    let report = first.shutdown(Duration::from_secs(3)).await;
    let mut aborted = report.aborted.clone();
    aborted.sort();
    let mut expected = long.clone();
    expected.sort();
    assert_eq!(aborted, expected, "{report:?}");
    assert_eq!(report.finished_in_time, 2);
    for id in &short {
        assert_eq!(
            q.status(*id).await.expect("status").status,
            TaskStatus::Completed
        );
    }

    // A second worker, whose `nap` is quick, reclaims and finishes the aborted tasks.
    let mut quick = Registry::new();
    quick.register("nap", |ms: u64| async move { Ok::<_, BoxError>(ms) });
    let second = Worker::new(q.clone(), quick).spawn();
    for id in &long {
        let info = q.wait(*id, Duration::from_secs(30)).await.expect("status");
        assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
        assert_eq!(
            info.attempts, 1,
            "the aborted attempt does not count: {info:?}"
        );
    }
    second.shutdown(Duration::from_secs(5)).await;
    let s = q.stats().await.expect("stats");
    assert_eq!((s.completed, s.queued), (5, 0), "{s:?}");
    q.purge().await.expect("purge");
}

/// A private Redis, so the test can stop and restart it; it keeps its data in an
/// append-only file, as a production Redis would.
pub(crate) struct PrivateRedis {
    pub(crate) child: Child,
    port: u16,
}

impl PrivateRedis {
    pub(crate) async fn start(port: u16, dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).expect("temp dir");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed for the fault-tolerance test");
        let url = format!("redis://127.0.0.1:{port}");
        let up = eventually(Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                match redis::Client::open(url) {
                    Ok(c) => c.get_multiplexed_async_connection().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
        assert!(up, "private redis-server on port {port} did not start");
        Self { child, port }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_survive_a_redis_restart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = std::env::temp_dir().join(unique_name("redis-restart"));
    let mut server = PrivateRedis::start(port, dir.clone()).await;
    let mut cfg = config("restart");
    cfg.op_timeout = Duration::from_millis(500);
    cfg.visibility_timeout = Duration::from_secs(2);
    let q = DurableQueue::connect(&server.url(), cfg)
        .await
        .expect("connect to the private redis");
    let mut reg = Registry::new();
    reg.register("echo", |v: Value| async move { Ok::<_, BoxError>(v) });
    let worker = Worker::new(q.clone(), reg).spawn();

    let before = q.enqueue("echo", &json!("before")).await.expect("enqueue");
    let info = q
        .wait(before, Duration::from_secs(10))
        .await
        .expect("status");
    assert_eq!(info.status, TaskStatus::Completed);

    server.child.kill().await.expect("kill redis-server");
    // While Redis is down, calls fail promptly with an error; nothing panics or hangs.
    let down = tokio::time::timeout(Duration::from_secs(5), q.enqueue("echo", &json!(0))).await;
    assert!(
        matches!(down, Ok(Err(_))),
        "enqueue with Redis down: {down:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    let server = PrivateRedis::start(port, dir.clone()).await;
    let reconnect_by = tokio::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        match q.enqueue("echo", &json!("after")).await {
            Ok(id) => break id,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < reconnect_by,
                    "the queue did not reconnect after Redis came back: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let info = q
        .wait(after, Duration::from_secs(30))
        .await
        .expect("status");
    assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
    assert_eq!(info.result, Some(json!("after")));
    assert_eq!(
        q.status(before).await.expect("persisted status").status,
        TaskStatus::Completed
    );
    worker.shutdown(Duration::from_secs(5)).await;
    q.purge().await.expect("purge");
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priorities_start_first() {
    let mut cfg = config("priority");
    cfg.concurrency = 1;
    let q = connect(cfg).await;
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = order.clone();
    let mut reg = Registry::new();
    reg.register("note", move |label: String| {
        seen.lock().expect("order lock").push(label);
        async move { Ok::<_, BoxError>(()) }
    });
    let mut ids = Vec::new();
    for (label, p) in [
        ("low", Priority::Low),
        ("normal", Priority::Normal),
        ("high", Priority::High),
    ] {
        ids.extend(
            q.enqueue_many("note", &[label, label], p)
                .await
                .expect("enqueue"),
        );
    }
    let worker = Worker::new(q.clone(), reg).spawn();
    for id in &ids {
        let info = q.wait(*id, Duration::from_secs(20)).await.expect("status");
        assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
    }
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        *order.lock().expect("order lock"),
        ["high", "high", "normal", "normal", "low", "low"]
    );
    q.purge().await.expect("purge");
}

/// The exposed line of `family` for the queue `queue`, e.g.
/// `cortex_durable_dead_letters{queue="q"} 1`.
fn line(family: &str, queue: &str, value: &str) -> String {
    format!("{family}{{queue=\"{queue}\"}} {value}\n")
}

/// Waits (bounded) until the registry's exposition holds every line of `want`.
async fn exposes(metrics: &cortex_metrics::Metrics, want: &[String]) {
    let ok = eventually(Duration::from_secs(10), || async {
        let text = metrics.prometheus();
        want.iter().all(|l| text.contains(l.as_str()))
    })
    .await;
    let text = metrics.prometheus();
    let missing: Vec<&String> = want.iter().filter(|l| !text.contains(l.as_str())).collect();
    assert!(ok, "missing {missing:?} in\n{text}");
}

/// Workers export one family per measure labeled `queue`: running and pending gauges
/// while a task blocks, a retry waiting in `scheduled`, the dead-letter count after a
/// permanent failure, outcome counters, and durations in seconds; two queues are two
/// series of each family.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_export_labeled_families_and_gauges() {
    let metrics = cortex_metrics::Metrics::new();
    let t0 = std::time::Instant::now();
    let mut ca = config("metrics-a");
    ca.concurrency = 1;
    ca.stats_interval = Duration::from_millis(50);
    let mut cb = config("metrics-b");
    cb.stats_interval = Duration::from_millis(50);
    cb.max_attempts = 2;
    // The retry waits (at least half an hour) for as long as the test looks at it.
    cb.retry_backoff = Duration::from_secs(3600);
    let (qa, qb) = (connect(ca).await, connect(cb).await);
    let (a, b) = (qa.config().name.clone(), qb.config().name.clone());

    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut reg = Registry::new();
    let g = gate.clone();
    reg.register("block", move |_: u64| {
        let g = g.clone();
        async move {
            g.acquire().await.map(|p| p.forget())?;
            Ok::<_, BoxError>(0u64)
        }
    })
    .register("inc", |n: u64| async move { Ok::<_, BoxError>(n + 1) })
    .register("flaky", |_: u64| async move {
        Err::<u64, BoxError>("down".into())
    });
    let wa = Worker::new(qa.clone(), reg.clone())
        .metrics(&metrics)
        .spawn();
    let wb = Worker::new(qb.clone(), reg).metrics(&metrics).spawn();

    // One task blocks the single slot of `a`, another waits behind it.
    let blocked = [
        qa.enqueue("block", &1u64).await.unwrap(),
        qa.enqueue("block", &2u64).await.unwrap(),
    ];
    qb.enqueue("inc", &1u64).await.unwrap();
    let permanent = qb.enqueue("inc", &"not a number").await.unwrap();
    qb.enqueue("flaky", &1u64).await.unwrap();
    assert_eq!(
        qb.wait(permanent, Duration::from_secs(10))
            .await
            .unwrap()
            .status,
        TaskStatus::Failed
    );
    exposes(
        &metrics,
        &[
            line("cortex_durable_running", &a, "1"),
            line("cortex_durable_pending", &a, "2"),
            line("cortex_durable_dead_letters", &a, "0"),
            line("cortex_durable_scheduled", &a, "0"),
            line("cortex_durable_dead_letters", &b, "1"),
            line("cortex_durable_scheduled", &b, "1"),
            // The retrying task is accepted and not finished.
            line("cortex_durable_pending", &b, "1"),
            line("cortex_durable_running", &b, "0"),
            line("cortex_durable_completed_total", &b, "1"),
            line("cortex_durable_failed_total", &b, "1"),
            line("cortex_durable_dead_total", &b, "1"),
            line("cortex_durable_retried_total", &b, "1"),
        ],
    )
    .await;

    gate.add_permits(2);
    for id in blocked {
        let info = qa.wait(id, Duration::from_secs(10)).await.unwrap();
        assert_eq!(info.status, TaskStatus::Completed);
    }
    exposes(
        &metrics,
        &[
            line("cortex_durable_running", &a, "0"),
            line("cortex_durable_pending", &a, "0"),
            line("cortex_durable_completed_total", &a, "2"),
            line("cortex_durable_wait_seconds_count", &a, "2"),
            line("cortex_durable_run_seconds_count", &a, "2"),
            line("cortex_durable_dead_total", &a, "0"),
        ],
    )
    .await;
    let elapsed = t0.elapsed().as_secs_f64();
    let text = metrics.prometheus();
    for family in [
        "# TYPE cortex_durable_wait_seconds histogram\n",
        "# TYPE cortex_durable_run_seconds histogram\n",
        "# TYPE cortex_durable_completed_total counter\n",
        "# TYPE cortex_durable_failed_total counter\n",
        "# TYPE cortex_durable_retried_total counter\n",
        "# TYPE cortex_durable_dead_total counter\n",
        "# TYPE cortex_durable_dead_trimmed_total counter\n",
        "# TYPE cortex_durable_pending gauge\n",
        "# TYPE cortex_durable_scheduled gauge\n",
        "# TYPE cortex_durable_dead_letters gauge\n",
        "# TYPE cortex_durable_running gauge\n",
    ] {
        assert_eq!(text.matches(family).count(), 1, "{family}{text}");
    }
    assert!(
        text.contains(&format!(
            "cortex_durable_run_seconds_bucket{{queue=\"{a}\",le=\"+Inf\"}} 2\n"
        )),
        "{text}"
    );
    assert!(!text.contains("tasks_durable"), "{text}");
    // Seconds, not nanoseconds or milliseconds: the two runs of `a`, one after the
    // other, took no longer than the whole test.
    let sum: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cortex_durable_run_seconds_sum{{queue=\"{a}\"}} ")))
        .expect("run sum of a")
        .parse()
        .unwrap();
    assert!(
        sum > 0.0 && sum <= elapsed,
        "{sum} s of runs in {elapsed} s"
    );

    // The retry waiting in its backoff is aborted by the shutdown and handed back: it
    // leaves `scheduled`.
    let report = wb.shutdown(Duration::from_millis(100)).await;
    assert_eq!(report.aborted.len(), 1, "{report:?}");
    assert!(wa.shutdown(Duration::from_secs(5)).await.aborted.is_empty());
    let text = metrics.prometheus();
    assert!(
        text.contains(&line("cortex_durable_scheduled", &b, "0")),
        "{text}"
    );
    assert!(
        text.contains(&line("cortex_durable_running", &a, "0")),
        "{text}"
    );
    qa.purge().await.unwrap();
    qb.purge().await.unwrap();
}
