//! The client of one service: its builder and its public calls. A call's path is in
//! [`call`] (attempts, retries, hedges), the rule for retrying in [`retry`], the session
//! slots in [`slots`], the result cache in [`cache`].

use std::ffi::OsString;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cortex_cache::S3FifoCache;
use cortex_metrics::{Counter, Histogram, Metrics, Operation};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ReadResourceRequestParams, ReadResourceResult, Tool,
};
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::breaker::Breaker;
use crate::hints::ToolHints;
use crate::session::{Connector, Pool, StdioEnv};
use crate::stats::{Health, McpStats};
use crate::{CircuitState, Endpoint, Error, McpClientConfig, Result, key};

mod cache;
mod call;
mod options;
mod retry;
mod slots;

use self::cache::{Cached, Lookup};
use self::call::{Request, Response};
pub use self::options::CallOptions;

/// The label key naming the service in every `mcp.*` family.
const LABEL: &str = "service";

/// Handles into cortex-metrics, made once so a call formats no names. One family per
/// measure, this client's series labeled `service="<name>"` (see
/// [`McpClientBuilder::metrics`] for the list).
#[derive(Debug)]
struct Instruments {
    call_tool: Arc<Operation>,
    read_resource: Arc<Operation>,
    list_tools: Arc<Operation>,
    /// Latency of each public call that went to the service, retries included.
    call: Arc<Histogram>,
    requests: Arc<Counter>,
    errors: Arc<Counter>,
    tool_errors: Arc<Counter>,
    timeouts: Arc<Counter>,
    retries: Arc<Counter>,
    hedges: Arc<Counter>,
    reconnects: Arc<Counter>,
    circuit_opened: Arc<Counter>,
    cache_hits: Arc<Counter>,
    cache_misses: Arc<Counter>,
}

impl Instruments {
    fn new(metrics: &Metrics, service: &str) -> Self {
        let labels = [(LABEL, service)];
        // `service` is a valid label name, so these cannot fail; the unlabeled series
        // is the fallback that keeps recording if a registry ever refused one.
        let counter = |what: &str| {
            metrics
                .counter_with(what, &labels)
                .unwrap_or_else(|_| metrics.counter(what))
        };
        Self {
            call_tool: metrics.operation_in("mcp", &format!("{service}.call_tool")),
            read_resource: metrics.operation_in("mcp", &format!("{service}.read_resource")),
            list_tools: metrics.operation_in("mcp", &format!("{service}.list_tools")),
            call: metrics
                .histogram_seconds_with("mcp.call", &labels)
                .unwrap_or_else(|_| metrics.histogram_seconds("mcp.call")),
            requests: counter("mcp.requests"),
            errors: counter("mcp.errors"),
            tool_errors: counter("mcp.tool_errors"),
            timeouts: counter("mcp.timeouts"),
            retries: counter("mcp.retries"),
            hedges: counter("mcp.hedges"),
            reconnects: counter("mcp.reconnects"),
            circuit_opened: counter("mcp.circuit_opened"),
            cache_hits: counter("mcp.cache_hits"),
            cache_misses: counter("mcp.cache_misses"),
        }
    }
}

/// The value of the `mcp.breaker_state` gauge for `state`: 0 closed, 1 half-open,
/// 2 open, so "above 0" means "not plainly closed" and the worst state is the highest.
fn breaker_gauge(state: CircuitState) -> f64 {
    match state {
        CircuitState::Closed => 0.0,
        CircuitState::HalfOpen => 1.0,
        CircuitState::Open => 2.0,
    }
}

/// Register the scrape-time gauges `mcp.breaker_state` and `mcp.up` of `inner`'s
/// service. They hold a `Weak`, so the registry keeps no client alive, and read NaN
/// once the client is dropped. Both read a mutex held only for a few instructions (the
/// breaker's, while it is open) and atomics: quick, and nothing waits on I/O.
fn register_gauges(metrics: &Metrics, inner: &Arc<Inner>) {
    let labels = [(LABEL, &*inner.service)];
    let weak = Arc::downgrade(inner);
    let state = metrics.gauge_fn("mcp.breaker_state", &labels, move || {
        weak.upgrade()
            .map_or(f64::NAN, |i| breaker_gauge(i.breaker.state()))
    });
    let weak = Arc::downgrade(inner);
    let up = metrics.gauge_fn("mcp.up", &labels, move || {
        weak.upgrade()
            .map_or(f64::NAN, |i| if i.health().healthy { 1.0 } else { 0.0 })
    });
    if let Err(e) = state.and(up) {
        tracing::warn!(service = %inner.service, error = %e, "MCP gauges not registered");
    }
}

