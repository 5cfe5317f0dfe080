use std::path::PathBuf;
use std::time::Duration;

use cortex_support::env::{EnvSource, EnvVar, FromEnv};
use cortex_support::redact::{redact_url, serialize_redacted};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Settings of a database pool (PostgreSQL, or SQLite for embedded use).
///
/// | field | variable (aliases) | default |
/// |---|---|---|
/// | `url` | `DATABASE_URL` | `sqlite::memory:` |
/// | `pool_size` | `DB_POOL_SIZE` (`DATABASE_POOL_SIZE`) | 10 |
/// | `max_overflow` | `DB_MAX_OVERFLOW` (`DATABASE_MAX_OVERFLOW`) | 20 |
/// | `pool_timeout` | `DB_POOL_TIMEOUT` (`DATABASE_POOL_TIMEOUT`), s | 30 |
/// | `pool_recycle` | `DB_POOL_RECYCLE`, s | 1800 |
/// | `idle_timeout` | `DB_POOL_IDLE_TIMEOUT`, s | 600 |
/// | `pre_ping` | `DB_POOL_PRE_PING` | true |
/// | `echo` | `DB_ECHO` | false |
/// | `statement_timeout` | `DB_STATEMENT_TIMEOUT` (`DATABASE_STATEMENT_TIMEOUT`), s | 30 |
/// | `command_timeout` | `DB_COMMAND_TIMEOUT`, s | 10 |
/// | `work_mem` | `DB_WORK_MEM` | `8MB` |
/// | `maintenance_work_mem` | `DB_MAINTENANCE_WORK_MEM` | `64MB` |
/// | `async_commit` | `DB_ASYNC_COMMIT` | false |
/// | `application_name` | `DB_APPLICATION_NAME` | `cortex-core` |
/// | `timezone` | `DB_TIMEZONE` | `UTC` |
/// | `statement_cache_size` | `DB_STATEMENT_CACHE_SIZE` | 100 |
/// | `leak_threshold` | `DB_LEAK_THRESHOLD`, s (0 = off) | 60 |
/// | `replica_urls` | `DB_REPLICA_URLS`, comma-separated | none |
/// | `replica_pool_size` | `DB_REPLICA_POOL_SIZE` | as `pool_size` |
/// | `replica_max_lag` | `DB_REPLICA_MAX_LAG`, s | 5 |
/// | `replica_check_interval` | `DB_REPLICA_CHECK_INTERVAL`, s | 2 |
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DbConfig {
    /// Where to connect: `postgres://...` or `sqlite:...`. Serialized with its password
    /// redacted, so a config dump never leaks it. Default: `sqlite::memory:` (embedded,
    /// nothing to install).
    #[serde(serialize_with = "serialize_redacted")]
    pub url: String,
    /// Connections kept open while idle (sqlx `min_connections`). Default: 10.
    pub pool_size: u32,
    /// Connections allowed beyond `pool_size` under load; the maximum is
    /// `pool_size + max_overflow`. Default: 20.
    pub max_overflow: u32,
    /// Longest wait for a connection before [`Error::Timeout`]. Default: 30 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub pool_timeout: Duration,
    /// Connections older than this are closed and replaced (sqlx `max_lifetime`).
    /// Default: 1800 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub pool_recycle: Duration,
    /// Connections idle longer than this are closed, down to `pool_size`. Default: 600 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub idle_timeout: Duration,
    /// Ping an idle connection before handing it out, so a connection the server killed
    /// is replaced instead of failing the caller. Default: true.
    pub pre_ping: bool,
    /// Log every statement at INFO (otherwise only statements slower than 1 s, at WARN).
    /// Default: false.
    pub echo: bool,
    /// Server-side `statement_timeout` of every session. Default: 30 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub statement_timeout: Duration,
    /// Client-side bound for [`DbPool::bounded`](crate::DbPool::bounded), for work the
    /// server cannot time out itself (connect, a stuck network). Default: 10 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub command_timeout: Duration,
    /// `work_mem` of every session (PostgreSQL units: `kB`, `MB`, `GB`, `TB`).
    /// Default: `8MB`.
    pub work_mem: String,
    /// `maintenance_work_mem` of every session. Default: `64MB`.
    pub maintenance_work_mem: String,
    /// `synchronous_commit = off` for every session: faster commits, and the last
    /// transactions may be lost in a server crash. Default: false.
    pub async_commit: bool,
    /// `application_name`, as `pg_stat_activity` shows it. Default: `cortex-core`.
    pub application_name: String,
    /// `TimeZone` of every session. Default: `UTC`.
    pub timezone: String,
    /// Prepared statements cached per connection. Default: 100.
    pub statement_cache_size: usize,
    /// A connection held longer than this logs a warning naming where it was acquired
    /// (and counts in `pool.<name>.leaks`); zero turns it off. Default: 60 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub leak_threshold: Duration,
    /// PostgreSQL hot-standby replicas that `DbPool::acquire_read` (feature `postgres`)
    /// spreads reads over (same user and database as `url`). Serialized with passwords
    /// redacted. Not allowed with SQLite. Default: none (every read goes to `url`).
    #[serde(serialize_with = "serialize_replica_urls")]
    pub replica_urls: Vec<String>,
    /// Connections kept warm per replica; `None` sizes each replica like the primary
    /// (`pool_size`, with the same `max_overflow`). Default: `None`.
    pub replica_pool_size: Option<u32>,
    /// A replica whose replay lags the primary by more than this takes no reads until
    /// it catches up. Default: 5 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub replica_max_lag: Duration,
    /// How often each replica's health and lag are checked; each check is bounded by
    /// the larger of this and 1 s. Default: 2 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub replica_check_interval: Duration,
}

