use std::sync::Arc;
use std::time::Duration;

/// A boxed error of a lower layer (rmcp, the child process), kept as the source.
pub use cortex_support::BoxError;

/// Everything that can go wrong in cortex-mcp.
///
/// Errors of a call name the service they concern. [`Error::is_retryable`] says which
/// kinds of failure the client retries: the transport failing, a timeout, no session
/// being up; and it retries them only for calls that are safe to repeat (see
/// [`Error::Indeterminate`]). A tool that reports an error, a JSON-RPC error and a
/// protocol mismatch are final: the service answered, so asking again would get the
/// same answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// One attempt, or the whole call, ran out of time. For a tool call not safe to
    /// repeat that was already sent, it comes wrapped in [`Error::Indeterminate`].
    #[error("{service}: no answer within {after:?}")]
    Timeout {
        /// The service called.
        service: Arc<str>,
        /// The time allowed.
        after: Duration,
    },
    /// The transport failed: the server is down, the connection reset, the child
    /// process exited. The session concerned is rebuilt in the background. For a tool
    /// call not safe to repeat that was already sent, it comes wrapped in
    /// [`Error::Indeterminate`].
    #[error("{service}: transport failed")]
    Transport {
        /// The service called.
        service: Arc<str>,
        /// rmcp's error (its HTTP client's errors with the URL removed, since URLs may
        /// hold credentials); `None` when the client found the session's transport
        /// closed before sending.
        #[source]
        source: Option<BoxError>,
    },
    /// No session could be made: the server refused, was unreachable, or did not
    /// finish the MCP handshake within the connect timeout.
    #[error("{service}: could not connect to {endpoint}")]
    Connect {
        /// The service concerned.
        service: Arc<str>,
        /// The endpoint, with any password hidden.
        endpoint: String,
        /// Why: rmcp's handshake error (URLs removed from its HTTP client's errors),
        /// the I/O error of starting a stdio child, or an [`Error::Timeout`] when the
        /// handshake did not finish within `connect_timeout`.
        #[source]
        source: BoxError,
    },
    /// Every session of the client is down and being rebuilt in the background.
    #[error("{service}: no session is connected; reconnecting in the background")]
    NoSession {
        /// The service called.
        service: Arc<str>,
    },
    /// The circuit breaker of the service is open: calls fail at once until a probe
    /// after the cooldown succeeds.
    #[error(
        "{service}: circuit open after {failures} consecutive failures; next probe in {retry_in:?}"
    )]
    CircuitOpen {
        /// The service called.
        service: Arc<str>,
        /// Consecutive failures that opened the circuit.
        failures: u32,
        /// Time until a probe call is let through.
        retry_in: Duration,
    },
    /// The tool ran and reported an error (`isError: true`), or the server rejected the
    /// call's name or arguments (JSON-RPC `-32602`). Never retried, never cached, and
    /// not a failure of the service for the circuit breaker.
    #[error("{service}: tool {tool:?} failed: {message}")]
    Tool {
        /// The service called.
        service: Arc<str>,
        /// The tool called.
        tool: String,
        /// The tool's error text (its text content joined), or the JSON-RPC message.
        message: String,
    },
    /// The server answered with another JSON-RPC error (e.g. an unknown resource).
    #[error("{service}: {method} failed with JSON-RPC error {code}: {message}")]
    Rpc {
        /// The service called.
        service: Arc<str>,
        /// The MCP method, e.g. `resources/read`.
        method: &'static str,
        /// The JSON-RPC error code.
        code: i32,
        /// The server's message.
        message: String,
    },
    /// The server's answer did not fit the request (a protocol mismatch).
    #[error("{service}: unexpected answer to {method}")]
    Protocol {
        /// The service called.
        service: Arc<str>,
        /// The MCP method.
        method: &'static str,
        /// rmcp's error, when it reported the mismatch; `None` when the answer was of
        /// another kind than the request asked for.
        #[source]
        source: Option<BoxError>,
    },
    /// A tool call that is not known to be safe to repeat was sent, then the transport
    /// failed or its time ran out before the answer came (`source` says which): the
    /// tool may or may not have run. The client does not send such a call again, so
    /// its side effects happen at most once; check the state of the service (or
    /// retry, if you know the tool to be safe to repeat) before calling again.
    ///
    /// Calls safe to repeat are retried instead: those marked
    /// [`CallOptions::idempotent`](crate::CallOptions::idempotent) or cacheable,
    /// resource reads, listings, and tools the server annotates `readOnlyHint` or
    /// `idempotentHint` in `tools/list`.
    #[error(
        "{service}: tool {tool:?} may or may not have run ({} after it was sent); not retried, as it is not known to be safe to repeat",
        .source.failure()
    )]
    Indeterminate {
        /// The service called.
        service: Arc<str>,
        /// The tool called.
        tool: String,
        /// The failure after the call was sent: [`Error::Timeout`] or
        /// [`Error::Transport`].
        source: Box<Error>,
    },
    /// The client was closed; it takes no new calls.
    #[error("{service}: the client is closed")]
    Closed {
        /// The service of the closed client.
        service: Arc<str>,
    },
    /// Tool arguments must be a JSON object (or null for none).
    #[error("arguments of tool {tool:?} must be a JSON object, got {value}")]
    InvalidArguments {
        /// The tool called.
        tool: String,
        /// The arguments given, shortened.
        value: String,
    },
    /// A configuration value was rejected.
    #[error("invalid value {value:?} for {key}: {reason}")]
    InvalidConfig {
        /// The setting or environment variable, e.g. `MCP_POOL_SIZE`.
        key: &'static str,
        /// The value as given (any password hidden).
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The HTTP client of an `http(s)://` endpoint could not be built.
    #[error("the HTTP client for {endpoint} could not be built")]
    HttpClient {
        /// The endpoint, with any password hidden.
        endpoint: String,
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// The TLS settings of the HTTP client could not be made (feature `tls`).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    #[error("the TLS settings could not be made (CA file: {ca_file:?})")]
    Tls {
        /// `MCP_TLS_CA_FILE`, if set.
        ca_file: Option<std::path::PathBuf>,
        /// rustls's error.
        #[source]
        source: rustls::Error,
    },
    /// The factory found no endpoint for a service.
    #[error("no endpoint for service {service:?}: set {var}, e.g. {var}=http://127.0.0.1:8080/mcp")]
    MissingEndpoint {
        /// The service name asked for.
        service: String,
        /// The environment variable that was not set.
        var: String,
    },
}

impl Error {
    /// Whether asking again later may succeed: timeouts, transport failures, failed
    /// connects, no session being up, and an open circuit (after its `retry_in`). Tool,
    /// JSON-RPC and protocol errors are final (the service answered), so are bad
    /// configuration and a closed client, and so is [`Error::Indeterminate`]: asking
    /// again might run the tool twice. The client's own retries never see
    /// [`Error::CircuitOpen`]: it is the answer before any attempt.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. }
                | Error::Transport { .. }
                | Error::Connect { .. }
                | Error::NoSession { .. }
                | Error::CircuitOpen { .. }
        )
    }

    /// Whether the call was sent and its outcome is unknown
    /// ([`Error::Indeterminate`]): it may or may not have run.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, Error::Indeterminate { .. })
    }

    /// What went wrong, in a few words, for [`Error::Indeterminate`]'s message (which
    /// leaves the details to its source).
    fn failure(&self) -> &'static str {
        match self {
            Error::Timeout { .. } => "no answer in time",
            Error::Transport { .. } => "the transport failed",
            _ => "the call failed",
        }
    }

    /// Whether the tool itself reported the error (or rejected its name or arguments).
    pub fn is_tool_error(&self) -> bool {
        matches!(self, Error::Tool { .. })
    }
}