struct Inner {
    service: Arc<str>,
    endpoint: Endpoint,
    config: McpClientConfig,
    connector: Connector,
    pool: Pool,
    breaker: Breaker,
    /// The tools the service declares safe to repeat.
    hints: ToolHints,
    cache: Option<S3FifoCache<String, Cached>>,
    closed: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
    shutdown: CancellationToken,
    m: Instruments,
}

/// A resilient MCP client for one service.
///
/// It keeps `pool_size` sessions. One session carries many concurrent calls, so calls
/// fill the first session up to `max_concurrent_per_session` in flight and spill over
/// to the next; the others stand by, initialized, to take over at once when a session
/// breaks. Each call is bounded by `call_timeout` in all, and
/// each attempt by `request_timeout`. Transport failures and timeouts are retried with
/// exponential backoff and jitter, for calls that are safe to repeat (reads, listings,
/// calls marked idempotent or cacheable, tools the server annotates `readOnlyHint` or
/// `idempotentHint`); any other call is sent once, and such a failure after it was sent
/// ends it with [`Error::Indeterminate`]. A tool error is never retried. A broken session is rebuilt
/// in the background with backoff, a killed stdio child is started again, and after
/// `breaker_failures` consecutive failed attempts the circuit opens and calls fail at
/// once until a probe succeeds. Cacheable calls are answered from an in-memory
/// [`S3FifoCache`] of cortex-cache; latency, errors, retries, cache hits, the breaker's
/// state and health are recorded into cortex-metrics as `mcp.*` families labeled
/// `service="<name>"` (see [`McpClientBuilder::metrics`]).
///
/// Cloning is cheap and shares everything. Dropping the last clone stops the
/// background tasks and closes the sessions; [`close`](Self::close) does so gracefully.
/// `Debug` shows the endpoint with any password hidden.
///
/// ```no_run
/// use cortex_mcp::{Endpoint, McpClient, McpClientConfig};
/// use serde_json::json;
///
/// # async fn run() -> Result<(), cortex_mcp::Error> {
/// let client = McpClient::connect(
///     "memory-service",
///     Endpoint::http("http://127.0.0.1:8080/mcp"),
///     McpClientConfig::default(),
/// )
/// .await?;
/// let result = client.call_tool("echo", json!({ "message": "hi" })).await?;
/// println!("{:?}", result.content);
/// client.close(std::time::Duration::from_secs(5)).await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct McpClient {
    inner: Arc<Inner>,
    _stop: Arc<DropGuard>,
}

/// The endpoint redacted, the config, and the state: never the raw URL.
impl fmt::Debug for McpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("McpClient")
            .field("service", &inner.service)
            .field("endpoint", &inner.endpoint)
            .field("sessions_connected", &inner.pool.connected())
            .field("circuit", &inner.breaker.state())
            .field("closed", &inner.closed.load(Ordering::Relaxed))
            .field("config", &inner.config)
            .finish_non_exhaustive()
    }
}

/// Builds an [`McpClient`].
#[must_use]
pub struct McpClientBuilder {
    service: String,
    endpoint: Endpoint,
    config: McpClientConfig,
    metrics: Option<Metrics>,
    require_connection: bool,
    stdio_env: Vec<(OsString, OsString)>,
    parent_env: Option<Vec<(OsString, OsString)>>,
}

