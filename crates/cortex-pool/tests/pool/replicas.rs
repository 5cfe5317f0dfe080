//! Read replicas against the real primary and hot standby of `scripts/services.sh
//! cluster`, plus private standbys this module starts (and kills) itself.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cortex_metrics::Metrics;
use cortex_pool::{DbConfig, DbPool, Error, PoolMetrics, ReplicaStatus};
use cortex_support::env::{EnvSource, FromEnv};
use sqlx::Postgres;

use crate::{database_url, unique_name};

/// The shared standby of `scripts/services.sh cluster`; its absence fails the test.
fn replica_urls() -> Vec<String> {
    let urls = std::env::var("DB_REPLICA_URLS").unwrap_or_default();
    let urls: Vec<String> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    assert!(
        !urls.is_empty(),
        "DB_REPLICA_URLS is not set: start the PostgreSQL standby with \
         `eval \"$(scripts/services.sh)\"; eval \"$(scripts/services.sh cluster)\"` and run again"
    );
    urls
}

fn config(app: &str, replicas: Vec<String>) -> DbConfig {
    DbConfig {
        url: database_url(),
        application_name: app.to_owned(),
        pool_size: 1,
        max_overflow: 2,
        pool_timeout: Duration::from_secs(10),
        replica_urls: replicas,
        replica_check_interval: Duration::from_millis(500),
        ..DbConfig::default()
    }
}

async fn pool(config: DbConfig) -> DbPool<Postgres> {
    let shown = cortex_support::redact::redact_url(&config.url);
    DbPool::postgres_with(config, PoolMetrics::disabled())
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at {shown} is not reachable ({e}): run scripts/services.sh")
        })
}

async fn in_recovery(conn: &mut cortex_pool::DbConn<Postgres>) -> bool {
    sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&mut ***conn)
        .await
        .unwrap()
}

/// Poll `pool.replicas()[i]` until `want` holds, at most `limit`; the time it took.
async fn wait_replica(
    pool: &DbPool<Postgres>,
    i: usize,
    limit: Duration,
    what: &str,
    want: impl Fn(&ReplicaStatus) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let status = pool.replicas()[i].clone();
        if want(&status) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "replica {i} not {what} within {limit:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A URL to a port nothing listens on.
fn closed_port_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("postgres://cortex@127.0.0.1:{port}/cortex")
}

