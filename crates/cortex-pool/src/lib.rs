#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod db;
mod error;
#[cfg(feature = "tower")]
mod layer;
mod limiter;
mod metrics;
mod object;
#[cfg(feature = "redis")]
mod redis_cluster;
#[cfg(feature = "redis")]
mod redis_pool;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod replica;
mod slots;
mod span;
mod status;
mod sync_pool;

pub use self::config::{DbConfig, RedisConfig};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use self::db::{DbConn, DbPool};
pub use self::error::{BoxError, Error, Result};
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use self::layer::{LimiterLayer, LimiterService};
pub use self::limiter::{Admission, Limiter, LimiterConfig, LimiterStats};
pub use self::metrics::PoolMetrics;
pub use self::object::{Manager, Object, ObjectPoolConfig, ObjectPoolStats, Pool, PoolBuilder};
#[cfg(feature = "redis")]
pub use self::redis_cluster::{NodeRole, RedisConnection, RedisManagedConnection, RedisNode};
#[cfg(feature = "redis")]
pub use self::redis_pool::{NODE_SAMPLE_INTERVAL, RedisConn, RedisPool};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use self::replica::ReplicaStatus;
#[cfg(feature = "postgres")]
pub use self::replica::Session;
pub use self::status::PoolStatus;
pub use self::sync_pool::{SyncObject, SyncPool, SyncPoolStats};

#[cfg(test)]
mod tests {
    use cortex_support::env::{EnvVar, FromEnv};

    /// Every variable of every config, in the order the README lists them.
    fn all_vars() -> Vec<EnvVar> {
        [
            crate::DbConfig::VARS,
            crate::RedisConfig::VARS,
            crate::LimiterConfig::VARS,
        ]
        .concat()
    }

    #[test]
    fn the_readme_lists_every_variable() {
        if let Err(e) = cortex_support::env::check_readme(include_str!("../README.md"), &all_vars())
        {
            panic!("{e}");
        }
    }
}
