use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cortex_metrics::Metrics;
use tokio::sync::Mutex;

use crate::{Endpoint, Error, McpClient, McpClientConfig, Result};

type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// One [`McpClient`] per service name, made on first use and shared after.
///
/// The endpoint of service `memory-service` comes from `MEMORY_SERVICE_SERVICE_URL`
/// (the name upper-cased, `-` and `.` turned into `_`, then `_SERVICE_URL`); every
/// client shares the factory's [`McpClientConfig`] (`MCP_*` variables) and metrics
/// registry. A client whose service is down at first use is still returned, unhealthy,
/// and connects in the background, so one service starting late does not stop another
/// from starting.
///
/// ```
/// use std::collections::HashMap;
/// use cortex_mcp::{McpClientConfig, McpClientFactory};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let factory = McpClientFactory::with_lookup(McpClientConfig::default(), |_| None);
/// let err = factory.client("memory-service").await.unwrap_err();
/// assert!(err.to_string().contains("MEMORY_SERVICE_SERVICE_URL"));
/// # });
/// ```
pub struct McpClientFactory {
    config: McpClientConfig,
    metrics: Option<Metrics>,
    lookup: Box<Lookup>,
    clients: Mutex<HashMap<String, McpClient>>,
}

impl std::fmt::Debug for McpClientFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpClientFactory")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl McpClientFactory {
    /// Settings from `MCP_*`, endpoints from `<NAME>_SERVICE_URL` in the process
    /// environment.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable of a bad `MCP_*` value.
    pub fn from_env() -> Result<Self> {
        Ok(Self::with_lookup(McpClientConfig::from_env()?, |k| {
            std::env::var(k).ok()
        }))
    }

    /// `config` for every client; endpoints looked up by `lookup` (given the variable
    /// name), e.g. from a map in a test.
    pub fn with_lookup(
        config: McpClientConfig,
        lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            config,
            metrics: None,
            lookup: Box::new(lookup),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Record into this registry instead of the global one.
    pub fn metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// The environment variable that holds the endpoint of `service`.
    ///
    /// ```
    /// assert_eq!(cortex_mcp::McpClientFactory::endpoint_var("cognition-service"), "COGNITION_SERVICE_SERVICE_URL");
    /// ```
    pub fn endpoint_var(service: &str) -> String {
        let mut var: String = service
            .chars()
            .map(|c| match c {
                '-' | '.' => '_',
                c => c.to_ascii_uppercase(),
            })
            .collect();
        var.push_str("_SERVICE_URL");
        var
    }

    /// The client of `service`, made on first use.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a name other than letters, digits, `-`, `_` and `.`
    /// or a bad endpoint value (naming the variable); [`Error::MissingEndpoint`]
    /// naming the variable to set when it is not.
    pub async fn client(&self, service: &str) -> Result<McpClient> {
        let valid = !service.is_empty()
            && service.len() <= 100
            && service
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(Error::InvalidConfig {
                key: "service",
                value: service.to_owned(),
                reason: "a service name is 1 to 100 letters, digits, '-', '_' or '.'".to_owned(),
            });
        }
        // Held across the connect, so two first calls for one service make one client.
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(service) {
            return Ok(client.clone());
        }
        let var = Self::endpoint_var(service);
        let raw = (self.lookup)(&var)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| Error::MissingEndpoint {
                service: service.to_owned(),
                var: var.clone(),
            })?;
        let endpoint: Endpoint = raw.parse().map_err(|e| match e {
            Error::InvalidConfig { value, reason, .. } => Error::InvalidConfig {
                key: "<SERVICE>_SERVICE_URL",
                value,
                reason: format!("{var}: {reason}"),
            },
            other => other,
        })?;
        let mut builder = McpClient::builder(service, endpoint)
            .config(self.config.clone())
            .require_connection(false);
        if let Some(metrics) = &self.metrics {
            builder = builder.metrics(metrics);
        }
        let client = builder.build().await?;
        clients.insert(service.to_owned(), client.clone());
        Ok(client)
    }

    /// The clients of several services at once, e.g. at start-up
    /// `connect_all(&["memory-service", "cognition-service"])`. Each is made as by
    /// [`client`](Self::client), one after the other; a service that is down yields an
    /// unhealthy client that connects later.
    ///
    /// # Errors
    /// The first configuration error (a missing or bad endpoint variable), so a service
    /// that was never configured fails the start-up loudly.
    pub async fn connect_all(&self, services: &[&str]) -> Result<Vec<McpClient>> {
        // One after the other: `client` holds the map's lock while it connects. A
        // service that is down costs at most `connect_timeout`, then connects later.
        let mut clients = Vec::with_capacity(services.len());
        for service in services {
            clients.push(self.client(service).await?);
        }
        Ok(clients)
    }

    /// Clients made so far, by service name.
    pub async fn clients(&self) -> Vec<McpClient> {
        self.clients.lock().await.values().cloned().collect()
    }

    /// Close every client (see [`McpClient::close`]) and forget them.
    pub async fn close_all(&self, grace: Duration) {
        let clients: Vec<McpClient> = self.clients.lock().await.drain().map(|(_, c)| c).collect();
        let clients = Arc::new(clients);
        futures_util::future::join_all(clients.iter().map(|c| c.close(grace))).await;
    }
}
