//! Errors of a load test: bad configuration, unreachable target, output failures.

use std::path::PathBuf;

/// Everything that can stop a load test from starting or finishing.
///
/// Failed *requests* are not errors of the run: they are counted in the
/// [`Summary`](super::Summary) by [`ErrorKind`](super::ErrorKind). These are the
/// reasons a run is refused or aborted. The text of an underlying error is not repeated
/// in `Display`: it is reachable through [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A setting read from the environment or a config file was rejected.
    #[error("invalid value {value:?} for {key}: {reason}")]
    InvalidConfig {
        /// The setting or environment variable.
        key: &'static str,
        /// The value as given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The configuration has no scenario to send.
    #[error("no scenarios: a load test needs at least one scenario")]
    NoScenarios,
    /// `users` is zero.
    #[error("invalid users: {0} (need at least 1)")]
    ZeroUsers(u32),
    /// Neither a positive request count nor a positive duration was given.
    #[error("invalid requests per user: {0} (need at least 1, or a duration)")]
    ZeroRequests(u64),
    /// The target URL could not be parsed or is not usable.
    #[error("invalid URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL scheme is neither `http` nor `https`.
    #[error("unsupported scheme {scheme:?} in {url:?}: use http:// or https://")]
    UnsupportedScheme {
        /// The scheme found.
        scheme: String,
        /// The URL as given.
        url: String,
    },
    /// An `https://` target, and cortex-load was built without its `tls` feature.
    #[error("{url:?} is an https:// target: build cortex-load with the `tls` feature")]
    TlsNotEnabled {
        /// The URL as given.
        url: String,
    },
    /// A scenario endpoint is not a path on the target (e.g. an absolute URL to
    /// another host): a load test only sends to the host given.
    #[error("scenario {scenario:?}: endpoint {endpoint:?} is not a path on the target: {reason}")]
    BadEndpoint {
        /// Scenario name.
        scenario: String,
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A scenario weight is not a finite positive number.
    #[error("scenario {scenario:?}: invalid weight {weight} (need a finite number > 0)")]
    BadWeight {
        /// Scenario name.
        scenario: String,
        /// The weight as given.
        weight: f64,
    },
    /// A method, header name or header value that HTTP does not accept.
    #[error("scenario {scenario:?}: invalid {what} {value:?}")]
    BadRequestPart {
        /// Scenario name.
        scenario: String,
        /// `method`, `header name`, `header value`, `token`.
        what: &'static str,
        /// The offending value.
        value: String,
    },
    /// Another invalid setting (rate, timeout, CA file with an http:// target...).
    #[error("invalid {name}: {value} ({reason})")]
    BadSetting {
        /// The setting.
        name: &'static str,
        /// The value as given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A scenario file could not be read.
    #[error("cannot read scenario file {}", path.display())]
    ScenarioFileIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A scenario file is not valid JSON for a list of scenarios. The source, a
    /// `serde_json` error, names the line and column.
    #[error("malformed scenario file {}", path.display())]
    ScenarioFileJson {
        /// The file.
        path: PathBuf,
        /// The parse error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// The CA file ([`LoadConfig::ca_file`](super::LoadConfig::ca_file)) could not be
    /// read or holds no usable PEM certificate.
    #[error("cannot use CA file {}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why: the read error, or `InvalidData` wrapping the PEM or certificate error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS client could not be set up (no protocol version the provider supports).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    #[error("cannot set up TLS")]
    Tls {
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// The pre-flight connection to the target failed: the run did not start.
    #[error("target {addr} is unreachable")]
    Unreachable {
        /// `host:port` tried.
        addr: String,
        /// Why the connection failed.
        #[source]
        source: std::io::Error,
    },
    /// The output file could not be written.
    #[error("cannot write {}", path.display())]
    Output {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A runtime or thread for the users could not be started.
    #[error("cannot start the load generator threads")]
    Runtime {
        /// The error of the runtime or thread builder.
        #[source]
        source: std::io::Error,
    },
    /// The output file extension is not one of `json`, `csv`, `txt`.
    #[error("unsupported output format {}: use .json, .csv or .txt", path.display())]
    OutputFormat {
        /// The file.
        path: PathBuf,
    },
}

impl LoadError {
    /// Whether the same run may succeed if started again later: when the target was
    /// unreachable (it may be starting), when threads could not be started (a resource
    /// limit), or when a file operation failed with a passing kind (interrupted, timed
    /// out). Never for a bad setting, URL, scenario or file content.
    ///
    /// ```
    /// use cortex_load::LoadError;
    ///
    /// assert!(!LoadError::NoScenarios.is_retryable());
    /// let down = LoadError::Unreachable {
    ///     addr: "127.0.0.1:9".into(),
    ///     source: std::io::ErrorKind::ConnectionRefused.into(),
    /// };
    /// assert!(down.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Runtime { .. } => true,
            Self::ScenarioFileIo { source, .. }
            | Self::Output { source, .. }
            | Self::CaFile { source, .. } => cortex_support::io_is_transient(source),
            _ => false,
        }
    }
}

impl From<cortex_support::ConfigError> for LoadError {
    fn from(e: cortex_support::ConfigError) -> Self {
        Self::InvalidConfig {
            key: e.key,
            value: e.value,
            reason: e.reason,
        }
    }
}

/// Result of load-test operations.
pub type Result<T, E = LoadError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn display_leaves_the_source_to_source() {
        let e = LoadError::Unreachable {
            addr: "127.0.0.1:9".into(),
            source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused!"),
        };
        assert_eq!(e.to_string(), "target 127.0.0.1:9 is unreachable");
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("refused!")
        );
        assert!(e.is_retryable());

        let e = LoadError::Output {
            path: "/x/out.json".into(),
            source: std::io::ErrorKind::PermissionDenied.into(),
        };
        assert_eq!(e.to_string(), "cannot write /x/out.json");
        assert!(!e.is_retryable());

        let e = LoadError::from(cortex_support::ConfigError::new(
            "LOAD_USERS",
            "x",
            "not a number",
        ));
        assert!(matches!(
            e,
            LoadError::InvalidConfig {
                key: "LOAD_USERS",
                ..
            }
        ));
        assert!(!e.is_retryable());
    }
}