/// Serialize URLs through [`redact_url`], so a config dump never leaks a password.
fn serialize_replica_urls<S: serde::Serializer>(
    urls: &[String],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(urls.iter().map(|u| redact_url(u)))
}

impl Default for DbConfig {
    fn default() -> Self {
        Self {
            url: "sqlite::memory:".to_owned(),
            pool_size: 10,
            max_overflow: 20,
            pool_timeout: Duration::from_secs(30),
            pool_recycle: Duration::from_secs(1800),
            idle_timeout: Duration::from_secs(600),
            pre_ping: true,
            echo: false,
            statement_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(10),
            work_mem: "8MB".to_owned(),
            maintenance_work_mem: "64MB".to_owned(),
            async_commit: false,
            application_name: "cortex-core".to_owned(),
            timezone: "UTC".to_owned(),
            statement_cache_size: 100,
            leak_threshold: Duration::from_secs(60),
            replica_urls: Vec::new(),
            replica_pool_size: None,
            replica_max_lag: Duration::from_secs(5),
            replica_check_interval: Duration::from_secs(2),
        }
    }
}

impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConfig")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("max_overflow", &self.max_overflow)
            .field("pool_timeout", &self.pool_timeout)
            .field("pool_recycle", &self.pool_recycle)
            .field("idle_timeout", &self.idle_timeout)
            .field("pre_ping", &self.pre_ping)
            .field("echo", &self.echo)
            .field("statement_timeout", &self.statement_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("work_mem", &self.work_mem)
            .field("maintenance_work_mem", &self.maintenance_work_mem)
            .field("async_commit", &self.async_commit)
            .field("application_name", &self.application_name)
            .field("timezone", &self.timezone)
            .field("statement_cache_size", &self.statement_cache_size)
            .field("leak_threshold", &self.leak_threshold)
            .field("replica_urls", &self.replica_urls_redacted())
            .field("replica_pool_size", &self.replica_pool_size)
            .field("replica_max_lag", &self.replica_max_lag)
            .field("replica_check_interval", &self.replica_check_interval)
            .finish()
    }
}

impl DbConfig {
    /// Defaults overridden by the process environment ([`DbConfig::VARS`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable when a value does not parse or is
    /// unsafe (a setting that is not a plain value, a pool of zero).
    pub fn from_env() -> Result<Self> {
        <Self as FromEnv>::from_env()
    }
}

impl FromEnv for DbConfig {
    type Error = Error;

