//! Where a durable queue's Redis connections come from: cortex-pool, always.

use crate::Result;

/// Where a [`DurableQueue`](super::DurableQueue) gets its Redis client: a
/// [`RedisConfig`](cortex_pool::RedisConfig), a [`RedisPool`](cortex_pool::RedisPool),
/// or a URL (`str`, `String`: a `RedisConfig` with that URL and default settings).
/// Every form goes through cortex-pool, the one place a Redis URL becomes a client.
///
/// Sealed: implemented for these types only.
pub trait RedisTarget: sealed::Sealed {
    /// The client to make connections with.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) when the URL is not one Redis accepts.
    fn redis_client(&self) -> Result<redis::Client>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for cortex_pool::RedisConfig {}
    impl Sealed for cortex_pool::RedisPool {}
    impl Sealed for str {}
    impl Sealed for String {}
}

impl RedisTarget for cortex_pool::RedisConfig {
    fn redis_client(&self) -> Result<redis::Client> {
        Ok(self.client()?)
    }
}

impl RedisTarget for cortex_pool::RedisPool {
    fn redis_client(&self) -> Result<redis::Client> {
        Ok(self.client().clone())
    }
}

impl RedisTarget for str {
    fn redis_client(&self) -> Result<redis::Client> {
        cortex_pool::RedisConfig {
            url: self.to_owned(),
            ..cortex_pool::RedisConfig::default()
        }
        .redis_client()
    }
}

impl RedisTarget for String {
    fn redis_client(&self) -> Result<redis::Client> {
        self.as_str().redis_client()
    }
}
