//! Data safety of the durable queue under faults: Redis out of memory, replies that come
//! too late, workers that fall behind or die, bad entries, growth. The tests that pause
//! Redis or lower its memory run their own redis-server; the others use `REDIS_URL`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cortex_tasks::durable::{DurableConfig, DurableQueue, Registry, Worker, key_prefix};
use cortex_tasks::{BoxError, Error, Priority, TaskId, TaskStatus};
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::durable::{PrivateRedis, config, connect, eventually, redis_url, unique_name};

/// A redis-server of the test's own, for faults the shared one must not see.
async fn private_redis(test: &str) -> (PrivateRedis, PathBuf) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = std::env::temp_dir().join(unique_name(test));
    (PrivateRedis::start(port, dir.clone()).await, dir)
}

async fn raw(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

fn key(q: &DurableQueue, suffix: &str) -> String {
    format!(
        "{}{suffix}",
        key_prefix(&q.config().name).expect("valid name")
    )
}

/// Pending entries of the normal stream: `(entry id, consumer)`.
async fn pending(conn: &mut MultiplexedConnection, q: &DurableQueue) -> Vec<(String, String)> {
    let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(key(q, "stream:normal"))
        .arg(&q.config().group)
        .arg("-")
        .arg("+")
        .arg(1000)
        .query_async(conn)
        .await
        .expect("XPENDING");
    rows.into_iter().map(|(id, c, _, _)| (id, c)).collect()
}

async fn config_set(conn: &mut MultiplexedConnection, name: &str, value: &str) {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query_async::<()>(conn)
        .await
        .expect("CONFIG SET");
}

/// Under `maxmemory` with `noeviction`, Redis refuses the writes of a finish.
/// The task must then stay pending (nothing acknowledged without its outcome) and be
/// recorded exactly once when memory is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_finish_acknowledges_nothing_and_counts_once() {
    let (server, dir) = private_redis("oom").await;
    let mut cfg = config("oom");
    cfg.max_attempts = 1;
    cfg.op_timeout = Duration::from_millis(500);
    let q = DurableQueue::connect(&server.url(), cfg)
        .await
        .expect("connect");
    let mut admin = raw(&server.url()).await;
    let gate = Arc::new(Semaphore::new(0));
    let mut reg = Registry::new();
    let g = gate.clone();
    reg.register("fail_later", move |_: Value| {
        let g = g.clone();
        async move {
            let _ = g.acquire().await;
            Err::<Value, BoxError>("boom".into())
        }
    });
    let worker = Worker::new(q.clone(), reg).spawn();
    let id = q.enqueue("fail_later", &json!(1)).await.expect("enqueue");
    assert!(
        eventually(Duration::from_secs(10), || async {
            q.status(id).await.expect("status").status == TaskStatus::Running
        })
        .await
    );

    // Out of memory: every write that could grow memory is refused from now on.
    config_set(&mut admin, "maxmemory-policy", "noeviction").await;
    config_set(&mut admin, "maxmemory", "1").await;
    gate.add_permits(1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let info = q.status(id).await.expect("status");
    assert_eq!(info.status, TaskStatus::Running, "{info:?}");
    assert_eq!(
        pending(&mut admin, &q).await.len(),
        1,
        "the entry was acknowledged although its outcome was not recorded"
    );
    assert!(q.dead_letters(10).await.expect("dead letters").is_empty());
    assert_eq!(q.stats().await.expect("stats").failed, 0);

    // Memory is back: the outcome is recorded once.
    config_set(&mut admin, "maxmemory", "0").await;
    let info = q.wait(id, Duration::from_secs(20)).await.expect("status");
    assert_eq!(info.status, TaskStatus::Failed, "{info:?}");
    assert_eq!(info.error.as_deref(), Some("boom"));
    let dead = q.dead_letters(10).await.expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].id, dead[0].error.as_str()), (id, "boom"));
    // Let any retry of the flush run, then check nothing was counted twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = q.stats().await.expect("stats");
    assert_eq!(
        (s.failed, s.completed, s.queued, s.running),
        (1, 0, 0, 0),
        "{s:?}"
    );
    assert!(pending(&mut admin, &q).await.is_empty());
    worker.shutdown(Duration::from_secs(5)).await;
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// A finish whose reply misses `op_timeout` is sent again (several times while
/// Redis stays paused); Redis then runs every copy, and the outcome counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finish_sent_again_after_a_lost_reply_counts_once() {
    let (server, dir) = private_redis("late-finish").await;
    let mut cfg = config("late-finish");
    cfg.op_timeout = Duration::from_millis(200);
    let q = DurableQueue::connect(&server.url(), cfg)
        .await
        .expect("connect");
    let mut admin = raw(&server.url()).await;
    let gate = Arc::new(Semaphore::new(0));
    let mut reg = Registry::new();
    let g = gate.clone();
    reg.register("wait", move |v: Value| {
        let g = g.clone();
        async move {
            if v == json!("gated") {
                let _ = g.acquire().await;
            }
            Ok::<_, BoxError>(v)
        }
    });
    let worker = Worker::new(q.clone(), reg).spawn();
    // Loads the finish script, as a running system has it.
    let warm = q.enqueue("wait", &json!("warm")).await.expect("enqueue");
    q.wait(warm, Duration::from_secs(10)).await.expect("status");
    let id = q.enqueue("wait", &json!("gated")).await.expect("enqueue");
    assert!(
        eventually(Duration::from_secs(10), || async {
            q.status(id).await.expect("status").status == TaskStatus::Running
        })
        .await
    );
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .query_async::<()>(&mut admin)
        .await
        .expect("CLIENT PAUSE");
    gate.add_permits(1);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let info = q.wait(id, Duration::from_secs(10)).await.expect("status");
    assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = q.stats().await.expect("stats");
    assert_eq!((s.completed, s.failed, s.queued), (2, 0, 0), "{s:?}");
    worker.shutdown(Duration::from_secs(5)).await;
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// An enqueue Redis refuses leaves nothing behind;
/// one whose reply comes too late says so and names the ids it may have enqueued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_errors_say_whether_anything_was_enqueued() {
    let (server, dir) = private_redis("enqueue-late").await;
    let mut cfg = config("enqueue-late");
    cfg.op_timeout = Duration::from_millis(300);
    let q = DurableQueue::connect(&server.url(), cfg)
        .await
        .expect("connect");
    let mut admin = raw(&server.url()).await;
    // Loads the enqueue script, as any earlier enqueue would have.
    q.enqueue("echo", &json!(0)).await.expect("enqueue");

    // Refused (out of memory): an error from Redis, and nothing enqueued.
    config_set(&mut admin, "maxmemory", "1").await;
    let err = q
        .enqueue_many("echo", &[json!(1), json!(2)], Priority::Normal)
        .await
        .expect_err("Redis is out of memory");
    assert!(matches!(err, Error::Redis(_)), "{err:?}");
    config_set(&mut admin, "maxmemory", "0").await;
    let s = q.stats().await.expect("stats");
    assert_eq!((s.enqueued, s.queued), (1, 1), "{s:?}");

    // Too late: Redis is paused past `op_timeout`, then runs the enqueue anyway.
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .query_async::<()>(&mut admin)
        .await
        .expect("CLIENT PAUSE");
    let err = q
        .enqueue_many("echo", &[json!(3), json!(4)], Priority::Normal)
        .await
        .expect_err("the reply comes after op_timeout");
    let Error::EnqueueUnconfirmed { ids, .. } = err else {
        panic!("expected EnqueueUnconfirmed, got {err:?}");
    };
    assert_eq!(ids.len(), 2);
    // The ids say where to look: once Redis answers, the tasks are there.
    assert!(
        eventually(Duration::from_secs(10), || async {
            matches!(q.status(ids[0]).await, Ok(info) if info.status == TaskStatus::Queued)
        })
        .await,
        "the unconfirmed enqueue was not applied after the pause"
    );
    assert_eq!(
        q.status(ids[1]).await.expect("status").status,
        TaskStatus::Queued
    );
    let s = q.stats().await.expect("stats");
    assert_eq!((s.enqueued, s.queued), (3, 3), "{s:?}");
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// A take or start that ran on Redis but whose reply missed `op_timeout` must
/// not burn an attempt: with `max_attempts = 1` the task still runs, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_whose_reply_came_too_late_still_runs_the_task() {
    let (server, dir) = private_redis("late-start").await;
    let mut cfg = config("late-start");
    cfg.max_attempts = 1;
    cfg.op_timeout = Duration::from_millis(300);
    cfg.visibility_timeout = Duration::from_secs(2);
    let q = DurableQueue::connect(&server.url(), cfg)
        .await
        .expect("connect");
    let mut admin = raw(&server.url()).await;
    let registry = || {
        let mut reg = Registry::new();
        reg.register("echo", |v: Value| async move { Ok::<_, BoxError>(v) });
        reg
    };
    let pause = |ms: u64| {
        let mut admin = admin.clone();
        async move {
            redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(ms)
                .arg("ALL")
                .query_async::<()>(&mut admin)
                .await
                .expect("CLIENT PAUSE");
        }
    };
    // Loads the scripts, as a running system has them.
    let warm = Worker::new(q.clone(), registry()).spawn();
    let w = q.enqueue("echo", &json!("warm")).await.expect("enqueue");
    assert_eq!(
        q.wait(w, Duration::from_secs(10))
            .await
            .expect("status")
            .status,
        TaskStatus::Completed
    );
    warm.shutdown(Duration::from_secs(5)).await;

    // The take script: queued before the worker starts, taken while Redis is paused.
    let taken = q.enqueue("echo", &json!("take")).await.expect("enqueue");
    pause(1500).await;
    let worker = Worker::new(q.clone(), registry()).spawn();
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let info = q
        .wait(taken, Duration::from_secs(20))
        .await
        .expect("status");
    assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
    assert_eq!(info.attempts, 1, "{info:?}");

    // The start script: the idle worker's blocking read gets the entry at once, then
    // Redis pauses before its start script runs. The record and the entry are written
    // as `enqueue` writes them, in the same round trip as the pause.
    let id = TaskId::from_u64(0x5eed_0000_0000_0001);
    let started = id;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut pipe = redis::pipe();
    pipe.cmd("HSET")
        .arg(key(&q, &format!("task:{id}")))
        .arg("status")
        .arg("queued")
        .arg("handler")
        .arg("echo")
        .arg("priority")
        .arg("normal")
        .arg("queued_at")
        .arg(0)
        .ignore()
        .cmd("XADD")
        .arg(key(&q, "stream:normal"))
        .arg("*")
        .arg("id")
        .arg(id.to_string())
        .arg("handler")
        .arg("echo")
        .arg("payload")
        .arg("\"start\"")
        .ignore()
        // Redis serves the blocked read right after the XADD, then pauses: the start
        // script the worker sends next waits out the pause.
        .cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .ignore();
    pipe.query_async::<()>(&mut admin)
        .await
        .expect("enqueue, then pause");
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let info = q
        .wait(started, Duration::from_secs(20))
        .await
        .expect("status");
    assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
    assert_eq!(info.attempts, 1, "{info:?}");
    assert_eq!(info.result, Some(json!("start")));

    assert!(q.dead_letters(10).await.expect("dead letters").is_empty());
    worker.shutdown(Duration::from_secs(5)).await;
    let s = q.stats().await.expect("stats");
    assert_eq!((s.completed, s.failed, s.queued), (3, 0, 0), "{s:?}");
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// `XAUTOCLAIM` scans at most ten times `COUNT` pending entries per call; with
/// `batch = 1` and twenty live entries ahead of it, a dead reader's entry is only
/// reached if the scan goes on from its cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_readers_entry_behind_many_live_ones_is_reclaimed() {
    let base = DurableConfig {
        batch: 1,
        visibility_timeout: Duration::from_secs(1),
        ..config("stranded")
    };
    let q = connect(DurableConfig {
        concurrency: 20,
        ..base.clone()
    })
    .await;
    let mut conn = raw(&redis_url()).await;
    let mut reg = Registry::new();
    reg.register("nap", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(ms)
    });
    let busy = Worker::new(q.clone(), reg.clone()).spawn();
    let long: Vec<u64> = vec![600_000; 20];
    let long = q
        .enqueue_many("nap", &long, Priority::Normal)
        .await
        .expect("enqueue");
    assert!(
        eventually(Duration::from_secs(20), || async {
            for id in &long {
                if q.status(*id).await.expect("status").status != TaskStatus::Running {
                    return false;
                }
            }
            true
        })
        .await,
        "the twenty long tasks did not all start"
    );
    // The busy worker has no free slot, so this read as a ghost gets the 21st entry;
    // the ghost then "dies".
    let stranded = q.enqueue("nap", &0u64).await.expect("enqueue");
    let read: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&base.group)
        .arg("ghost")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(key(&q, "stream:normal"))
        .arg(">")
        .query_async(&mut conn)
        .await
        .expect("XREADGROUP");
    assert_ne!(read, redis::Value::Nil, "the ghost read nothing");
    assert_eq!(pending(&mut conn, &q).await.len(), 21);

    let q2 = connect(DurableConfig {
        concurrency: 2,
        ..base
    })
    .await;
    let rescuer = Worker::new(q2, reg).spawn();
    let info = q
        .wait(stranded, Duration::from_secs(20))
        .await
        .expect("status");
    assert_eq!(
        info.status,
        TaskStatus::Completed,
        "the ghost's entry was never reclaimed: {info:?}"
    );
    rescuer.shutdown(Duration::ZERO).await;
    busy.shutdown(Duration::ZERO).await;
    q.purge().await.expect("purge");
}