    const VARS: &'static [EnvVar] = &[
        EnvVar {
            name: "DATABASE_URL",
            default: "sqlite::memory:",
            doc: "Where to connect: `postgres://...` (TLS: `?sslmode=require`, `verify-full&sslrootcert=ca.pem`) or `sqlite:...`.",
        },
        EnvVar {
            name: "DB_POOL_SIZE",
            default: "10",
            doc: "Connections kept open while idle (alias `DATABASE_POOL_SIZE`).",
        },
        EnvVar {
            name: "DB_MAX_OVERFLOW",
            default: "20",
            doc: "Connections allowed beyond the pool size under load (alias `DATABASE_MAX_OVERFLOW`).",
        },
        EnvVar {
            name: "DB_POOL_TIMEOUT",
            default: "30s",
            doc: "Longest wait for a connection (alias `DATABASE_POOL_TIMEOUT`).",
        },
        EnvVar {
            name: "DB_POOL_RECYCLE",
            default: "1800s",
            doc: "Connections older than this are replaced.",
        },
        EnvVar {
            name: "DB_POOL_IDLE_TIMEOUT",
            default: "600s",
            doc: "Idle connections are closed after this, down to the pool size.",
        },
        EnvVar {
            name: "DB_POOL_PRE_PING",
            default: "true",
            doc: "Ping an idle connection before handing it out.",
        },
        EnvVar {
            name: "DB_ECHO",
            default: "false",
            doc: "Log every statement at INFO (slow ones are always logged at WARN).",
        },
        EnvVar {
            name: "DB_STATEMENT_TIMEOUT",
            default: "30s",
            doc: "Server-side `statement_timeout` of every session (alias `DATABASE_STATEMENT_TIMEOUT`).",
        },
        EnvVar {
            name: "DB_COMMAND_TIMEOUT",
            default: "10s",
            doc: "Client-side bound of `DbPool::bounded`.",
        },
        EnvVar {
            name: "DB_WORK_MEM",
            default: "8MB",
            doc: "`work_mem` of every session.",
        },
        EnvVar {
            name: "DB_MAINTENANCE_WORK_MEM",
            default: "64MB",
            doc: "`maintenance_work_mem` of every session.",
        },
        EnvVar {
            name: "DB_ASYNC_COMMIT",
            default: "false",
            doc: "`synchronous_commit = off` for every session.",
        },
        EnvVar {
            name: "DB_APPLICATION_NAME",
            default: "cortex-core",
            doc: "`application_name`, as `pg_stat_activity` shows it.",
        },
        EnvVar {
            name: "DB_TIMEZONE",
            default: "UTC",
            doc: "`TimeZone` of every session.",
        },
        EnvVar {
            name: "DB_STATEMENT_CACHE_SIZE",
            default: "100",
            doc: "Prepared statements cached per connection.",
        },
        EnvVar {
            name: "DB_LEAK_THRESHOLD",
            default: "60s",
            doc: "Warn when a connection is held longer (0 = off).",
        },
        EnvVar {
            name: "DB_REPLICA_URLS",
            default: "unset",
            doc: "Comma-separated `postgres://` URLs of hot-standby read replicas for `acquire_read` (PostgreSQL only).",
        },
        EnvVar {
            name: "DB_REPLICA_POOL_SIZE",
            default: "unset",
            doc: "Connections kept warm per replica (unset: as `DB_POOL_SIZE`).",
        },
        EnvVar {
            name: "DB_REPLICA_MAX_LAG",
            default: "5s",
            doc: "A replica whose replay lags more than this takes no reads until it catches up.",
        },
        EnvVar {
            name: "DB_REPLICA_CHECK_INTERVAL",
            default: "2s",
            doc: "How often each replica's health and lag are checked.",
        },
    ];

    fn from_env_source(env: &EnvSource<'_>) -> Result<Self> {
        let mut c = Self::default();
        if let Some(v) = env.var("DATABASE_URL") {
            c.url = v;
        }
        if let Some(v) = parse_any(env, &["DB_POOL_SIZE", "DATABASE_POOL_SIZE"])? {
            c.pool_size = v;
        }
        if let Some(v) = parse_any(env, &["DB_MAX_OVERFLOW", "DATABASE_MAX_OVERFLOW"])? {
            c.max_overflow = v;
        }
        if let Some(v) = secs_any(env, &["DB_POOL_TIMEOUT", "DATABASE_POOL_TIMEOUT"])? {
            c.pool_timeout = v;
        }
        if let Some(v) = env.duration("DB_POOL_RECYCLE")? {
            c.pool_recycle = v;
        }
        if let Some(v) = env.duration("DB_POOL_IDLE_TIMEOUT")? {
            c.idle_timeout = v;
        }
        if let Some(v) = env.bool("DB_POOL_PRE_PING")? {
            c.pre_ping = v;
        }
        if let Some(v) = env.bool("DB_ECHO")? {
            c.echo = v;
        }
        if let Some(v) = secs_any(env, &["DB_STATEMENT_TIMEOUT", "DATABASE_STATEMENT_TIMEOUT"])? {
            c.statement_timeout = v;
        }
        if let Some(v) = env.duration("DB_COMMAND_TIMEOUT")? {
            c.command_timeout = v;
        }
        if let Some(v) = env.var("DB_WORK_MEM") {
            c.work_mem = v;
        }
        if let Some(v) = env.var("DB_MAINTENANCE_WORK_MEM") {
            c.maintenance_work_mem = v;
        }
        if let Some(v) = env.bool("DB_ASYNC_COMMIT")? {
            c.async_commit = v;
        }
        if let Some(v) = env.var("DB_APPLICATION_NAME") {
            c.application_name = v;
        }
        if let Some(v) = env.var("DB_TIMEZONE") {
            c.timezone = v;
        }
        if let Some(v) = env.parse("DB_STATEMENT_CACHE_SIZE")? {
            c.statement_cache_size = v;
        }
        if let Some(v) = env.duration("DB_LEAK_THRESHOLD")? {
            c.leak_threshold = v;
        }
        if let Some(v) = env.var("DB_REPLICA_URLS") {
            c.replica_urls = url_list("DB_REPLICA_URLS", &v)?;
        }
        if let Some(v) = env.parse("DB_REPLICA_POOL_SIZE")? {
            c.replica_pool_size = Some(v);
        }
        if let Some(v) = env.duration("DB_REPLICA_MAX_LAG")? {
            c.replica_max_lag = v;
        }
        if let Some(v) = env.duration("DB_REPLICA_CHECK_INTERVAL")? {
            c.replica_check_interval = v;
        }
        c.validate()?;
        Ok(c)
    }
}

