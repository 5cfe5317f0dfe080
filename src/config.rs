//! [`CortexConfig`]: the config of every part, read from the environment in one call.

use std::fmt;

use cortex_batch::BatchConfig;
use cortex_cache::RedisCacheConfig;
use cortex_mcp::McpClientConfig;
use cortex_metrics::MetricsConfig;
use cortex_pool::{DbConfig, LimiterConfig, RedisConfig};
use cortex_profile::ProfilerConfig;
use cortex_support::env::{EnvSource, FromEnv};
use cortex_tasks::PriorityQueueConfig;
use cortex_tasks::durable::DurableConfig;
use serde::{Deserialize, Serialize};

use crate::Result;

/// The config of every part, each the member crate's own `XxxConfig` with its own
/// variables and defaults (see each crate's README).
///
/// Passwords in URLs are redacted in `Debug`, in `Display` (the config as JSON) and when
/// serialized, because every part's config redacts its own: `DATABASE_URL`, each of
/// `DB_REPLICA_URLS`, `REDIS_URL` and each of `REDIS_CLUSTER_URLS`.
///
/// Scale-out is configuration only: `REDIS_CLUSTER_URLS` puts the Redis pool (and so the
/// cache's second tier and the durable queue) on a Redis Cluster, and `DB_REPLICA_URLS`
/// gives the PostgreSQL pool read replicas for `DbPool::acquire_read` (see the
/// cortex-pool README, sections "Redis Cluster" and "Read replicas").
///
/// ```
/// let config = cortex_core::CortexConfig::from_env()?;
/// println!("{config}"); // JSON, secrets redacted
/// # Ok::<(), cortex_core::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CortexConfig {
    /// Metrics registry (`METRICS_*`).
    pub metrics: MetricsConfig,
    /// Memory profiler (`ENABLE_MEMORY_PROFILING`, `MEMORY_*`).
    pub memory: ProfilerConfig,
    /// Database pool (`DATABASE_URL`, `DB_*`): SQLite by default, PostgreSQL for a
    /// `postgres://` URL, with read replicas when `DB_REPLICA_URLS` is set.
    pub db: DbConfig,
    /// Redis pool (`REDIS_URL` or `REDIS_CLUSTER_URLS`, `REDIS_*`): a Redis Cluster when
    /// `REDIS_CLUSTER_URLS` is set, else the single server at `REDIS_URL`; `None` when
    /// neither is set, which keeps the cache in memory and the task queue in process.
    pub redis: Option<RedisConfig>,
    /// Admission limiter (`DB_CONNECTION_LIMIT`, `DB_CONNECTION_WAIT`, ...).
    pub limiter: LimiterConfig,
    /// In-memory cache, alone or as the first tier (`CACHE_MEMORY_*`).
    pub cache: cortex_cache::MemoryConfig,
    /// Redis cache, the second tier when Redis is configured (`CACHE_*`).
    pub redis_cache: RedisCacheConfig,
    /// In-process priority queue: workers, room, timeouts and retention as
    /// `TASKS_MAX_WORKERS`, `TASKS_MAX_QUEUE_SIZE`, `TASKS_*` give them.
    pub tasks: PriorityQueueConfig,
    /// Durable queue on Redis Streams, when Redis is configured (`TASKS_QUEUE_NAME`, ...).
    pub durable: DurableConfig,
    /// Default batcher settings (`BATCH_SIZE`, `BATCH_WAIT`, ...).
    pub batch: BatchConfig,
    /// Settings every MCP client shares (`MCP_*`); endpoints come from
    /// `<NAME>_SERVICE_URL`.
    pub mcp: McpClientConfig,
}

impl CortexConfig {
    /// Every part's `from_env()`.
    ///
    /// # Errors
    /// The first part's error naming a variable and its bad value.
    pub fn from_env() -> Result<Self> {
        Self::from_env_source(&EnvSource::process())
    }

