//! [`CortexConfig`]: the config of every part, read from the environment in one call.

use std::fmt;

use cortex_batch::BatchConfig;
use cortex_cache::RedisCacheConfig;
use cortex_mcp::McpClientConfig;
use cortex_metrics::MetricsConfig;
use cortex_pool::{DbConfig, LimiterConfig, RedisConfig};
use cortex_profile::ProfilerConfig;
use cortex_tasks::PriorityQueueConfig;
use cortex_tasks::durable::DurableConfig;
use serde::{Deserialize, Serialize};

use crate::Result;

/// The config of every part, each the member crate's own `XxxConfig` with its own
/// variables and defaults (see each crate's README).
///
/// Passwords in URLs are redacted in `Debug`, in `Display` (the config as JSON) and when
/// serialized, because every part's config redacts its own.
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
    /// `postgres://` URL.
    pub db: DbConfig,
    /// Redis pool (`REDIS_URL`, `REDIS_*`); `None` when `REDIS_URL` is unset, which
    /// keeps the cache in memory and the task queue in process.
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
        let redis = match std::env::var("REDIS_URL") {
            Ok(url) if !url.trim().is_empty() => Some(RedisConfig::from_env()?),
            _ => None,
        };
        Ok(Self {
            metrics: MetricsConfig::from_env()?,
            memory: ProfilerConfig::from_env()?,
            db: DbConfig::from_env()?,
            redis,
            limiter: LimiterConfig::from_env()?,
            cache: cortex_cache::MemoryConfig::from_env()?,
            redis_cache: RedisCacheConfig::from_env()?,
            tasks: PriorityQueueConfig::from_env()?,
            durable: DurableConfig::from_env()?,
            batch: BatchConfig::from_env()?,
            mcp: McpClientConfig::from_env()?,
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

    #[test]
    fn secrets_are_redacted_in_debug_display_and_serde() {
        let mut config = CortexConfig::default();
        config.db.url = "postgres://app:hunter2@127.0.0.1/db".into();
        config.redis = Some(RedisConfig {
            url: "redis://:hunter2@127.0.0.1:6379".into(),
            ..RedisConfig::default()
        });
        let shown = [
            format!("{config:?}"),
            config.to_string(),
            serde_json::to_string(&config).unwrap_or_default(),
        ];
        for text in shown {
            assert!(text.contains("127.0.0.1"), "{text}");
            assert!(!text.contains("hunter2"), "secret leaked: {text}");
        }
    }
}