/// The endpoint redacted; of the child's environment, the names only.
impl fmt::Debug for McpClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |vars: &[(OsString, OsString)]| {
            vars.iter()
                .map(|(k, _)| k.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        f.debug_struct("McpClientBuilder")
            .field("service", &self.service)
            .field("endpoint", &self.endpoint)
            .field("config", &self.config)
            .field("require_connection", &self.require_connection)
            .field("stdio_env", &names(&self.stdio_env))
            .field("parent_env", &self.parent_env.as_deref().map(names))
            .finish_non_exhaustive()
    }
}

impl McpClientBuilder {
    /// Use these settings instead of the defaults.
    pub fn config(mut self, config: McpClientConfig) -> Self {
        self.config = config;
        self
    }

    /// Record into this registry instead of [`cortex_metrics::global`].
    ///
    /// One family per measure; this client's series carry the label
    /// `service="<name>"`:
    ///
    /// | registry name | exposed as | what |
    /// |---|---|---|
    /// | `mcp.call` | `cortex_mcp_call_seconds{service}` (histogram) | latency of each call that went to the service, retries and backoff included |
    /// | `mcp.requests` | `cortex_mcp_requests_total{service}` | calls that went to the service (cache hits excluded) |
    /// | `mcp.errors` | `cortex_mcp_errors_total{service}` | of those, the failed ones, tool errors included |
    /// | `mcp.tool_errors` | `cortex_mcp_tool_errors_total{service}` | failed calls whose tool reported the error |
    /// | `mcp.timeouts` | `cortex_mcp_timeouts_total{service}` | attempts that timed out |
    /// | `mcp.retries` | `cortex_mcp_retries_total{service}` | retries made |
    /// | `mcp.hedges` | `cortex_mcp_hedges_total{service}` | hedged second copies sent |
    /// | `mcp.reconnects` | `cortex_mcp_reconnects_total{service}` | sessions rebuilt after breaking |
    /// | `mcp.circuit_opened` | `cortex_mcp_circuit_opened_total{service}` | times the circuit opened |
    /// | `mcp.cache_hits` | `cortex_mcp_cache_hits_total{service}` | cacheable calls answered from the cache |
    /// | `mcp.cache_misses` | `cortex_mcp_cache_misses_total{service}` | cacheable calls that went to the service |
    /// | `mcp.breaker_state` | `cortex_mcp_breaker_state{service}` (gauge) | 0 closed, 1 half-open, 2 open |
    /// | `mcp.up` | `cortex_mcp_up{service}` (gauge) | 1 when [`McpClient::health`] says healthy, else 0 |
    ///
    /// The gauges are read at scrape time and read NaN once the client is dropped.
    /// Clients of one service name in one registry share their series (the gauges
    /// report the one built last); [`McpClientFactory`](crate::McpClientFactory) makes
    /// one client per name. Each call is also recorded as the operation
    /// `<service>.call_tool` (`.read_resource`, `.list_tools`) in category `mcp` of
    /// the registry's snapshot.
    pub fn metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// Whether [`build`](Self::build) fails when no session could be made (default:
    /// true). With false, the client starts unhealthy and connects in the background.
    pub fn require_connection(mut self, require: bool) -> Self {
        self.require_connection = require;
        self
    }

