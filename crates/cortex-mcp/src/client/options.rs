//! Per-call options.

use std::time::Duration;

/// How one call is made. The default: not cached, not declared idempotent (so a tool
/// call is retried and hedged only if the server annotates the tool safe to repeat),
/// the client's timeouts.
///
/// ```
/// use std::time::Duration;
/// use cortex_mcp::CallOptions;
///
/// let opts = CallOptions::new().cached(Duration::from_secs(60)).timeout(Duration::from_secs(2));
/// assert!(opts.is_cacheable());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOptions {
    pub(super) cache: Option<Option<Duration>>,
    pub(super) idempotent: bool,
    pub(super) timeout: Option<Duration>,
}

impl CallOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cache the result for `ttl`, and answer from the cache while it is fresh. A tool
    /// error is never cached. Implies [`idempotent`](Self::idempotent): a call whose
    /// answer may be reused is one that may run again.
    pub fn cached(mut self, ttl: Duration) -> Self {
        self.cache = Some(Some(ttl));
        self
    }

    /// Cache the result for the client's `cache_ttl`. Implies idempotent, as
    /// [`cached`](Self::cached) does.
    pub fn cacheable(mut self) -> Self {
        self.cache = Some(None);
        self
    }

    /// Never answer from, nor fill, the cache.
    pub fn uncached(mut self) -> Self {
        self.cache = None;
        self
    }

    /// The call may run twice without harm: after a timeout or a transport failure it
    /// is retried, and with `hedge_after` it may be hedged.
    ///
    /// Without this, a tool call is sent again only if the server annotates the tool
    /// `readOnlyHint` or `idempotentHint` in `tools/list`; otherwise such a failure
    /// after the call was sent ends it with [`Error::Indeterminate`](crate::Error::Indeterminate), since the tool
    /// may have run. (A call that provably never left, such as one whose connection
    /// was refused, is retried either way.)
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Bound the whole call (every attempt and wait) by `timeout` instead of the
    /// client's `call_timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Whether results are cached.
    pub fn is_cacheable(&self) -> bool {
        self.cache.is_some()
    }

    /// The caller said the call may run twice.
    pub(super) fn declared_idempotent(&self) -> bool {
        self.idempotent || self.cache.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caching_implies_idempotence_and_uncached_undoes_it() {
        let plain = CallOptions::new();
        assert!(!plain.is_cacheable() && !plain.declared_idempotent());
        let cached = plain.cached(Duration::from_secs(5));
        assert!(cached.is_cacheable() && cached.declared_idempotent());
        assert_eq!(cached.cache, Some(Some(Duration::from_secs(5))));
        assert_eq!(plain.cacheable().cache, Some(None));
        assert!(!cached.uncached().declared_idempotent());
        assert!(plain.idempotent().declared_idempotent());
        assert_eq!(
            plain.timeout(Duration::from_secs(2)).timeout,
            Some(Duration::from_secs(2))
        );
    }
}
