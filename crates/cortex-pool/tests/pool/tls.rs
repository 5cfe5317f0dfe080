//! TLS to PostgreSQL and Redis against real TLS-only servers.
//!
//! The test binary starts them itself, once, with `scripts/services.sh tls` (a throwaway
//! CA, a server certificate for 127.0.0.1, a PostgreSQL cluster that accepts only
//! `hostssl` connections and a redis-server with only a TLS port), reusing servers that
//! already answer. If they cannot be started every test here fails, with the script's
//! output.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use cortex_pool::{DbConfig, DbPool, Error, PoolMetrics, RedisConfig, RedisPool};

/// What `scripts/services.sh tls` exports.
#[derive(Debug)]
struct TlsServers {
    ca_file: PathBuf,
    other_ca_file: PathBuf,
    /// `postgres://...?sslmode=require`.
    database_url: String,
    /// `rediss://...`.
    redis_url: String,
}

fn servers() -> &'static TlsServers {
    static SERVERS: OnceLock<TlsServers> = OnceLock::new();
    SERVERS.get_or_init(start)
}

/// Runs the script through bash's own `eval` (so its shell quoting is undone by the
/// shell) and prints the four values one per line.
fn start() -> TlsServers {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services.sh");
    let out = Command::new("bash")
        .arg("-c")
        .arg(
            r#"set -e; exports=$(bash "$1" tls); eval "$exports"
               printf '%s\n' "$TLS_CA_FILE" "$TLS_OTHER_CA_FILE" "$TLS_DATABASE_URL" "$TLS_REDIS_URL""#,
        )
        .arg("bash")
        .arg(&script)
        .env("CORTEX_SERVICES_WAIT", "20")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`scripts/services.sh tls` could not start the TLS servers ({}):\n{stderr}",
        out.status
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let [ca, other, db, redis] = lines[..] else {
        panic!("`scripts/services.sh tls` printed {stdout:?} (stderr: {stderr})");
    };
    for value in [ca, other, db, redis] {
        assert!(
            !value.is_empty(),
            "an export is empty: {stdout:?}\n{stderr}"
        );
    }
    TlsServers {
        ca_file: ca.into(),
        other_ca_file: other.into(),
        database_url: db.to_owned(),
        redis_url: redis.to_owned(),
    }
}

/// The TLS database URL with `sslmode=verify-full` and `ca` as the root.
fn verify_full_url(ca: &Path) -> String {
    let base = servers()
        .database_url
        .split_once('?')
        .map_or(servers().database_url.as_str(), |(b, _)| b);
    format!("{base}?sslmode=verify-full&sslrootcert={}", ca.display())
}

fn db_config(url: String) -> DbConfig {
    DbConfig {
        url,
        pool_size: 1,
        max_overflow: 1,
        pool_timeout: Duration::from_secs(10),
        ..DbConfig::default()
    }
}

/// Whether the session of `pool`'s connection is encrypted, as the server sees it.
async fn session_is_tls(pool: &DbPool<sqlx::Postgres>) -> bool {
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut **conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn postgres_sslmode_require_runs_queries_over_tls() {
    let url = servers().database_url.clone();
    assert!(url.contains("sslmode=require"), "{url}");
    let pool = DbPool::postgres_with(db_config(url), PoolMetrics::disabled())
        .await
        .unwrap_or_else(|e| panic!("sslmode=require failed: {e} ({:?})", e.source_chain()));
    let mut conn = pool.acquire().await.unwrap();
    let n: i32 = sqlx::query_scalar("SELECT 40 + 2")
        .fetch_one(&mut **conn)
        .await
        .unwrap();
    assert_eq!(n, 42);
    drop(conn);
    assert!(
        session_is_tls(&pool).await,
        "pg_stat_ssl says the session is plain"
    );
}

#[tokio::test]
async fn postgres_verify_full_accepts_the_right_ca() {
    let url = verify_full_url(&servers().ca_file);
    let pool = DbPool::postgres_with(db_config(url), PoolMetrics::disabled())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "verify-full with the CA failed: {e} ({:?})",
                e.source_chain()
            )
        });
    assert!(session_is_tls(&pool).await);
}

#[tokio::test]
async fn postgres_verify_full_refuses_a_server_a_wrong_ca_did_not_sign() {
    let url = verify_full_url(&servers().other_ca_file);
    let err = DbPool::postgres_with(db_config(url), PoolMetrics::disabled())
        .await
        .expect_err("verify-full trusted a certificate its CA did not sign");
    // sqlx reports a failed handshake as an I/O error whose inner error is rustls's.
    let Error::Database(sqlx::Error::Io(io)) = &err else {
        panic!("expected sqlx's I/O error of the handshake, got {err:?}");
    };
    let tls = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(tls, Some(rustls::Error::InvalidCertificate(_))),
        "expected rustls's InvalidCertificate, got {err:?}"
    );
    assert!(
        !err.is_retryable(),
        "a certificate mismatch is not retryable"
    );
}

fn redis_config(ca: Option<&Path>) -> RedisConfig {
    RedisConfig {
        url: servers().redis_url.clone(),
        pool_size: 1,
        pool_timeout: Duration::from_secs(10),
        client_name: crate::unique_name("tls"),
        tls_ca_file: ca.map(Path::to_path_buf),
        ..RedisConfig::default()
    }
}

#[tokio::test]
async fn rediss_ping_works_with_the_ca() {
    let config = redis_config(Some(&servers().ca_file));
    assert!(config.url.starts_with("rediss://"), "{}", config.url);
    let pool = RedisPool::with_metrics(config, PoolMetrics::disabled())
        .await
        .unwrap_or_else(|e| panic!("rediss:// with the CA failed: {e} ({:?})", e.source_chain()));
    pool.health().await.unwrap();
    // The client other components take from the pool carries the CA too.
    let mut conn = pool
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test]
async fn rediss_fails_without_the_ca_or_with_a_wrong_one() {
    for ca in [None, Some(servers().other_ca_file.as_path())] {
        let err = RedisPool::with_metrics(redis_config(ca), PoolMetrics::disabled())
            .await
            .expect_err("rediss:// trusted a certificate no trusted CA signed");
        assert!(matches!(err, Error::Redis(_)), "ca {ca:?}: {err:?}");
    }
}

#[tokio::test]
async fn a_ca_file_that_is_not_a_certificate_is_a_config_error() {
    let missing = std::env::temp_dir().join(crate::unique_name("no-such-ca"));
    let err = redis_config(Some(&missing)).client().unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig { key: "REDIS_TLS_CA_FILE", value, .. } if value.contains("no-such-ca")),
        "{err:?}"
    );
    // A file that exists but is not PEM (the script itself).
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services.sh");
    let err = redis_config(Some(&script)).client().unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidConfig {
                key: "REDIS_TLS_CA_FILE",
                ..
            }
        ),
        "{err:?}"
    );
}

/// The chain of `source()`s, to show what a failure was made of.
trait SourceChain {
    fn source_chain(&self) -> Vec<String>;
}

impl SourceChain for Error {
    fn source_chain(&self) -> Vec<String> {
        let mut chain = Vec::new();
        let mut cur = std::error::Error::source(self);
        while let Some(e) = cur {
            chain.push(e.to_string());
            cur = e.source();
        }
        chain
    }
}
