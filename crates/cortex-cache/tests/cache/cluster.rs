//! The Redis and two-tier caches on the real 3-master/3-replica Redis Cluster of
//! `scripts/services.sh cluster` (its seeds in `REDIS_CLUSTER_URLS`): keys over many
//! slots, a namespace `clear` on every master, invalidations between caches, and a
//! master killed under a subscriber.
//!
//! The cluster is shared with other test runs: every key lives in a namespace of its
//! own, nothing is flushed, and the one test that kills a node starts it again (also
//! when it fails) and waits until the cluster is healthy. Within this binary the
//! failover test runs alone (a write lock), the other cluster tests side by side.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cortex_cache::{Cache, MemoryConfig, MemoryStore, RedisCache, RedisCacheConfig, TwoTierCache};
use cortex_pool::{NodeRole, PoolMetrics, RedisConfig, RedisConnection, RedisPool};

/// Side by side (read) or alone (write, the failover test).
static CLUSTER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

const READY: Duration = Duration::from_secs(10);

fn seeds() -> Vec<String> {
    let urls = std::env::var("REDIS_CLUSTER_URLS").unwrap_or_else(|_| {
        panic!(
            "REDIS_CLUSTER_URLS is not set: start the local Redis Cluster with \
             `eval \"$(scripts/services.sh)\"; eval \"$(scripts/services.sh cluster)\"`"
        )
    });
    urls.split(',').map(str::to_owned).collect()
}

async fn pool() -> RedisPool {
    let config = RedisConfig {
        cluster_urls: seeds(),
        pool_size: 4,
        pool_timeout: Duration::from_secs(2),
        ..RedisConfig::default()
    };
    let shown = config.cluster_urls.join(",");
    RedisPool::with_metrics(config, PoolMetrics::disabled())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the Redis Cluster at {shown} is not reachable ({e}): run \
                 `eval \"$(scripts/services.sh cluster)\"`"
            )
        })
}

fn namespace() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "cortex-test:cluster:{}:{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn cache(ns: &str) -> RedisCache {
    RedisCache::new(
        pool().await,
        RedisCacheConfig {
            namespace: ns.to_owned(),
            ..RedisCacheConfig::default()
        },
    )
    .unwrap()
}

async fn two_tier(ns: &str) -> TwoTierCache<MemoryStore> {
    let t = TwoTierCache::new(
        MemoryStore::new(MemoryConfig::default()).unwrap(),
        cache(ns).await,
    )
    .unwrap();
    t.ready(READY).await.unwrap();
    t
}

/// The hash slot of each key, as the cluster computes it.
async fn slots(pool: &RedisPool, keys: &[String]) -> Vec<u16> {
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("CLUSTER").arg("KEYSLOT").arg(k);
    }
    let mut conn = pool.acquire().await.unwrap();
    pipe.query_async(&mut *conn).await.unwrap()
}

/// Keys of `pattern` on one node (`SCAN`, which sees that node's keys only).
async fn scan_count(conn: &mut RedisConnection, pattern: &str) -> usize {
    let mut cursor = 0u64;
    let mut n = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .unwrap();
        n += keys.len();
        if next == 0 {
            return n;
        }
        cursor = next;
    }
}