impl DbConfig {
    /// Check every value. Session settings must be plain values (they are sent as
    /// connection parameters, never formatted into SQL, and checked here as well).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable of the first bad value.
    pub fn validate(&self) -> Result<()> {
        // Checked: the sum is the pool's ceiling, and `u32::MAX` in either overflowed it
        // (a panic in debug builds, a wrapped ceiling in release). The driver allocates
        // room for the whole ceiling up front, so a few billion aborted the process out
        // of memory; no server takes more than PostgreSQL's 262143 connections anyway.
        match self.pool_size.checked_add(self.max_overflow) {
            Some(0) => {
                return Err(invalid(
                    "DB_POOL_SIZE",
                    "0",
                    "pool_size + max_overflow must be at least 1",
                ));
            }
            Some(n) if n <= MAX_CONNECTIONS => {}
            _ => {
                return Err(invalid(
                    "DB_POOL_SIZE",
                    &format!("{} + {}", self.pool_size, self.max_overflow),
                    "DB_POOL_SIZE + DB_MAX_OVERFLOW (or DATABASE_POOL_SIZE + \
                     DATABASE_MAX_OVERFLOW) must be at most 262143, PostgreSQL's most connections",
                ));
            }
        }
        if self.pool_timeout.is_zero() {
            return Err(invalid("DB_POOL_TIMEOUT", "0", "must be more than zero"));
        }
        memory_setting("DB_WORK_MEM", &self.work_mem)?;
        memory_setting("DB_MAINTENANCE_WORK_MEM", &self.maintenance_work_mem)?;
        plain_setting("DB_APPLICATION_NAME", &self.application_name, |c| {
            c.is_ascii_alphanumeric() || "-_.:".contains(c)
        })?;
        plain_setting("DB_TIMEZONE", &self.timezone, |c| {
            c.is_ascii_alphanumeric() || "-_/+".contains(c)
        })?;
        if !(self.url.starts_with("postgres://")
            || self.url.starts_with("postgresql://")
            || self.url.starts_with("sqlite:"))
        {
            return Err(invalid(
                "DATABASE_URL",
                &redact_url(&self.url),
                "expected postgres://, postgresql:// or sqlite:",
            ));
        }
        if !cfg!(feature = "tls")
            && self.is_postgres()
            && let Some(mode) = url_param(&self.url, &["sslmode", "ssl-mode"])
            && requires_tls(&mode)
        {
            return Err(invalid(
                "DATABASE_URL",
                &redact_url(&self.url),
                &format!("sslmode={mode} needs TLS: enable the `tls` feature of cortex-pool"),
            ));
        }
        self.validate_replicas()
    }

    /// The replica settings: PostgreSQL URLs only, and only beside a PostgreSQL primary.
    fn validate_replicas(&self) -> Result<()> {
        if self.replica_urls.is_empty() {
            return Ok(());
        }
        if !self.is_postgres() {
            return Err(invalid(
                "DB_REPLICA_URLS",
                &self.replica_urls_redacted(),
                "read replicas need a PostgreSQL DATABASE_URL (SQLite has no replicas)",
            ));
        }
        for url in &self.replica_urls {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(invalid(
                    "DB_REPLICA_URLS",
                    &redact_url(url),
                    "expected postgres:// or postgresql://",
                ));
            }
            if !cfg!(feature = "tls")
                && let Some(mode) = url_param(url, &["sslmode", "ssl-mode"])
                && requires_tls(&mode)
            {
                return Err(invalid(
                    "DB_REPLICA_URLS",
                    &redact_url(url),
                    &format!("sslmode={mode} needs TLS: enable the `tls` feature of cortex-pool"),
                ));
            }
        }
        if self.replica_pool_size == Some(0) && self.max_overflow == 0 {
            return Err(invalid(
                "DB_REPLICA_POOL_SIZE",
                "0",
                "replica pool size + DB_MAX_OVERFLOW must be at least 1",
            ));
        }
        if self.replica_max_lag.is_zero() {
            return Err(invalid("DB_REPLICA_MAX_LAG", "0", "must be more than zero"));
        }
        if self.replica_check_interval.is_zero() {
            return Err(invalid(
                "DB_REPLICA_CHECK_INTERVAL",
                "0",
                "must be more than zero",
            ));
        }
        Ok(())
    }

    /// The replica URLs, passwords redacted, comma-separated (for errors and `Debug`).
    fn replica_urls_redacted(&self) -> String {
        self.replica_urls
            .iter()
            .map(|u| redact_url(u))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `pool_size + max_overflow`: the most connections the pool opens.
    pub fn max_connections(&self) -> u32 {
        self.pool_size.saturating_add(self.max_overflow)
    }

    /// `true` when `url` names a PostgreSQL server.
    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres")
    }
}

