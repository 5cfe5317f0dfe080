//! Where a durable queue's Redis connections come from: cortex-pool, always.

use std::future::Future;

use cortex_pool::{PoolMetrics, RedisConfig, RedisPool};

use crate::Result;

/// Where a [`DurableQueue`](super::DurableQueue) gets its Redis connections: a
/// [`RedisConfig`](cortex_pool::RedisConfig), a [`RedisPool`](cortex_pool::RedisPool),
/// or a URL (`str`, `String`: a `RedisConfig` with that URL and default settings).
/// Every form goes through cortex-pool, the one place a Redis URL becomes a connection,
/// and the mode follows the config: a single server at `url`, or a Redis Cluster when
/// `cluster_urls` (`REDIS_CLUSTER_URLS`) is set.
///
/// Sealed: implemented for these types only.
pub trait RedisTarget: sealed::Sealed {
    /// The pool to make the queue's connections with: this pool itself, or a new one
    /// made from the config (which records no pool metrics of its own, so it never
    /// takes over the series of the application's pool).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) when the URL or a seed is
    /// not one Redis accepts; [`Error::Pool`](crate::Error::Pool) when Redis cannot be
    /// reached within the config's `pool_timeout`.
    fn redis_pool(&self) -> impl Future<Output = Result<RedisPool>> + Send;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for cortex_pool::RedisConfig {}
    impl Sealed for cortex_pool::RedisPool {}
    impl Sealed for str {}
    impl Sealed for String {}
}

impl RedisTarget for RedisConfig {
    async fn redis_pool(&self) -> Result<RedisPool> {
        // The queue borrows no pooled connection in normal work (it keeps dedicated
        // ones), so the pool's own gauges would only mislead.
        Ok(RedisPool::with_metrics(self.clone(), PoolMetrics::disabled()).await?)
    }
}

impl RedisTarget for RedisPool {
    async fn redis_pool(&self) -> Result<RedisPool> {
        Ok(self.clone())
    }
}

impl RedisTarget for str {
    async fn redis_pool(&self) -> Result<RedisPool> {
        RedisConfig {
            url: self.to_owned(),
            ..RedisConfig::default()
        }
        .redis_pool()
        .await
    }
}

impl RedisTarget for String {
    async fn redis_pool(&self) -> Result<RedisPool> {
        self.as_str().redis_pool().await
    }
}
