//! A value computed once, asynchronously, on first access.

use std::future::Future;

use tokio::sync::OnceCell;

/// A value loaded once, on first access, by an async initialiser.
///
/// Concurrent callers of [`get_or_init`](Self::get_or_init) wait for the one running
/// initialiser; if it fails, its caller gets the error and the next caller tries again
/// (failures are not cached).
///
/// ```
/// use cortex_cache::LazyLoader;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// static CONFIG: LazyLoader<String> = LazyLoader::const_new();
/// let value = CONFIG
///     .get_or_init(|| async { Ok::<_, std::io::Error>("loaded".to_owned()) })
///     .await?;
/// assert_eq!(value, "loaded");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default)]
pub struct LazyLoader<T> {
    cell: OnceCell<T>,
}

impl<T> LazyLoader<T> {
    /// An empty loader.
    pub fn new() -> Self {
        Self {
            cell: OnceCell::new(),
        }
    }

    /// An empty loader usable in a `static`.
    pub const fn const_new() -> Self {
        Self {
            cell: OnceCell::const_new(),
        }
    }

    /// The value, running `init` if no call has succeeded yet.
    ///
    /// # Errors
    ///
    /// The error of `init` when this call ran it and it failed; nothing is stored then.
    pub async fn get_or_init<F, Fut, E>(&self, init: F) -> Result<&T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.cell.get_or_try_init(init).await
    }

    /// The value if it has been loaded.
    pub fn get(&self) -> Option<&T> {
        self.cell.get()
    }

    /// Whether the value has been loaded.
    pub fn is_loaded(&self) -> bool {
        self.cell.initialized()
    }

    /// The loaded value, if any.
    pub fn into_inner(self) -> Option<T> {
        self.cell.into_inner()
    }
}
