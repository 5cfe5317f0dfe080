#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backoff;
pub mod duration;
pub mod env;
pub mod file;
pub mod json;
pub mod keyspace;
pub mod redact;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;
#[cfg(feature = "trace")]
#[cfg_attr(docsrs, doc(cfg(feature = "trace")))]
pub mod trace;
pub mod warn;

pub use self::env::{ConfigError, EnvSource, EnvVar, FromEnv};

/// A boxed error of a lower layer (a loader, a task, a backend, a transport), kept as
/// the source of a Cortex error. Every crate re-exports this one type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Whether an I/O error is of a passing kind (interrupted, timed out, would block), so
/// the same call may succeed when tried again: the one verdict every crate's
/// `is_retryable` gives for file and socket errors.
///
/// ```
/// use std::io::{Error, ErrorKind};
/// assert!(cortex_support::io_is_transient(&Error::from(ErrorKind::TimedOut)));
/// assert!(!cortex_support::io_is_transient(&Error::from(ErrorKind::PermissionDenied)));
/// ```
pub fn io_is_transient(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::Interrupted
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::WouldBlock
    )
}

/// `error` and every source under it, outermost first.
///
/// Cortex errors keep their cause out of their own `Display` (the cause is reachable
/// through [`Error::source`](std::error::Error::source)), so whoever prints an error for
/// a person walks the chain: [`error_chain`] joins it in one line.
pub fn error_sources<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

/// `error` and its sources joined with `": "`, for a log line or an answer body.
///
/// ```
/// let io = std::io::Error::other("disk full");
/// let err = cortex_support::ConfigError::new("PATH", "/x", "cannot write");
/// assert_eq!(cortex_support::error_chain(&io), "disk full");
/// assert_eq!(cortex_support::error_chain(&err), "invalid value \"/x\" for PATH: cannot write");
/// ```
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    for (i, e) in error_sources(error).enumerate() {
        if i > 0 {
            out.push_str(": ");
        }
        out.push_str(&e.to_string());
    }
    out
}

/// The text of a panic payload (`&str` or `String`, as `panic!` makes them), for
/// reporting a task or callback that panicked without losing what it said.
///
/// ```
/// let payload = std::panic::catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
/// assert_eq!(cortex_support::panic_message(&*payload), "boom 7");
/// ```
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}
