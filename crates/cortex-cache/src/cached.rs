use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{
    AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::Instrument;

use crate::{Cache, Error, Result, TypedCache};

/// The error of one load, shared by every caller that waited on it.
type SharedError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A snapshot of a [`CachedCalls`]: its store's counters and its loads under way.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CachedCallsStats {
    /// The store's counters.
    pub cache: crate::CacheStats,
    /// Loads under way (one per key however many callers wait on it).
    pub in_flight: usize,
}

/// Default of [`CachedCalls::load_timeout`]: 30 s.
pub(crate) const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Where one load stands, as its waiters see it.
#[derive(Debug, Clone)]
enum State {
    Running,
    Loaded(Arc<Vec<u8>>),
    Failed(SharedError),
    TimedOut,
}

/// One load in flight: its waiters watch `state`; the leader holds the sender, so its
/// drop (a cancelled leader) closes the channel and wakes them to take over.
#[derive(Debug)]
struct Flight {
    state: watch::Receiver<State>,
    /// Set (under the map's lock) when the flight is taken out of the map before it ends:
    /// by [`CachedCalls::invalidate`], or by a waiter that gave up on it. Its value may
    /// be older than what the store should hold, so it is not stored.
    detached: AtomicBool,
}

type Flights = Mutex<HashMap<String, Arc<Flight>>>;

/// The leader's hold on its flight: removes the flight from the map however the leader
/// ends, returning or dropped mid-load, and closes the channel after.
struct Lead<'a> {
    flights: &'a Flights,
    key: &'a str,
    flight: Arc<Flight>,
    tx: watch::Sender<State>,
}

impl Lead<'_> {
    /// Take the flight out of the map (if it is still there); `true` when it was
    /// detached before, i.e. its value must not stay stored.
    fn end(&self) -> bool {
        let mut map = lock(self.flights);
        if map
            .get(self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            map.remove(self.key);
        }
        self.flight.detached.load(Relaxed)
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        // Removed before `tx` drops: a waiter woken by the closed channel finds the map
        // free and takes over (or joins whichever waiter did).
        self.end();
    }
}

/// What a caller is to do about a key with no cached value.
enum Role<'a> {
    Lead(Lead<'a>),
    Wait(Arc<Flight>),
}

fn lock(flights: &Flights) -> MutexGuard<'_, HashMap<String, Arc<Flight>>> {
    // Every critical section is one map operation: a poisoned map is still consistent.
    flights.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Cached calls with single-flight: concurrent misses of one key run the loader once,
/// and every waiter gets its value or its error.
///
/// Values are stored as JSON in any [`Cache`]. A loader's `Ok` is cached for `ttl`
/// (an empty value too, unless [`skip_empty`](Self::skip_empty) is set); its `Err` is
/// not cached.
///
/// # Bounded loads
///
/// A load is cut off after [`load_timeout`](Self::load_timeout) (default 30 s), and a
/// caller waiting on another caller's load waits at most as long; both then get
/// [`Error::LoadTimeout`]. A waiter that gives up also detaches the load it waited on,
/// so the next caller loads afresh instead of queueing behind a stuck one.
///
/// # Cancellation
///
/// Dropping the caller that runs a load (a timeout around it, a `select!`, an aborted
/// task) cancels the load and removes it from [`in_flight`](Self::in_flight); the
/// callers that were waiting on it take over, one of them running its own loader and the
/// others waiting on that one.
///
/// # Invalidation
///
/// [`invalidate`](Self::invalidate) during a load wins: that load may still answer the
/// callers already waiting on it, but its value is not left stored, and callers arriving
/// after the invalidation start a new load instead of joining it. Invalidate through
/// this type, not with a `delete` on the store underneath, for that to hold.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::time::Duration;
/// use cortex_cache::{CachedCalls, MemoryConfig, MemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let calls = CachedCalls::new(MemoryStore::new(MemoryConfig::default())?)
///     .load_timeout(Duration::from_secs(5));
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
/// assert_eq!(calls.in_flight(), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct CachedCalls<C> {
    cache: TypedCache<C>,
    in_flight: Flights,
    /// Flights that ended with their value stored. A caller whose read missed before
    /// one of them stored looks again before it loads (see `load_encoded`).
    stored: AtomicU64,
    skip_empty: bool,
    jitter: f64,
    load_timeout: Duration,
}

impl<C: Cache> CachedCalls<C> {
    /// Cached calls over `cache`.
    pub fn new(cache: C) -> Self {
        Self {
            cache: TypedCache::new(cache),
            in_flight: Mutex::new(HashMap::new()),
            stored: AtomicU64::new(0),
            skip_empty: false,
            jitter: 0.0,
            load_timeout: DEFAULT_LOAD_TIMEOUT,
        }
    }

