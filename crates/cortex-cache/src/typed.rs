use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Cache, CacheStats, Error, Result};

/// Typed values over any [`Cache`], stored as JSON.
///
/// ```
/// use cortex_cache::{MemoryConfig, MemoryStore, TypedCache};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cache = TypedCache::new(MemoryStore::new(MemoryConfig::default())?);
/// cache.set("user:1", &("ada", 36), None).await?;
/// let user: Option<(String, u32)> = cache.get("user:1").await?;
/// assert_eq!(user, Some(("ada".to_owned(), 36)));
/// assert_eq!(cache.get_or("user:2", 0u32).await?, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TypedCache<C> {
    inner: C,
}

impl<C: Cache> TypedCache<C> {
    /// Wrap `inner`.
    pub fn new(inner: C) -> Self {
        Self { inner }
    }

    /// The value under `key`, decoded from JSON.
    ///
    /// # Errors
    /// [`Error::Serde`] when the stored bytes are not a `T`; the store's errors.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.inner.get(key).await? {
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| Error::Serde {
                        key: key.to_owned(),
                        source,
                    })
            }
            None => Ok(None),
        }
    }

    /// The value under `key`, or `default` when there is none.
    ///
    /// # Errors
    /// As [`get`](Self::get): a value that does not decode is an error, not a default.
    pub async fn get_or<T: DeserializeOwned>(&self, key: &str, default: T) -> Result<T> {
        Ok(self.get(key).await?.unwrap_or(default))
    }

    /// Store `value` under `key` as JSON.
    ///
    /// # Errors
    /// [`Error::Serde`] when `value` does not serialize; the store's errors.
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|source| Error::Serde {
            key: key.to_owned(),
            source,
        })?;
        self.inner.set(key, &bytes, ttl).await
    }

    /// What the wrapped store has done so far.
    pub fn stats(&self) -> CacheStats {
        self.inner.stats()
    }

    /// The wrapped store, for byte-level calls (`delete`, `clear`, ...).
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// The wrapped store.
    pub fn into_inner(self) -> C {
        self.inner
    }
}
