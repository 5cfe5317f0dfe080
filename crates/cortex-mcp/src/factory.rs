use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cortex_metrics::Metrics;
use tokio::sync::OnceCell;

use cortex_support::EnvVar;

use crate::{Endpoint, Error, McpClient, McpClientConfig, McpStats, Result};

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
/// Lookups of different services do not wait for each other: a service whose connect
/// hangs for `connect_timeout` holds up only the lookups of that service, which share
/// its one connect.
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
    /// One cell per service, made on first lookup and filled by its connect. The lock
    /// is held only to find or add a cell, never across a connect.
    clients: Mutex<HashMap<String, Arc<OnceCell<McpClient>>>>,
}

impl std::fmt::Debug for McpClientFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut services: Vec<String> = self.map().keys().cloned().collect();
        services.sort_unstable();
        f.debug_struct("McpClientFactory")
            .field("config", &self.config)
            .field("services", &services)
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

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<OnceCell<McpClient>>>> {
        // The map holds no invariant a panic could break half-way.
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record into this registry instead of the global one: every client's series,
    /// labeled `service="<name>"` (listed at [`McpClientBuilder::metrics`](crate::McpClientBuilder::metrics)).
    pub fn metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// The per-service variable the factory reads, as a pattern: `<NAME>` is the
    /// service name upper-cased with `-` and `.` turned into `_` (see
    /// [`endpoint_var`](Self::endpoint_var)). The settings shared by every client are
    /// [`McpClientConfig`]'s (`MCP_*`).
    pub const VARS: &'static [EnvVar] = &[EnvVar {
        name: "<NAME>_SERVICE_URL",
        default: "unset",
        doc: "Endpoint of service `<name>` for the factory: `http(s)://...` or `stdio:program args...`; unset = `Error::MissingEndpoint` naming it.",
    }];

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

    /// The client of `service`, made on first use. Concurrent first lookups of one
    /// service wait for one connect (up to `connect_timeout`); lookups of other
    /// services do not wait for it.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a name other than letters, digits, `-`, `_` and `.`
    /// or a bad endpoint value (naming the variable); [`Error::MissingEndpoint`]
    /// naming the variable to set when it is not; [`Error::Closed`] when
    /// [`close_all`](Self::close_all) ran while the client was being made.
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
        let cell = self.map().entry(service.to_owned()).or_default().clone();
        if let Some(client) = cell.get() {
            return Ok(client.clone());
        }
        // Outside the lock: a slow connect holds up only this service's lookups, which
        // wait on the same cell (one of them takes over if this one is cancelled).
        match cell.get_or_try_init(|| self.make(service)).await {
            Ok(client) => {
                let client = client.clone();
                let still_ours = self
                    .map()
                    .get(service)
                    .is_some_and(|c| Arc::ptr_eq(c, &cell));
                if still_ours {
                    return Ok(client);
                }
                // `close_all` emptied the map while this client was being made.
                client.close(Duration::ZERO).await;
                Err(Error::Closed {
                    service: service.into(),
                })
            }
            Err(e) => {
                // No client: leave no empty cell behind (unless another lookup has
                // filled it meanwhile).
                let mut map = self.map();
                if map
                    .get(service)
                    .is_some_and(|c| Arc::ptr_eq(c, &cell) && !c.initialized())
                {
                    map.remove(service);
                }
                Err(e)
            }
        }
    }

    /// Read the endpoint of `service` and connect a client to it.
    async fn make(&self, service: &str) -> Result<McpClient> {
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
        builder.build().await
    }

    /// The clients of several services at once, e.g. at start-up
    /// `connect_all(&["memory-service", "cognition-service"])`, in that order. Each is
    /// made as by [`client`](Self::client), all at once, so a service that is down
    /// costs at most one `connect_timeout` in all and yields an unhealthy client that
    /// connects later.
    ///
    /// # Errors
    /// The configuration error of the first service in `services` that has one (a
    /// missing or bad endpoint variable), so a service that was never configured fails
    /// the start-up loudly. The clients of the others are made all the same.
    pub async fn connect_all(&self, services: &[&str]) -> Result<Vec<McpClient>> {
        futures_util::future::join_all(services.iter().map(|s| self.client(s)))
            .await
            .into_iter()
            .collect()
    }

    /// The stats of every client made so far, sorted by service name.
    pub fn stats(&self) -> Vec<McpStats> {
        let mut stats: Vec<McpStats> = self
            .map()
            .values()
            .filter_map(|cell| cell.get().map(McpClient::stats))
            .collect();
        stats.sort_unstable_by(|a, b| a.service.cmp(&b.service));
        stats
    }

    /// Clients made so far (not those still connecting for their first time).
    pub async fn clients(&self) -> Vec<McpClient> {
        self.map()
            .values()
            .filter_map(|cell| cell.get().cloned())
            .collect()
    }

    /// Close every client (see [`McpClient::close`]) and forget them. A lookup still
    /// connecting for its first time closes its client when done and fails with
    /// [`Error::Closed`].
    pub async fn close_all(&self, grace: Duration) {
        let cells: Vec<_> = self.map().drain().map(|(_, cell)| cell).collect();
        let clients: Vec<McpClient> = cells.iter().filter_map(|c| c.get().cloned()).collect();
        futures_util::future::join_all(clients.iter().map(|c| c.close(grace))).await;
    }
}