    /// Bound on each load, and on each wait for another caller's load: past it the
    /// caller gets [`Error::LoadTimeout`]. Default: 30 s. A zero duration is taken as
    /// 1 ms; `Duration::MAX` means no bound.
    #[must_use]
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.load_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// What the store underneath has done, and the loads under way now.
    pub fn stats(&self) -> CachedCallsStats {
        CachedCallsStats {
            cache: self.cache.stats(),
            in_flight: self.in_flight(),
        }
    }

    /// Loads under way now (one per key however many callers wait on it).
    pub fn in_flight(&self) -> usize {
        lock(&self.in_flight).len()
    }

    /// Lengthen each stored TTL by a random fraction up to `fraction` (0.1 = up to
    /// +10%), so entries written together do not all expire, and reload, together.
    /// Applies to explicit TTLs; `None` keeps the store's default. A TTL that would
    /// overflow saturates at `Duration::MAX`.
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
        let unit = crate::warmer::unit();
        // Saturating: `mul_f64` panics past `Duration::MAX`.
        let extra = Duration::try_from_secs_f64(ttl.as_secs_f64() * self.jitter * unit)
            .unwrap_or(Duration::MAX);
        Some(ttl.saturating_add(extra))
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
    /// value does not encode as JSON); [`Error::LoadTimeout`] when the load, or the wait
    /// for it, takes longer than [`load_timeout`](Self::load_timeout); [`Error::Serde`]
    /// when a stored value does not decode; the store's errors on the first read (a
    /// degrading store answers a miss instead). A value that loads but cannot be stored
    /// is returned, with a warning.
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
        let seen = self.stored.load(Acquire);
        if let Some(v) = self.cache.get(key).await? {
            return Ok(v);
        }
        self.load_shared(key, ttl, load, Some(seen)).await
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
        self.load_shared(key, ttl, load, None).await
    }

    /// Forget the cached value of `key` (after the data behind it changed). A load of
    /// `key` under way is detached: it answers the callers already waiting on it, but
    /// its value is not left stored, and later callers load afresh.
    ///
    /// # Errors
    /// The store's errors.
    pub async fn invalidate(&self, key: &str) -> Result<bool> {
        {
            let mut map = lock(&self.in_flight);
            for flight in [key, &swr_flight(key)] {
                if let Some(f) = map.remove(flight) {
                    f.detached.store(true, Relaxed);
                }
            }
        }
        self.cache.inner().delete(key).await
    }

    async fn load_shared<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        load: F,
        seen: Option<u64>,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        E: std::error::Error + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let bytes = self
            .load_encoded(key, key, ttl, load, |v: &T| serde_json::to_vec(v), seen)
            .await?;
        decode(key, &bytes)
    }

    /// Lead a new flight of `flight`, or join the one under way.
    fn join<'a>(&'a self, flight: &'a str) -> Role<'a> {
        let mut map = lock(&self.in_flight);
        if let Some(f) = map.get(flight) {
            return Role::Wait(Arc::clone(f));
        }
        let (tx, state) = watch::channel(State::Running);
        let f = Arc::new(Flight {
            state,
            detached: AtomicBool::new(false),
        });
        map.insert(flight.to_owned(), Arc::clone(&f));
        Role::Lead(Lead {
            flights: &self.in_flight,
            key: flight,
            flight: f,
            tx,
        })
    }

    /// Wait for `flight` (the flight of key `name`) to end, at most the load timeout.
    /// `None` when its leader was dropped before it ended: the caller is to take over.
    async fn wait(&self, name: &str, flight: &Arc<Flight>) -> Option<State> {
        let mut state = flight.state.clone();
        let ended = tokio::time::timeout(
            self.load_timeout,
            state.wait_for(|s| !matches!(s, State::Running)),
        )
        .await;
        match ended {
            Ok(Ok(s)) => Some(s.clone()),
            Ok(Err(_closed)) => None,
            Err(_elapsed) => {
                // The leader has had longer than the timeout and not ended: it is not
                // being polled. Detach its flight so the next caller loads afresh.
                let mut map = lock(&self.in_flight);
                if map.get(name).is_some_and(|f| Arc::ptr_eq(f, flight)) {
                    map.remove(name);
                    flight.detached.store(true, Relaxed);
                }
                Some(State::TimedOut)
            }
        }
    }

    /// The single-flight core: one load per `flight` key at a time; its value is stored
    /// under `key` as `encode` makes it, and those bytes are what every waiter gets.
    ///
    /// `seen` is the count of stored flights read before the caller's miss: a caller
    /// can miss, then be delayed until the flight that was loading the key has stored
    /// and ended, and would lead a second load of a value now stored. When a flight has
    /// stored since, the leader reads the store once more before it loads.
    async fn load_encoded<T, E, F, Fut>(
        &self,
        flight: &str,
        key: &str,
        ttl: Option<Duration>,
        load: F,
        encode: impl FnOnce(&T) -> serde_json::Result<Vec<u8>>,
        seen: Option<u64>,
    ) -> Result<Arc<Vec<u8>>>
    where
        E: std::error::Error + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let lead = loop {
            match self.join(flight) {
                Role::Lead(lead) => break lead,
                Role::Wait(f) => {
                    if let Some(state) = self.wait(flight, &f).await {
                        return self.outcome(key, state);
                    }
                    // The leader was dropped mid-load: try to lead again.
                }
            }
        };
        if let Some(seen) = seen
            && self.stored.load(Acquire) != seen
            && let Some(bytes) = self.cache.inner().get(key).await?
        {
            let state = State::Loaded(Arc::new(bytes));
            lead.tx.send_replace(state.clone());
            drop(lead);
            return self.outcome(key, state);
        }
        // Only the leader's load gets a span: waiters spend their time in its flight.
        let span = tracing::debug_span!("cache.load", key, outcome = tracing::field::Empty);
        let state = match tokio::time::timeout(self.load_timeout, load())
            .instrument(span.clone())
            .await
        {
            Err(_elapsed) => State::TimedOut,
            Ok(Err(e)) => State::Failed(Arc::new(e)),
            Ok(Ok(value)) => match encode(&value) {
                Ok(bytes) => State::Loaded(Arc::new(bytes)),
                Err(e) => State::Failed(Arc::new(e)),
            },
        };
        span.record(
            "outcome",
            match &state {
                State::Loaded(_) => "loaded",
                State::TimedOut => "timed_out",
                _ => "failed",
            },
        );
        // The waiters have their answer now, not after the store's write.
        lead.tx.send_replace(state.clone());
        if let State::Loaded(bytes) = &state
            && !(self.skip_empty && is_empty_json(bytes))
            && !lead.flight.detached.load(Relaxed)
        {
            // The value is loaded: failing to store it costs a later miss, not this call.
            let store = self.cache.inner();
            match tokio::time::timeout(self.load_timeout, store.set(key, bytes, self.jittered(ttl)))
                .await
            {
                // Counted before the flight ends, so a caller that joins after it ended
                // sees the count moved and reads the store again.
                Ok(Ok(())) => {
                    self.stored.fetch_add(1, Release);
                }
                Ok(Err(e)) => {
                    tracing::warn!(key, error = %cortex_support::error_chain(&e), "could not store a loaded value")
                }
                Err(_) => tracing::warn!(key, "storing a loaded value timed out"),
            }
            // An invalidation that came while the value was being stored may have
            // deleted before the write landed: delete again, after it.
            if lead.end()
                && let Err(e) = store.delete(key).await
            {
                tracing::warn!(key, error = %cortex_support::error_chain(&e), "could not drop a value invalidated while it was stored");
            }
        }
        drop(lead);
        self.outcome(key, state)
    }

    /// What a caller gets for a flight's end.
    fn outcome(&self, key: &str, state: State) -> Result<Arc<Vec<u8>>> {
        match state {
            State::Loaded(bytes) => Ok(bytes),
            State::Failed(e) => Err(Error::Loader(e)),
            State::TimedOut | State::Running => Err(Error::LoadTimeout {
                key: key.to_owned(),
                timeout: self.load_timeout,
            }),
        }
    }
}