/// The entry id of the only pending entry, and its owner.
async fn only_pending(conn: &mut MultiplexedConnection, q: &DurableQueue) -> (String, String) {
    let p = pending(conn, q).await;
    assert_eq!(p.len(), 1, "{p:?}");
    p.into_iter().next().expect("one entry")
}

/// A worker whose heartbeat came too late must not take back an entry another
/// worker reclaimed, and the task is recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reclaimed_task_stays_with_the_worker_that_reclaimed_it() {
    // The first worker refreshes every second; the second reclaims what is idle for
    // 300 ms, so it takes the first worker's entry between two of its refreshes.
    let slow_cfg = DurableConfig {
        visibility_timeout: Duration::from_secs(3),
        ..config("takeback")
    };
    let fast_cfg = DurableConfig {
        visibility_timeout: Duration::from_millis(300),
        ..slow_cfg.clone()
    };
    let q = connect(slow_cfg).await;
    let mut conn = raw(&redis_url()).await;
    let mut reg = Registry::new();
    reg.register("nap", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(ms)
    });
    let first = Worker::new(q.clone(), reg.clone()).spawn();
    let id = q.enqueue("nap", &3000u64).await.expect("enqueue");
    assert!(
        eventually(Duration::from_secs(10), || async {
            q.status(id).await.expect("status").status == TaskStatus::Running
        })
        .await
    );
    let (entry, owner) = only_pending(&mut conn, &q).await;
    assert_eq!(owner, first.consumer());

    let second = Worker::new(connect(fast_cfg).await, reg).spawn();
    let second_name = second.consumer().to_owned();
    let until = tokio::time::Instant::now() + Duration::from_millis(2500);
    let mut owners = Vec::new();
    while tokio::time::Instant::now() < until {
        let p = pending(&mut conn, &q).await;
        if let Some((_, o)) = p.into_iter().find(|(e, _)| *e == entry)
            && owners.last() != Some(&o)
        {
            owners.push(o);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let taken = owners
        .iter()
        .position(|o| *o == second_name)
        .unwrap_or_else(|| panic!("the second worker never reclaimed the entry: {owners:?}"));
    assert!(
        owners[taken..].iter().all(|o| *o == second_name),
        "the first worker took the entry back: {owners:?}"
    );

    // Both runs end; the task is completed and counted once.
    let info = q.wait(id, Duration::from_secs(10)).await.expect("status");
    assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let s = q.stats().await.expect("stats");
    assert_eq!((s.completed, s.failed, s.queued), (1, 0, 0), "{s:?}");
    assert_eq!(first.processed() + second.processed(), 1);
    second.shutdown(Duration::from_secs(5)).await;
    first.shutdown(Duration::from_secs(5)).await;
    q.purge().await.expect("purge");
}

/// When another worker reclaims a task and dead-letters it (its attempts are
/// used up), the first worker's late completion must not record a second outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reclaimed_task_gets_exactly_one_outcome() {
    let slow_cfg = DurableConfig {
        visibility_timeout: Duration::from_secs(3),
        max_attempts: 1,
        ..config("one-outcome")
    };
    let fast_cfg = DurableConfig {
        visibility_timeout: Duration::from_millis(300),
        ..slow_cfg.clone()
    };
    let q = connect(slow_cfg).await;
    let mut reg = Registry::new();
    reg.register("nap", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(ms)
    });
    let first = Worker::new(q.clone(), reg.clone()).spawn();
    let id = q.enqueue("nap", &1500u64).await.expect("enqueue");
    assert!(
        eventually(Duration::from_secs(10), || async {
            q.status(id).await.expect("status").status == TaskStatus::Running
        })
        .await
    );
    let second = Worker::new(connect(fast_cfg).await, reg).spawn();
    let info = q.wait(id, Duration::from_secs(10)).await.expect("status");
    assert!(info.status.is_finished(), "{info:?}");
    // Let the first worker's run end and its outcome be flushed.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let info = q.status(id).await.expect("status");
    let s = q.stats().await.expect("stats");
    let dead = q.dead_letters(10).await.expect("dead letters");
    assert_eq!(
        s.completed + s.failed,
        1,
        "one task, two outcomes: {s:?} {info:?} {dead:?}"
    );
    match info.status {
        TaskStatus::Completed => assert!(dead.is_empty(), "{dead:?}"),
        TaskStatus::Failed => assert_eq!(dead.len(), 1, "{dead:?}"),
        other => panic!("unexpected status {other:?}"),
    }
    second.shutdown(Duration::from_secs(5)).await;
    first.shutdown(Duration::from_secs(5)).await;
    q.purge().await.expect("purge");
}