/// Settings of a Redis pool.
///
/// | field | variable | default |
/// |---|---|---|
/// | `url` | `REDIS_URL` | `redis://127.0.0.1:6379` |
/// | `pool_size` | `REDIS_POOL_SIZE` | 10 |
/// | `pool_timeout` | `REDIS_POOL_TIMEOUT`, s | 5 |
/// | `pool_recycle` | `REDIS_POOL_RECYCLE`, s | 1800 |
/// | `idle_timeout` | `REDIS_POOL_IDLE_TIMEOUT`, s | 600 |
/// | `pre_ping` | `REDIS_POOL_PRE_PING` | true |
/// | `client_name` | `REDIS_CLIENT_NAME` | `cortex-core` |
/// | `leak_threshold` | `REDIS_LEAK_THRESHOLD`, s (0 = off) | 60 |
/// | `tls_ca_file` | `REDIS_TLS_CA_FILE` | none (system roots) |
/// | `cluster_urls` | `REDIS_CLUSTER_URLS` (comma-separated seeds) | none (single node at `url`) |
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    /// Where to connect. Serialized with its password redacted.
    /// Default: `redis://127.0.0.1:6379`.
    #[serde(serialize_with = "serialize_redacted")]
    pub url: String,
    /// Most connections. Default: 10.
    pub pool_size: u32,
    /// Longest wait for a connection before [`Error::Timeout`]. Default: 5 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub pool_timeout: Duration,
    /// Connections older than this are replaced. Default: 1800 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub pool_recycle: Duration,
    /// Idle connections are closed after this. Default: 600 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub idle_timeout: Duration,
    /// `PING` a connection before handing it out. Default: true.
    pub pre_ping: bool,
    /// `CLIENT SETNAME` of every connection, as `CLIENT LIST` shows it.
    /// Default: `cortex-core`.
    pub client_name: String,
    /// A connection held longer than this logs a warning naming where it was acquired;
    /// zero turns it off. Default: 60 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub leak_threshold: Duration,
    /// A PEM file of the CA(s) that sign the server's certificate, for a `rediss://`
    /// server with a private CA; it replaces the system's roots. Only with a
    /// `rediss://` URL (and the `tls` feature). Default: none (the system's roots).
    pub tls_ca_file: Option<PathBuf>,
    /// Seed nodes of a Redis Cluster (`redis://` or `rediss://`, any of its nodes; the
    /// client learns the rest from `CLUSTER SLOTS`). When not empty the pool runs in
    /// cluster mode and `url` is not used. Serialized with passwords redacted.
    /// Default: empty (a single server at `url`).
    #[serde(serialize_with = "serialize_redacted_seeds")]
    pub cluster_urls: Vec<String>,
}