    /// Set `name` to `value` in the environment of a stdio child, whatever this
    /// process has (e.g. a token the child needs). Only for [`Endpoint::Stdio`].
    ///
    /// A stdio child does not inherit this process's environment, which holds the
    /// service's own secrets (`DATABASE_URL`, `REDIS_URL`, ...): it gets `PATH`,
    /// `HOME`, `LANG`, `LC_*` and `TMPDIR`
    /// ([`McpClientConfig::DEFAULT_STDIO_ENV`]), the variables named in
    /// [`McpClientConfig::stdio_env`] (`MCP_STDIO_ENV`), and those set here.
    /// `Debug` output shows the names set here, never the values.
    pub fn stdio_env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.stdio_env.push((name.into(), value.into()));
        self
    }

    /// Take the variables a stdio child may inherit (see [`stdio_env`](Self::stdio_env))
    /// from `vars` instead of this process's environment: e.g. an environment the
    /// application assembled, or a test's own.
    pub fn parent_env<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        self.parent_env = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// Check the settings, make the sessions (concurrently, each within
    /// `connect_timeout`) and start reconnecting the ones that failed.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad setting or endpoint; [`Error::Connect`] when
    /// no session could be made and a connection is required.
    pub async fn build(self) -> Result<McpClient> {
        self.config.validate()?;
        if self.service.is_empty() {
            return Err(Error::InvalidConfig {
                key: "service",
                value: self.service,
                reason: "a service needs a name".to_owned(),
            });
        }
        let metrics = self
            .metrics
            .unwrap_or_else(|| cortex_metrics::global().clone());
        let config = self.config;
        let cache = if config.cache_capacity == 0 {
            None
        } else {
            let cache = S3FifoCache::builder()
                .capacity(config.cache_capacity)
                .ttl(config.cache_ttl)
                .build()
                .map_err(|e| Error::InvalidConfig {
                    key: "MCP_CACHE_CAPACITY",
                    value: config.cache_capacity.to_string(),
                    reason: e.to_string(),
                })?;
            Some(cache)
        };
        let shutdown = CancellationToken::new();
        let stdio_env = StdioEnv {
            explicit: self.stdio_env,
            parent: self.parent_env,
        };
        let inner = Arc::new(Inner {
            m: Instruments::new(&metrics, &self.service),
            service: self.service.into(),
            connector: Connector::new(&self.endpoint, &config, stdio_env)?,
            endpoint: self.endpoint,
            pool: Pool::new(config.pool_size, config.max_concurrent_per_session),
            breaker: Breaker::new(config.breaker_failures, config.breaker_cooldown),
            hints: ToolHints::default(),
            cache,
            closed: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            shutdown: shutdown.clone(),
            config,
        });
        let client = McpClient {
            _stop: Arc::new(shutdown.drop_guard()),
            inner: inner.clone(),
        };
        let attempts = (0..inner.pool.slots.len()).map(|i| {
            let inner = inner.clone();
            async move { (i, inner.connect_once().await) }
        });
        let mut first_error = None;
        for (i, outcome) in futures_util::future::join_all(attempts).await {
            match outcome {
                Ok(session) => inner.pool.slots[i].session.store(Some(Arc::new(session))),
                Err(e) => {
                    first_error.get_or_insert(e);
                    inner.spawn_reconnect(i);
                }
            }
        }
        if inner.pool.connected() == 0 && self.require_connection {
            // Every slot failed, so there is a first error (the pool has at least one).
            let source = first_error.unwrap_or_else(|| Box::new(inner.no_session()));
            return Err(inner.connect_error(source));
        }
        // Learn which tools may be retried before the first call needs to know.
        let session = inner.pool.lease(None).map(|lease| lease.session.clone());
        if let Some(session) = session {
            inner.learn_tools_on(&session).await;
        }
        // Only a client that exists reports a level: a failed build leaves no gauge
        // behind (nor replaces the one of a client of this name that does exist).
        register_gauges(&metrics, &inner);
        Ok(client)
    }
}

impl McpClient {
    /// A builder for a client of `service` at `endpoint`.
    pub fn builder(service: impl Into<String>, endpoint: Endpoint) -> McpClientBuilder {
        McpClientBuilder {
            service: service.into(),
            endpoint,
            config: McpClientConfig::default(),
            metrics: None,
            require_connection: true,
            stdio_env: Vec::new(),
            parent_env: None,
        }
    }