#[test]
fn replica_settings_are_validated_naming_the_variable() {
    let read = |vars: &'static [(&'static str, &'static str)]| {
        let lookup = move |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        DbConfig::from_env_source(&EnvSource::from_fn(&lookup))
    };
    let c = read(&[
        ("DATABASE_URL", "postgres://h/db"),
        ("DB_REPLICA_URLS", "postgres://r1/db, postgres://r2/db,"),
        ("DB_REPLICA_MAX_LAG", "750ms"),
        ("DB_REPLICA_CHECK_INTERVAL", "3"),
        ("DB_REPLICA_POOL_SIZE", "4"),
    ])
    .unwrap();
    assert_eq!(c.replica_urls, ["postgres://r1/db", "postgres://r2/db"]);
    assert_eq!(c.replica_max_lag, Duration::from_millis(750));
    assert_eq!(c.replica_check_interval, Duration::from_secs(3));
    assert_eq!(c.replica_pool_size, Some(4));
    assert!(DbConfig::default().replica_urls.is_empty());

    // SQLite has no replicas.
    let err = read(&[("DB_REPLICA_URLS", "postgres://u:hunter2@r/db")]).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig { key: "DB_REPLICA_URLS", value, .. } if value.contains("***")),
        "{err}"
    );
    assert!(!err.to_string().contains("hunter2"), "{err}");
    // Not a PostgreSQL URL: named, redacted.
    let err = read(&[
        ("DATABASE_URL", "postgres://h/db"),
        ("DB_REPLICA_URLS", "mysql://u:hunter2@r/db"),
    ])
    .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::InvalidConfig {
                key: "DB_REPLICA_URLS",
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.to_string().contains("hunter2"), "{err}");
    for (key, vars) in [
        (
            "DB_REPLICA_MAX_LAG",
            &[
                ("DATABASE_URL", "postgres://h/db"),
                ("DB_REPLICA_URLS", "postgres://r/db"),
                ("DB_REPLICA_MAX_LAG", "0"),
            ],
        ),
        (
            "DB_REPLICA_CHECK_INTERVAL",
            &[
                ("DATABASE_URL", "postgres://h/db"),
                ("DB_REPLICA_URLS", "postgres://r/db"),
                ("DB_REPLICA_CHECK_INTERVAL", "soon"),
            ],
        ),
    ] {
        let err = read(vars).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig { key: k, .. } if *k == key),
            "{key}: {err}"
        );
    }
    // Serialized configs never show a replica's password.
    let c = DbConfig {
        url: "postgres://h/db".into(),
        replica_urls: vec!["postgres://u:hunter2@r/db".into()],
        ..DbConfig::default()
    };
    assert!(!serde_json::to_string(&c).unwrap().contains("hunter2"));
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_replica_and_writes_to_the_primary() {
    let registry = Metrics::new();
    let app = unique_name("replica-routing");
    let pool = DbPool::postgres_in(config(&app, replica_urls()), &registry, "rt")
        .await
        .unwrap();
    wait_replica(&pool, 0, Duration::from_secs(30), "up", |r| r.up).await;
    for _ in 0..3 {
        let mut read = pool.acquire_read().await.unwrap();
        assert_eq!(read.replica(), Some("rt-replica-0"));
        assert!(
            in_recovery(&mut read).await,
            "a read connection is on the standby"
        );
        // The standby refuses writes: SQLSTATE 25006 (read-only transaction).
        let err = sqlx::query("CREATE TEMP TABLE t (x int)")
            .execute(&mut **read)
            .await
            .unwrap_err();
        let code = err.as_database_error().and_then(|e| e.code());
        assert_eq!(code.as_deref(), Some("25006"), "{err}");
    }
    let mut write = pool.acquire().await.unwrap();
    assert_eq!(write.replica(), None);
    assert!(!in_recovery(&mut write).await, "acquire() is the primary");
    drop(write);
    let status = &pool.replicas()[0];
    assert!(status.up && status.lag_seconds.is_some(), "{status:?}");
    if cfg!(feature = "metrics") {
        let text = registry.prometheus();
        for series in [
            "cortex_pool_replica_up{pool=\"rt-replica-0\"} 1\n",
            "cortex_pool_replica_lag_seconds{pool=\"rt-replica-0\"}",
            "cortex_pool_max_size{pool=\"rt-replica-0\"} 3\n",
            "cortex_pool_max_size{pool=\"rt\"} 3\n",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_down_from_the_start_is_out_and_reads_go_to_the_primary() {
    let registry = Metrics::new();
    let app = unique_name("replica-down");
    // Through `postgres_with`, as the facade builds it: the replicas record into the
    // registry of the `PoolMetrics` handed in, under its name.
    let pool = DbPool::postgres_with(
        config(&app, vec![closed_port_url()]),
        PoolMetrics::new(&registry, "dn"),
    )
    .await
    .unwrap();
    let status = &pool.replicas()[0];
    assert!(!status.up, "{status:?}");
    assert!(status.last_error.is_some(), "{status:?}");
    for _ in 0..5 {
        let mut conn = pool.acquire_read().await.unwrap();
        assert_eq!(conn.replica(), None);
        assert!(!in_recovery(&mut conn).await);
    }
    if cfg!(feature = "metrics") {
        let text = registry.prometheus();
        assert!(
            text.contains("cortex_pool_replica_up{pool=\"dn-replica-0\"} 0\n"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reads_its_own_writes() {
    let app = unique_name("replica-ryw");
    let pool = pool(config(&app, replica_urls())).await;
    wait_replica(&pool, 0, Duration::from_secs(30), "up", |r| r.up).await;
    let table = format!("ryw_{}", std::process::id());
    {
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {table} (id bigint PRIMARY KEY)"
        )))
        .execute(&mut **conn)
        .await
        .unwrap();
    }
    let mut session = pool.session();
    assert_eq!(session.written_lsn(), None);
    let (mut on_replica, mut on_primary) = (0, 0);
    for id in 0..20_i64 {
        {
            let mut conn = session.acquire().await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} VALUES ($1)"
            )))
            .bind(id)
            .execute(&mut **conn)
            .await
            .unwrap();
            session.mark_written(&mut conn).await.unwrap();
        }
        let mut conn = session.acquire_read().await.unwrap();
        let seen: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM {table} WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&mut **conn)
        .await
        .unwrap();
        assert_eq!(seen, Some(id), "the session's read missed its own write");
        if conn.replica().is_some() {
            on_replica += 1;
        } else {
            on_primary += 1;
        }
    }
    // Once the replica has replayed the writes, the session reads there again.
    let caught_up = Instant::now();
    loop {
        let conn = session.acquire_read().await.unwrap();
        if conn.replica().is_some() {
            break;
        }
        assert!(
            caught_up.elapsed() < Duration::from_secs(30),
            "the replica never caught up: {:?}",
            pool.replicas()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "read-your-writes: {on_replica} reads on the replica, {on_primary} on the primary right \
         after the write; the replica served the session again {:?} later",
        caught_up.elapsed()
    );
    assert!(session.written_lsn().is_some());
    // Resumed in a later request with the remembered position, it still sees the write.
    let later = pool.session().with_written_lsn(session.written_lsn());
    let mut conn = later.acquire_read().await.unwrap();
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&mut **conn)
        .await
        .unwrap();
    assert_eq!(n, 20);
    drop(conn);
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&mut **conn)
        .await
        .unwrap();
}