/// An entry whose record is not a hash, or whose id is not a task id, is parked
/// in the dead-letter stream with the error; the tasks around it run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_entries_are_parked_and_do_not_wedge_the_worker() {
    let cfg = DurableConfig {
        visibility_timeout: Duration::from_secs(1),
        ..config("bad-entry")
    };
    let q = connect(cfg).await;
    let mut conn = raw(&redis_url()).await;
    let before = q.enqueue("echo", &json!("before")).await.expect("enqueue");
    let broken = q.enqueue("echo", &json!("broken")).await.expect("enqueue");
    // Someone overwrote its record with a string.
    redis::pipe()
        .cmd("DEL")
        .arg(key(&q, &format!("task:{broken}")))
        .ignore()
        .cmd("SET")
        .arg(key(&q, &format!("task:{broken}")))
        .arg("junk")
        .ignore()
        // And a foreign producer wrote an entry without a valid id.
        .cmd("XADD")
        .arg(key(&q, "stream:normal"))
        .arg("*")
        .arg("id")
        .arg("not-a-task")
        .arg("handler")
        .arg("echo")
        .arg("payload")
        .arg("1")
        .ignore()
        .query_async::<()>(&mut conn)
        .await
        .expect("corrupt");
    let after = q.enqueue("echo", &json!("after")).await.expect("enqueue");
    let mut reg = Registry::new();
    reg.register("echo", |v: Value| async move { Ok::<_, BoxError>(v) });
    let worker = Worker::new(q.clone(), reg).spawn();
    for id in [before, after] {
        let info = q.wait(id, Duration::from_secs(15)).await.expect("status");
        assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
    }
    let later = q.enqueue("echo", &json!("later")).await.expect("enqueue");
    let info = q
        .wait(later, Duration::from_secs(15))
        .await
        .expect("status");
    assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            q.dead_letters(10).await.expect("dead letters").len() == 2
        })
        .await,
        "the bad entries were not parked: {:?}",
        q.dead_letters(10).await
    );
    let dead = q.dead_letters(10).await.expect("dead letters");
    let d = dead
        .iter()
        .find(|d| d.id == broken)
        .expect("the broken record is dead-lettered");
    assert!(d.error.contains("WRONGTYPE"), "{d:?}");
    assert_eq!(d.payload, json!("broken"));
    assert!(
        dead.iter()
            .any(|d| d.error.contains("malformed") && d.error.contains("not-a-task")),
        "{dead:?}"
    );
    let s = q.stats().await.expect("stats");
    assert_eq!((s.completed, s.failed, s.queued), (3, 2, 0), "{s:?}");
    worker.shutdown(Duration::from_secs(5)).await;
    q.purge().await.expect("purge");
}

