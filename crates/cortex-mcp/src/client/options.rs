//! Per-call options.

use std::time::Duration;

use cortex_support::trace::TraceParent;

use crate::{Error, Result};

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
    pub(super) traceparent: Option<TraceHeader>,
}

/// The length of a version-00 W3C `traceparent`: `00-` 32 hex `-` 16 hex `-` 2 hex.
const TRACEPARENT_LEN: usize = 55;

/// A `traceparent` as given to [`CallOptions::traceparent`], kept inline (the first
/// 55 bytes and the full length) so `CallOptions` stays `Copy`; checked when the call
/// is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TraceHeader {
    bytes: [u8; TRACEPARENT_LEN],
    len: usize,
}

impl TraceHeader {
    fn new(value: &str) -> Self {
        // Cut on a character boundary, so what is kept is still text for the error.
        let mut kept = value.len().min(TRACEPARENT_LEN);
        while !value.is_char_boundary(kept) {
            kept -= 1;
        }
        let mut bytes = [0; TRACEPARENT_LEN];
        bytes[..kept].copy_from_slice(&value.as_bytes()[..kept]);
        Self {
            bytes,
            len: value.len(),
        }
    }

    /// The value, once checked to be a W3C `traceparent` (version `00`, non-zero ids)
    /// by the workspace's one check, [`TraceParent::parse`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the value (its first 55 bytes) otherwise.
    pub(super) fn checked(&self) -> Result<TraceParent> {
        let kept = &self.bytes[..self.len.min(TRACEPARENT_LEN)];
        // Cut on a boundary by `new`; trailing zero bytes of a short value are not kept.
        let text = std::str::from_utf8(kept).unwrap_or_default();
        // A longer value was cut to fit: it cannot be a valid one.
        let parsed = (self.len == TRACEPARENT_LEN)
            .then(|| TraceParent::parse(text).ok())
            .flatten();
        parsed.ok_or_else(|| Error::InvalidConfig {
            key: "traceparent",
            value: text.trim_end_matches('\0').to_owned(),
            reason: "expected a W3C traceparent: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, ids not all zero".to_owned(),
        })
    }
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

    /// Send `traceparent` (a W3C trace context,
    /// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`) in the request's
    /// `_meta`, so the service can join the caller's trace. Checked when the call is
    /// made: a malformed value fails the call with
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) naming it, before
    /// anything is sent. It does not take part in the cache key.
    ///
    /// Without it, a call made inside [`TraceParent::scope`] sends a child of the
    /// scope's trace context (same trace id, a new parent id); a call outside any
    /// scope sends none.
    ///
    /// ```
    /// use cortex_mcp::CallOptions;
    ///
    /// let opts = CallOptions::new()
    ///     .traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    /// # let _ = opts;
    /// ```
    pub fn traceparent(mut self, traceparent: &str) -> Self {
        self.traceparent = Some(TraceHeader::new(traceparent));
        self
    }

    /// The checked `traceparent`, if one was given.
    pub(super) fn checked_traceparent(&self) -> Result<Option<TraceParent>> {
        self.traceparent
            .as_ref()
            .map(TraceHeader::checked)
            .transpose()
    }

    /// What the call sends: the given `traceparent`, else a child of the current
    /// [`TraceParent::scope`], else none.
    pub(super) fn outgoing_traceparent(&self) -> Result<Option<TraceParent>> {
        Ok(self
            .checked_traceparent()?
            .or_else(|| TraceParent::current().map(|tp| tp.child())))
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
    fn a_traceparent_is_checked_and_a_bad_one_is_named() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let opts = CallOptions::new().traceparent(good);
        assert_eq!(opts.checked_traceparent().unwrap().unwrap().as_str(), good);
        // Upper-case hex is accepted and sent as the standard writes it.
        let upper = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01";
        let opts = CallOptions::new().traceparent(upper);
        assert_eq!(opts.checked_traceparent().unwrap().unwrap().as_str(), good);
        assert_eq!(CallOptions::new().checked_traceparent().unwrap(), None);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "\u{fc}0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let e = CallOptions::new()
                .traceparent(bad)
                .checked_traceparent()
                .unwrap_err();
            match e {
                Error::InvalidConfig { key, value, .. } => {
                    assert_eq!(key, "traceparent");
                    assert!(bad.starts_with(&value), "{value:?} of {bad:?}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

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