    /// Connect with `config`, recording into the global metrics registry.
    ///
    /// # Errors
    /// As [`McpClientBuilder::build`].
    pub async fn connect(
        service: impl Into<String>,
        endpoint: Endpoint,
        config: McpClientConfig,
    ) -> Result<Self> {
        Self::builder(service, endpoint)
            .config(config)
            .build()
            .await
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The endpoint (displays with any password hidden).
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// The settings in use.
    pub fn config(&self) -> &McpClientConfig {
        &self.inner.config
    }

    /// Call a tool; not cached. `args` is a JSON object, or null for none.
    ///
    /// Retried after a timeout or transport failure only if the server annotates the
    /// tool `readOnlyHint` or `idempotentHint`; to declare it safe to repeat yourself,
    /// use [`call_tool_with`](Self::call_tool_with) and [`CallOptions::idempotent`].
    ///
    /// # Errors
    /// [`Error::Tool`] when the tool reports an error or rejects its name or
    /// arguments; [`Error::InvalidArguments`] for arguments that are not an object;
    /// [`Error::Indeterminate`] when a call not safe to repeat was sent and then timed
    /// out or lost its transport (it may have run); otherwise the last retryable error
    /// once retries or the call's time are spent, [`Error::CircuitOpen`], or
    /// [`Error::Closed`].
    pub async fn call_tool(&self, name: &str, args: Value) -> Result<CallToolResult> {
        self.call_tool_with(name, args, CallOptions::default())
            .await
    }

    /// Call a tool with per-call options (caching, idempotence, timeout).
    ///
    /// # Errors
    /// As [`call_tool`](Self::call_tool).
    pub async fn call_tool_with(
        &self,
        name: &str,
        args: Value,
        opts: CallOptions,
    ) -> Result<CallToolResult> {
        let args = match args {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => {
                let mut value = other.to_string();
                value.truncate(200);
                return Err(Error::InvalidArguments {
                    tool: name.to_owned(),
                    value,
                });
            }
        };
        let traceparent = opts.outgoing_traceparent()?;
        let inner = &self.inner;
        inner.check_open()?;
        let key = match inner.lookup(&opts, || key::tool_key(name, &args)) {
            Lookup::Hit(hit) => return Ok(hit),
            Lookup::Miss(key) => key,
        };
        if !opts.declared_idempotent() && !inner.hints.known() {
            // Not learned at connect (the listing failed): learn now, for the next
            // failure. Until then the tool counts as not safe to repeat.
            inner.spawn_learn_tools();
        }
        let started = Instant::now();
        let mut params = CallToolRequestParams::new(name.to_owned()).with_arguments(args);
        params.meta = trace_meta(traceparent.as_ref());
        let outcome = inner
            .execute(Request::Tool(params), &opts)
            .await
            .and_then(|r| match r {
                Response::Tool(result) => inner.tool_outcome(name, result),
                _ => Err(inner.unexpected("tools/call")),
            });
        inner.finish(&inner.m.call_tool, "tools/call", name, started, &outcome);
        inner.remember(key, &opts, &outcome);
        outcome
    }

    /// Read a resource; cached for `cache_ttl` by default, as reads are meant to be
    /// free of side effects.
    ///
    /// # Errors
    /// [`Error::Rpc`] for a resource the server does not have; otherwise as
    /// [`call_tool`](Self::call_tool).
    pub async fn read_resource(&self, uri: &str) -> Result<ReadResourceResult> {
        self.read_resource_with(uri, CallOptions::new().cacheable())
            .await
    }

    /// Read a resource with per-call options.
    ///
    /// # Errors
    /// As [`read_resource`](Self::read_resource).
    pub async fn read_resource_with(
        &self,
        uri: &str,
        opts: CallOptions,
    ) -> Result<ReadResourceResult> {
        let traceparent = opts.outgoing_traceparent()?;
        let inner = &self.inner;
        inner.check_open()?;
        let key = match inner.lookup(&opts, || key::resource_key(uri)) {
            Lookup::Hit(hit) => return Ok(hit),
            Lookup::Miss(key) => key,
        };
        let started = Instant::now();
        let opts = opts.idempotent();
        let mut params = ReadResourceRequestParams::new(uri);
        params.meta = trace_meta(traceparent.as_ref());
        let request = Request::Resource(params);
        let outcome = inner.execute(request, &opts).await.and_then(|r| match r {
            Response::Resource(result) => Ok(result),
            _ => Err(inner.unexpected("resources/read")),
        });
        inner.finish(
            &inner.m.read_resource,
            "resources/read",
            uri,
            started,
            &outcome,
        );
        inner.remember(key, &opts, &outcome);
        outcome
    }

    /// Every tool the service offers (all pages). The client also learns from the
    /// answer which tools are safe to retry (their annotations).
    ///
    /// # Errors
    /// As [`call_tool`](Self::call_tool).
    pub async fn list_tools(&self) -> Result<Vec<Tool>> {
        let inner = &self.inner;
        let started = Instant::now();
        let opts = CallOptions::new().idempotent();
        let outcome = inner
            .execute(Request::ListTools, &opts)
            .await
            .and_then(|r| match r {
                Response::Tools(tools) => {
                    inner.hints.learn(&tools);
                    Ok(tools)
                }
                _ => Err(inner.unexpected("tools/list")),
            });
        inner.finish(&inner.m.list_tools, "tools/list", "", started, &outcome);
        outcome
    }

    /// Drop every cached result.
    pub fn clear_cache(&self) {
        if let Some(cache) = &self.inner.cache {
            cache.clear();
        }
    }

    /// Whether calls can go through now: a session is up and the circuit is not open.
    pub fn health(&self) -> Health {
        self.inner.health()
    }

    /// Shorthand for `health().healthy`.
    pub fn is_healthy(&self) -> bool {
        self.health().healthy
    }

    /// Counters and state of this client. The counters live in the metrics registry
    /// as the `mcp.*` series labeled `service="<name>"`, so two clients of one service
    /// name in one registry share them ([`McpClientFactory`](crate::McpClientFactory) makes one per name).
    pub fn stats(&self) -> McpStats {
        let inner = &self.inner;
        let m = &inner.m;
        let health = self.health();
        let requests = m.requests.total();
        let errors = m.errors.total();
        McpStats {
            service: inner.service.to_string(),
            endpoint: inner.endpoint.to_string(),
            healthy: health.healthy,
            circuit: health.circuit,
            sessions_connected: health.sessions_connected,
            sessions_max: inner.pool.slots.len(),
            in_flight: inner.in_flight.load(Ordering::Relaxed),
            requests_total: requests,
            requests_success: requests.saturating_sub(errors),
            requests_error: errors,
            tool_errors: m.tool_errors.total(),
            timeouts: m.timeouts.total(),
            retries: m.retries.total(),
            hedges: m.hedges.total(),
            reconnects: m.reconnects.total(),
            circuit_opened: m.circuit_opened.total(),
            cache_hits: m.cache_hits.total(),
            cache_misses: m.cache_misses.total(),
            cache_size: inner.cache.as_ref().map_or(0, S3FifoCache::len),
        }
    }

    /// Stop taking calls, let the calls in flight finish for up to `grace`, then close
    /// every session (a stdio child is asked to exit, then killed) and stop the
    /// reconnects. Calls made after this fail with [`Error::Closed`].
    pub async fn close(&self, grace: Duration) {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        let deadline = Instant::now() + grace;
        loop {
            let idle = inner.idle.notified();
            if inner.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                break;
            }
        }
        inner.shutdown.cancel();
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        let sessions = inner
            .pool
            .slots
            .iter()
            .filter_map(|s| s.session.swap(None))
            .collect::<Vec<_>>();
        futures_util::future::join_all(sessions.iter().map(|s| s.close(left))).await;
    }
}

impl Inner {
    /// See [`McpClient::health`]; also what the `mcp.up` gauge reports.
    fn health(&self) -> Health {
        let sessions = self.pool.connected();
        let circuit = self.breaker.state();
        Health {
            healthy: !self.closed.load(Ordering::Acquire)
                && sessions > 0
                && circuit != CircuitState::Open,
            sessions_connected: sessions,
            circuit,
        }
    }
}

/// A request `_meta` carrying `traceparent`, or none.
fn trace_meta(
    traceparent: Option<&cortex_support::trace::TraceParent>,
) -> Option<rmcp::model::RequestMetaObject> {
    traceparent.map(|tp| {
        let mut meta = rmcp::model::RequestMetaObject::new();
        meta.set_traceparent(tp.as_str());
        meta
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_gauge_is_0_closed_1_half_open_2_open() {
        let encoded = [
            CircuitState::Closed,
            CircuitState::HalfOpen,
            CircuitState::Open,
        ]
        .map(breaker_gauge);
        assert_eq!(encoded, [0.0, 1.0, 2.0]);
    }
}
