use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use crate::{Cache, Error, Result, TypedCache};

/// The error of one load, shared by every caller that waited on it.
type SharedError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// The outcome of one load, shared by every caller that waited on it.
type Shared = std::result::Result<Arc<Vec<u8>>, SharedError>;

/// Cached calls with single-flight: concurrent misses of one key run the loader once,
/// and every waiter gets its value or its error.
///
/// Values are stored as JSON in any [`Cache`]. A loader's `Ok` is cached for `ttl`
/// (an empty value too, unless [`skip_empty`](Self::skip_empty) is set, as the original
/// design did); its `Err` is not cached.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::time::Duration;
/// use cortex_cache::{CachedCalls, MemoryConfig, MemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let calls = CachedCalls::new(MemoryStore::new(MemoryConfig::default())?);
/// let loads = AtomicUsize::new(0);
/// for _ in 0..3 {
///     let user: String = calls
///         .get_or_load("user:1", Some(Duration::from_secs(60)), || async {
///             loads.fetch_add(1, Ordering::SeqCst);
///             Ok::<_, std::io::Error>("ada".to_owned())
///         })
///         .await?;
///     assert_eq!(user, "ada");
/// }
/// assert_eq!(loads.load(Ordering::SeqCst), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct CachedCalls<C> {
    cache: TypedCache<C>,
    in_flight: Mutex<HashMap<String, Arc<OnceCell<Shared>>>>,
    skip_empty: bool,
    jitter: f64,
    seed: Mutex<u64>,
}

impl<C: Cache> CachedCalls<C> {
    /// Cached calls over `cache`.
    pub fn new(cache: C) -> Self {
        Self {
            cache: TypedCache::new(cache),
            in_flight: Mutex::new(HashMap::new()),
            skip_empty: false,
            jitter: 0.0,
            seed: Mutex::new(crate::warmer::seed()),
        }
    }

    /// Lengthen each stored TTL by a random fraction up to `fraction` (0.1 = up to
    /// +10%), so entries written together do not all expire, and reload, together.
    /// Applies to explicit TTLs; `None` keeps the store's default.
    #[must_use]
    pub fn ttl_jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    fn jittered(&self, ttl: Option<Duration>) -> Option<Duration> {
        let ttl = ttl?;
        if self.jitter == 0.0 {
            return Some(ttl);
        }
        let mut seed = self.seed.lock().unwrap_or_else(PoisonError::into_inner);
        Some(ttl.mul_f64(1.0 + self.jitter * crate::warmer::unit(&mut seed)))
    }

    /// Do not store results that serialize to an empty JSON value (`null`, `[]`, `{}`,
    /// `""`), so an empty answer is asked again next time.
    #[must_use]
    pub fn skip_empty(mut self, skip: bool) -> Self {
        self.skip_empty = skip;
        self
    }

    /// The typed cache underneath.
    pub fn cache(&self) -> &TypedCache<C> {
        &self.cache
    }