/// Consumers of dead workers leave the group once they hold nothing, and
/// their heartbeats leave the workers set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_workers_are_removed_from_the_group_and_the_worker_set() {
    let cfg = DurableConfig {
        visibility_timeout: Duration::from_millis(300),
        ..config("prune")
    };
    let q = connect(cfg).await;
    let group = q.config().group.clone();
    let mut conn = raw(&redis_url()).await;
    let id = q.enqueue("echo", &json!("held")).await.expect("enqueue");
    let mut pipe = redis::pipe();
    for prio in ["high", "normal", "low"] {
        pipe.cmd("XGROUP")
            .arg("CREATECONSUMER")
            .arg(key(&q, &format!("stream:{prio}")))
            .arg(&group)
            .arg("ghost-idle")
            .ignore();
    }
    pipe.cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&group)
        .arg("ghost-holding")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(key(&q, "stream:normal"))
        .arg(">")
        .ignore()
        .cmd("ZADD")
        .arg(key(&q, "workers"))
        .arg(1)
        .arg("ghost-idle")
        .ignore();
    pipe.query_async::<()>(&mut conn).await.expect("ghosts");
    assert_eq!(pending(&mut conn, &q).await.len(), 1);

    let mut reg = Registry::new();
    reg.register("echo", |v: Value| async move { Ok::<_, BoxError>(v) });
    let worker = Worker::new(q.clone(), reg).spawn();
    let me = worker.consumer().to_owned();
    // The holding ghost's task is reclaimed and run, then both ghosts go.
    let info = q.wait(id, Duration::from_secs(10)).await.expect("status");
    assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
    let consumers = |conn: MultiplexedConnection, stream: String| {
        let group = group.clone();
        async move {
            let mut conn = conn;
            let rows: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(stream)
                .arg(group)
                .query_async(&mut conn)
                .await
                .expect("XINFO CONSUMERS");
            rows.into_iter()
                .filter_map(|r| match r.get(1) {
                    Some(redis::Value::BulkString(b)) => String::from_utf8(b.clone()).ok(),
                    _ => None,
                })
                .collect::<Vec<String>>()
        }
    };
    let gone = eventually(Duration::from_secs(10), || async {
        for prio in ["high", "normal", "low"] {
            let names = consumers(conn.clone(), key(&q, &format!("stream:{prio}"))).await;
            if names.iter().any(|n| n.starts_with("ghost")) {
                return false;
            }
        }
        let workers: Vec<String> = redis::cmd("ZRANGE")
            .arg(key(&q, "workers"))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn.clone())
            .await
            .expect("ZRANGE");
        workers == [me.clone()]
    })
    .await;
    assert!(
        gone,
        "ghost consumers remain: {:?}",
        consumers(conn.clone(), key(&q, "stream:normal")).await
    );
    // The live worker is never removed while it holds nothing.
    assert!(
        consumers(conn.clone(), key(&q, "stream:normal"))
            .await
            .contains(&me)
    );
    worker.shutdown(Duration::from_secs(5)).await;
    q.purge().await.expect("purge");
}

