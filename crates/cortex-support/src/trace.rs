//! W3C trace context (`traceparent`), one type for the whole workspace (feature
//! `trace`).
//!
//! The workspace has no OpenTelemetry, so this is the minimal part of it that Cortex
//! needs: a validated `traceparent` string
//! (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`), made current for a
//! future with [`TraceParent::scope`] (a tokio task-local, hence the feature). Who
//! carries it: a durable task enqueued inside a scope stores it with the task, and the
//! worker runs the handler in the scope of a child; an MCP call made inside a scope
//! sends a child of it in the request's `_meta`.

use std::fmt;
use std::future::Future;

tokio::task_local! {
    static CURRENT: TraceParent;
}

/// A value that is not a W3C `traceparent`; it names the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTraceParent(pub String);

impl fmt::Display for InvalidTraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid traceparent {:?}: expected 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, ids not all zero",
            self.0
        )
    }
}

impl std::error::Error for InvalidTraceParent {}

type Result<T, E = InvalidTraceParent> = std::result::Result<T, E>;

/// A W3C `traceparent` value: version `00`, a trace id, a parent (span) id, flags.
///
/// ```
/// use cortex_support::trace::TraceParent;
///
/// let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")?;
/// assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// let child = tp.child();
/// assert_eq!(child.trace_id(), tp.trace_id());
/// assert_ne!(child.parent_id(), tp.parent_id());
/// # Ok::<(), cortex_support::trace::InvalidTraceParent>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TraceParent(String);

impl TraceParent {
    /// Check `value` and keep it (lowercased, as the standard writes it).
    ///
    /// # Errors
    /// [`InvalidTraceParent`] naming `value` when it is not
    /// `00-<32 hex>-<16 hex>-<2 hex>` with non-zero ids.
    pub fn parse(value: &str) -> Result<Self> {
        let bad = || InvalidTraceParent(value.to_owned());
        let parts: Vec<&str> = value.trim().split('-').collect();
        let [version, trace, parent, flags] = parts.as_slice() else {
            return Err(bad());
        };
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        let zero = |s: &str| s.bytes().all(|b| b == b'0');
        if *version != "00"
            || !hex(trace, 32)
            || !hex(parent, 16)
            || !hex(flags, 2)
            || zero(trace)
            || zero(parent)
        {
            return Err(bad());
        }
        Ok(Self(value.trim().to_ascii_lowercase()))
    }

    /// A new trace: random trace and parent ids, sampled (`01`).
    pub fn generate() -> Self {
        let (a, b) = (nonzero(), crate::backoff::random_u64());
        Self(format!("00-{a:016x}{b:016x}-{:016x}-01", nonzero()))
    }

    /// The same trace and flags with a new parent id: what a hop (a task run) passes
    /// on.
    pub fn child(&self) -> Self {
        Self(format!(
            "00-{}-{:016x}-{}",
            self.trace_id(),
            nonzero(),
            &self.0[53..]
        ))
    }

    /// The 32 hex digits of the trace id.
    pub fn trace_id(&self) -> &str {
        &self.0[3..35]
    }

    /// The 16 hex digits of the parent (span) id.
    pub fn parent_id(&self) -> &str {
        &self.0[36..52]
    }

    /// The whole `traceparent` header value.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Run `fut` with `self` as the current trace context: durable enqueues inside it
    /// store it with their tasks, MCP calls inside it send a child of it.
    ///
    /// ```
    /// use cortex_support::trace::TraceParent;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let tp = TraceParent::generate();
    /// let seen = tp.clone().scope(async { TraceParent::current() }).await;
    /// assert_eq!(seen, Some(tp));
    /// assert_eq!(TraceParent::current(), None);
    /// # });
    /// ```
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }

    /// The trace context of the enclosing [`scope`](Self::scope), if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }
}

/// A random id that is not zero (the standard forbids all-zero ids).
fn nonzero() -> u64 {
    loop {
        let v = crate::backoff::random_u64();
        if v != 0 {
            return v;
        }
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TraceParent").field(&self.0).finish()
    }
}

impl std::str::FromStr for TraceParent {
    type Err = InvalidTraceParent;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_parses_and_bad_ones_name_the_value() {
        let tp =
            TraceParent::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01").unwrap();
        assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.parent_id(), "00f067aa0ba902b7");
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
        ] {
            let e = TraceParent::parse(bad).unwrap_err();
            assert_eq!(e, InvalidTraceParent(bad.to_owned()));
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn generated_and_child_values_are_valid_and_keep_the_trace() {
        let tp = TraceParent::generate();
        assert_eq!(TraceParent::parse(tp.as_str()).unwrap(), tp);
        let child = tp.child();
        assert_eq!(TraceParent::parse(child.as_str()).unwrap(), child);
        assert_eq!(child.trace_id(), tp.trace_id());
        assert!(child.as_str().ends_with("-01"));
    }

    #[test]
    fn the_scope_makes_it_current_and_nothing_is_current_outside() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(TraceParent::current(), None);
        let tp = TraceParent::generate();
        let seen = rt.block_on(tp.clone().scope(async { TraceParent::current() }));
        assert_eq!(seen, Some(tp));
        assert_eq!(TraceParent::current(), None);
    }
}