    /// The value under `key`; on a miss, `load` runs once however many callers ask at
    /// the same time, and its value is stored for `ttl` (the store's default when
    /// `None`).
    ///
    /// A cancelled loader does not strand its waiters: the next of them runs the load.
    ///
    /// # Errors
    /// [`Error::Loader`] with the loader's error, shared by every waiter (also when its
    /// value does not encode as JSON); [`Error::Serde`] when a stored value does not
    /// decode; the store's errors on the first read (a degrading store answers a miss
    /// instead). A value that loads but cannot be stored is returned, with a warning.
    pub async fn get_or_load<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        load: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        E: std::error::Error + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        if let Some(v) = self.cache.get(key).await? {
            return Ok(v);
        }
        self.load_shared(key, ttl, load).await
    }

    /// Run `load` and store its value even if one is cached (a per-call bypass that
    /// refreshes the entry). Concurrent refreshes of one key still load once.
    ///
    /// # Errors
    /// As [`get_or_load`](Self::get_or_load).
    pub async fn refresh<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        load: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        E: std::error::Error + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        self.load_shared(key, ttl, load).await
    }

    /// Forget the cached value of `key` (after the data behind it changed).
    ///
    /// # Errors
    /// The store's errors.
    pub async fn invalidate(&self, key: &str) -> Result<bool> {
        self.cache.inner().delete(key).await
    }

    async fn load_shared<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        load: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        E: std::error::Error + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let bytes = self
            .load_encoded(key, key, ttl, load, |v: &T| serde_json::to_vec(v))
            .await?;
        decode(key, &bytes)
    }

    /// The single-flight core: one load per `flight` key at a time; its value is stored
    /// under `key` as `encode` makes it, and those bytes are what every waiter gets.
    async fn load_encoded<T, E, F, Fut>(
        &self,
        flight: &str,
        key: &str,
        ttl: Option<Duration>,
        load: F,
        encode: impl FnOnce(&T) -> serde_json::Result<Vec<u8>>,
    ) -> Result<Arc<Vec<u8>>>
    where
        E: std::error::Error + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let cell = {
            let mut map = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            Arc::clone(map.entry(flight.to_owned()).or_default())
        };
        let outcome = cell
            .get_or_init(|| async {
                let value = load().await.map_err(|e| Arc::new(e) as SharedError)?;
                let bytes = encode(&value).map_err(|e| Arc::new(e) as SharedError)?;
                if !(self.skip_empty && is_empty_json(&bytes)) {
                    // The value is loaded: failing to store it costs a later miss, not
                    // this call.
                    if let Err(e) = self
                        .cache
                        .inner()
                        .set(key, &bytes, self.jittered(ttl))
                        .await
                    {
                        tracing::warn!(key, error = %e, "could not store a loaded value");
                    }
                }
                Ok(Arc::new(bytes))
            })
            .await
            .clone();
        {
            // The load is over: later misses load afresh (the value is in the cache).
            let mut map = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if map.get(flight).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                map.remove(flight);
            }
        }
        outcome.map_err(Error::Loader)
    }
}

impl<C: Cache + 'static> CachedCalls<C> {
    /// Stale-while-revalidate: a value younger than `fresh_for` is returned as is; an
    /// older one (kept `stale_for` longer) is returned at once while one background
    /// task reloads it; with nothing cached, the caller loads (single-flight).
    ///
    /// Values are stored with their age, so use this method, not
    /// [`get_or_load`](Self::get_or_load), for a key read this way.
    ///
    /// # Errors
    /// As [`get_or_load`](Self::get_or_load); a background reload's error is logged,
    /// and the stale value stays until it expires.
    ///
    /// # Panics
    /// Outside a tokio runtime when a background reload is due.
    pub async fn get_or_load_stale<T, E, F, Fut>(
        self: &Arc<Self>,
        key: &str,
        fresh_for: Duration,
        stale_for: Duration,
        load: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
    {
        let flight = format!("\0swr:{key}");
        if let Some(bytes) = self.cache.inner().get(key).await? {
            let envelope: Envelope<T> = decode(key, &bytes)?;
            if now_ms() >= envelope.fresh_until_ms {
                let (this, key) = (Arc::clone(self), key.to_owned());
                tokio::spawn(async move {
                    let reloaded = this
                        .load_encoded(&flight, &key, Some(fresh_for + stale_for), load, |v: &T| {
                            encode_envelope(v, fresh_for)
                        })
                        .await;
                    if let Err(e) = reloaded {
                        tracing::warn!(key, error = %e, "background reload failed; serving stale");
                    }
                });
            }
            return Ok(envelope.value);
        }
        let bytes = self
            .load_encoded(&flight, key, Some(fresh_for + stale_for), load, |v: &T| {
                encode_envelope(v, fresh_for)
            })
            .await?;
        Ok(decode::<Envelope<T>>(key, &bytes)?.value)
    }
}

/// A value with the time it stops being fresh.
#[derive(serde::Deserialize)]
struct Envelope<T> {
    fresh_until_ms: u64,
    value: T,
}

fn encode_envelope<T: Serialize>(value: &T, fresh_for: Duration) -> serde_json::Result<Vec<u8>> {
    #[derive(Serialize)]
    struct Out<'a, T> {
        fresh_until_ms: u64,
        value: &'a T,
    }
    let fresh = u64::try_from(fresh_for.as_millis()).unwrap_or(u64::MAX);
    serde_json::to_vec(&Out {
        fresh_until_ms: now_ms().saturating_add(fresh),
        value,
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Serde {
        key: key.to_owned(),
        source,
    })
}

fn is_empty_json(bytes: &[u8]) -> bool {
    matches!(bytes, b"null" | b"[]" | b"{}" | b"\"\"")
}
