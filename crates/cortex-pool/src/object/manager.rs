//! The [`Manager`] trait: how a [`Pool`](super::Pool) creates, resets and checks its objects.

use std::future::Future;

use crate::BoxError;

/// Creates, resets and checks the objects of a [`Pool`](super::Pool).
///
/// `recycle` returns the manager's own error (the pool wraps it in
/// [`Error::Backend`](crate::Error::Backend)) and has a default, because many pooled
/// objects (buffers, parsers, clients without session state) need no reset; the cheap
/// synchronous [`is_valid`](Manager::is_valid) check is separate so a pool can run it
/// even with recycling turned off.
pub trait Manager: Send + Sync + 'static {
    /// The pooled object.
    type Object: Send + 'static;
    /// What `create` and `recycle` fail with.
    type Error: Into<BoxError> + Send + 'static;

    /// Create a new object.
    ///
    /// # Errors
    /// The backend's error; the pool returns it as
    /// [`Error::Backend`](crate::Error::Backend) and frees the slot.
    fn create(&self) -> impl Future<Output = Result<Self::Object, Self::Error>> + Send;

    /// Reset `obj` before it is handed out again. Default: nothing to reset.
    ///
    /// # Errors
    /// Any error drops the object; the pool creates a replacement.
    fn recycle(
        &self,
        obj: &mut Self::Object,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = obj;
        async { Ok(()) }
    }

    /// A cheap synchronous check run before an idle object is handed out; `false`
    /// drops it and creates a replacement. Default: `true`.
    fn is_valid(&self, obj: &Self::Object) -> bool {
        let _ = obj;
        true
    }
}
