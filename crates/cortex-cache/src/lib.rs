#![doc = include_str!("../README.md")]

mod cached;
mod chunked;
mod compressed;
mod config;
mod error;
mod invalidation;
mod key;
mod lazy;
mod lru;
mod memory;
mod redis_cache;
mod s3fifo;
mod stats;
mod store;
mod two_tier;
mod typed;
mod warmer;
mod weak;

pub use self::cached::CachedCalls;
pub use self::chunked::{ChunkedVec, DEFAULT_CHUNK};
pub use self::compressed::{Compressed, CompressionConfig};
pub use self::config::{LruCacheConfig, RedisCacheConfig};
pub use self::error::{Error, Result};
pub use self::invalidation::ListenerStats;
pub use self::key::{MAX_KEY_LEN, key_for};
pub use self::lazy::LazyLoader;
pub use self::lru::{LruCache, LruCacheBuilder, LruStats};
pub use self::memory::{MemoryConfig, MemoryStore};
pub use self::redis_cache::{RedisCache, RedisCacheBuilder};
pub use self::stats::{CacheStats, CompressionStats};
pub use self::store::Cache;
pub use self::two_tier::TwoTierCache;
pub use self::typed::TypedCache;
pub use self::warmer::{WarmReport, Warmer, WarmerStats, warm};
pub use self::weak::WeakCache;
