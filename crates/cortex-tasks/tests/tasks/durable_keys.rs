//! The durable queue's key layout against a real Redis (`REDIS_URL`): every key of one
//! queue in one Redis Cluster hash slot, and no start over tasks of the previous layout.
//! One test runs the queue on the local Redis Cluster (`REDIS_CLUSTER_URLS`, from
//! `eval "$(scripts/services.sh cluster)"`) and fails, saying so, when it is not set.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cortex_tasks::durable::{DurableQueue, Registry, Worker, key_prefix};
use cortex_tasks::{BoxError, Error, Priority, TaskStatus};
use redis::aio::MultiplexedConnection;

use crate::durable::{config, connect, redis_url};

/// The hash slot Redis Cluster puts `key` in (the workspace's one slot function).
pub(crate) fn key_slot(key: &str) -> u16 {
    cortex_support::keyspace::hash_slot(key.as_bytes())
}

/// The slot function agrees with Redis (the values `CLUSTER KEYSLOT` answers in the
/// Redis Cluster specification and manual), so the layout test below means something.
#[test]
fn the_slot_function_matches_redis() {
    assert_eq!(key_slot("somekey"), 11058);
    assert_eq!(key_slot("foo{hash_tag}"), 2515);
    assert_eq!(key_slot("{hash_tag}"), 2515);
    assert_eq!(
        key_slot("{user1000}.following"),
        key_slot("{user1000}.followers")
    );
    // An empty tag is no tag: the whole key is hashed.
    assert_eq!(key_slot("{}abc"), 5980); // CLUSTER KEYSLOT {}abc
    // Only the first `{…}` counts.
    assert_eq!(key_slot("{a}{b}"), key_slot("a"));
}

async fn plain_conn() -> MultiplexedConnection {
    let url = redis_url();
    redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("cannot reach Redis at {url} ({e}); set REDIS_URL"))
}

/// Every key whose name holds `needle` (a test's unique queue name), whatever layout
/// it is in: `SCAN` to the end, never `KEYS`.
pub(crate) async fn keys_naming(
    conn: &mut MultiplexedConnection,
    needle: &str,
) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("*{needle}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .expect("SCAN");
        found.extend(keys);
        if next == 0 {
            return found;
        }
        cursor = next;
    }
}

/// A queue that has used every kind of key it has (three streams with their group,
/// task records, dead letters, counters, heartbeats) keeps all of them in one hash
/// slot, the slot of its name: on a cluster its scripts and multi-key commands would
/// otherwise be refused (`CROSSSLOT`). And `purge` still finds and deletes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_of_a_queue_hashes_to_one_slot() {
    let cfg = cortex_tasks::durable::DurableConfig {
        max_attempts: 1,
        ..config("slot")
    };
    let name = cfg.name.clone();
    let q = connect(cfg).await;
    let ran = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::new();
    let counter = ran.clone();
    registry.register("ok", move |n: u64| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok::<_, BoxError>(n)
        }
    });
    registry.register("fail", |_: u64| async {
        Err::<u64, _>(BoxError::from("no"))
    });
    let mut ids = Vec::new();
    for p in Priority::ALL {
        ids.extend(
            q.enqueue_many("ok", &[1u64, 2, 3], p)
                .await
                .expect("enqueue"),
        );
    }
    let dead = q.enqueue("fail", &0u64).await.expect("enqueue");
    let worker = Worker::new(q.clone(), registry).spawn();
    for id in ids.iter().chain([&dead]) {
        let info = q.wait(*id, Duration::from_secs(20)).await.expect("wait");
        assert!(info.status.is_finished(), "{id}: {info:?}");
    }
    assert_eq!(
        q.status(dead).await.expect("status").status,
        TaskStatus::Failed
    );
    let cancelled = q.enqueue("ok", &9u64).await.expect("enqueue");
    let _ = q.cancel(cancelled).await;
    assert_eq!(q.dead_letters(10).await.expect("dead letters").len(), 1);
    // A heartbeat is written by the worker's maintenance: wait until it shows.
    assert!(
        crate::durable::eventually(Duration::from_secs(10), || async {
            q.stats().await.expect("stats").workers >= 1
        })
        .await,
        "no worker heartbeat"
    );

    let mut conn = plain_conn().await;
    let keys = keys_naming(&mut conn, &name).await;
    let prefix = key_prefix(&name).expect("valid name");
    for suffix in [
        "stream:high",
        "stream:normal",
        "stream:low",
        "dead",
        "stats",
        "workers",
    ] {
        let key = format!("{prefix}{suffix}");
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    let records = keys.iter().filter(|k| k.contains(":task:")).count();
    assert!(records >= 10, "task records: {keys:?}");
    let slot = key_slot(&name);
    let elsewhere: Vec<(&String, u16)> = keys
        .iter()
        .map(|k| (k, key_slot(k)))
        .filter(|(_, s)| *s != slot)
        .collect();
    assert!(
        elsewhere.is_empty(),
        "keys of queue {name:?} outside its slot {slot}: {elsewhere:?}"
    );
    for k in &keys {
        assert!(k.starts_with(&prefix), "{k} is not under {prefix}");
    }

    worker.shutdown(Duration::from_secs(5)).await;
    q.purge().await.expect("purge");
    let left = keys_naming(&mut conn, &name).await;
    assert!(left.is_empty(), "purge left {left:?}");
    assert!(ran.load(Ordering::Relaxed) >= 9);
}

