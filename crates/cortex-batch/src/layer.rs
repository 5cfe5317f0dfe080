//! The tower adapter.
//!
//! Inside, a `Service<Vec<K>, Response = Vec<V>>` (one call for many keys, answers in
//! order) is driven as the [`BatchFn`]; outside, [`BatchService`] is a `Service<K>`
//! taking one key per request. So a stack of single-key middleware (timeouts, retries,
//! metrics) can sit in front of a batch endpoint.

use std::fmt;
use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use cortex_metrics::Metrics;
use tower::{Layer, Service};

use crate::{BatchConfig, BatchFn, Batcher, BoxError, Error, Loaded, Result};

/// A [`BatchFn`] calling a tower service with the batch's keys. The service is cloned
/// per batch (the tower convention for sharing), then driven to ready and called.
pub struct ServiceBatchFn<S, K> {
    inner: S,
    _key: PhantomData<fn(K)>,
}

impl<S, K> ServiceBatchFn<S, K> {
    /// Wrap `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            _key: PhantomData,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: fmt::Debug, K> fmt::Debug for ServiceBatchFn<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ServiceBatchFn").field(&self.inner).finish()
    }
}

impl<S, K, V> BatchFn for ServiceBatchFn<S, K>
where
    S: Service<Vec<K>, Response = Vec<V>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send + 'static,
    K: Eq + std::hash::Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
{
    type Key = K;
    type Value = V;
    type Error = S::Error;

    fn load(&self, keys: &[K]) -> impl Future<Output = Result<Loaded<K, V>, S::Error>> + Send {
        let mut svc = self.inner.clone();
        let keys = keys.to_vec();
        async move {
            poll_fn(|cx| svc.poll_ready(cx)).await?;
            svc.call(keys).await.map(Loaded::InOrder)
        }
    }
}

/// Turns a batch service into a single-key [`BatchService`] with one [`BatchConfig`].
pub struct BatchLayer<K> {
    config: BatchConfig,
    name: String,
    metrics: Option<Metrics>,
    _key: PhantomData<fn(K)>,
}

impl<K> fmt::Debug for BatchLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchLayer")
            .field("config", &self.config)
            .field("name", &self.name)
            .field("own_metrics", &self.metrics.is_some())
            .finish()
    }
}

impl<K> Clone for BatchLayer<K> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            name: self.name.clone(),
            metrics: self.metrics.clone(),
            _key: PhantomData,
        }
    }
}

impl<K> BatchLayer<K> {
    /// A layer building one batcher per wrapped service, named `name`: its metric
    /// series are those of [`BatcherBuilder::with_metrics`](crate::BatcherBuilder::with_metrics),
    /// labeled `batcher="<name>"`, in the global registry unless
    /// [`with_metrics`](Self::with_metrics) names another. Every service this layer
    /// wraps records under the same label; give each wrapped endpoint a layer of its
    /// own name to tell them apart.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when a size or limit is zero.
    pub fn new(config: BatchConfig, name: impl Into<String>) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            name: name.into(),
            metrics: None,
            _key: PhantomData,
        })
    }

    /// The registry the batchers record into (default: [`cortex_metrics::global()`]).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

impl<S, K, V> Layer<S> for BatchLayer<K>
where
    ServiceBatchFn<S, K>: BatchFn<Key = K, Value = V>,
{
    type Service = BatchService<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        let mut builder = Batcher::builder(ServiceBatchFn::new(inner))
            .config(self.config.clone())
            .name(self.name.clone());
        if let Some(metrics) = &self.metrics {
            builder = builder.with_metrics(metrics.clone());
        }
        BatchService {
            batcher: builder.build_validated(),
        }
    }
}

/// A `Service<K>` answering each key from batched calls of the inner
/// `Service<Vec<K>>`. Always ready (until closed): backpressure is the batcher's
/// `max_in_flight`, `max_pending` (a call past it answers [`Error::Saturated`] at
/// once) and `request_timeout`, not `poll_ready`.
pub struct BatchService<S, K>
where
    ServiceBatchFn<S, K>: BatchFn,
{
    batcher: Batcher<ServiceBatchFn<S, K>>,
}

impl<S, K> BatchService<S, K>
where
    ServiceBatchFn<S, K>: BatchFn,
{
    /// The batcher, for `stats()` and `close()`.
    pub fn batcher(&self) -> &Batcher<ServiceBatchFn<S, K>> {
        &self.batcher
    }
}

impl<S, K> Clone for BatchService<S, K>
where
    ServiceBatchFn<S, K>: BatchFn,
{
    fn clone(&self) -> Self {
        Self {
            batcher: self.batcher.clone(),
        }
    }
}

impl<S, K> fmt::Debug for BatchService<S, K>
where
    ServiceBatchFn<S, K>: BatchFn,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchService")
            .field("batcher", &self.batcher)
            .finish()
    }
}

impl<S, K, V> Service<K> for BatchService<S, K>
where
    ServiceBatchFn<S, K>: BatchFn<Key = K, Value = V>,
    K: Send + 'static,
    V: Send + 'static,
{
    type Response = V;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<V>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.batcher.is_closed() {
            Poll::Ready(Err(Error::Closed))
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, key: K) -> Self::Future {
        let batcher = self.batcher.clone();
        Box::pin(async move { batcher.load(key).await })
    }
}