/// A hot standby of the primary made for one test: `pg_basebackup -R` into a fresh
/// folder, started on a free port; stopped (immediately) and removed on drop.
struct PrivateStandby {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    opts: String,
}

/// Run `args` as the postgres system user when we are root (PostgreSQL refuses to run
/// as root), bounded by `timeout`; panics with its output when it fails.
fn run_pg(args: &[&str]) -> String {
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "timeout", "120"]);
        c
    } else {
        let mut c = Command::new("timeout");
        c.arg("120");
        c
    };
    let out = cmd.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl PrivateStandby {
    async fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("pg_ctl").exists())
            .max()
            .expect("a PostgreSQL version under /usr/lib/postgresql");
        let dir = PathBuf::from(run_pg(&[
            "mktemp",
            "-d",
            "/tmp/cortex-pool-standby.XXXXXXXX",
        ]));
        let url = database_url();
        let (host, port) = {
            let rest = url.split_once('@').map_or(url.as_str(), |(_, r)| r);
            let hostport = rest.split('/').next().unwrap();
            let (h, p) = hostport.split_once(':').unwrap_or((hostport, "5432"));
            (h.to_owned(), p.to_owned())
        };
        // The standby needs at least the primary's values of these.
        let primary = pool(config(&unique_name("standby-setup"), Vec::new())).await;
        let mut opts = String::new();
        for setting in [
            "max_connections",
            "max_worker_processes",
            "max_wal_senders",
            "max_prepared_transactions",
            "max_locks_per_transaction",
        ] {
            let mut conn = primary.acquire().await.unwrap();
            let v: String = sqlx::query_scalar("SELECT current_setting($1)")
                .bind(setting)
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            assert!(v.bytes().all(|b| b.is_ascii_digit()), "{setting} = {v}");
            opts.push_str(&format!(" -c {setting}={v}"));
        }
        primary.close().await;
        let data = dir.join("data");
        let started = Instant::now();
        run_pg(&[
            bin.join("pg_basebackup").to_str().unwrap(),
            "-h",
            &host,
            "-p",
            &port,
            "-U",
            "cortex",
            "-D",
            data.to_str().unwrap(),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "-N",
        ]);
        println!(
            "private standby: pg_basebackup took {:?}",
            started.elapsed()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = Self {
            dir,
            bin,
            port,
            opts,
        };
        s.start_server();
        s
    }

    fn url(&self) -> String {
        format!("postgres://cortex@127.0.0.1:{}/cortex", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.join("data");
        let mut all = vec![
            self.bin.join("pg_ctl").to_str().unwrap().to_owned(),
            "-D".into(),
            data.to_str().unwrap().to_owned(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run_pg(&all);
    }

    fn start_server(&self) {
        let log = self.dir.join("server.log");
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c hot_standby=on \
             -c fsync=off -c shared_preload_libraries=pg_stat_statements{}",
            self.port,
            self.dir.display(),
            self.opts
        );
        self.pg_ctl(&[
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "60",
            "-o",
            &opts,
            "start",
        ]);
    }

    /// Gone at once, as in a crash.
    fn kill(&self) {
        self.pg_ctl(&["-m", "immediate", "-w", "-t", "60", "stop"]);
    }

    async fn sql(&self, query: &'static str) {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.url()).await.unwrap();
        sqlx::query(query).execute(&mut conn).await.unwrap();
        let _ = conn.close().await;
    }
}

impl Drop for PrivateStandby {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        if data.join("postmaster.pid").exists() {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--", "timeout", "60"])
                .arg(self.bin.join("pg_ctl"))
                .args([
                    "-D",
                    data.to_str().unwrap(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_fails_over_and_comes_back_after_restart() {
    let standby = PrivateStandby::start().await;
    let app = unique_name("replica-failover");
    let mut replicas = vec![standby.url()];
    replicas.extend(replica_urls());
    let interval = Duration::from_millis(500);
    let pool = pool(DbConfig {
        replica_check_interval: interval,
        ..config(&app, replicas)
    })
    .await;
    let to_up = wait_replica(&pool, 0, Duration::from_secs(60), "up", |r| r.up).await;
    println!("failover: private standby in rotation {to_up:?} after the pool was built");
    // Warm a connection on the private standby, so its pool holds one the kill breaks.
    for _ in 0..4 {
        let mut conn = pool.acquire_read().await.unwrap();
        assert!(in_recovery(&mut conn).await);
    }

    // A watcher notes when the pool takes the dead standby out, apart from the reads.
    let killed = Instant::now();
    let watcher = {
        let pool = pool.clone();
        tokio::spawn(async move {
            wait_replica(&pool, 0, Duration::from_secs(30), "down", |r| !r.up).await;
            killed.elapsed()
        })
    };
    standby.kill();
    let kill_took = killed.elapsed();
    // Reads go on during the failover: never an error from acquire_read.
    let mut slowest = Duration::ZERO;
    let mut reads = 0;
    while !watcher.is_finished() {
        let t = Instant::now();
        let mut conn = pool.acquire_read().await.unwrap();
        slowest = slowest.max(t.elapsed());
        if conn.replica() != Some("db-replica-0") {
            let one: i32 = sqlx::query_scalar("SELECT 1")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            assert_eq!(one, 1);
        }
        reads += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let detected = watcher.await.unwrap();
    // Out of rotation: every read now lands elsewhere and works.
    for _ in 0..10 {
        let t = Instant::now();
        let mut conn = pool.acquire_read().await.unwrap();
        slowest = slowest.max(t.elapsed());
        assert_ne!(conn.replica(), Some("db-replica-0"));
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(one, 1);
    }
    let status = pool.replicas()[0].clone();
    assert!(
        status.times_down >= 1 && status.last_error.is_some(),
        "{status:?}"
    );

    let restarted = Instant::now();
    standby.start_server();
    let start_took = restarted.elapsed();
    let back = wait_replica(&pool, 0, Duration::from_secs(60), "back up", |r| r.up).await;
    let back_total = restarted.elapsed();
    let mut on_it = false;
    for _ in 0..6 {
        let mut conn = pool.acquire_read().await.unwrap();
        if conn.replica() == Some("db-replica-0") {
            assert!(in_recovery(&mut conn).await);
            on_it = true;
        }
    }
    assert!(on_it, "the restarted standby takes reads again");
    println!(
        "failover (check interval {interval:?}): pg_ctl stop -m immediate took {kill_took:?}; \
         marked down {detected:?} after the kill ({reads} reads meanwhile, none failed); \
         slowest acquire_read during failover {slowest:?}; pg_ctl start took {start_took:?}; \
         back in rotation {back:?} after it answered ({back_total:?} after the restart began)"
    );
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_lagging_past_the_bound_is_taken_out_until_it_catches_up() {
    let standby = PrivateStandby::start().await;
    let app = unique_name("replica-lag");
    let pool = pool(DbConfig {
        replica_max_lag: Duration::from_secs(1),
        ..config(&app, vec![standby.url()])
    })
    .await;
    wait_replica(&pool, 0, Duration::from_secs(60), "up", |r| r.up).await;
    let table = format!("lag_{}", std::process::id());
    let mut primary = pool.acquire().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY)"
    )))
    .execute(&mut **primary)
    .await
    .unwrap();

    standby.sql("SELECT pg_wal_replay_pause()").await;
    let paused = Instant::now();
    // A commit the standby receives but does not replay: its lag, measured from the
    // last replayed commit, grows with the clock past the 1 s bound.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} DEFAULT VALUES"
    )))
    .execute(&mut **primary)
    .await
    .unwrap();
    wait_replica(&pool, 0, Duration::from_secs(30), "out for lag", |r| !r.up).await;
    let why = pool.replicas()[0].last_error.clone().unwrap_or_default();
    assert!(why.contains("lag"), "{why}");
    let out_after = paused.elapsed();
    // Reads go to the primary meanwhile.
    let mut conn = pool.acquire_read().await.unwrap();
    assert_eq!(conn.replica(), None);
    assert!(!in_recovery(&mut conn).await);
    drop(conn);

    standby.sql("SELECT pg_wal_replay_resume()").await;
    let resumed = Instant::now();
    wait_replica(&pool, 0, Duration::from_secs(30), "back up", |r| r.up).await;
    println!(
        "lag: out of rotation {out_after:?} after replay paused (bound 1s); back {:?} after resume",
        resumed.elapsed()
    );
    let mut conn = pool.acquire_read().await.unwrap();
    assert_eq!(conn.replica(), Some("db-replica-0"));
    assert!(in_recovery(&mut conn).await);
    drop(conn);
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&mut **primary)
        .await
        .unwrap();
}

