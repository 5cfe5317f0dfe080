use std::time::Duration;

use crate::{CacheStats, Result};

/// A shared store of byte values under string keys: the one job every backend does
/// ([`MemoryStore`](crate::MemoryStore), [`RedisCache`](crate::RedisCache)) and every
/// wrapper passes on ([`Compressed`](crate::Compressed)).
///
/// A `ttl` of `None` means the backend's default (the Redis namespace's default TTL,
/// or no expiry in memory). Counters written by [`increment`](Self::increment) are
/// stored as decimal ASCII, as Redis stores them.
pub trait Cache: Send + Sync {
    /// The value under `key`, or `None` when absent or expired.
    ///
    /// # Errors
    /// A backend error (see each backend for which errors degrade to a miss).
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;

    /// Store `value` under `key`, expiring after `ttl` (or the backend's default).
    ///
    /// # Errors
    /// A backend error.
    fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Remove `key`; `true` when it was there.
    ///
    /// # Errors
    /// A backend error.
    fn delete(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;

    /// `true` when `key` holds an unexpired value.
    ///
    /// # Errors
    /// A backend error.
    fn exists(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Remove every key of this cache (its namespace, for a shared store) and return how
    /// many were removed.
    ///
    /// # Errors
    /// A backend error.
    fn clear(&self) -> impl Future<Output = Result<u64>> + Send;

    /// Add `by` to the integer under `key` (0 when absent) and return the new value.
    ///
    /// # Errors
    /// [`Error::NotAnInteger`](crate::Error::NotAnInteger) when the stored value is not an
    /// integer or the sum overflows; a backend error.
    fn increment(&self, key: &str, by: i64) -> impl Future<Output = Result<i64>> + Send;

    /// The values of `keys`, in order. The default calls [`get`](Self::get) per key;
    /// backends with a batch command override it.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    fn get_many(&self, keys: &[&str]) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>>> + Send {
        async move {
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                out.push(self.get(key).await?);
            }
            Ok(out)
        }
    }

    /// Store every `(key, value)` pair with the same `ttl`. The default calls
    /// [`set`](Self::set) per pair; backends with a batch command override it.
    ///
    /// # Errors
    /// As [`set`](Self::set).
    fn set_many(
        &self,
        items: &[(&str, &[u8])],
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            for (key, value) in items {
                self.set(key, value, ttl).await?;
            }
            Ok(())
        }
    }

    /// What this cache has done so far.
    fn stats(&self) -> CacheStats;
}