/// The single-flight key of a stale-while-revalidate read of `key` (its values are
/// stored in an envelope, so it does not share loads with `get_or_load`).
fn swr_flight(key: &str) -> String {
    format!("\0swr:{key}")
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
        let flight = swr_flight(key);
        let seen = self.stored.load(Acquire);
        if let Some(bytes) = self.cache.inner().get(key).await? {
            let envelope: Envelope<T> = decode(key, &bytes)?;
            if now_ms() >= envelope.fresh_until_ms {
                let (this, key) = (Arc::clone(self), key.to_owned());
                tokio::spawn(async move {
                    let reloaded = this
                        .load_encoded(
                            &flight,
                            &key,
                            Some(fresh_for.saturating_add(stale_for)),
                            load,
                            |v: &T| encode_envelope(v, fresh_for),
                            None,
                        )
                        .await;
                    if let Err(e) = reloaded {
                        tracing::warn!(key, error = %cortex_support::error_chain(&e), "background reload failed; serving stale");
                    }
                });
            }
            return Ok(envelope.value);
        }
        let bytes = self
            .load_encoded(
                &flight,
                key,
                Some(fresh_for.saturating_add(stale_for)),
                load,
                |v: &T| encode_envelope(v, fresh_for),
                Some(seen),
            )
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