#[tokio::test]
async fn reads_and_writes_each_open_a_pool_acquire_span_under_the_caller() {
    use cortex_support::test_util::spans::Capture;
    use tracing::Instrument;

    let app = unique_name("replica-spans");
    let pool = pool(config(&app, replica_urls())).await;
    wait_replica(&pool, 0, Duration::from_secs(30), "up", |r| r.up).await;
    let (spans, _guard) = Capture::install();
    async {
        let read = pool.acquire_read().await.unwrap();
        assert_eq!(read.replica(), Some("db-replica-0"));
        drop(read);
        drop(pool.acquire().await.unwrap());
    }
    .instrument(tracing::info_span!("request"))
    .await;
    let acquires = spans.named("pool.acquire");
    let pools: Vec<_> = acquires.iter().map(|s| s.field("pool")).collect();
    assert_eq!(pools, [Some("db-read"), Some("db")], "{acquires:?}");
    for span in &acquires {
        assert_eq!(span.parent, Some("request"), "{span:?}");
        assert_eq!(span.field("outcome"), Some("ok"), "{span:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_a_standby_never_takes_reads() {
    // A misconfigured list naming the primary itself (or a promoted replica).
    let app = unique_name("replica-not-standby");
    let pool = pool(config(&app, vec![database_url()])).await;
    let took = wait_replica(&pool, 0, Duration::from_secs(30), "checked", |r| {
        r.last_error.as_deref() != Some("not checked yet")
    })
    .await;
    let status_now = pool.replicas()[0].clone();
    assert!(!status_now.up, "{status_now:?} (checked after {took:?})");
    assert!(
        status_now
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("not a standby")),
        "{status_now:?}"
    );
    let conn = pool.acquire_read().await.unwrap();
    assert_eq!(conn.replica(), None);
}