/// Redis Cluster seeds, each with its password redacted.
fn serialize_redacted_seeds<S: serde::Serializer>(
    urls: &[String],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(urls.iter().map(|u| redact_url(u)))
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            pool_size: 10,
            pool_timeout: Duration::from_secs(5),
            pool_recycle: Duration::from_secs(1800),
            idle_timeout: Duration::from_secs(600),
            pre_ping: true,
            client_name: "cortex-core".to_owned(),
            leak_threshold: Duration::from_secs(60),
            tls_ca_file: None,
            cluster_urls: Vec::new(),
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("pool_timeout", &self.pool_timeout)
            .field("pool_recycle", &self.pool_recycle)
            .field("idle_timeout", &self.idle_timeout)
            .field("pre_ping", &self.pre_ping)
            .field("client_name", &self.client_name)
            .field("leak_threshold", &self.leak_threshold)
            .field("tls_ca_file", &self.tls_ca_file)
            .field(
                "cluster_urls",
                &self
                    .cluster_urls
                    .iter()
                    .map(|u| redact_url(u))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl RedisConfig {
    /// Defaults overridden by the process environment ([`RedisConfig::VARS`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable when a value does not parse.
    pub fn from_env() -> Result<Self> {
        <Self as FromEnv>::from_env()
    }
}

impl FromEnv for RedisConfig {
    type Error = Error;

    const VARS: &'static [EnvVar] = &[
        EnvVar {
            name: "REDIS_URL",
            default: "redis://127.0.0.1:6379",
            doc: "Where to connect: `redis://`, `rediss://` (TLS) or `redis+unix://`.",
        },
        EnvVar {
            name: "REDIS_POOL_SIZE",
            default: "10",
            doc: "Most Redis connections.",
        },
        EnvVar {
            name: "REDIS_POOL_TIMEOUT",
            default: "5s",
            doc: "Longest wait for a Redis connection.",
        },
        EnvVar {
            name: "REDIS_POOL_RECYCLE",
            default: "1800s",
            doc: "Redis connections older than this are replaced.",
        },
        EnvVar {
            name: "REDIS_POOL_IDLE_TIMEOUT",
            default: "600s",
            doc: "Idle Redis connections are closed after this.",
        },
        EnvVar {
            name: "REDIS_POOL_PRE_PING",
            default: "true",
            doc: "`PING` a connection before handing it out.",
        },
        EnvVar {
            name: "REDIS_CLIENT_NAME",
            default: "cortex-core",
            doc: "`CLIENT SETNAME` of every connection.",
        },
        EnvVar {
            name: "REDIS_LEAK_THRESHOLD",
            default: "60s",
            doc: "Warn when a Redis connection is held longer (0 = off).",
        },
        EnvVar {
            name: "REDIS_TLS_CA_FILE",
            default: "unset",
            doc: "PEM file of the CA that signs a `rediss://` server's certificate (unset: the system's roots).",
        },
        EnvVar {
            name: "REDIS_CLUSTER_URLS",
            default: "unset",
            doc: "Comma-separated seed nodes of a Redis Cluster (`redis://` or `rediss://`); set, the pool runs in cluster mode and `REDIS_URL` is not used.",
        },
    ];

    fn from_env_source(env: &EnvSource<'_>) -> Result<Self> {
        let mut c = Self::default();
        if let Some(v) = env.var("REDIS_URL") {
            c.url = v;
        }
        if let Some(v) = env.parse("REDIS_POOL_SIZE")? {
            c.pool_size = v;
        }
        if let Some(v) = env.duration("REDIS_POOL_TIMEOUT")? {
            c.pool_timeout = v;
        }
        if let Some(v) = env.duration("REDIS_POOL_RECYCLE")? {
            c.pool_recycle = v;
        }
        if let Some(v) = env.duration("REDIS_POOL_IDLE_TIMEOUT")? {
            c.idle_timeout = v;
        }
        if let Some(v) = env.bool("REDIS_POOL_PRE_PING")? {
            c.pre_ping = v;
        }
        if let Some(v) = env.var("REDIS_CLIENT_NAME") {
            c.client_name = v;
        }
        if let Some(v) = env.duration("REDIS_LEAK_THRESHOLD")? {
            c.leak_threshold = v;
        }
        if let Some(v) = env.var("REDIS_TLS_CA_FILE").filter(|v| !v.is_empty()) {
            c.tls_ca_file = Some(PathBuf::from(v));
        }
        if let Some(v) = env.var("REDIS_CLUSTER_URLS") {
            c.cluster_urls = url_list("REDIS_CLUSTER_URLS", &v)?;
        }
        c.validate()?;
        Ok(c)
    }
}

impl RedisConfig {
    /// Check every value.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable of the first bad value.
    pub fn validate(&self) -> Result<()> {
        if self.pool_size == 0 {
            return Err(invalid("REDIS_POOL_SIZE", "0", "must be at least 1"));
        }
        if self.pool_timeout.is_zero() {
            return Err(invalid("REDIS_POOL_TIMEOUT", "0", "must be more than zero"));
        }
        if !(self.url.starts_with("redis://")
            || self.url.starts_with("rediss://")
            || self.url.starts_with("redis+unix://"))
        {
            return Err(invalid(
                "REDIS_URL",
                &redact_url(&self.url),
                "expected redis://, rediss:// or redis+unix://",
            ));
        }
        if !self.is_cluster() && self.is_tls() && !cfg!(feature = "tls") {
            return Err(invalid(
                "REDIS_URL",
                &redact_url(&self.url),
                "rediss:// needs TLS: enable the `tls` feature of cortex-pool",
            ));
        }
        for url in &self.cluster_urls {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(invalid(
                    "REDIS_CLUSTER_URLS",
                    &redact_url(url),
                    "expected redis:// or rediss:// (a cluster node is reached over TCP)",
                ));
            }
        }
        if self.is_cluster()
            && self
                .cluster_urls
                .iter()
                .any(|u| u.starts_with("rediss://") != self.is_tls())
        {
            return Err(invalid(
                "REDIS_CLUSTER_URLS",
                &self
                    .cluster_urls
                    .iter()
                    .map(|u| redact_url(u))
                    .collect::<Vec<_>>()
                    .join(","),
                "mixes redis:// and rediss:// seeds: a cluster is all TLS or all plain",
            ));
        }
        if let Some(seed) = self.cluster_urls.first()
            && self.is_tls()
            && !cfg!(feature = "tls")
        {
            return Err(invalid(
                "REDIS_CLUSTER_URLS",
                &redact_url(seed),
                "rediss:// needs TLS: enable the `tls` feature of cortex-pool",
            ));
        }
        if let Some(ca) = &self.tls_ca_file
            && !self.is_tls()
        {
            return Err(invalid(
                "REDIS_TLS_CA_FILE",
                &ca.display().to_string(),
                "a CA file applies only to a rediss:// URL",
            ));
        }
        // Redis client names may not contain spaces or newlines.
        plain_setting("REDIS_CLIENT_NAME", &self.client_name, |c| {
            c.is_ascii_graphic()
        })
    }
}

