//! The Redis pool in cluster mode, against the real 3-master/3-replica Redis Cluster of
//! `scripts/services.sh cluster` (its seeds in `REDIS_CLUSTER_URLS`).
//!
//! The tests of this module take one lock, so the failover test never kills a master
//! under another of them. Every key they write starts with a prefix of their own and is
//! deleted at the end; nothing here flushes a node.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cortex_pool::{Error, NodeRole, PoolMetrics, RedisConfig, RedisConnection, RedisPool};

use crate::unique_name;

/// One cluster test at a time (see the module docs).
static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

use cortex_support::keyspace::SLOTS;

fn seeds() -> Vec<String> {
    let urls = std::env::var("REDIS_CLUSTER_URLS").unwrap_or_else(|_| {
        panic!(
            "REDIS_CLUSTER_URLS is not set: start the local Redis Cluster with \
             `eval \"$(scripts/services.sh)\"; eval \"$(scripts/services.sh cluster)\"`"
        )
    });
    urls.split(',').map(str::to_owned).collect()
}

fn config() -> RedisConfig {
    RedisConfig {
        cluster_urls: seeds(),
        client_name: unique_name("cluster"),
        pool_size: 4,
        pool_timeout: Duration::from_secs(5),
        ..RedisConfig::default()
    }
}

async fn pool() -> RedisPool {
    let c = config();
    let shown = c.cluster_urls.join(",");
    RedisPool::with_metrics(c, PoolMetrics::disabled())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the Redis Cluster at {shown} is not reachable ({e}): run \
                 `eval \"$(scripts/services.sh cluster)\"`"
            )
        })
}

/// The slot of `key`.
fn slot(key: &str) -> u16 {
    cortex_support::keyspace::hash_slot(key.as_bytes())
}

/// One key `prefix:n` for each of the 16384 slots.
fn a_key_per_slot(prefix: &str) -> Vec<String> {
    let mut keys: Vec<Option<String>> = vec![None; SLOTS as usize];
    let mut missing = SLOTS as usize;
    let mut n = 0u64;
    while missing > 0 {
        let key = format!("{prefix}:{n}");
        let s = &mut keys[slot(&key) as usize];
        if s.is_none() {
            *s = Some(key);
            missing -= 1;
        }
        n += 1;
    }
    keys.into_iter().flatten().collect()
}

/// Keys matching `prefix:*` on one node (`SCAN`, never `KEYS`).
async fn scan(conn: &mut RedisConnection, prefix: &str) -> Vec<String> {
    let mut cursor = 0u64;
    let mut found = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .unwrap();
        found.extend(keys);
        if next == 0 {
            return found;
        }
        cursor = next;
    }
}

/// Delete every `prefix:*` key on every master; how many went.
async fn delete_all(pool: &RedisPool, prefix: &str) -> usize {
    let mut removed = 0;
    for mut master in pool.masters().await.unwrap() {
        let keys = scan(&mut master, prefix).await;
        // Even on one node a multi-key command needs one slot: one UNLINK per key,
        // pipelined.
        for chunk in keys.chunks(500) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("UNLINK").arg(key);
            }
            let n: Vec<usize> = pipe.query_async(&mut master).await.unwrap();
            removed += n.iter().sum::<usize>();
        }
    }
    removed
}