    /// Every part's config read from `env` (the process environment, or a lookup of
    /// its own, e.g. a map in a test).
    ///
    /// ```
    /// use cortex_core::CortexConfig;
    /// use cortex_core::support::env::EnvSource;
    ///
    /// let lookup = |key: &str| match key {
    ///     "REDIS_CLUSTER_URLS" => Some("redis://10.0.0.1:7000,redis://10.0.0.2:7000".to_owned()),
    ///     _ => None,
    /// };
    /// let config = CortexConfig::from_env_source(&EnvSource::from_fn(&lookup))?;
    /// assert!(config.redis.is_some_and(|r| r.is_cluster()));
    /// # Ok::<(), cortex_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// The first part's error naming a variable and its bad value.
    pub fn from_env_source(env: &EnvSource<'_>) -> Result<Self> {
        // Redis is used when either variable names it; `RedisConfig` then reads both
        // (cluster seeds win over `REDIS_URL`).
        let redis = if env.var("REDIS_URL").is_some() || env.var("REDIS_CLUSTER_URLS").is_some() {
            Some(RedisConfig::from_env_source(env)?)
        } else {
            None
        };
        Ok(Self {
            metrics: MetricsConfig::from_env_source(env)?,
            memory: ProfilerConfig::from_env_source(env)?,
            db: DbConfig::from_env_source(env)?,
            redis,
            limiter: LimiterConfig::from_env_source(env)?,
            cache: cortex_cache::MemoryConfig::from_env_source(env)?,
            redis_cache: RedisCacheConfig::from_env_source(env)?,
            tasks: PriorityQueueConfig::from_env_source(env)?,
            durable: DurableConfig::from_env_source(env)?,
            batch: BatchConfig::from_env_source(env)?,
            mcp: McpClientConfig::from_env_source(env)?,
        })
    }

    /// `true` when the database is PostgreSQL (otherwise it is SQLite).
    pub fn is_postgres(&self) -> bool {
        self.db.is_postgres()
    }
}

impl fmt::Display for CortexConfig {
    /// The config as JSON, with every secret redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<CortexConfig> {
        let vars: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = move |key: &str| vars.get(key).cloned();
        CortexConfig::from_env_source(&EnvSource::from_fn(&lookup))
    }

    #[test]
    fn secrets_are_redacted_in_debug_display_and_serde() {
        let mut config = CortexConfig::default();
        config.db.url = "postgres://app:hunter2@127.0.0.1/db".into();
        config.db.replica_urls = vec![
            "postgres://app:hunter3@127.0.0.2/db".into(),
            "postgres://app:hunter4@127.0.0.3/db?password=hunter5".into(),
        ];
        config.redis = Some(RedisConfig {
            url: "redis://:hunter6@127.0.0.1:6379".into(),
            cluster_urls: vec![
                "redis://:hunter7@127.0.0.4:7000".into(),
                "redis://user:hunter8@127.0.0.5:7001".into(),
            ],
            ..RedisConfig::default()
        });
        let shown = [
            format!("{config:?}"),
            format!("{config:#?}"),
            config.to_string(),
            serde_json::to_string(&config).unwrap_or_default(),
        ];
        for text in shown {
            for host in [
                "127.0.0.1",
                "127.0.0.2",
                "127.0.0.3",
                "127.0.0.4",
                "127.0.0.5",
            ] {
                assert!(text.contains(host), "{host} missing from {text}");
            }
            assert!(!text.contains("hunter"), "secret leaked: {text}");
        }
    }

    #[test]
    fn redis_is_configured_by_either_variable_and_the_cluster_wins() {
        let none = from(&[]).unwrap();
        assert!(none.redis.is_none());

        let single = from(&[("REDIS_URL", "redis://127.0.0.1:6379")]).unwrap();
        let single = single.redis.unwrap();
        assert!(!single.is_cluster());
        assert_eq!(single.url, "redis://127.0.0.1:6379");

        let seeds = "redis://127.0.0.1:7000, redis://127.0.0.1:7001";
        let cluster = from(&[("REDIS_CLUSTER_URLS", seeds)]).unwrap();
        let cluster = cluster.redis.unwrap();
        assert!(cluster.is_cluster());
        assert_eq!(
            cluster.cluster_urls,
            ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );

        // Both set: the pool runs in cluster mode, `REDIS_URL` is not used.
        let both = from(&[
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("REDIS_CLUSTER_URLS", seeds),
        ])
        .unwrap();
        assert!(both.redis.unwrap().is_cluster());
    }

    #[test]
    fn replicas_come_from_db_replica_urls_and_bad_values_name_the_variable() {
        let config = from(&[
            ("DATABASE_URL", "postgres://app@127.0.0.1:5432/app"),
            (
                "DB_REPLICA_URLS",
                "postgres://app@127.0.0.1:5440/app,postgres://app@127.0.0.1:5441/app",
            ),
        ])
        .unwrap();
        assert_eq!(config.db.replica_urls.len(), 2);

        let err = from(&[("REDIS_CLUSTER_URLS", "http://:hunter2@127.0.0.1:7000")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("REDIS_CLUSTER_URLS"), "{text}");
        assert!(!text.contains("hunter2"), "secret leaked: {text}");

        // SQLite has no replicas.
        let err = from(&[("DB_REPLICA_URLS", "postgres://app@127.0.0.1:5440/app")]).unwrap_err();
        assert!(err.to_string().contains("DB_REPLICA_URLS"), "{err}");
    }
}