impl RedisConfig {
    /// `true` when the pool connects over TLS: `url`, or in cluster mode the cluster
    /// seeds, are `rediss://`.
    pub fn is_tls(&self) -> bool {
        match self.cluster_urls.first() {
            Some(seed) => seed.starts_with("rediss://"),
            None => self.url.starts_with("rediss://"),
        }
    }

    /// `true` when [`cluster_urls`](Self::cluster_urls) names a Redis Cluster: the
    /// pool then routes every command by hash slot.
    pub fn is_cluster(&self) -> bool {
        !self.cluster_urls.is_empty()
    }
}

/// The value of the first query parameter of `url` named one of `keys`.
fn url_param(url: &str, keys: &[&str]) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        keys.contains(&k).then(|| v.to_owned())
    })
}

/// PostgreSQL `sslmode` values that refuse a plain connection.
fn requires_tls(mode: &str) -> bool {
    ["require", "verify-ca", "verify-full"].contains(&mode.to_ascii_lowercase().as_str())
}

/// A comma-separated list of URLs. Set but naming none (`","`) is an error: read as
/// "no replicas" or "no cluster", it silently dropped the scale-out the variable asked for.
fn url_list(key: &'static str, value: &str) -> Result<Vec<String>> {
    let urls: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    if urls.is_empty() {
        return Err(invalid(key, value, "lists no URL (unset it for none)"));
    }
    Ok(urls)
}

/// The most connections a database pool may open: PostgreSQL's limit on
/// `max_connections` (2^18 - 1).
const MAX_CONNECTIONS: u32 = 262_143;

fn invalid(key: &'static str, value: &str, reason: &str) -> Error {
    Error::InvalidConfig {
        key,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn parse_any(env: &EnvSource<'_>, keys: &[&'static str]) -> Result<Option<u32>> {
    match env.var_any(keys) {
        Some((key, v)) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|e: std::num::ParseIntError| invalid(key, &v, &e.to_string())),
        None => Ok(None),
    }
}

fn secs_any(env: &EnvSource<'_>, keys: &[&'static str]) -> Result<Option<Duration>> {
    match env.var_any(keys) {
        Some((key, _)) => Ok(env.duration(key)?),
        None => Ok(None),
    }
}

/// A PostgreSQL memory value: digits and an optional unit (`kB`, `MB`, `GB`, `TB`, `B`).
fn memory_setting(key: &'static str, value: &str) -> Result<()> {
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    let unit = &value[digits..];
    if digits == 0 || !["", "B", "kB", "MB", "GB", "TB"].contains(&unit) {
        return Err(invalid(
            key,
            value,
            "expected a whole number with an optional unit kB, MB, GB or TB, e.g. 8MB",
        ));
    }
    Ok(())
}

