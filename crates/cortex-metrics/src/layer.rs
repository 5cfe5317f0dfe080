//! A tower [`Layer`] that records every HTTP request per route template.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::Metrics;

/// The route recorded for requests that matched no route (404s, scans): one series
/// for all of them, never one per path.
pub const UNMATCHED_ROUTE: &str = "(unmatched)";

/// Records method, route template, status and latency of every request into a
/// [`Metrics`] registry.
///
/// The route comes from axum's [`MatchedPath`], so `/users/42` is recorded as
/// `/users/{id}`. Add it with `Router::layer`, which runs it after routing; requests
/// that match no route are recorded as [`UNMATCHED_ROUTE`]. A method outside the
/// standard nine (the client chooses it) is recorded as
/// [`OTHER_METHOD`](crate::OTHER_METHOD), and the number of distinct series is capped by
/// [`MetricsConfig::max_endpoints`](crate::MetricsConfig::max_endpoints), so no request
/// can add a series past it.
///
/// ```
/// use axum::{Router, routing::get};
/// use cortex_metrics::{Metrics, MetricsLayer};
///
/// let metrics = Metrics::new();
/// let app: Router = Router::new()
///     .route("/users/{id}", get(|| async { "user" }))
///     .layer(MetricsLayer::new(metrics.clone()));
/// ```
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    metrics: Metrics,
}

impl MetricsLayer {
    /// Record into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service made by [`MetricsLayer`].
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B, ResB> Service<Request<B>> for MetricsService<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| UNMATCHED_ROUTE.to_owned(), |p| p.as_str().to_owned());
        let method = req.method().as_str().to_owned();
        MetricsFuture {
            inner: self.inner.call(req),
            record: Some(Pending {
                metrics: self.metrics.clone(),
                method,
                route,
                start: Instant::now(),
            }),
        }
    }
}

#[derive(Debug)]
struct Pending {
    metrics: Metrics,
    method: String,
    route: String,
    start: Instant,
}

pin_project! {
    /// The response future of [`MetricsService`].
    #[derive(Debug)]
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        record: Option<Pending>,
    }
}

impl<F, ResB, E> Future for MetricsFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if let Some(p) = this.record.take() {
            // A service error never reached the client as a response: count it as 500.
            let status = out.as_ref().map_or(500, |r| r.status().as_u16());
            p.metrics
                .record_endpoint(&p.method, &p.route, status, p.start.elapsed());
        }
        Poll::Ready(out)
    }
}
