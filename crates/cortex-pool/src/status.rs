use serde::{Deserialize, Serialize};

/// What a pool is doing right now: the same view for every pool in this crate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Objects that exist (idle + in use).
    pub size: usize,
    /// Objects waiting in the pool.
    pub idle: usize,
    /// Objects held by callers.
    pub in_use: usize,
    /// The most objects the pool will create.
    pub max: usize,
    /// Callers waiting for an object.
    pub waiting: usize,
}
