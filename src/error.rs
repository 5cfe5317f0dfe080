//! The facade's error: one variant per member crate, each keeping its source.

/// An error from the wiring: which part failed, with the part's own error as source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Metrics.
    #[error(transparent)]
    Metrics(#[from] cortex_metrics::Error),
    /// The memory profiler.
    #[error(transparent)]
    Profile(#[from] cortex_profile::Error),
    /// A database or Redis pool, or the admission limiter.
    #[error(transparent)]
    Pool(#[from] cortex_pool::Error),
    /// A cache.
    #[error(transparent)]
    Cache(#[from] cortex_cache::Error),
    /// A task queue.
    #[error(transparent)]
    Tasks(#[from] cortex_tasks::Error),
    /// A batcher.
    #[error(transparent)]
    Batch(#[from] cortex_batch::Error),
    /// An MCP client.
    #[error(transparent)]
    Mcp(#[from] cortex_mcp::Error),
}

impl Error {
    /// `true` when trying again later may succeed: the part's own verdict where it
    /// gives one (pools, batchers, MCP clients); `false` for the others, whose errors
    /// during wiring are configuration errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Pool(e) => e.is_retryable(),
            Self::Batch(e) => e.is_retryable(),
            Self::Mcp(e) => e.is_retryable(),
            Self::Metrics(e) => e.is_retryable(),
            Self::Profile(e) => e.is_retryable(),
            Self::Cache(e) => e.is_retryable(),
            Self::Tasks(e) => e.is_retryable(),
        }
    }
}

/// The facade's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