/// Writes a task as the previous release did: a record and an entry of the normal
/// stream under `cortex:tasks:<name>:` (no hash tag).
async fn write_old_task(conn: &mut MultiplexedConnection, old: &str, id: &str) {
    redis::pipe()
        .cmd("HSET")
        .arg(format!("{old}task:{id}"))
        .arg(&["status", "queued", "handler", "ok", "priority", "normal"])
        .ignore()
        .cmd("XADD")
        .arg(format!("{old}stream:normal"))
        .arg("*")
        .arg(&["id", id, "handler", "ok", "payload", "7"])
        .ignore()
        .query_async::<()>(conn)
        .await
        .expect("write a task in the old layout");
}

/// A queue whose previous release left tasks (or dead letters) under the old prefix
/// refuses to start, with an error naming the queue, the old prefix, the counts and
/// what to do, and writes nothing; once the old streams are drained it starts, and
/// old history (counters, records of finished tasks, empty drained streams) does not
/// hold it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_left_in_the_old_layout_refuse_a_start_until_drained() {
    let cfg = config("legacy");
    let name = cfg.name.clone();
    let old = format!("cortex:tasks:{name}:");
    let mut conn = plain_conn().await;
    write_old_task(&mut conn, &old, "00000000000000a1").await;
    write_old_task(&mut conn, &old, "00000000000000a2").await;
    redis::cmd("XADD")
        .arg(format!("{old}dead"))
        .arg("*")
        .arg(&["id", "00000000000000a3", "handler", "ok", "payload", "1"])
        .arg(&["error", "boom", "attempts", "3"])
        .query_async::<String>(&mut conn)
        .await
        .expect("XADD dead");
    let before = keys_naming(&mut conn, &name).await;

    let url = redis_url();
    let redis = cortex_pool::RedisConfig {
        url,
        ..cortex_pool::RedisConfig::default()
    };
    let err = DurableQueue::connect(&redis, cfg.clone())
        .await
        .expect_err("a start over old-layout tasks");
    match &err {
        Error::LegacyKeys {
            queue,
            old_prefix,
            tasks,
            dead_letters,
        } => {
            assert_eq!(
                (queue.as_str(), old_prefix.as_str(), *tasks, *dead_letters),
                (name.as_str(), old.as_str(), 2, 1)
            );
        }
        other => panic!("expected LegacyKeys, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(err.code(), "legacy_keys");
    let text = err.to_string();
    for part in [name.as_str(), old.as_str(), "drain", "UNLINK", "README"] {
        assert!(text.contains(part), "{part:?} missing from {text}");
    }
    // Nothing was written, nothing was lost.
    assert_eq!(keys_naming(&mut conn, &name).await, before);

    // Drained (the previous release's workers ran the tasks; the dead letters were
    // read): the streams stay, empty, with their group, beside the old counters and
    // finished records. A stream-less old key of another type does not count either.
    redis::pipe()
        .cmd("XTRIM")
        .arg(format!("{old}stream:normal"))
        .arg("MAXLEN")
        .arg(0)
        .ignore()
        .cmd("XGROUP")
        .arg("CREATE")
        .arg(format!("{old}stream:high"))
        .arg("workers")
        .arg("0")
        .arg("MKSTREAM")
        .ignore()
        .cmd("UNLINK")
        .arg(format!("{old}dead"))
        .ignore()
        .cmd("SET")
        .arg(format!("{old}stream:low"))
        .arg("not a stream")
        .ignore()
        .cmd("HINCRBY")
        .arg(format!("{old}stats"))
        .arg("completed")
        .arg(2)
        .ignore()
        .query_async::<()>(&mut conn)
        .await
        .expect("drain");
    let q = connect(cfg).await;
    let id = q.enqueue("ok", &1u64).await.expect("enqueue");
    assert_eq!(
        q.status(id).await.expect("status").status,
        TaskStatus::Queued
    );
    q.purge().await.expect("purge");
    // The old keys are the operator's to delete; purge only reaches the new prefix.
    let left = keys_naming(&mut conn, &name).await;
    assert!(
        !left.is_empty() && left.iter().all(|k| k.starts_with(&old)),
        "{left:?}"
    );
    let _: () = redis::cmd("UNLINK")
        .arg(left.into_iter().collect::<Vec<_>>())
        .query_async(&mut conn)
        .await
        .expect("UNLINK old keys");
}

/// The seeds of the local Redis Cluster (`eval "$(scripts/services.sh cluster)"`).
pub(crate) fn cluster_seeds() -> Vec<String> {
    let urls = std::env::var("REDIS_CLUSTER_URLS").unwrap_or_else(|_| {
        panic!(
            "REDIS_CLUSTER_URLS is not set: start the local Redis Cluster with \
             `eval \"$(scripts/services.sh)\"; eval \"$(scripts/services.sh cluster)\"`"
        )
    });
    urls.split(',').map(str::to_owned).collect()
}

/// `redis://host:port` of the master serving `slot`, as `CLUSTER SLOTS` on a seed says.
pub(crate) async fn master_of(conn: &mut MultiplexedConnection, slot: u16) -> String {
    use redis::Value;
    let ranges: Vec<Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(conn)
        .await
        .expect("CLUSTER SLOTS");
    let int = |v: &Value| match v {
        Value::Int(n) => *n,
        other => panic!("CLUSTER SLOTS: expected an integer, got {other:?}"),
    };
    for range in &ranges {
        let Value::Array(r) = range else {
            panic!("CLUSTER SLOTS: {range:?}")
        };
        if (int(&r[0])..=int(&r[1])).contains(&i64::from(slot)) {
            let Value::Array(master) = &r[2] else {
                panic!("CLUSTER SLOTS: {range:?}")
            };
            let host = match &master[0] {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::SimpleString(s) => s.clone(),
                other => panic!("CLUSTER SLOTS host: {other:?}"),
            };
            return format!("redis://{host}:{}", int(&master[1]));
        }
    }
    panic!("no master serves slot {slot}: {ranges:?}")
}

/// On the real Redis Cluster, a queue works end to end through a plain connection to
/// the master of its slot: enqueue, reading and starting, finish with a dead letter,
/// cancel, the heartbeat (refresh), stats, release at shutdown and purge.
/// A cluster node refuses a script or multi-key command whose keys span slots
/// (`CROSSSLOT`) and any key of a slot it does not serve (`MOVED`, or "non local key"
/// inside a script), so this passes only when every key of the queue, declared or
/// built inside a script, is in the one slot. `CLUSTER KEYSLOT` of every key the
/// queue left confirms it, and the test's own slot function agrees with the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_runs_on_the_cluster_master_of_its_slot() {
    // Not while this crate's failover test moves masters.
    let _lock = crate::durable_cluster::cluster_lock(false).await;
    let seeds = cluster_seeds();
    let mut seed = redis::Client::open(seeds[0].as_str())
        .expect("seed url")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the Redis Cluster at {} is not reachable ({e}): run \
                 `eval \"$(scripts/services.sh cluster)\"`",
                seeds[0]
            )
        });
    let cfg = cortex_tasks::durable::DurableConfig {
        max_attempts: 1,
        visibility_timeout: Duration::from_millis(300),
        ..config("cluster")
    };
    let name = cfg.name.clone();
    let prefix = key_prefix(&name).expect("valid name");
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(format!("{prefix}stream:high"))
        .query_async(&mut seed)
        .await
        .expect("CLUSTER KEYSLOT");
    assert_eq!(slot, key_slot(&name));
    let master = master_of(&mut seed, slot).await;
    let q = DurableQueue::connect(&master, cfg)
        .await
        .unwrap_or_else(|e| panic!("queue {name:?} on {master} (slot {slot}): {e:?}"));

    let mut registry = Registry::new();
    registry.register("ok", |n: u64| async move { Ok::<_, BoxError>(n) });
    registry.register("fail", |_: u64| async {
        Err::<u64, _>(BoxError::from("no"))
    });
    registry.register("slow", |n: u64| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, BoxError>(n)
    });
    let mut ids = Vec::new();
    for p in Priority::ALL {
        ids.extend(q.enqueue_many("ok", &[1u64, 2], p).await.expect("enqueue"));
    }
    let dead = q.enqueue("fail", &0u64).await.expect("enqueue");
    let cancelled = q.enqueue("ok", &9u64).await.expect("enqueue");
    q.cancel(cancelled).await.expect("cancel");
    let worker = Worker::new(q.clone(), registry).spawn();
    for id in ids.iter().chain([&dead]) {
        let info = q.wait(*id, Duration::from_secs(20)).await.expect("wait");
        assert!(info.status.is_finished(), "{id}: {info:?}");
    }
    assert_eq!(
        q.status(dead).await.expect("status").status,
        TaskStatus::Failed
    );
    assert_eq!(q.dead_letters(10).await.expect("dead letters").len(), 1);
    let slow = q.enqueue("slow", &5u64).await.expect("enqueue");
    assert!(
        crate::durable::eventually(Duration::from_secs(10), || async {
            q.status(slow).await.expect("status").status == TaskStatus::Running
        })
        .await,
        "the slow task never started"
    );
    let s = q.stats().await.expect("stats");
    assert_eq!((s.completed, s.failed, s.cancelled), (6, 1, 1), "{s:?}");
    assert!(s.workers >= 1, "{s:?}");
    // Shutdown aborts the slow task and hands it back (the release script).
    let report = worker.shutdown(Duration::from_millis(100)).await;
    assert_eq!(report.aborted, vec![slow]);
    let back = q.status(slow).await.expect("status");
    assert_eq!(
        (back.status, back.attempts),
        (TaskStatus::Queued, 0),
        "{back:?}"
    );

    let mut node = redis::Client::open(master.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("master");
    let keys = keys_naming(&mut node, &name).await;
    assert!(keys.len() > 10, "{keys:?}");
    for k in &keys {
        let s: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(k)
            .query_async(&mut seed)
            .await
            .expect("CLUSTER KEYSLOT");
        assert_eq!((k.as_str(), s), (k.as_str(), slot));
    }
    q.purge().await.expect("purge");
    let left = keys_naming(&mut node, &name).await;
    assert!(left.is_empty(), "purge left {left:?}");
}
