use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;

use crate::BoxError;

/// Loads a batch of keys in one call: a database `WHERE id = ANY($1)`, one HTTP request
/// for many ids, one `MGET`.
///
/// Implement it with `async fn`; or wrap a closure with [`batch_fn`].
///
/// ```
/// use std::collections::HashMap;
/// use cortex_batch::{BatchFn, Loaded};
///
/// struct Squares;
///
/// impl BatchFn for Squares {
///     type Key = u64;
///     type Value = u64;
///     type Error = std::convert::Infallible;
///
///     async fn load(&self, keys: &[u64]) -> Result<Loaded<u64, u64>, Self::Error> {
///         Ok(keys.iter().map(|k| k * k).collect::<Vec<_>>().into())
///     }
/// }
/// ```
pub trait BatchFn: Send + Sync + 'static {
    /// What a request asks for.
    type Key: Eq + Hash + Clone + Send + Sync + 'static;
    /// What it gets; cloned to every request of the batch that asked for the same key.
    type Value: Clone + Send + 'static;
    /// The loader's failure, shared by every request of the batch as [`Error::Loader`].
    ///
    /// [`Error::Loader`]: crate::Error::Loader
    type Error: Into<BoxError> + Send + 'static;

    /// Load `keys`: distinct, at most `max_batch_size` of them, never empty.
    ///
    /// Answer [`Loaded::InOrder`] (one value per key, in the order of `keys`) or
    /// [`Loaded::ByKey`] (a key left out gets [`Error::Missing`]).
    ///
    /// [`Error::Missing`]: crate::Error::Missing
    fn load(
        &self,
        keys: &[Self::Key],
    ) -> impl Future<Output = Result<Loaded<Self::Key, Self::Value>, Self::Error>> + Send;
}

/// The answer of a [`BatchFn`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Loaded<K, V> {
    /// One value per key, in the order of the keys. A different count fails the whole
    /// batch with [`Error::WrongCount`](crate::Error::WrongCount).
    InOrder(Vec<V>),
    /// Values by key; a key without a value gets [`Error::Missing`](crate::Error::Missing)
    /// and the rest of the batch is unaffected.
    ByKey(HashMap<K, V>),
}

impl<K, V> From<Vec<V>> for Loaded<K, V> {
    fn from(values: Vec<V>) -> Self {
        Loaded::InOrder(values)
    }
}

impl<K, V> From<HashMap<K, V>> for Loaded<K, V> {
    fn from(values: HashMap<K, V>) -> Self {
        Loaded::ByKey(values)
    }
}

/// A [`BatchFn`] from a closure taking the batch's keys by value:
///
/// ```
/// let squares = cortex_batch::batch_fn(|keys: Vec<u64>| async move {
///     Ok::<_, std::io::Error>(keys.iter().map(|k| k * k).collect::<Vec<_>>())
/// });
/// # let _ = squares;
/// ```
///
/// The closure may answer a `Vec<V>` (in order), a `HashMap<K, V>` (by key) or a
/// [`Loaded`]. The keys are copied into the `Vec` so the future can own them.
pub fn batch_fn<K, V, E, L, Fun, Fut>(f: Fun) -> BatchFnFn<Fun, K, V, E, L>
where
    Fun: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<L, E>> + Send,
    L: Into<Loaded<K, V>>,
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
    E: Into<BoxError> + Send + 'static,
{
    BatchFnFn {
        f,
        _types: PhantomData,
    }
}

/// Marks the closure's types without owning them (so `BatchFnFn` is `Send + Sync`).
type Types<K, V, E, L> = fn(K) -> (V, E, L);

/// The [`BatchFn`] made by [`batch_fn`].
pub struct BatchFnFn<Fun, K, V, E, L> {
    f: Fun,
    _types: PhantomData<Types<K, V, E, L>>,
}

impl<Fun, K, V, E, L> fmt::Debug for BatchFnFn<Fun, K, V, E, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchFnFn").finish_non_exhaustive()
    }
}

impl<Fun: Clone, K, V, E, L> Clone for BatchFnFn<Fun, K, V, E, L> {
    fn clone(&self) -> Self {
        Self {
            f: self.f.clone(),
            _types: PhantomData,
        }
    }
}

impl<K, V, E, L, Fun, Fut> BatchFn for BatchFnFn<Fun, K, V, E, L>
where
    Fun: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<L, E>> + Send,
    L: Into<Loaded<K, V>> + 'static,
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
    E: Into<BoxError> + Send + 'static,
{
    type Key = K;
    type Value = V;
    type Error = E;

    fn load(&self, keys: &[K]) -> impl Future<Output = Result<Loaded<K, V>, E>> + Send {
        let fut = (self.f)(keys.to_vec());
        async move { fut.await.map(Into::into) }
    }
}
