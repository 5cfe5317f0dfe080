//! The example service on PostgreSQL and Redis (from `scripts/services.sh`): every
//! endpoint and bad input as in SQLite mode, and two instances sharing cache
//! invalidation and the durable task stream. Each test gets its own database and its
//! own Redis key prefixes, so it never touches another test's data.

use std::time::Duration;

use serde_json::json;
use tokio::process::Command;

use crate::service::{
    Service, TOKEN, bad_input_gets_4xx, crud_of_every_resource, filters_and_batches, keyset_pages,
    seed, service_bin,
};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn unique(prefix: &str) -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).unwrap();
    let tag: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{}_{tag}", std::process::id())
}

/// A database of its own, dropped at the end.
struct PgDb {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDb {
    async fn create() -> Self {
        let admin_url = env_or("DATABASE_URL", "postgres://cortex@127.0.0.1:5432/cortex");
        let name = unique("cortex_svc_");
        let mut conn = tokio::time::timeout(
            Duration::from_secs(10),
            <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url),
        )
        .await
        .expect("PostgreSQL did not answer within 10 s: run scripts/services.sh")
        .expect("PostgreSQL is not reachable: run scripts/services.sh");
        // The name is ours (letters, digits, '_'), not input.
        let create = format!("CREATE DATABASE {name}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Self {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut conn) =
                    <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url).await
                {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// The environment of one instance of a shared deployment: one database, one Redis
/// cache namespace, one durable queue.
pub(crate) struct Stack {
    db: PgDb,
    redis: String,
    namespace: String,
    queue: String,
}

impl Stack {
    pub(crate) async fn new() -> Self {
        let tag = unique("svc");
        Self {
            db: PgDb::create().await,
            redis: env_or("REDIS_URL", "redis://127.0.0.1:6379"),
            namespace: format!("cortex:cache:test-{tag}:"),
            queue: tag,
        }
    }

    pub(crate) async fn start(&self, extra: &[(&str, &str)]) -> Service {
        let (cmd, data) = self.command(extra);
        Service::spawn(cmd, data).await
    }

    /// The command that starts an instance, and its data directory.
    pub(crate) fn command(&self, extra: &[(&str, &str)]) -> (Command, tempfile::TempDir) {
        let data = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(service_bin());
        cmd.env_remove("COGNITION_SERVICE_URL")
            .env_remove("MEMORY_SERVICE_URL")
            .env_remove("REDIS_CLUSTER_URLS")
            .env_remove("DB_REPLICA_URLS") // set by the cluster tests
            .env("DATABASE_URL", &self.db.url)
            .env("REDIS_URL", &self.redis)
            .env("CACHE_NAMESPACE", &self.namespace)
            .env("TASKS_QUEUE_NAME", &self.queue)
            .env("TASKS_VISIBILITY_TIMEOUT", "2")
            .env("DB_POOL_SIZE", "2")
            .env("DB_MAX_OVERFLOW", "3")
            .env("CORTEX_ADDR", "127.0.0.1:0")
            .env("CORTEX_DATA_DIR", data.path())
            .env("CORTEX_ADMIN_TOKEN", TOKEN)
            .env("LOG_LEVEL", "warn")
            .envs(extra.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        (cmd, data)
    }
}

#[tokio::test]
async fn postgres_and_redis_mode_serves_every_resource_and_refuses_bad_input() {
    let stack = Stack::new().await;
    let mut s = stack.start(&[("CORTEX_BODY_LIMIT", "1024")]).await;
    assert_eq!(s.get("/ready").await.body["parts"]["redis"], true);
    crud_of_every_resource(&mut s).await;
    bad_input_gets_4xx(&mut s).await;
    keyset_pages(&s).await;
    s.assert_alive().await;
}

#[tokio::test]
async fn postgres_filters_by_containment_and_runs_durable_tasks() {
    let stack = Stack::new().await;
    let mut s = stack.start(&[("CORTEX_ACTIVITY_REFRESH", "0.2")]).await;
    filters_and_batches(&s).await;
    let (uid, _, cid) = seed(&s).await;
    let posted = s
        .post(
            &format!("/conversations/{cid}/messages?priority=high"),
            json!({"sender_id": uid, "content": "durable words here"}),
        )
        .await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    let task = posted.body["task_id"].as_str().unwrap().to_owned();
    let mut info = json!(null);
    for _ in 0..400 {
        info = s
            .admin(reqwest::Method::GET, &format!("/admin/tasks/{task}"))
            .await
            .body;
        if info["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(info["status"], "completed", "{info}");
    // Upkeep: partitions made ahead at start, the activity view refreshed by its task.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&stack.db.url)
        .await
        .unwrap();
    let partitions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'messages'::regclass",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(
        partitions >= 4,
        "{partitions} partitions: default + this month + 2 ahead"
    );
    let mut counted = 0i64;
    for _ in 0..100 {
        counted =
            sqlx::query_scalar("SELECT coalesce(sum(messages), 0)::bigint FROM user_activity")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        if counted >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(counted >= 1, "the activity view was not refreshed");
    let stats = s.admin(reqwest::Method::GET, "/admin/tasks").await;
    assert_eq!(stats.status, 200, "{}", stats.body);
    assert!(
        stats.body["stats"]["completed"].as_u64().unwrap_or(0) >= 1,
        "{}",
        stats.body
    );
    s.assert_alive().await;
}

#[tokio::test]
async fn two_instances_share_invalidation_and_the_task_stream() {
    let stack = Stack::new().await;
    // A takes requests and enqueues but runs no durable task.
    let a = stack.start(&[("CORTEX_WORKER", "off")]).await;
    let mut b = stack.start(&[]).await;
    crate::service_cluster::share_invalidation_and_the_task_stream(a, &mut b).await;
}

/// A private `redis-server` on a free loopback port, killed when dropped.
struct PrivateRedis {
    child: std::process::Child,
    url: String,
}

impl PrivateRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("this test needs `redis-server` on PATH (scripts/services.sh installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn with_redis_down_reads_and_writes_go_on_and_ready_says_so() {
    let redis = PrivateRedis::start();
    let mut stack = Stack::new().await;
    stack.redis = redis.url.clone();
    let mut s = stack.start(&[("REDIS_POOL_TIMEOUT", "1")]).await;
    let (_, wid, _) = seed(&s).await;
    assert_eq!(s.get(&format!("/workspaces/{wid}")).await.status, 200);
    assert_eq!(s.get("/ready").await.status, 200);

    drop(redis);
    let ready = s.get("/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.body["parts"]["redis"], false, "{}", ready.body);
    assert_eq!(ready.body["parts"]["database"], true, "{}", ready.body);
    // The cache degrades: reads and writes go to PostgreSQL, and a write is read back.
    let up = s
        .patch(&format!("/workspaces/{wid}"), json!({"name": "Renamed"}))
        .await;
    assert_eq!(up.status, 200, "{}", up.body);
    let read = s.get(&format!("/workspaces/{wid}")).await;
    assert_eq!(
        (read.status, read.body["name"].clone()),
        (200, json!("Renamed")),
        "{}",
        read.body
    );
    s.assert_alive().await;
}

/// Sends one command to a Redis as its default user.
async fn redis_cmd(url: &str, args: &[&str]) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect("connecting to the private Redis timed out")
    .unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async::<()>(&mut conn).await.unwrap();
}

/// A write whose cache invalidation Redis refuses is still read back once Redis takes
/// deletes again: the service retries the invalidation in the background instead of
/// leaving the old copy in Redis for its whole TTL.
#[tokio::test]
async fn an_invalidation_redis_refused_lands_once_it_takes_deletes_again() {
    let redis = PrivateRedis::start();
    let mut stack = Stack::new().await;
    stack.redis = redis.url.clone();
    let mut s = stack.start(&[]).await;
    let (_, wid, _) = seed(&s).await;
    let path = format!("/workspaces/{wid}");
    let before = s.get(&path).await;
    assert_eq!(before.status, 200, "{}", before.body);
    let old_name = before.body["name"].clone();

    // Reads still work, deletes are refused: the invalidation after the write fails.
    redis_cmd(
        &redis.url,
        &["ACL", "SETUSER", "default", "-del", "-unlink"],
    )
    .await;
    let up = s.patch(&path, json!({"name": "Renamed"})).await;
    assert_eq!(up.status, 200, "{}", up.body);
    let during = s.get(&path).await;
    assert_eq!(during.status, 200, "{}", during.body);
    redis_cmd(&redis.url, &["ACL", "SETUSER", "default", "+@all"]).await;

    let mut name = during.body["name"].clone();
    for _ in 0..200 {
        if name == json!("Renamed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        name = s.get(&path).await.body["name"].clone();
    }
    assert_eq!(
        name,
        json!("Renamed"),
        "still served {old_name} from Redis 10 s after Redis took deletes again"
    );
    s.assert_alive().await;
}

#[tokio::test]
async fn a_task_running_on_a_killed_instance_is_finished_by_another() {
    let stack = Stack::new().await;
    // A's cognition service accepts connections and never answers, so A's summary task
    // stays running (retrying its call) until A is killed.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}/mcp", silent.local_addr().unwrap());
    let mut a = stack
        .start(&[
            ("COGNITION_SERVICE_URL", silent_url.as_str()),
            ("MCP_CONNECT_TIMEOUT", "1"),
            ("MCP_REQUEST_TIMEOUT", "1"),
            ("MCP_CALL_TIMEOUT", "300"),
            ("MCP_MAX_RETRIES", "100"),
            ("MCP_RETRY_DELAY", "0.2"),
            ("MCP_MAX_RETRY_DELAY", "0.5"),
            ("MCP_BREAKER_FAILURES", "100000"),
        ])
        .await;
    let (uid, _, cid) = seed(&a).await;
    let posted = a
        .post(
            &format!("/conversations/{cid}/messages"),
            json!({"sender_id": uid, "content": "unfinished"}),
        )
        .await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    let task = posted.body["task_id"].as_str().unwrap().to_owned();
    let mut status = json!(null);
    for _ in 0..400 {
        status = a
            .admin(reqwest::Method::GET, &format!("/admin/tasks/{task}"))
            .await
            .body["status"]
            .clone();
        if status == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status, "running", "A never started the task");

    let mut b = stack.start(&[]).await;
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
    assert_eq!(info["result"]["source"], "local", "{info}");
    b.assert_alive().await;
    drop(silent);
}
