//! The example service scaled out: two instances on a Redis Cluster (cache, its
//! invalidation and the durable queue) and a PostgreSQL primary with a streaming read
//! replica, from `eval "$(scripts/services.sh cluster)"` (`REDIS_CLUSTER_URLS`,
//! `DB_REPLICA_URLS`). Each test gets its own database (on the primary, streamed to the
//! replica), its own cache namespace and its own durable queue. Without the cluster
//! variables these tests fail, naming the command that sets them.

use std::time::Duration;

use cortex_core::{Cortex, CortexConfig, Database};
use serde_json::json;

use crate::service::{Reply, Service, seed};
use crate::service_pg::Stack;

const HEADER: &str = "x-cortex-written-lsn";

/// A variable `scripts/services.sh cluster` exports; its absence fails the test.
fn cluster_var(name: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not set: these tests need the local Redis Cluster and PostgreSQL \
                 replica; run `eval \"$(scripts/services.sh)\"; eval \"$(scripts/services.sh cluster)\"`"
            )
        })
}

/// The replica's URL for the database `primary_url` names: the host and port of the
/// first of `DB_REPLICA_URLS`, the database of `primary_url` (each test's own).
fn replica_url_for(primary_url: &str) -> String {
    let replicas = cluster_var("DB_REPLICA_URLS");
    let replica = replicas.split(',').next().unwrap_or_default().trim();
    let (base, _) = replica
        .rsplit_once('/')
        .unwrap_or_else(|| panic!("DB_REPLICA_URLS {replica:?} names no database"));
    let (_, db) = primary_url
        .rsplit_once('/')
        .unwrap_or_else(|| panic!("{primary_url:?} names no database"));
    format!("{base}/{db}")
}