impl From<cortex_support::ConfigError> for Error {
    fn from(e: cortex_support::ConfigError) -> Self {
        Error::InvalidConfig {
            key: e.key,
            value: e.value,
            reason: e.reason,
        }
    }
}

/// Result of cortex-mcp operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> Arc<str> {
        "svc".into()
    }

    #[test]
    fn retryable_only_where_asking_again_can_succeed() {
        let timeout = Error::Timeout {
            service: service(),
            after: Duration::from_secs(1),
        };
        let transport = Error::Transport {
            service: service(),
            source: Some(Box::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            ))),
        };
        let open = Error::CircuitOpen {
            service: service(),
            failures: 5,
            retry_in: Duration::from_secs(30),
        };
        for e in [&timeout, &transport, &open] {
            assert!(e.is_retryable(), "{e}");
        }
        let finals = [
            Error::from(cortex_support::ConfigError::new(
                "MCP_POOL_SIZE",
                "0",
                "bad",
            )),
            Error::Tool {
                service: service(),
                tool: "t".into(),
                message: "no".into(),
            },
            Error::Indeterminate {
                service: service(),
                tool: "t".into(),
                source: Box::new(timeout),
            },
            Error::Protocol {
                service: service(),
                method: "tools/call",
                source: None,
            },
        ];
        for e in &finals {
            assert!(!e.is_retryable(), "{e}");
        }
    }

    #[test]
    fn display_leaves_the_source_to_source() {
        let e = Error::Connect {
            service: service(),
            endpoint: "http://h/mcp".into(),
            source: Box::new(std::io::Error::other("refused by peer")),
        };
        assert_eq!(e.to_string(), "svc: could not connect to http://h/mcp");
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("refused by peer"));
        assert_eq!(
            cortex_support::error_chain(&e),
            "svc: could not connect to http://h/mcp: refused by peer"
        );
    }
}
