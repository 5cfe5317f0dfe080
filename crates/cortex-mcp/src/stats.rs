use serde::Serialize;

use crate::CircuitState;

/// Whether a client can take calls now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Open for calls, a session up, and the circuit not open.
    pub healthy: bool,
    /// Sessions up now.
    pub sessions_connected: usize,
    /// The circuit breaker's state.
    pub circuit: CircuitState,
}

/// Counters and state of one client, as [`McpClient::stats`](crate::McpClient::stats)
/// returns them. Serializes to JSON for an admin endpoint; the endpoint is redacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct McpStats {
    /// The service name.
    pub service: String,
    /// The endpoint, any password hidden.
    pub endpoint: String,
    /// See [`Health::healthy`].
    pub healthy: bool,
    /// The circuit breaker's state.
    pub circuit: CircuitState,
    /// Sessions up now.
    pub sessions_connected: usize,
    /// Sessions wanted (`pool_size`).
    pub sessions_max: usize,
    /// Calls in progress.
    pub in_flight: usize,
    /// Calls that reached the network path (cache hits excluded).
    pub requests_total: u64,
    /// Of those, the ones that succeeded.
    pub requests_success: u64,
    /// Of those, the ones that failed, tool errors included.
    pub requests_error: u64,
    /// Failed calls whose tool reported the error.
    pub tool_errors: u64,
    /// Attempts that timed out.
    pub timeouts: u64,
    /// Retries made.
    pub retries: u64,
    /// Hedged second copies sent.
    pub hedges: u64,
    /// Sessions rebuilt after breaking.
    pub reconnects: u64,
    /// Times the circuit opened.
    pub circuit_opened: u64,
    /// Cacheable calls answered from the cache.
    pub cache_hits: u64,
    /// Cacheable calls that went to the service.
    pub cache_misses: u64,
    /// Entries in the result cache.
    pub cache_size: usize,
}