/// The dead-letter stream keeps the newest `dead_letter_cap` dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_beyond_the_cap_are_trimmed() {
    let cfg = DurableConfig {
        max_attempts: 1,
        dead_letter_cap: 3,
        ..config("dead-cap")
    };
    let q = connect(cfg).await;
    let mut reg = Registry::new();
    reg.register("fail", |_: u64| async move {
        Err::<Value, BoxError>("no".into())
    });
    let worker = Worker::new(q.clone(), reg).spawn();
    let mut ids = Vec::new();
    for n in 0..5u64 {
        let id = q.enqueue("fail", &n).await.expect("enqueue");
        let info = q.wait(id, Duration::from_secs(10)).await.expect("status");
        assert_eq!(info.status, TaskStatus::Failed, "{info:?}");
        ids.push(id);
    }
    let dead = q.dead_letters(10).await.expect("dead letters");
    let kept: Vec<TaskId> = dead.iter().map(|d| d.id).collect();
    assert_eq!(kept, ids[2..], "{dead:?}");
    assert_eq!(q.stats().await.expect("stats").failed, 5);
    worker.shutdown(Duration::from_secs(5)).await;
    q.purge().await.expect("purge");
}

/// A concurrency the worker's semaphore cannot hold, or durations that would
/// overflow, are refused before anything starts.
#[tokio::test]
async fn huge_settings_are_refused_not_panicked_on() {
    for (cfg, key) in [
        (
            DurableConfig {
                concurrency: usize::MAX,
                ..DurableConfig::default()
            },
            "concurrency",
        ),
        (
            DurableConfig {
                block: Duration::MAX,
                ..DurableConfig::default()
            },
            "block",
        ),
        (
            DurableConfig {
                op_timeout: Duration::from_secs(u64::MAX / 2),
                ..DurableConfig::default()
            },
            "op_timeout",
        ),
        (
            DurableConfig {
                result_ttl: Duration::from_secs(1 << 40),
                ..DurableConfig::default()
            },
            "result_ttl",
        ),
    ] {
        match DurableQueue::connect("redis://127.0.0.1:1", cfg).await {
            Err(Error::InvalidConfig { key: k, .. }) => assert_eq!(k, key),
            other => panic!("{key}: expected InvalidConfig, got {other:?}"),
        }
    }
}

