//! A capturing `tracing` layer for tests: every span's name, parent, `follows_from`
//! links and recorded fields, kept in order of creation.

#![allow(dead_code)] // each test uses the accessors it needs

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// One span as the layer saw it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Captured {
    pub(crate) name: &'static str,
    pub(crate) parent: Option<&'static str>,
    pub(crate) follows: Vec<&'static str>,
    pub(crate) fields: Vec<(String, String)>,
}

impl Captured {
    /// The last value recorded for `field`, if any.
    pub(crate) fn field(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v.as_str())
    }
}

/// The spans seen so far; clones share them.
#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<Vec<Captured>>>);

struct Index(usize);

impl Capture {
    /// Capture the spans of this thread until the guard drops.
    pub(crate) fn install() -> (Self, DefaultGuard) {
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
    pub(crate) fn named(&self, name: &str) -> Vec<Captured> {
        let all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        all.iter().filter(|c| c.name == name).cloned().collect()
    }

    /// The one span named `name`; fails the test naming what was seen otherwise.
    pub(crate) fn one(&self, name: &str) -> Captured {
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