#[tokio::test]
async fn a_key_in_every_slot_is_set_and_read_through_one_pool() {
    let _one = CLUSTER.lock().await;
    let pool = pool().await;
    assert!(pool.is_cluster());
    let prefix = unique_name("slots");
    let keys = a_key_per_slot(&prefix);
    assert_eq!(keys.len(), usize::from(SLOTS));
    // One command at a time for some, so plain commands are routed too.
    let mut conn = pool.acquire().await.unwrap();
    for key in keys.iter().step_by(97) {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(key)
            .query_async(&mut *conn)
            .await
            .unwrap();
    }
    // And every slot through pipelines that mix slots: each command goes to its node.
    for chunk in keys.chunks(1024) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("SET").arg(key).arg(key).ignore();
        }
        let _: () = pipe.query_async(&mut *conn).await.unwrap();
    }
    for chunk in keys.chunks(1024) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("GET").arg(key);
        }
        let got: Vec<String> = pipe.query_async(&mut *conn).await.unwrap();
        assert_eq!(got, chunk);
    }
    drop(conn);

    // masters(): three connections, one per master, whose keys add up to what was written.
    let masters = pool.masters().await.unwrap();
    assert_eq!(masters.len(), 3);
    let mut per_master = Vec::new();
    let mut dbsize_total = 0u64;
    for mut m in masters {
        assert!(!m.is_cluster());
        per_master.push(scan(&mut m, &prefix).await.len());
        dbsize_total += redis::cmd("DBSIZE")
            .query_async::<u64>(&mut m)
            .await
            .unwrap();
    }
    println!("keys per master: {per_master:?}, DBSIZE total {dbsize_total}");
    assert_eq!(per_master.iter().sum::<usize>(), keys.len());
    assert!(per_master.iter().all(|&n| n > 0), "{per_master:?}");
    // The cluster is shared with other tests: DBSIZE counts their keys too.
    assert!(dbsize_total >= keys.len() as u64);

    assert_eq!(delete_all(&pool, &prefix).await, keys.len());
    let mut left = 0;
    for mut m in pool.masters().await.unwrap() {
        left += scan(&mut m, &prefix).await.len();
    }
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_script_runs_on_keys_of_one_hash_tag_and_refuses_keys_of_two_slots() {
    let _one = CLUSTER.lock().await;
    let pool = pool().await;
    let prefix = unique_name("script");
    let mut conn = pool.acquire().await.unwrap();
    let script = redis::Script::new(
        "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1]); \
         return redis.call('MGET', KEYS[1], KEYS[2])",
    );
    // One hash tag: both keys in one slot, so on one node.
    let (a, b) = (format!("{prefix}:{{tag}}:a"), format!("{prefix}:{{tag}}:b"));
    let got: Vec<String> = script
        .key(&a)
        .key(&b)
        .arg("v")
        .invoke_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!(got, ["v", "v"]);
    // A multi-key command on one tag works too.
    let both: Vec<String> = redis::cmd("MGET")
        .arg(&a)
        .arg(&b)
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!(both, ["v", "v"]);

    // Keys of two slots in one script or transaction: refused (CROSSSLOT), never
    // half-run.
    let mut n = 0;
    let (x, y) = loop {
        let (x, y) = (format!("{prefix}:x{n}"), format!("{prefix}:y{n}"));
        if slot(&x) != slot(&y) {
            break (x, y);
        }
        n += 1;
    };
    let cross_slot = redis::ErrorKind::Server(redis::ServerErrorKind::CrossSlot);
    let err = redis::Script::new("redis.call('SET', KEYS[1], 1); redis.call('SET', KEYS[2], 2)")
        .key(&x)
        .key(&y)
        .invoke_async::<()>(&mut *conn)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), cross_slot, "{err}");
    let err = redis::pipe()
        .atomic()
        .set(&x, 1)
        .set(&y, 2)
        .query_async::<()>(&mut *conn)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), cross_slot, "{err}");
    let existing: u64 = redis::cmd("EXISTS")
        .arg(&x)
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!(existing, 0);
    // MSET over two slots is split by the client into one MSET per slot: it works,
    // but is not atomic as a whole.
    let _: () = redis::cmd("MSET")
        .arg(&x)
        .arg(1)
        .arg(&y)
        .arg(2)
        .query_async(&mut *conn)
        .await
        .unwrap();
    let removed: u64 = redis::cmd("DEL")
        .arg(&x)
        .arg(&y)
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!(removed, 2);
    let _: u64 = redis::cmd("DEL")
        .arg(&a)
        .arg(&b)
        .query_async(&mut *conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn every_node_reports_up_with_its_role_and_slots() {
    let _one = CLUSTER.lock().await;
    let pool = pool().await;
    let nodes = pool.nodes().await.unwrap();
    let show = format!("{nodes:#?}");
    assert_eq!(nodes.len(), 6, "{show}");
    assert!(nodes.iter().all(|n| n.up), "{show}");
    let masters: Vec<_> = nodes
        .iter()
        .filter(|n| n.role == NodeRole::Master)
        .collect();
    assert_eq!(masters.len(), 3, "{show}");
    assert_eq!(masters.iter().map(|n| n.slots).sum::<u32>(), 16384);
    for replica in nodes.iter().filter(|n| n.role == NodeRole::Replica) {
        let of = replica.master_id.as_deref().unwrap();
        assert!(masters.iter().any(|m| m.id == of), "{show}");
    }
    pool.health().await.unwrap();
    let stats = pool.stats();
    assert!(stats.size >= 1 && stats.max == 4, "{stats:?}");
}

#[cfg(feature = "metrics")]
#[tokio::test]
async fn the_node_gauges_read_one_per_node_without_waiting_on_redis() {
    let _one = CLUSTER.lock().await;
    let registry = cortex_metrics::Metrics::new();
    let name = unique_name("gauges");
    let pool = RedisPool::with_metrics(config(), PoolMetrics::new(&registry, &name))
        .await
        .unwrap();
    // The sampler's first round runs at once; wait for it (bounded).
    let deadline = Instant::now() + Duration::from_secs(20);
    while pool.last_nodes().len() < 6 {
        assert!(Instant::now() < deadline, "no node sample within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in pool.last_nodes() {
        let g = registry
            .gauge_with(
                "pool.redis_node_up",
                &[("pool", name.as_str()), ("node", node.address.as_str())],
            )
            .unwrap();
        assert_eq!(g.get(), 1.0, "{node:?}");
    }
    let text = registry.prometheus();
    let lines = text
        .lines()
        .filter(|l| l.starts_with("cortex_pool_redis_node_up{") && l.contains(&name))
        .count();
    assert_eq!(lines, 6, "{text}");
}

#[tokio::test]
async fn seeds_with_a_password_never_show_it() {
    let c = RedisConfig {
        cluster_urls: vec!["redis://:hunter2@127.0.0.1:1".to_owned()],
        pool_timeout: Duration::from_secs(2),
        ..RedisConfig::default()
    };
    let err = RedisPool::with_metrics(c.clone(), PoolMetrics::disabled())
        .await
        .unwrap_err();
    let chain = cortex_support::error_chain(&err);
    assert!(!chain.contains("hunter2"), "{chain}");
    assert!(err.is_retryable(), "{chain}");
    assert!(!format!("{c:?}").contains("hunter2"));
    let bad = RedisConfig {
        cluster_urls: vec!["http://:hunter2@h:1".to_owned()],
        ..RedisConfig::default()
    };
    let err = bad.validate().unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidConfig {
                key: "REDIS_CLUSTER_URLS",
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

/// `scripts/services.sh <args>`; panics with its stderr when it fails.
fn services(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/services.sh");
    let out = std::process::Command::new(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "services.sh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Masters with their slot ranges, from `CLUSTER NODES` of a node that answers.
async fn master_ranges(pool: &RedisPool) -> BTreeMap<String, Vec<(u16, u16)>> {
    let mut conn = pool.acquire().await.unwrap();
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut *conn)
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
            continue;
        }
        let addr = f[1].split('@').next().unwrap().to_owned();
        let ranges = f[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .map(|s| match s.split_once('-') {
                Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                None => (s.parse().unwrap(), s.parse().unwrap()),
            })
            .collect();
        out.insert(addr, ranges);
    }
    out
}

/// Kill a master, keep writing to one of its keys until writes succeed again (its
/// replica took over), print how long that took, then start the node again and wait
/// until it has rejoined as a replica. No timing is asserted: the figure is printed.
#[tokio::test]
async fn writes_to_a_killed_masters_slots_recover_after_failover() {
    let _one = CLUSTER.lock().await;
    let pool = pool().await;
    let prefix = unique_name("failover");
    let masters = master_ranges(&pool).await;
    assert_eq!(masters.len(), 3, "{masters:?}");
    // The highest-port master: the seed `Deref` reaches is the lowest that answers.
    let (victim, ranges) = masters.iter().next_back().unwrap();
    let port: u16 = victim.rsplit_once(':').unwrap().1.parse().unwrap();
    let key = (0u64..)
        .map(|n| format!("{prefix}:{n}"))
        .find(|k| {
            let s = slot(k);
            ranges.iter().any(|&(a, b)| (a..=b).contains(&s))
        })
        .unwrap();
    // A dedicated connection made before the kill must find the new master by itself.
    let mut dedicated = pool.dedicated_connection().await.unwrap();
    assert!(dedicated.is_cluster());
    let mut conn = pool.acquire().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("before")
        .query_async(&mut *conn)
        .await
        .unwrap();
    drop(conn);

    services(&["cluster-kill", &port.to_string()]);
    let killed = Instant::now();
    let mut attempts = 0u32;
    let mut last_error = String::new();
    let mut errors: Vec<String> = Vec::new();
    // Whether the pool's per-node view ever showed the victim down. Watched during the
    // whole outage, not once after it: the cluster is shared, and another user's
    // `services.sh cluster` starts a node that is down again.
    let mut seen_down = false;
    let recovered = loop {
        assert!(
            killed.elapsed() < Duration::from_secs(90),
            "writes to the slots of {victim} did not recover within 90 s after \
             {attempts} attempts; last error: {last_error}"
        );
        attempts += 1;
        let value = format!("after-{attempts}");
        let attempt = async {
            let mut conn = pool.acquire().await?;
            redis::cmd("SET")
                .arg(&key)
                .arg(&value)
                .query_async::<()>(&mut *conn)
                .await?;
            let got: String = redis::cmd("GET").arg(&key).query_async(&mut *conn).await?;
            Ok::<_, Error>(got)
        };
        let view = tokio::time::timeout(Duration::from_secs(10), pool.nodes()).await;
        if let Ok(Ok(nodes)) = view {
            seen_down |= nodes.iter().any(|n| n.address == *victim && !n.up);
        }
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(got)) if got == value => break killed.elapsed(),
            Ok(Ok(got)) => last_error = format!("read {got:?} after writing {value:?}"),
            Ok(Err(e)) => {
                last_error = cortex_support::error_chain(&e);
                // What a caller sees during a failover is worth retrying, never a
                // verdict that the command is wrong.
                assert!(e.is_retryable(), "not retryable: {last_error}");
                errors.push(last_error.clone());
            }
            Err(_) => last_error = "attempt took over 10 s".to_owned(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "failover: writes to the slots of killed master {victim} succeeded again after \
         {recovered:?} ({attempts} attempts); errors meanwhile: {errors:?}"
    );

    // The pool's per-node view named the killed node as down, and health is Ok again
    // once its replica serves the slots.
    let nodes = pool.nodes().await.unwrap();
    seen_down |= nodes.iter().any(|n| n.address == *victim && !n.up);
    assert!(seen_down, "{victim} was never reported down: {nodes:#?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = pool.health().await {
        assert!(Instant::now() < deadline, "health after failover: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(pool.masters().await.unwrap().len(), 3);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = redis::cmd("GET")
            .arg(&key)
            .query_async::<Option<String>>(&mut dedicated)
            .await;
        match got {
            Ok(v) => {
                assert!(v.is_some_and(|v| v.starts_with("after-")));
                break;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "dedicated after failover: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    services(&["cluster-start", &port.to_string()]);
    let started = Instant::now();
    loop {
        let nodes = pool.nodes().await.unwrap();
        let back = nodes.iter().find(|n| n.address == *victim);
        if let Some(n) = back
            && n.up
            && n.role == NodeRole::Replica
            && nodes.iter().all(|n| n.up)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{victim} did not rejoin as a replica within 60 s: {nodes:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "failover: {victim} rejoined as a replica {:?} after cluster-start",
        started.elapsed()
    );
    assert_eq!(delete_all(&pool, &prefix).await, 1);
}

/// A single-server pool's dedicated connection reconnects by itself after the server
/// dropped it, as the durable queue's connections must.
#[tokio::test]
async fn a_dedicated_single_server_connection_reconnects_after_a_kill() {
    let url = crate::redis_url();
    let pool = RedisPool::with_metrics(
        RedisConfig {
            url: url.clone(),
            pool_size: 1,
            pool_timeout: Duration::from_secs(5),
            ..RedisConfig::default()
        },
        PoolMetrics::disabled(),
    )
    .await
    .unwrap_or_else(|e| panic!("Redis at {url} is not reachable ({e}): run scripts/services.sh"));
    let mut dedicated = pool.dedicated_connection().await.unwrap();
    assert!(!dedicated.is_cluster());
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut dedicated)
        .await
        .unwrap();
    let mut admin = pool.acquire().await.unwrap();
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query_async(&mut *admin)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    drop(admin);
    let deadline = Instant::now() + Duration::from_secs(20);
    let new_id = loop {
        match redis::cmd("CLIENT")
            .arg("ID")
            .query_async::<i64>(&mut dedicated)
            .await
        {
            Ok(new_id) => break new_id,
            Err(e) => {
                assert!(e.is_connection_dropped() || e.is_io_error(), "{e}");
                assert!(Instant::now() < deadline, "no reconnect within 20 s: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_ne!(new_id, id);
}

/// A blocking command runs on a dedicated connection given a response timeout longer
/// than its block time, in both modes; with the pool's own (shorter) timeout it fails
/// as a retryable timeout instead of waiting unbounded.
#[tokio::test]
async fn a_blocking_command_runs_on_a_dedicated_connection_with_a_longer_timeout() {
    let _one = CLUSTER.lock().await;
    let single = RedisConfig {
        url: crate::redis_url(),
        ..RedisConfig::default()
    };
    for base in [config(), single] {
        let shown = format!("{base:?}");
        let pool = RedisPool::with_metrics(
            RedisConfig {
                pool_timeout: Duration::from_secs(1),
                ..base
            },
            PoolMetrics::disabled(),
        )
        .await
        .unwrap_or_else(|e| panic!("{shown} is not reachable ({e}): run scripts/services.sh"));
        let key = unique_name("blpop");
        let mut long = pool
            .dedicated_connection_with(Duration::from_secs(5))
            .await
            .unwrap();
        let got: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(&key)
            .arg(2)
            .query_async(&mut long)
            .await
            .unwrap();
        assert_eq!(got, None);
        let mut short = pool.dedicated_connection().await.unwrap();
        let err = redis::cmd("BLPOP")
            .arg(&key)
            .arg(3)
            .query_async::<Option<(String, String)>>(&mut short)
            .await
            .unwrap_err();
        assert!(
            cortex_pool::Error::from(err).is_retryable(),
            "{shown}: the pool-timeout connection gave up on BLPOP 3 with a non-retryable error"
        );
    }
}