/// Waits (at most 60 s) until the shared cluster is settled: `cluster_state:ok` and no
/// node flagged failing, as a node that answers says. Other tests stop and start its
/// nodes (failover tests); an instance started meanwhile fails to connect its durable
/// queue, as it should, which is not what these tests are about.
async fn cluster_settled() {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        for seed in cluster_var("REDIS_CLUSTER_URLS").split(',') {
            let Ok(client) = redis::Client::open(seed.trim()) else {
                continue;
            };
            let asked = tokio::time::timeout(Duration::from_secs(2), async {
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
            })
            .await;
            if let Ok(Ok((info, nodes))) = asked {
                let settled = info.contains("cluster_state:ok")
                    && nodes.lines().all(|l| {
                        let flags = l.split(' ').nth(2).unwrap_or("fail");
                        !flags.contains("fail") && l.contains(" connected")
                    });
                if settled {
                    return;
                }
                last = format!("{info}\n{nodes}");
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the Redis Cluster did not settle within 60 s:\n{last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts an instance of `stack` on the cluster and the replica: `REDIS_URL` unset,
/// `REDIS_CLUSTER_URLS` and `DB_REPLICA_URLS` set (replica checks every 200 ms).
async fn start_on_cluster(stack: &Stack, extra: &[(&str, &str)]) -> Service {
    let seeds = cluster_var("REDIS_CLUSTER_URLS");
    cluster_settled().await;
    let (mut cmd, data) = stack.command(extra);
    let primary = cmd
        .as_std()
        .get_envs()
        .find(|(k, _)| *k == "DATABASE_URL")
        .and_then(|(_, v)| v)
        .and_then(|v| v.to_str())
        .expect("the stack sets DATABASE_URL")
        .to_owned();
    cmd.env_remove("REDIS_URL")
        .env("REDIS_CLUSTER_URLS", &seeds)
        .env("DB_REPLICA_URLS", replica_url_for(&primary))
        .env("DB_REPLICA_CHECK_INTERVAL", "200ms")
        .env("DB_REPLICA_MAX_LAG", "5");
    Service::spawn(cmd, data).await
}

/// `host:port` of each Redis Cluster seed.
fn seed_addresses() -> Vec<String> {
    cluster_var("REDIS_CLUSTER_URLS")
        .split(',')
        .map(|u| u.trim().trim_start_matches("redis://").to_owned())
        .collect()
}

/// Polls `/ready` until it is 200 with the replica up (at most 30 s: the replica takes
/// reads once it has replayed this test's new database, and a failover test elsewhere
/// on the shared cluster may hold a master down for a few seconds).
async fn ready_with_replica_up(s: &Service) -> Reply {
    let mut last = s.get("/ready").await;
    for _ in 0..300 {
        if last.status == 200 && last.body["db_replicas"][0]["up"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = s.get("/ready").await;
    }
    last
}

/// The checks `/ready` answers on the cluster and the replica.
fn assert_ready_shows_nodes_and_replica(ready: &Reply) {
    let body = &ready.body;
    assert_eq!(ready.status, 200, "{body}");
    assert_eq!(body["parts"]["database"], true, "{body}");
    assert_eq!(body["parts"]["redis"], true, "{body}");
    let nodes = body["redis_nodes"].as_array().expect("redis_nodes");
    let seeds = seed_addresses();
    assert_eq!(nodes.len(), seeds.len(), "one entry per node: {body}");
    for node in nodes {
        let address = node["address"].as_str().unwrap_or_default();
        assert!(
            seeds.iter().any(|s| s == address),
            "{address} is not a cluster node"
        );
        assert!(node["up"].is_boolean(), "{node}");
        assert!(
            node["role"] == "master" || node["role"] == "replica",
            "{node}"
        );
    }
    let slots: u64 = nodes
        .iter()
        .filter(|n| n["role"] == "master" && n["up"] == true)
        .map(|n| n["slots"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        slots, 16384,
        "the masters that are up serve every slot: {body}"
    );
    let replicas = body["db_replicas"].as_array().expect("db_replicas");
    assert_eq!(replicas.len(), 1, "{body}");
    assert_eq!(replicas[0]["name"], "db-replica-0", "{body}");
    assert_eq!(replicas[0]["up"], true, "{body}");
    assert!(replicas[0]["lag_seconds"].is_number(), "{body}");
    assert!(
        replicas[0].get("url").is_none(),
        "the public readiness answer names no URL: {body}"
    );
}

/// The count of `cortex_pool_acquire_wait_seconds` for `pool` in the exposition.
async fn acquires(s: &Service, pool: &str) -> f64 {
    let text = s.get("/metrics").await.body;
    let text = text.as_str().unwrap_or_default();
    let needle = format!("cortex_pool_acquire_wait_seconds_count{{pool=\"{pool}\"");
    text.lines()
        .filter(|l| l.starts_with(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The ids of the users `GET /users` lists (first page of 100), with `lsn` sent as
/// the read-your-writes header when given.
async fn listed_users(s: &Service, lsn: Option<&str>) -> Vec<i64> {
    let mut req = s.http.get(format!("{}/users?per_page=100", s.url));
    if let Some(lsn) = lsn {
        req = req.header(HEADER, lsn);
    }
    let reply = s.send(req).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["id"].as_i64())
        .collect()
}

/// The two-instance checks, on whatever the instances were started on: `b` caches a
/// workspace, `a` updates it and `b` reads the update (invalidation over Redis pub/sub),
/// then a durable task enqueued on `a` (which runs no worker) completes on `b` after
/// `a` is killed outright. Every read here goes to the primary (cache fills and
/// admin reads), so a lagging replica cannot make it flaky.
pub(crate) async fn share_invalidation_and_the_task_stream(mut a: Service, b: &mut Service) {
    let (uid, wid, cid) = seed(&a).await;

    // B caches the workspace; A updates it; B reads the update back.
    assert_eq!(
        b.get(&format!("/workspaces/{wid}")).await.body["name"],
        "Core"
    );
    assert_eq!(
        b.get(&format!("/workspaces/{wid}")).await.body["name"],
        "Core"
    );
    let up = a
        .patch(&format!("/workspaces/{wid}"), json!({"name": "Core 2"}))
        .await;
    assert_eq!(up.status, 200, "{}", up.body);
    // The invalidation travels over Redis pub/sub: bounded wait for it.
    let mut seen = String::new();
    for _ in 0..500 {
        seen = b.get(&format!("/workspaces/{wid}")).await.body["name"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if seen == "Core 2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, "Core 2", "B kept serving its cached copy");

    // A task enqueued on A runs on B after A is killed outright.
    let posted = a
        .post(
            &format!("/conversations/{cid}/messages"),
            json!({"sender_id": uid, "content": "left behind"}),
        )
        .await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    let task = posted.body["task_id"].as_str().unwrap().to_owned();
    let pid = a.child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success()
    );
    let _ = tokio::time::timeout(Duration::from_secs(10), a.child.wait()).await;
    let mut info = json!(null);
    for _ in 0..600 {
        info = b
            .admin(reqwest::Method::GET, &format!("/admin/tasks/{task}"))
            .await
            .body;
        if info["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(info["status"], "completed", "{info}");
    b.assert_alive().await;
}

#[tokio::test]
async fn two_instances_on_the_cluster_and_the_replica_share_invalidation_and_the_task_stream() {
    let stack = Stack::new().await;
    // A takes requests and enqueues but runs no durable task.
    let a = start_on_cluster(&stack, &[("CORTEX_WORKER", "off")]).await;
    let mut b = start_on_cluster(&stack, &[]).await;
    for s in [&a, &b] {
        assert_ready_shows_nodes_and_replica(&ready_with_replica_up(s).await);
    }

    // A list served from the replica shows a row written through the other instance,
    // eventually (bounded wait; the replica lags by at most DB_REPLICA_MAX_LAG).
    let before = acquires(&b, "db-replica-0").await;
    let made = a
        .post(
            "/users",
            json!({"name": "Grace", "email": "grace@example.com"}),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let id = made.body["id"].as_i64().unwrap();
    let written = std::time::Instant::now();
    let mut listed = vec![];
    let mut reads = 0;
    for _ in 0..100 {
        reads += 1;
        listed = listed_users(&b, None).await;
        if listed.contains(&id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(listed.contains(&id), "user {id} never listed: {listed:?}");
    eprintln!(
        "the replica listed the new user {:?} after the write, on read {reads}",
        written.elapsed()
    );
    let after = acquires(&b, "db-replica-0").await;
    assert!(
        after > before,
        "the list did not read from the replica ({before} -> {after} acquires)"
    );

    share_invalidation_and_the_task_stream(a, &mut b).await;
}

#[tokio::test]
async fn a_client_that_sends_back_its_written_lsn_reads_its_writes_at_once() {
    let stack = Stack::new().await;
    let a = start_on_cluster(&stack, &[]).await;
    let b = start_on_cluster(&stack, &[]).await;
    assert_ready_shows_nodes_and_replica(&ready_with_replica_up(&b).await);

    // Every write answers the position; reads answer none.
    let made = a
        .post("/users", json!({"name": "Lin", "email": "lin@example.com"}))
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let lsn = made
        .headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {HEADER} after a write: {:?}", made.headers))
        .to_owned();
    assert!(lsn.parse::<u64>().is_ok_and(|n| n > 0), "{lsn}");
    let id = made.body["id"].as_i64().unwrap();
    assert!(a.get("/users").await.headers.get(HEADER).is_none());

    // The other instance, handed the position, lists the user on the first read,
    // whether its replica has replayed the insert yet or not.
    assert!(
        listed_users(&b, Some(&lsn)).await.contains(&id),
        "user {id} missing though {HEADER}: {lsn} was sent"
    );

    // A later write answers a position no lower than the one it was sent.
    let req = a
        .http
        .post(format!("{}/workspaces", a.url))
        .header(HEADER, &lsn)
        .json(&json!({"name": "Ops", "owner_id": id}));
    let ws = a.send(req).await;
    assert_eq!(ws.status, 201, "{}", ws.body);
    let next: u64 = ws
        .headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("a position after the second write");
    assert!(next >= lsn.parse::<u64>().unwrap(), "{next} < {lsn}");
    let wid = ws.body["id"].as_i64().unwrap();
    let req = b
        .http
        .get(format!("{}/workspaces/{wid}/summary", b.url))
        .header(HEADER, next.to_string());
    let summary = b.send(req).await;
    assert_eq!(summary.status, 200, "{}", summary.body);
    assert_eq!(summary.body["name"], "Ops", "{}", summary.body);

    // Reads that fill a cache (and the batched user lookup) never go to the replica,
    // however far it has replayed: a stale row cached would outlive its invalidation.
    let on_replica = acquires(&b, "db-replica-0").await;
    let on_primary = acquires(&b, "db").await;
    for path in [
        format!("/workspaces/{wid}"),
        format!("/users/{id}/workspaces"),
        format!("/users/{id}"),
    ] {
        let reply = b.get(&path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    }
    assert_eq!(acquires(&b, "db-replica-0").await, on_replica);
    assert!(acquires(&b, "db").await > on_primary);

    // A position that is not a number is refused, naming it.
    let req = b
        .http
        .get(format!("{}/users", b.url))
        .header(HEADER, "0/16B3748");
    let bad = b.send(req).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.body["error"]["code"], "bad_written_lsn", "{}", bad.body);
    let message = bad.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("0/16B3748"), "{message}");
}

#[tokio::test]
async fn a_replica_that_is_down_leaves_the_service_ready_and_lists_on_the_primary() {
    let stack = Stack::new().await;
    // Nothing listens on this port: the replica is down from the start.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("postgres://cortex@127.0.0.1:{port}/cortex");
    let s = stack
        .start(&[
            ("DB_REPLICA_URLS", dead.as_str()),
            ("DB_REPLICA_CHECK_INTERVAL", "200ms"),
        ])
        .await;
    let ready = s.get("/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["parts"]["database"], true, "{}", ready.body);
    assert_eq!(ready.body["db_replicas"][0]["up"], false, "{}", ready.body);
    assert_eq!(
        ready.body["redis_nodes"].as_array().map(Vec::len),
        Some(1),
        "a single Redis server is one node: {}",
        ready.body
    );

    // Writes and lists go on: the primary answers the reads meant for the replica.
    let made = s
        .post("/users", json!({"name": "Kim", "email": "kim@example.com"}))
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let id = made.body["id"].as_i64().unwrap();
    assert!(listed_users(&s, None).await.contains(&id));
    let (_, wid, cid) = seed(&s).await;
    for path in [
        format!("/workspaces/{wid}/conversations"),
        format!("/conversations/{cid}"),
        format!("/conversations/{cid}/messages"),
        format!("/workspaces/{wid}/summary"),
        "/workspaces".to_owned(),
    ] {
        let reply = s.get(&path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    }
    assert_eq!(acquires(&s, "db-replica-0").await, 0.0);
}

/// The facade on the cluster and the replica: Redis in cluster mode with the cache's
/// second tier and the durable queue on it, the pool with its replica, and every URL
/// redacted in the `Debug` output (passwords in the primary's and the replica's URLs,
/// which the local servers ignore, and in an unused `REDIS_URL`).
#[tokio::test]
async fn cortex_builds_on_the_cluster_and_the_replica_and_redacts_every_url() {
    let seeds = cluster_var("REDIS_CLUSTER_URLS");
    let replica = cluster_var("DB_REPLICA_URLS");
    let primary = std::env::var("DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "postgres://cortex@127.0.0.1:5432/cortex".to_owned());
    let with_password = |url: &str| url.replacen("://cortex@", "://cortex:hunter2@", 1);
    let vars = [
        ("DATABASE_URL", with_password(&primary)),
        ("DB_REPLICA_URLS", with_password(&replica)),
        ("REDIS_URL", "redis://:hunter2@127.0.0.1:1".to_owned()),
        ("REDIS_CLUSTER_URLS", seeds),
        ("DB_REPLICA_CHECK_INTERVAL", "200ms".to_owned()),
        ("TASKS_QUEUE_NAME", format!("wiring-{}", std::process::id())),
    ];
    assert!(
        vars[0].1.contains("hunter2") && vars[1].1.contains("hunter2"),
        "the URLs of this test name the user cortex: {vars:?}"
    );
    let lookup = |key: &str| vars.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone());
    let env = cortex_core::support::env::EnvSource::from_fn(&lookup);
    let config = CortexConfig::from_env_source(&env).unwrap();
    cluster_settled().await;
    let cortex = Cortex::builder(config).build().await.unwrap();

    let redis = cortex.redis().expect("Redis configured");
    assert!(redis.is_cluster());
    assert!(cortex.durable().is_some());
    assert!(matches!(
        cortex.cache().cache().inner(),
        cortex_core::CortexCache::TwoTier(_)
    ));
    assert!(matches!(cortex.database(), Database::Postgres(_)));
    assert_eq!(cortex.database().replicas().len(), 1);

    let shown = [
        format!("{cortex:?}"),
        format!("{cortex:#?}"),
        cortex.config().to_string(),
    ];
    for text in &shown {
        assert!(!text.contains("hunter2"), "secret leaked: {text}");
        assert!(
            text.contains("127.0.0.1:7"),
            "no cluster seed shown: {text}"
        );
    }
    let report = cortex.shutdown(Duration::from_secs(10)).await;
    assert!(report.unfinished.is_empty(), "{report:?}");
}
