//! A real memory store with a hook, shared by the tests that need a write held open
//! while other calls run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cortex_cache::{Cache, CacheStats, MemoryConfig, MemoryStore, Result};
use tokio::sync::Barrier;

/// The real memory store plus a hook: once armed, the next `set` stops at the gate
/// twice, on arrival and again before it writes, so a test can run other calls while
/// that write is held.
pub(crate) struct GatedTier {
    inner: MemoryStore,
    armed: AtomicBool,
    gate: Arc<Barrier>,
}

impl GatedTier {
    pub(crate) fn new() -> Self {
        Self {
            inner: MemoryStore::new(MemoryConfig::default()).unwrap(),
            armed: AtomicBool::new(false),
            gate: Arc::new(Barrier::new(2)),
        }
    }

    /// Hold the next `set`.
    pub(crate) fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// The gate the held `set` waits at: the test's first wait meets its arrival, the
    /// second lets it write.
    pub(crate) fn gate(&self) -> Arc<Barrier> {
        Arc::clone(&self.gate)
    }
}

impl Cache for GatedTier {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.inner.get(key).await
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.gate.wait().await;
            self.gate.wait().await;
        }
        self.inner.set(key, value, ttl).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.delete(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.inner.exists(key).await
    }

    async fn clear(&self) -> Result<u64> {
        self.inner.clear().await
    }

    async fn increment(&self, key: &str, by: i64) -> Result<i64> {
        self.inner.increment(key, by).await
    }

    fn stats(&self) -> CacheStats {
        self.inner.stats()
    }
}
