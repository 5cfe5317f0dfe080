use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why an attempt failed, and whether another attempt could help.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// The handler failed, panicked or timed out: retried until `max_attempts`.
    Retryable(String),
    /// The payload or the result cannot be (de)serialized: no attempt can succeed.
    Permanent(String),
}

/// A handler with its types erased: JSON text in, JSON text out.
pub(crate) type Handler =
    Arc<dyn Fn(&str) -> BoxFuture<'static, Result<String, AttemptError>> + Send + Sync>;

/// Named task handlers.
///
/// Closures cannot cross processes, so a durable task names its handler and every worker
/// process registers the handlers it can run under the same names.
#[derive(Default, Clone)]
pub struct Registry {
    handlers: HashMap<String, Handler>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `f` under `name`, replacing any handler of that name.
    ///
    /// The payload is decoded from JSON into `P` and the result encoded as JSON. A payload
    /// that does not decode fails the task at once (no attempt could succeed); an error
    /// returned by `f` is retried up to `max_attempts`.
    pub fn register<P, R, F, Fut>(&mut self, name: &str, f: F) -> &mut Self
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, crate::BoxError>> + Send + 'static,
    {
        let handler: Handler =
            Arc::new(
                move |payload: &str| match serde_json::from_str::<P>(payload) {
                    Ok(p) => {
                        let fut = f(p);
                        Box::pin(async move {
                            let r = fut
                                .await
                                .map_err(|e| AttemptError::Retryable(e.to_string()))?;
                            serde_json::to_string(&r)
                                .map_err(|e| AttemptError::Permanent(format!("result: {e}")))
                        })
                    }
                    Err(e) => {
                        let msg = format!("payload: {e}");
                        Box::pin(async move { Err(AttemptError::Permanent(msg)) })
                    }
                },
            );
        self.handlers.insert(name.to_owned(), handler);
        self
    }

    /// The registered names, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Handler> {
        self.handlers.get(name)
    }
}
