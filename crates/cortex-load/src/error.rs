//! Errors of a load test: bad configuration, unreachable target, output failures.

use std::path::PathBuf;

/// Everything that can stop a load test from starting or finishing.
///
/// Failed *requests* are not errors of the run: they are counted in the
/// [`Summary`](super::Summary). These are the reasons a run is refused or aborted.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
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
    /// The URL scheme is not `http`.
    #[error("unsupported scheme {scheme:?} in {url:?}: only http:// is supported (no TLS)")]
    UnsupportedScheme {
        /// The scheme found.
        scheme: String,
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
    /// Another invalid setting (rate, timeout...).
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
    #[error("cannot read scenario file {path}: {source}")]
    ScenarioFileIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A scenario file is not valid JSON for a list of scenarios. The message of
    /// `serde_json` names the line and column.
    #[error("malformed scenario file {path}: {source}")]
    ScenarioFileJson {
        /// The file.
        path: PathBuf,
        /// The parse error, with line and column.
        source: serde_json::Error,
    },
    /// The pre-flight connection to the target failed: the run did not start.
    #[error("target {addr} is unreachable: {source}")]
    Unreachable {
        /// `host:port` tried.
        addr: String,
        /// Why the connection failed.
        source: std::io::Error,
    },
    /// The output file could not be written.
    #[error("cannot write {path}: {source}")]
    Output {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A runtime or thread for the users could not be started.
    #[error("cannot start the load generator threads: {0}")]
    Runtime(String),
    /// The output file extension is not one of `json`, `csv`, `txt`.
    #[error("unsupported output format {path}: use .json, .csv or .txt")]
    OutputFormat {
        /// The file.
        path: PathBuf,
    },
}

/// Result of load-test operations.
pub type Result<T, E = LoadError> = std::result::Result<T, E>;