/// The namespace's key count on each master.
async fn per_master(pool: &RedisPool, ns: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for mut m in pool.masters().await.unwrap() {
        out.push(scan_count(&mut m, &format!("{ns}*")).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_set_delete_and_many_work_over_keys_in_many_slots() {
    let _shared = CLUSTER.read().await;
    let ns = namespace();
    let c = cache(&ns).await;
    assert!(c.pool().is_cluster());
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    let full: Vec<String> = keys.iter().map(|k| c.full_key(k)).collect();
    let distinct: BTreeSet<u16> = slots(c.pool(), &full).await.into_iter().collect();
    assert!(distinct.len() > 250, "{} slots", distinct.len());

    for k in &keys {
        c.set(k, k.as_bytes(), None).await.unwrap();
    }
    for k in &keys {
        assert_eq!(c.get(k).await.unwrap().as_deref(), Some(k.as_bytes()));
        assert!(c.exists(k).await.unwrap());
    }
    assert!(
        per_master(c.pool(), &ns).await.iter().all(|&n| n > 0),
        "keys on every master"
    );
    // MGET and a pipelined SET over every slot.
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let got = c.get_many(&refs).await.unwrap();
    assert!(
        got.iter()
            .zip(&keys)
            .all(|(v, k)| v.as_deref() == Some(k.as_bytes()))
    );
    let items: Vec<(&str, &[u8])> = refs.iter().map(|k| (*k, &b"many"[..])).collect();
    c.set_many(&items, None).await.unwrap();
    assert!(
        c.get_many(&refs)
            .await
            .unwrap()
            .iter()
            .all(|v| v.as_deref() == Some(&b"many"[..]))
    );
    assert_eq!(c.increment("counter", 2).await.unwrap(), 2);
    assert_eq!(c.increment("counter", 3).await.unwrap(), 5);
    for k in &keys[..150] {
        assert!(c.delete(k).await.unwrap());
    }
    let after = c.get_many(&refs).await.unwrap();
    assert_eq!(after.iter().filter(|v| v.is_none()).count(), 150);

    // Keys a caller gives one hash tag share a slot (the namespace holds none).
    let tagged = [c.full_key("{user:7}:profile"), c.full_key("{user:7}:posts")];
    let s = slots(c.pool(), &tagged).await;
    assert_eq!(s[0], s[1]);
    // A namespace holding a whole tag keeps every key in one slot.
    let one = cache(&format!("{}{{one}}:", ns)).await;
    let in_one: Vec<String> = (0..20).map(|i| one.full_key(&format!("x{i}"))).collect();
    assert_eq!(
        slots(one.pool(), &in_one)
            .await
            .into_iter()
            .collect::<BTreeSet<_>>()
            .len(),
        1
    );
    assert_eq!(c.clear().await.unwrap(), 151);
    assert_eq!(c.stats().errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_removes_a_namespace_on_every_master_and_nothing_else() {
    let _shared = CLUSTER.read().await;
    let (ns, other_ns) = (namespace(), namespace());
    let c = cache(&ns).await;
    let other = cache(&other_ns).await;
    let keys: Vec<String> = (0..600).map(|i| format!("key:{i}")).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
    c.set_many(&items, None).await.unwrap();
    other.set_many(&items, None).await.unwrap();
    let before = per_master(c.pool(), &ns).await;
    assert_eq!(before.len(), 3, "three masters: {before:?}");
    assert!(before.iter().all(|&n| n > 0), "{before:?}");
    assert_eq!(before.iter().sum::<usize>(), 600);

    assert_eq!(c.clear().await.unwrap(), 600);
    assert_eq!(per_master(c.pool(), &ns).await, vec![0, 0, 0]);
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    assert!(
        other
            .get_many(&refs)
            .await
            .unwrap()
            .iter()
            .all(Option::is_some)
    );
    assert_eq!(other.clear().await.unwrap(), 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tier_caches_on_a_cluster_hear_each_other() {
    let _shared = CLUSTER.read().await;
    let ns = namespace();
    let a = two_tier(&ns).await;
    let b = two_tier(&ns).await;
    assert!(a.listener_node().is_some() && b.listener_node().is_some());
    for i in 0..20 {
        let key = format!("k{i}");
        a.set(&key, b"v1", None).await.unwrap();
        eventually("b hears a's write", || b.listener_stats().invalidations > i).await;
        assert_eq!(b.get(&key).await.unwrap().as_deref(), Some(&b"v1"[..]));
        assert!(b.local().get(&key).await.unwrap().is_some(), "b cached it");
        b.set(&key, b"v2", None).await.unwrap();
        eventually_async("a's memory copy evicted", async || {
            a.local().get(&key).await.unwrap().is_none()
        })
        .await;
        assert_eq!(a.get(&key).await.unwrap().as_deref(), Some(&b"v2"[..]));
    }
    assert!(b.local().get("k3").await.unwrap().is_some());
    a.clear().await.unwrap();
    eventually_async("b's memory tier cleared", async || {
        b.local().get("k3").await.unwrap().is_none()
    })
    .await;
    assert_eq!(b.get("k3").await.unwrap(), None);
}

async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn eventually_async(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn services(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/services.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "services.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the killed node again when dropped, so a failing test leaves the shared
/// cluster whole.
struct Killed {
    port: String,
    started: bool,
}

impl Killed {
    fn kill(port: &str) -> Self {
        services(&["cluster-kill", port]);
        Self {
            port: port.to_owned(),
            started: false,
        }
    }

    fn start(&mut self) {
        services(&["cluster-start", &self.port]);
        self.started = true;
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        if !self.started {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/services.sh");
            let _ = Command::new("bash")
                .arg(script)
                .args(["cluster-start", &self.port])
                .status();
        }
    }
}

/// Wait (at most 90 s) until every node is up, says `cluster_state:ok` and names the
/// same three masters (a node just started again claims its old role for a moment).
async fn wait_healthy(pool: &RedisPool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut why = String::new();
        match tokio::time::timeout(Duration::from_secs(5), pool.nodes()).await {
            Ok(Ok(nodes)) if nodes.iter().all(|n| n.up) && nodes.len() == 6 => {
                let mut views = BTreeSet::new();
                for n in &nodes {
                    let info = async {
                        let client = redis::Client::open(format!("redis://{}", n.address))?;
                        let mut conn = client.get_multiplexed_async_connection().await?;
                        let info: String = redis::cmd("CLUSTER")
                            .arg("INFO")
                            .query_async(&mut conn)
                            .await?;
                        let nodes: String = redis::cmd("CLUSTER")
                            .arg("NODES")
                            .query_async(&mut conn)
                            .await?;
                        Ok::<_, redis::RedisError>((info, nodes))
                    };
                    match tokio::time::timeout(Duration::from_secs(2), info).await {
                        Ok(Ok((info, nodes))) if info.contains("cluster_state:ok") => {
                            let masters: BTreeSet<String> = nodes
                                .lines()
                                .filter(|l| l.contains("master") && !l.contains("fail"))
                                .filter(|l| l.split_whitespace().count() > 8)
                                .filter_map(|l| l.split_whitespace().nth(1))
                                .map(|a| a.split('@').next().unwrap_or(a).to_owned())
                                .collect();
                            views.insert(masters);
                        }
                        other => why = format!("{}: {other:?}", n.address),
                    }
                }
                if why.is_empty() && (views.len() != 1 || views.iter().any(|v| v.len() != 3)) {
                    why = format!("the nodes disagree on the masters: {views:?}");
                }
                if why.is_empty() {
                    return;
                }
            }
            other => why = format!("{other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "cluster not healthy within 90 s: {why}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Slot ranges of the master at `address`, from `CLUSTER NODES`.
async fn ranges_of(pool: &RedisPool, address: &str) -> Vec<(u16, u16)> {
    let mut conn = pool.acquire().await.unwrap();
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut *conn)
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.starts_with(&format!("{address}@")))
        })
        .unwrap_or_else(|| panic!("{address} not in {text}"));
    line.split_whitespace()
        .skip(8)
        .filter(|s| !s.starts_with('['))
        .map(|s| match s.split_once('-') {
            Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
            None => (s.parse().unwrap(), s.parse().unwrap()),
        })
        .collect()
}

/// The first `prefix{n}` whose full key in `c` does (`on == true`) or does not hash into
/// `ranges`. One that does not is also 128 slots away from them: the cache's breaker
/// opens per range of 128 slots.
async fn key_where(c: &RedisCache, prefix: &str, ranges: &[(u16, u16)], on: bool) -> String {
    let keys: Vec<String> = (0..256).map(|i| format!("{prefix}{i}")).collect();
    let full: Vec<String> = keys.iter().map(|k| c.full_key(k)).collect();
    let s = slots(c.pool(), &full).await;
    let near = |slot: u16| {
        let (lo, hi) = (slot / 128 * 128, slot / 128 * 128 + 127);
        ranges.iter().any(|&(a, b)| a <= hi && lo <= b)
    };
    keys.into_iter()
        .zip(s)
        .find(|&(_, s)| {
            if on {
                ranges.iter().any(|&(a, b)| (a..=b).contains(&s))
            } else {
                !near(s)
            }
        })
        .unwrap()
        .0
}

/// Kill the master the subscriber `b` listens on: `b` moves to another node at once
/// (clearing its memory tier), `a` (listening elsewhere) keeps serving from memory,
/// reads never fail, writes fail retryably until the replica takes over, and the
/// invalidations `w` sends after the kill reach `b`. Times are printed, not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_survives_killing_the_subscribers_master() {
    let _alone = CLUSTER.write().await;
    let admin = pool().await;
    wait_healthy(&admin).await;
    let ns = namespace();
    let b = two_tier(&ns).await;
    let victim = b.listener_node().unwrap();
    let nodes = admin.nodes().await.unwrap();
    assert!(
        nodes
            .iter()
            .any(|n| n.address == victim && n.role == NodeRole::Master),
        "the listener prefers masters: {victim} in {nodes:#?}"
    );
    // A second process whose listener is on another master (listeners spread over the
    // masters by their origin id).
    let mut a = None;
    for _ in 0..30 {
        let t = two_tier(&ns).await;
        if t.listener_node().as_deref() != Some(victim.as_str()) {
            a = Some(t);
            break;
        }
    }
    let a = a.expect("a listener on another master within 30 caches");
    let ranges = ranges_of(&admin, &victim).await;
    let dead_key = key_where(a.remote(), "dead", &ranges, true).await;
    let live_key = key_where(a.remote(), "live", &ranges, false).await;
    // A key of a live master that `a` itself (also writing the dead master's slots)
    // keeps writing during the failover.
    let a_live_key = key_where(a.remote(), "alive", &ranges, false).await;
    for k in [&dead_key, &live_key] {
        a.set(k, b"v0", None).await.unwrap();
    }
    eventually("b hears both writes", || {
        b.listener_stats().invalidations >= 2
    })
    .await;
    for k in [&dead_key, &live_key] {
        assert_eq!(b.get(k).await.unwrap().as_deref(), Some(&b"v0"[..]));
        assert!(a.local().get(k).await.unwrap().is_some());
    }
    let heard_before = b.listener_stats().invalidations;
    let other = cache(&namespace()).await;
    other.set("x", b"1", None).await.unwrap();
    let subscriptions_before = b.listener_stats().subscriptions;

    // How long b's listener is away: from the loss of its subscription to the next one,
    // watched every millisecond.
    let b = std::sync::Arc::new(b);
    let watch = {
        let b = std::sync::Arc::clone(&b);
        let before = b.listener_stats();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(90);
            let mut lost = None;
            while Instant::now() < deadline {
                let now = b.listener_stats();
                if lost.is_none() && now.failures > before.failures {
                    lost = Some(Instant::now());
                }
                if now.subscriptions > before.subscriptions && now.live {
                    return lost.map(|at| at.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            None
        })
    };
    let port = victim.rsplit_once(':').unwrap().1.to_owned();
    // A third process that writes only keys of live masters, so its writes (and their
    // invalidations) are not held up by faults on the dead master's slots.
    let w = two_tier(&ns).await;
    let mut killed = Killed::kill(&port);
    // From the script's return: the kill itself is at most ~0.1 s earlier (the script
    // waits for the process to be gone), while the script's start can wait on its lock.
    let t0 = Instant::now();
    // `w` writes on its own, every 20 ms, until `b` (moved off the dead node) hears one.
    let mut writer = {
        let (b, live_key, victim) = (std::sync::Arc::clone(&b), live_key.clone(), victim.clone());
        tokio::spawn(async move {
            let mut errors = Vec::new();
            for n in 0u32.. {
                assert!(
                    t0.elapsed() < Duration::from_secs(90),
                    "b heard nothing: {errors:?}"
                );
                let v = format!("live{n}");
                match w.set(&live_key, v.as_bytes(), None).await {
                    Ok(()) => {
                        // Heard, from a node other than the dead one.
                        let deadline = Instant::now() + Duration::from_millis(500);
                        while Instant::now() < deadline {
                            if b.listener_stats().invalidations > heard_before
                                && b.listener_node().as_deref() != Some(victim.as_str())
                            {
                                return (t0.elapsed(), v, errors);
                            }
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    Err(e) => {
                        assert!(e.is_retryable(), "{}", cortex_support::error_chain(&e));
                        errors.push(short(&e));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            unreachable!()
        })
    };
    let mut resubscribed = None;
    let mut heard = None;
    let mut write_back = None;
    let mut served_from_memory = 0u32;
    let mut errors: BTreeMap<String, u32> = BTreeMap::new();
    let mut clear_during: Option<String> = None;
    let (mut a_live_ok, mut a_live_failed) = (0u32, Vec::<String>::new());
    let mut n = 0u32;
    let (mut live_value, mut dead_value) = (String::new(), String::from("v0"));
    while resubscribed.is_none() || heard.is_none() || write_back.is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "no recovery within 90 s: resubscribed {resubscribed:?}, heard {heard:?}, \
             writes back {write_back:?}; errors {errors:?}"
        );
        n += 1;
        if resubscribed.is_none() && b.listener_stats().subscriptions > subscriptions_before {
            resubscribed = Some((t0.elapsed(), b.listener_node()));
        }
        // Reads never fail: memory, or a miss while the slot has no master.
        let got = a.get(&dead_key).await.unwrap();
        if got.is_some()
            && write_back.is_none()
            && a.local().get(&dead_key).await.unwrap().is_some()
        {
            served_from_memory += 1;
        }
        b.get(&dead_key).await.unwrap();
        match a.set(&a_live_key, b"x", None).await {
            Ok(()) => a_live_ok += 1,
            Err(e) => {
                assert!(e.is_retryable(), "{}", cortex_support::error_chain(&e));
                a_live_failed.push(short(&e));
            }
        }
        if clear_during.is_none() {
            // A clear (of a namespace of its own) while a master is down.
            clear_during = Some(match other.clear().await {
                Ok(n) => format!("Ok({n})"),
                Err(e) => {
                    assert!(e.is_retryable(), "{}", cortex_support::error_chain(&e));
                    cortex_support::error_chain(&e)
                }
            });
        }
        if heard.is_none() && writer.is_finished() {
            let (at, value) = writer_result(&mut writer).await;
            heard = Some(at);
            live_value = value;
        }
        if write_back.is_none() {
            let v = format!("dead{n}");
            match a.set(&dead_key, v.as_bytes(), None).await {
                Ok(()) => {
                    dead_value = v;
                    write_back = Some(t0.elapsed());
                }
                Err(e) => {
                    assert!(e.is_retryable(), "{}", cortex_support::error_chain(&e));
                    *errors.entry(short(&e)).or_default() += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (resub_at, new_node) = resubscribed.unwrap();
    let away = watch.await.unwrap();
    println!(
        "cluster failover of {victim}: b resubscribed on {new_node:?} (seen {resub_at:?} \
         after the kill), away {away:?} from the loss of its subscription; \
         first invalidation heard after {:?}; writes to the dead master's slots back after \
         {:?}; a served the dead slot's key from memory {served_from_memory} times; clear \
         during failover: {clear_during:?}; errors seen (all retryable): {errors:?}; \
         a's writes to a live master meanwhile: {a_live_ok} ok, failed: {a_live_failed:?}",
        heard.unwrap(),
        write_back.unwrap()
    );
    assert_ne!(new_node.as_deref(), Some(victim.as_str()));
    // The dead master's faults held up none of `a`'s writes to the other masters.
    assert!(
        a_live_ok > 0 && a_live_failed.is_empty(),
        "{a_live_failed:?}"
    );
    // b sees the latest values once the invalidations are in.
    eventually_async("b reads a's last writes", async || {
        b.get(&live_key).await.unwrap().as_deref() == Some(live_value.as_bytes())
            && b.get(&dead_key).await.unwrap().as_deref() == Some(dead_value.as_bytes())
    })
    .await;

    killed.start();
    let back = Instant::now();
    wait_healthy(&admin).await;
    println!(
        "cluster failover: {victim} back and the cluster healthy after {:?}",
        back.elapsed()
    );
    // b's listener (elsewhere) still hears a.
    let heard_now = b.listener_stats().invalidations;
    a.set(&live_key, b"after", None).await.unwrap();
    eventually("b hears a after the node's return", || {
        b.listener_stats().invalidations > heard_now
    })
    .await;
    eventually_async(
        "the namespaces clear once the cluster is whole",
        async || a.clear().await.is_ok() && other.clear().await.is_ok(),
    )
    .await;
}

async fn writer_result(
    writer: &mut tokio::task::JoinHandle<(Duration, String, Vec<String>)>,
) -> (Duration, String) {
    let (at, value, errors) = writer.await.unwrap();
    println!("cluster failover: w's write errors before b heard one: {errors:?}");
    (at, value)
}

/// An error's kind in a few words, to count kinds rather than list every message.
fn short(e: &cortex_cache::Error) -> String {
    let chain = cortex_support::error_chain(e);
    chain.chars().take(80).collect()
}
