//! A tower [`Layer`] that admits requests through a [`Limiter`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Response, StatusCode, header::RETRY_AFTER};
use tower::{Layer, Service};

use crate::{Error, Limiter};

/// Admits each request through a [`Limiter`]; when it is saturated, answers
/// `503 Service Unavailable` with `Retry-After` instead of calling the service.
///
/// ```
/// use cortex_pool::{Limiter, LimiterConfig, LimiterLayer};
///
/// let limiter = Limiter::new(LimiterConfig::default())?;
/// let layer = LimiterLayer::new(limiter);
/// # let _ = layer;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct LimiterLayer {
    limiter: Limiter,
}

impl LimiterLayer {
    /// Admit through `limiter`.
    pub fn new(limiter: Limiter) -> Self {
        Self { limiter }
    }
}

impl<S> Layer<S> for LimiterLayer {
    type Service = LimiterService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LimiterService {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// The service made by [`LimiterLayer`].
#[derive(Clone, Debug)]
pub struct LimiterService<S> {
    inner: S,
    limiter: Limiter,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, Req, ResB> Service<Req> for LimiterService<S>
where
    S: Service<Req, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    Req: Send + 'static,
    ResB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The service polled ready is the one that must be called: take it, leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limiter = self.limiter.clone();
        Box::pin(async move {
            match limiter.acquire().await {
                Ok(admission) => {
                    let res = inner.call(req).await;
                    drop(admission);
                    res
                }
                Err(Error::Saturated { .. }) | Err(_) => {
                    let mut res = Response::new(ResB::default());
                    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    let secs = limiter.retry_after().as_secs().max(1);
                    res.headers_mut()
                        .insert(RETRY_AFTER, HeaderValue::from(secs));
                    Ok(res)
                }
            }
        })
    }
}
