use serde::{Deserialize, Serialize};

/// A snapshot of a [`Batcher`](crate::Batcher)'s counters, since it was built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BatchStats {
    /// The batcher's name.
    pub name: String,
    /// Requests dispatched in a batch (not those dropped unloaded: `abandoned`).
    pub requests: u64,
    /// Batches dispatched.
    pub batches: u64,
    /// `requests / batches`.
    pub avg_batch_size: f64,
    /// `avg_batch_size / max_batch_size`: 1.0 when every batch was full.
    pub efficiency: f64,
    /// Requests answered from another request's key in the same batch.
    pub duplicates_saved: u64,
    /// Requests that got an error from their batch (loader error, panic, wrong count,
    /// missing key).
    pub errors: u64,
    /// Requests that gave up with a timeout.
    pub timeouts: u64,
    /// Requests dropped from the queue unloaded because their caller had stopped
    /// waiting (a timeout, or the future of `load` dropped).
    pub abandoned: u64,
    /// Loads refused with [`Error::Saturated`](crate::Error::Saturated).
    pub saturated: u64,
    /// Batches loading now.
    pub in_flight: usize,
    /// Requests waiting for a batch now (including any whose caller gave up and that
    /// are not dropped yet).
    pub pending: usize,
    /// The configured maximum.
    pub max_batch_size: usize,
    /// `true` after `close()`.
    pub closed: bool,
}
