use std::path::PathBuf;

/// Everything that can go wrong in cortex-metrics.
///
/// Variants say what the caller can act on: which setting was bad and why, which file
/// could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value (usually from an environment variable) was rejected.
    #[error("invalid value {value:?} for {key}: {reason}")]
    InvalidConfig {
        /// The setting or environment variable, e.g. `METRICS_RESET_INTERVAL`.
        key: &'static str,
        /// The value as given (never a secret: no setting of this crate is one).
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// An argument was rejected, e.g. an empty operation name or a zero iteration count.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidInput {
        /// What the argument is.
        what: &'static str,
        /// The value as given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// [`MetricsRecorder::install`](crate::MetricsRecorder::install) found another
    /// recorder of the `metrics` crate already installed (there is one per process).
    #[error("a metrics recorder is already installed in this process")]
    RecorderInstalled,
    /// A file could not be read or written.
    #[error("i/o error on {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the same call may succeed if tried again: never for a bad setting or
    /// argument; for I/O, when the error is of a passing kind (interrupted, timed out,
    /// would block).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Io { source, .. } => cortex_support::io_is_transient(source),
            _ => false,
        }
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

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn only_passing_io_errors_are_retryable_and_display_leaves_the_source_out() {
        let io = |kind| Error::Io {
            path: "/data/m.json".into(),
            source: std::io::Error::new(kind, "disk says no"),
        };
        assert!(io(std::io::ErrorKind::TimedOut).is_retryable());
        assert!(io(std::io::ErrorKind::Interrupted).is_retryable());
        let denied = io(std::io::ErrorKind::PermissionDenied);
        assert!(!denied.is_retryable());
        assert_eq!(denied.to_string(), "i/o error on /data/m.json");
        assert_eq!(
            denied.source().map(ToString::to_string).as_deref(),
            Some("disk says no")
        );
        let config = Error::from(cortex_support::ConfigError::new("SOME_VAR", "x", "bad"));
        assert!(matches!(
            config,
            Error::InvalidConfig {
                key: "SOME_VAR",
                ..
            }
        ));
        assert!(!config.is_retryable());
    }
}