/// The queue-wide gauges survive Redis going away: a failed read keeps their last
/// values (not zero, not a stale reset), the worker goes on running what it holds, and
/// sampling resumes once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_gauge_sample_keeps_the_last_values_and_the_worker_running() {
    let (server, dir) = private_redis("gauges-down").await;
    let port = server.url().rsplit(':').next().unwrap().parse().unwrap();
    let mut cfg = config("gauges-down");
    cfg.concurrency = 1;
    cfg.stats_interval = Duration::from_millis(50);
    cfg.op_timeout = Duration::from_millis(300);
    let q = DurableQueue::connect(&server.url(), cfg)
        .await
        .expect("connect");
    let name = q.config().name.clone();
    let gate = Arc::new(Semaphore::new(0));
    let mut reg = Registry::new();
    let g = gate.clone();
    reg.register("block", move |_: u64| {
        let g = g.clone();
        async move {
            g.acquire().await.map(|p| p.forget())?;
            Ok::<_, BoxError>(0u64)
        }
    });
    let metrics = cortex_metrics::Metrics::new();
    let worker = Worker::new(q.clone(), reg).metrics(&metrics).spawn();
    let ids = [
        q.enqueue("block", &1u64).await.expect("enqueue"),
        q.enqueue("block", &2u64).await.expect("enqueue"),
    ];
    let gauge = |family: &str, value: &str| format!("{family}{{queue=\"{name}\"}} {value}\n");
    let shows = |want: Vec<String>| {
        let metrics = metrics.clone();
        async move {
            eventually(Duration::from_secs(20), || async {
                let text = metrics.prometheus();
                want.iter().all(|l| text.contains(l.as_str()))
            })
            .await
        }
    };
    assert!(
        shows(vec![
            gauge("cortex_durable_pending", "2"),
            gauge("cortex_durable_running", "1"),
        ])
        .await,
        "{}",
        metrics.prometheus()
    );

    // Redis goes away: every read of the sampler fails for many intervals.
    let mut server = server;
    server.child.kill().await.expect("kill redis-server");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let text = metrics.prometheus();
    assert!(
        text.contains(&gauge("cortex_durable_pending", "2")),
        "{text}"
    );
    assert!(
        text.contains(&gauge("cortex_durable_dead_letters", "0")),
        "{text}"
    );
    // The worker still runs what it holds: the blocked task finishes (its outcome
    // waits for Redis).
    gate.add_permits(2);
    assert!(
        shows(vec![gauge("cortex_durable_running", "0")]).await,
        "{}",
        metrics.prometheus()
    );

    // Redis is back (its data persisted): the outcomes are recorded, the second task
    // runs, and the sampler reads the empty queue.
    let server = super::durable::PrivateRedis::start(port, dir.clone()).await;
    for id in ids {
        let info = q.wait(id, Duration::from_secs(30)).await.expect("status");
        assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
    }
    assert!(
        shows(vec![
            gauge("cortex_durable_pending", "0"),
            gauge("cortex_durable_running", "0"),
        ])
        .await,
        "{}",
        metrics.prometheus()
    );
    worker.shutdown(Duration::from_secs(5)).await;
    q.purge().await.expect("purge");
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