fn plain_setting(key: &'static str, value: &str, allowed: impl Fn(char) -> bool) -> Result<()> {
    if value.is_empty() || value.len() > 63 || !value.chars().all(allowed) {
        return Err(invalid(
            key,
            value,
            "must be 1 to 63 plain characters (letters, digits and - _ . : / +)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<DbConfig> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| map.get(k).cloned();
        DbConfig::from_env_source(&EnvSource::from_fn(&lookup))
    }

    #[test]
    fn injection_in_a_setting_is_an_error_naming_the_variable() {
        let err = from(&[("DB_WORK_MEM", "8MB'; DROP TABLE t; --")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("DB_WORK_MEM"), "{text}");
        assert!(matches!(
            err,
            Error::InvalidConfig {
                key: "DB_WORK_MEM",
                ..
            }
        ));
        assert!(from(&[("DB_MAINTENANCE_WORK_MEM", "64 MB")]).is_err());
        assert!(from(&[("DB_TIMEZONE", "UTC; RESET ALL")]).is_err());
        assert!(from(&[("DB_APPLICATION_NAME", "a b")]).is_err());
    }

    #[test]
    fn aliases_and_defaults() {
        let c = from(&[
            ("DATABASE_POOL_SIZE", "4"),
            ("DB_MAX_OVERFLOW", "1"),
            ("DATABASE_STATEMENT_TIMEOUT", "2.5"),
        ])
        .unwrap();
        assert_eq!((c.pool_size, c.max_connections()), (4, 5));
        assert_eq!(c.statement_timeout, Duration::from_millis(2500));
        let err = from(&[("DATABASE_POOL_SIZE", "many")]).unwrap_err();
        assert!(err.to_string().contains("DATABASE_POOL_SIZE"));
        assert_eq!(from(&[]).unwrap(), DbConfig::default());
    }

    fn redis(vars: &[(&str, &str)]) -> Result<RedisConfig> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| map.get(k).cloned();
        RedisConfig::from_env_source(&EnvSource::from_fn(&lookup))
    }

    /// A URL list that is set but names no URL is refused by name: read as empty, it
    /// meant no replicas, or (for the cluster) the single server at the default URL.
    /// Either count at `u32::MAX` overflowed their sum in `validate` (a panic); a
    /// ceiling of billions aborted the process when the pool was built.
    #[test]
    fn a_pool_ceiling_past_the_limit_is_an_error_not_an_overflow() {
        for (k, v) in [
            ("DB_POOL_SIZE", "4294967295"),
            ("DB_MAX_OVERFLOW", "4294967295"),
            ("DATABASE_POOL_SIZE", "4294967295"),
            ("DATABASE_MAX_OVERFLOW", "4294967295"),
        ] {
            let err = from(&[(k, v)]).unwrap_err().to_string();
            assert!(err.contains(k) && err.contains("4294967295"), "{err}");
        }
        let c = from(&[("DB_POOL_SIZE", "262123")]).unwrap();
        assert_eq!(c.max_connections(), MAX_CONNECTIONS);
        let err = from(&[("DB_POOL_SIZE", "262124")]).unwrap_err().to_string();
        assert!(
            err.contains("262124 + 20") && err.contains("262143"),
            "{err}"
        );
    }

    #[test]
    fn a_url_list_naming_no_url_is_an_error() {
        let pg = ("DATABASE_URL", "postgres://app@127.0.0.1/app");
        for v in [",", ",,", " , "] {
            let err = from(&[pg, ("DB_REPLICA_URLS", v)]).unwrap_err();
            assert!(err.to_string().contains("DB_REPLICA_URLS"), "{err}");
            let err = redis(&[("REDIS_CLUSTER_URLS", v)]).unwrap_err();
            assert!(err.to_string().contains("REDIS_CLUSTER_URLS"), "{err}");
        }
        let c = redis(&[("REDIS_CLUSTER_URLS", "redis://127.0.0.1:7000,")]).unwrap();
        assert_eq!(c.cluster_urls, ["redis://127.0.0.1:7000"]);
    }

    /// Without the `tls` feature a URL that asks for TLS is refused up front, naming
    /// the feature, instead of failing at connect time.
    #[cfg(not(feature = "tls"))]
    #[test]
    fn without_tls_a_tls_url_is_refused_naming_the_feature() {
        for mode in ["require", "verify-ca", "verify-full", "REQUIRE"] {
            let url = format!("postgres://u:hunter2@h/db?application_name=x&sslmode={mode}");
            let err = from(&[("DATABASE_URL", &url)]).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidConfig { key: "DATABASE_URL", reason, .. } if reason.contains("`tls` feature")),
                "{err}"
            );
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        assert!(from(&[("DATABASE_URL", "postgres://h/db?ssl-mode=require")]).is_err());
        for mode in ["disable", "prefer", "allow"] {
            let url = format!("postgres://h/db?sslmode={mode}");
            assert!(from(&[("DATABASE_URL", &url)]).is_ok(), "{mode}");
        }
        let err = redis(&[("REDIS_URL", "rediss://:hunter2@h:6380")]).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig { key: "REDIS_URL", reason, .. } if reason.contains("`tls` feature")),
            "{err}"
        );
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn with_tls_tls_urls_are_accepted() {
        let url = "postgres://h/db?sslmode=verify-full&sslrootcert=/ca.pem";
        assert!(from(&[("DATABASE_URL", url)]).is_ok());
        let c = redis(&[
            ("REDIS_URL", "rediss://h:6380"),
            ("REDIS_TLS_CA_FILE", "/ca.pem"),
        ])
        .unwrap();
        assert_eq!(
            c.tls_ca_file.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
    }

    #[test]
    fn a_ca_file_needs_a_tls_url() {
        let err = redis(&[
            ("REDIS_URL", "redis://h:6379"),
            ("REDIS_TLS_CA_FILE", "/ca.pem"),
        ])
        .unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidConfig {
                key: "REDIS_TLS_CA_FILE",
                ..
            }
        ));
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("redis://:pw@h"), "redis://:***@h");
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
        let c = DbConfig {
            url: "postgres://u:hunter2@h/db".into(),
            ..DbConfig::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let err = from(&[("DATABASE_URL", "mysql://u:hunter2@h/db")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
