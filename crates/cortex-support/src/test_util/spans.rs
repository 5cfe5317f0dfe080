//! A capturing `tracing` layer for tests: every span's name, parent, `follows_from`
//! links and recorded fields, kept in order of creation.
//!
//! [`Capture::install`] makes a capturing subscriber the default of the calling thread
//! until the guard drops, so tests running in parallel threads each see their own
//! spans:
//!
//! ```
//! use cortex_support::test_util::spans::Capture;
//!
//! let (capture, _guard) = Capture::install();
//! let span = tracing::debug_span!("cache.get", key = "k", hit = tracing::field::Empty);
//! span.record("hit", true);
//! let seen = capture.one("cache.get");
//! assert_eq!(seen.field("key"), Some("k"));
//! assert_eq!(seen.field("hit"), Some("true"));
//! assert!(capture.named("pool.acquire").is_empty());
//! ```
//!
//! # Why a global subscriber is installed too
//!
//! `tracing` caches, per callsite, whether any subscriber is interested in it. When
//! the first thread to reach a callsite has no subscriber of its own while another
//! test thread is installing one, the callsite can be cached as "never enabled", and
//! a later test that captures on its own thread then sees no span at all (a flaky
//! test, seen failing 2 runs in 6). So the first `install` also sets a global default
//! subscriber that enables nothing but answers [`Interest::sometimes`] for every
//! callsite, and rebuilds the interest cache: no callsite is ever cached as disabled,
//! and each span asks the subscriber of its own thread. The global default can be set
//! once per process; if the test binary already set one, that one stays.
//!
//! [`Interest::sometimes`]: tracing::subscriber::Interest::sometimes

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// One span as the layer saw it.
#[non_exhaustive]
#[derive(Debug, Clone, Default)]
pub struct Captured {
    /// The span's name.
    pub name: &'static str,
    /// The name of its parent span, if any.
    pub parent: Option<&'static str>,
    /// The names of the spans it `follows_from`, in the order they were linked.
    pub follows: Vec<&'static str>,
    /// Every field value recorded, at creation and after, as text, in order.
    pub fields: Vec<(String, String)>,
}

impl Captured {
    /// The last value recorded for `field`, if any.
    pub fn field(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v.as_str())
    }
}

/// The spans seen so far; clones share them.
#[derive(Debug, Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<Captured>>>);

struct Index(usize);

impl Capture {
    /// Capture the spans of this thread until the guard drops (and install the global
    /// "ask each time" subscriber the first time, see the [module docs](self)).
    pub fn install() -> (Self, DefaultGuard) {
        // Tests run in parallel threads: a callsite first seen on a thread without a
        // subscriber, racing with another test installing one, can be cached as never
        // enabled. A global subscriber that answers "sometimes" to every callsite (and
        // enables nothing) keeps each span asking the thread's own subscriber.
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let _ = tracing::subscriber::set_global_default(AskEachTime);
            tracing::callsite::rebuild_interest_cache();
        });
        let capture = Self::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        (capture, tracing::subscriber::set_default(subscriber))
    }

    /// Every captured span named `name`.
    pub fn named(&self, name: &str) -> Vec<Captured> {
        let all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        all.iter().filter(|c| c.name == name).cloned().collect()
    }

    /// The one span named `name`; fails the test naming what was seen otherwise.
    pub fn one(&self, name: &str) -> Captured {
        let found = self.named(name);
        assert_eq!(found.len(), 1, "spans named {name}: {found:?}");
        found.into_iter().next().expect("one span")
    }

    fn with<R>(&self, f: impl FnOnce(&mut Vec<Captured>) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Enables nothing, but never lets a callsite be cached as disabled.
struct AskEachTime;

impl tracing::Subscriber for AskEachTime {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }

    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        false
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, _: &tracing::Event<'_>) {}

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut captured = Captured {
            name: attrs.metadata().name(),
            parent: span.parent().map(|p| p.name()),
            ..Captured::default()
        };
        attrs.record(&mut Fields(&mut captured.fields));
        let index = self.with(|all| {
            all.push(captured);
            all.len() - 1
        });
        span.extensions_mut().insert(Index(index));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(index) = ctx
            .span(id)
            .and_then(|s| s.extensions().get::<Index>().map(|i| i.0))
        else {
            return;
        };
        self.with(|all| values.record(&mut Fields(&mut all[index].fields)));
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: Context<'_, S>) {
        let (Some(span), Some(cause)) = (ctx.span(id), ctx.span(follows)) else {
            return;
        };
        let Some(index) = span.extensions().get::<Index>().map(|i| i.0) else {
            return;
        };
        self.with(|all| all[index].follows.push(cause.name()));
    }
}
