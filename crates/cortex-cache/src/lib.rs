#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cached;
mod compressed;
mod error;
#[cfg(feature = "redis")]
mod invalidation;
mod key;
mod memory;
#[cfg(feature = "redis")]
mod redis_cache;
#[cfg(feature = "redis")]
mod redis_config;
mod s3fifo;
mod stats;
mod store;
#[cfg(feature = "redis")]
mod two_tier;
mod typed;
mod warmer;
mod weak;

pub use self::cached::{CachedCalls, CachedCallsStats};
pub use self::compressed::{Compressed, CompressionConfig};
pub use self::error::{Error, Result};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::invalidation::ListenerStats;
pub use self::key::{MAX_KEY_LEN, key_for};
pub use self::memory::{MemoryConfig, MemoryStore};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis_cache::{RedisCache, RedisCacheBuilder};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis_config::RedisCacheConfig;
pub use self::s3fifo::{S3FifoCache, S3FifoCacheBuilder, S3FifoConfig, S3FifoStats};
pub use self::stats::{CacheStats, CompressionStats};
pub use self::store::Cache;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::two_tier::TwoTierCache;
pub use self::typed::TypedCache;
pub use self::warmer::{WarmReport, Warmer, WarmerStats, warm};
pub use self::weak::{WeakCache, WeakCacheStats};

#[cfg(all(test, feature = "redis"))]
mod readme {
    use cortex_support::FromEnv;

    #[test]
    fn the_readme_lists_every_variable() {
        let vars = [
            crate::S3FifoConfig::VARS,
            crate::MemoryConfig::VARS,
            crate::RedisCacheConfig::VARS,
        ]
        .concat();
        cortex_support::env::check_readme(include_str!("../README.md"), &vars).unwrap();
    }
}
