use std::sync::Arc;
use std::time::Duration;

/// A boxed error from a loader ([`BatchFn`](crate::BatchFn) or tower service).
pub use cortex_support::BoxError;

/// Everything that can go wrong in cortex-batch.
///
/// `Clone`, because one loader failure is handed to every request of its batch: the
/// loader's error is shared behind an [`Arc`], never stringified.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The loader answered in order with a different number of values than keys: every
    /// request of the batch gets this, since no value can be matched to its key.
    #[error("loader returned {got} values for {expected} keys")]
    WrongCount {
        /// Distinct keys passed to the loader.
        expected: usize,
        /// Values it returned.
        got: usize,
    },
    /// The loader answered by key and this key was not among the answers.
    #[error("loader returned no value for this key")]
    Missing,
    /// The loader failed; every request of the batch shares this error.
    #[error("loader failed")]
    Loader(#[source] Arc<BoxError>),
    /// The loader panicked (the panic was caught; the batcher keeps working).
    #[error("loader panicked: {0}")]
    LoaderPanicked(String),
    /// The batcher was closed before this request was loaded, or the runtime shut down.
    #[error("the batcher is closed")]
    Closed,
    /// `max_pending` requests were already queued: this one was refused at once, not
    /// queued. Retry later, or shed load in front of the batcher.
    #[error("the batcher is saturated: {limit} requests already queued")]
    Saturated {
        /// The configured `max_pending`.
        limit: usize,
    },
    /// No result within the request timeout.
    #[error("no result within {waited:?}")]
    Timeout {
        /// How long the caller waited.
        waited: Duration,
    },
    /// A configuration value was rejected.
    #[error("invalid value {value:?} for {key}: {reason}")]
    InvalidConfig {
        /// The setting or environment variable, e.g. `USER_LOOKUP_BATCH_SIZE`. A
        /// `String`, not `&'static str`, because the prefix is chosen at run time.
        key: String,
        /// The value as given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
}

impl Error {
    /// `true` for errors a caller may retry later: timeouts, a saturated queue, loader
    /// failures and panics, a miscounting loader (the same keys may load fine in
    /// another batch). `false` for a closed batcher, a key the loader does not know
    /// ([`Error::Missing`]) and bad configuration.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. }
                | Error::Saturated { .. }
                | Error::Loader(_)
                | Error::LoaderPanicked(_)
                | Error::WrongCount { .. }
        )
    }
}

impl From<cortex_support::ConfigError> for Error {
    fn from(e: cortex_support::ConfigError) -> Self {
        Error::InvalidConfig {
            key: e.key.to_owned(),
            value: e.value,
            reason: e.reason,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
