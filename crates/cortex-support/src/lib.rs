#![doc = include_str!("../README.md")]

pub mod backoff;
pub mod duration;
pub mod env;
pub mod file;
pub mod json;
pub mod keyspace;
pub mod redact;
pub mod warn;

pub use self::env::{ConfigError, EnvSource, EnvVar, FromEnv};

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
