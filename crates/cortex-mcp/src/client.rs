use std::ffi::OsString;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cortex_cache::S3FifoCache;
use cortex_metrics::{Counter, Metrics, Operation};
use cortex_support::backoff::{Backoff, equal_jitter};
use rmcp::ServiceError;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ErrorCode, ReadResourceRequestParams,
    ReadResourceResult, Tool,
};
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::breaker::Breaker;
use crate::config::redact_urls_in;
use crate::hints::ToolHints;
use crate::session::{Connector, Lease, Pool, Session, StdioEnv};
use crate::stats::{Health, McpStats};
use crate::{Endpoint, Error, McpClientConfig, Result, key};

/// How one call is made. The default: not cached, not declared idempotent (so a tool
/// call is retried and hedged only if the server annotates the tool safe to repeat),
/// the client's timeouts.
///
/// ```
/// use std::time::Duration;
/// use cortex_mcp::CallOptions;
///
/// let opts = CallOptions::new().cached(Duration::from_secs(60)).timeout(Duration::from_secs(2));
/// assert!(opts.is_cacheable());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOptions {
    cache: Option<Option<Duration>>,
    idempotent: bool,
    timeout: Option<Duration>,
}

impl CallOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cache the result for `ttl`, and answer from the cache while it is fresh. A tool
    /// error is never cached. Implies [`idempotent`](Self::idempotent): a call whose
    /// answer may be reused is one that may run again.
    pub fn cached(mut self, ttl: Duration) -> Self {
        self.cache = Some(Some(ttl));
        self
    }

    /// Cache the result for the client's `cache_ttl`. Implies idempotent, as
    /// [`cached`](Self::cached) does.
    pub fn cacheable(mut self) -> Self {
        self.cache = Some(None);
        self
    }

    /// Never answer from, nor fill, the cache.
    pub fn uncached(mut self) -> Self {
        self.cache = None;
        self
    }

    /// The call may run twice without harm: after a timeout or a transport failure it
    /// is retried, and with `hedge_after` it may be hedged.
    ///
    /// Without this, a tool call is sent again only if the server annotates the tool
    /// `readOnlyHint` or `idempotentHint` in `tools/list`; otherwise such a failure
    /// after the call was sent ends it with [`Error::Indeterminate`], since the tool
    /// may have run. (A call that provably never left, such as one whose connection
    /// was refused, is retried either way.)
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Bound the whole call (every attempt and wait) by `timeout` instead of the
    /// client's `call_timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Whether results are cached.
    pub fn is_cacheable(&self) -> bool {
        self.cache.is_some()
    }

    /// The caller said the call may run twice.
    fn declared_idempotent(&self) -> bool {
        self.idempotent || self.cache.is_some()
    }
}

#[derive(Debug, Clone)]
enum Cached {
    Tool(Arc<CallToolResult>),
    Resource(Arc<ReadResourceResult>),
}

/// An answer the result cache can hold.
trait Cacheable: Clone {
    fn wrap(self) -> Cached;
    fn unwrap(cached: &Cached) -> Option<Self>;
}

impl Cacheable for CallToolResult {
    fn wrap(self) -> Cached {
        Cached::Tool(Arc::new(self))
    }
    fn unwrap(cached: &Cached) -> Option<Self> {
        match cached {
            Cached::Tool(hit) => Some(Self::clone(hit)),
            Cached::Resource(_) => None,
        }
    }
}

impl Cacheable for ReadResourceResult {
    fn wrap(self) -> Cached {
        Cached::Resource(Arc::new(self))
    }
    fn unwrap(cached: &Cached) -> Option<Self> {
        match cached {
            Cached::Resource(hit) => Some(Self::clone(hit)),
            Cached::Tool(_) => None,
        }
    }
}

/// What the cache said about a call.
enum Lookup<T> {
    /// The cached answer.
    Hit(T),
    /// Not there: the key to store the answer under, if the call is cacheable.
    Miss(Option<String>),
}

#[derive(Debug)]
enum Request {
    Tool(CallToolRequestParams),
    Resource(ReadResourceRequestParams),
    ListTools,
}

impl Request {
    fn method(&self) -> &'static str {
        match self {
            Request::Tool(_) => "tools/call",
            Request::Resource(_) => "resources/read",
            Request::ListTools => "tools/list",
        }
    }
}

#[derive(Debug)]
enum Response {
    Tool(CallToolResult),
    Resource(ReadResourceResult),
    Tools(Vec<Tool>),
}

/// Handles into cortex-metrics, made once so a call formats no names.
#[derive(Debug)]
struct Instruments {
    call_tool: Arc<Operation>,
    read_resource: Arc<Operation>,
    list_tools: Arc<Operation>,
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
        let counter = |what: &str| metrics.counter(&format!("mcp.{service}.{what}"));
        Self {
            call_tool: metrics.operation_in("mcp", &format!("{service}.call_tool")),
            read_resource: metrics.operation_in("mcp", &format!("{service}.read_resource")),
            list_tools: metrics.operation_in("mcp", &format!("{service}.list_tools")),
            requests: counter("requests"),
            errors: counter("errors"),
            tool_errors: counter("tool_errors"),
            timeouts: counter("timeouts"),
            retries: counter("retries"),
            hedges: counter("hedges"),
            reconnects: counter("reconnects"),
            circuit_opened: counter("circuit_opened"),
            cache_hits: counter("cache_hits"),
            cache_misses: counter("cache_misses"),
        }
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
/// [`S3FifoCache`] of cortex-cache; latency, errors, retries and cache hits are recorded
/// into cortex-metrics as `mcp.<service>.*`.
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
            let message = first_error.unwrap_or_default();
            return Err(inner.connect_error(message));
        }
        // Learn which tools may be retried before the first call needs to know.
        let session = inner.pool.lease(None).map(|lease| lease.session.clone());
        if let Some(session) = session {
            inner.learn_tools_on(&session).await;
        }
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
        let params = CallToolRequestParams::new(name.to_owned()).with_arguments(args);
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
        let inner = &self.inner;
        inner.check_open()?;
        let key = match inner.lookup(&opts, || key::resource_key(uri)) {
            Lookup::Hit(hit) => return Ok(hit),
            Lookup::Miss(key) => key,
        };
        let started = Instant::now();
        let opts = opts.idempotent();
        let request = Request::Resource(ReadResourceRequestParams::new(uri));
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
        let inner = &self.inner;
        let sessions = inner.pool.connected();
        let circuit = inner.breaker.state();
        Health {
            healthy: !inner.closed.load(Ordering::Acquire)
                && sessions > 0
                && circuit != crate::CircuitState::Open,
            sessions_connected: sessions,
            circuit,
        }
    }

    /// Shorthand for `health().healthy`.
    pub fn is_healthy(&self) -> bool {
        self.health().healthy
    }

    /// Counters and state of this client. The counters live in the metrics registry
    /// under `mcp.<service>.*`, so two clients of one service name in one registry
    /// share them ([`McpClientFactory`](crate::McpClientFactory) makes one per name).
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

/// Counts a call in flight; wakes `close` when the last one ends.
struct InFlight<'a>(&'a Inner);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Copies of one attempt (two when hedged) that may have reached the service.
#[derive(Debug, Default)]
struct Sent(AtomicUsize);

impl Sent {
    /// A copy is handed to the transport: from now on it may arrive.
    fn start(&self) -> SentCopy<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        SentCopy(self)
    }

    /// Whether any copy may have reached the service.
    fn maybe(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

/// One copy counted in [`Sent`].
struct SentCopy<'a>(&'a Sent);

impl SentCopy<'_> {
    /// The copy provably never left.
    fn undo(self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether the failure proves the request never reached the service: no HTTP
/// connection could be made (refused, unreachable, TLS refused), or the pipe to a
/// stdio child was closed when the request was written, so the child could not read
/// it whole. Anything else, once the request was handed to the transport, may have
/// been delivered.
fn never_delivered(e: &ServiceError) -> bool {
    use rmcp::transport::streamable_http_client::StreamableHttpError;

    let ServiceError::TransportSend(e) = e else {
        return false;
    };
    let error: &(dyn std::error::Error + 'static) = &*e.error;
    // The error of the transport itself: rmcp's HTTP error (which does not name the
    // reqwest error as its source), or the child process's I/O error.
    if let Some(http) = error.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
        return matches!(http, StreamableHttpError::Client(e) if e.is_connect());
    }
    if let Some(io) = error.downcast_ref::<std::io::Error>() {
        return io.kind() == std::io::ErrorKind::BrokenPipe;
    }
    false
}

impl Inner {
    /// [`Error::Closed`] once `close` has begun: also for answers the cache holds.
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed {
                service: self.service.clone(),
            });
        }
        Ok(())
    }

    /// The cached answer of a cacheable call, or the key to store it under.
    fn lookup<T: Cacheable>(&self, opts: &CallOptions, key: impl FnOnce() -> String) -> Lookup<T> {
        let (Some(cache), Some(_)) = (&self.cache, opts.cache) else {
            return Lookup::Miss(None);
        };
        let key = key();
        if let Some(hit) = cache.get(&key).as_ref().and_then(T::unwrap) {
            self.m.cache_hits.increment();
            return Lookup::Hit(hit);
        }
        self.m.cache_misses.increment();
        Lookup::Miss(Some(key))
    }

    /// Store a successful answer under `key` for the call's TTL.
    fn remember<T: Cacheable>(&self, key: Option<String>, opts: &CallOptions, outcome: &Result<T>) {
        if let (Ok(answer), Some(key), Some(cache)) = (outcome, key, &self.cache) {
            let ttl = opts.cache.flatten().unwrap_or(self.config.cache_ttl);
            cache.insert_with_ttl(key, answer.clone().wrap(), ttl);
        }
    }

    /// The tool of `request` if it is not safe to repeat: not declared idempotent by
    /// the caller nor annotated so by the service. Reads and listings always are.
    fn unrepeatable_tool<'r>(&self, request: &'r Request, opts: &CallOptions) -> Option<&'r str> {
        match request {
            Request::Tool(params)
                if !opts.declared_idempotent() && !self.hints.repeatable(&params.name) =>
            {
                Some(&params.name)
            }
            _ => None,
        }
    }

    /// Attempts with retries, each admitted by the breaker, all within the call's
    /// deadline. A call not safe to repeat is retried only while it provably never
    /// reached the service; once it may have, a timeout or transport failure ends it
    /// with [`Error::Indeterminate`].
    async fn execute(self: &Arc<Self>, request: Request, opts: &CallOptions) -> Result<Response> {
        self.check_open()?;
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let _in_flight = InFlight(self);
        self.m.requests.increment();
        let call_timeout = opts.timeout.unwrap_or(self.config.call_timeout);
        let deadline = Instant::now() + call_timeout;
        // Only a call that may run twice is ever sent twice at once.
        let hedge =
            self.config.hedge_after.is_some() && self.unrepeatable_tool(&request, opts).is_none();
        let mut retries = 0;
        loop {
            let permit =
                self.breaker
                    .admit()
                    .map_err(|(failures, retry_in)| Error::CircuitOpen {
                        service: self.service.clone(),
                        failures,
                        retry_in,
                    })?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            // The error names the limit that ran out: the attempt's, or the call's.
            let (budget, limit) = if self.config.request_timeout <= remaining {
                (self.config.request_timeout, self.config.request_timeout)
            } else {
                (remaining, call_timeout)
            };
            let sent = Sent::default();
            let attempt = self.send(&request, hedge, &sent);
            let outcome = match tokio::time::timeout(budget, attempt).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Error::Timeout {
                    service: self.service.clone(),
                    after: limit,
                }),
            };
            let error = match outcome {
                Ok(response) => {
                    permit.success();
                    return Ok(response);
                }
                Err(e) if !e.is_retryable() => {
                    // The service answered; it is up.
                    permit.success();
                    return Err(e);
                }
                Err(e) => e,
            };
            if matches!(error, Error::Timeout { .. }) {
                self.m.timeouts.increment();
            }
            if permit.failure() {
                self.m.circuit_opened.increment();
                tracing::warn!(
                    service = %self.service,
                    failures = self.config.breaker_failures,
                    cooldown = ?self.config.breaker_cooldown,
                    error = %error,
                    "MCP circuit opened"
                );
            }
            if sent.maybe() {
                // Asked again (hints may have been learned since the call began).
                if let Some(tool) = self.unrepeatable_tool(&request, opts) {
                    tracing::warn!(
                        service = %self.service,
                        tool,
                        error = %error,
                        "MCP call not retried: it may or may not have run, and the tool is not known to be safe to repeat"
                    );
                    return Err(Error::Indeterminate {
                        service: self.service.clone(),
                        tool: tool.to_owned(),
                        source: Box::new(error),
                    });
                }
            }
            if retries >= self.config.max_retries || self.closed.load(Ordering::Acquire) {
                // Out of retries, or closing: a closed client does not try again.
                return Err(error);
            }
            let delay = backoff(&self.config, retries);
            if Instant::now() + delay >= deadline {
                // Waiting would take the caller past its deadline: answer now.
                return Err(error);
            }
            tracing::debug!(service = %self.service, retry = retries + 1, ?delay, error = %error, "retrying MCP call");
            tokio::time::sleep(delay).await;
            retries += 1;
            self.m.retries.increment();
        }
    }

    /// One attempt, hedged on a second session when allowed and configured.
    async fn send(
        self: &Arc<Self>,
        request: &Request,
        hedge: bool,
        sent: &Sent,
    ) -> Result<Response> {
        let Some(after) = self.config.hedge_after.filter(|_| hedge) else {
            return self.attempt(request, sent).await;
        };
        let Some(lease) = self.pool.lease(None) else {
            return Err(self.no_session());
        };
        let first_slot = lease.slot;
        let first = self.attempt_on(request, lease, sent);
        tokio::pin!(first);
        tokio::select! {
            outcome = &mut first => return outcome,
            () = tokio::time::sleep(after) => {}
        }
        self.m.hedges.increment();
        let second = async {
            match self.pool.lease(Some(first_slot)) {
                Some(lease) => self.attempt_on(request, lease, sent).await,
                None => Err(self.no_session()),
            }
        };
        tokio::pin!(second);
        // The first success wins; a failure waits for the other copy.
        tokio::select! {
            outcome = &mut first => match outcome {
                Ok(response) => Ok(response),
                Err(_) => second.await,
            },
            outcome = &mut second => match outcome {
                Ok(response) => Ok(response),
                Err(_) => first.await,
            },
        }
    }

    fn no_session(&self) -> Error {
        Error::NoSession {
            service: self.service.clone(),
        }
    }

    /// One request on the session the pool offers.
    async fn attempt(self: &Arc<Self>, request: &Request, sent: &Sent) -> Result<Response> {
        match self.pool.lease(None) {
            Some(lease) => self.attempt_on(request, lease, sent).await,
            None => Err(self.no_session()),
        }
    }

    /// One request on a leased session, noted in `sent` from the moment it is handed
    /// to the transport until it is known not to have left.
    async fn attempt_on(
        self: &Arc<Self>,
        request: &Request,
        lease: Lease<'_>,
        sent: &Sent,
    ) -> Result<Response> {
        let (slot, session) = (lease.slot, &lease.session);
        let peer = &session.peer;
        if peer.is_transport_closed() {
            self.break_session(slot, session);
            return Err(self.transport_error("the session's transport is closed"));
        }
        let copy = sent.start();
        let outcome = match request {
            Request::Tool(params) => peer.call_tool(params.clone()).await.map(Response::Tool),
            Request::Resource(params) => peer
                .read_resource(params.clone())
                .await
                .map(Response::Resource),
            Request::ListTools => peer.list_all_tools().await.map(Response::Tools),
        };
        outcome.map_err(|e| {
            if never_delivered(&e) {
                copy.undo();
            }
            let error = self.map_service_error(request, e);
            if matches!(error, Error::Transport { .. }) {
                self.break_session(slot, session);
            }
            error
        })
    }

    fn map_service_error(&self, request: &Request, e: ServiceError) -> Error {
        let service = self.service.clone();
        let method = request.method();
        match e {
            ServiceError::McpError(data) => match request {
                Request::Tool(params) if data.code == ErrorCode::INVALID_PARAMS => Error::Tool {
                    service,
                    tool: params.name.to_string(),
                    message: data.message.into_owned(),
                },
                _ => Error::Rpc {
                    service,
                    method,
                    code: data.code.0,
                    message: data.message.into_owned(),
                },
            },
            ServiceError::TransportSend(_) | ServiceError::TransportClosed => Error::Transport {
                service,
                message: redact_urls_in(&e.to_string()),
            },
            ServiceError::Timeout { timeout } => Error::Timeout {
                service,
                after: timeout,
            },
            other => Error::Protocol {
                service,
                method,
                message: redact_urls_in(&other.to_string()),
            },
        }
    }

    fn tool_outcome(&self, tool: &str, result: CallToolResult) -> Result<CallToolResult> {
        if result.is_error != Some(true) {
            return Ok(result);
        }
        let message = result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
            .collect::<Vec<_>>()
            .join("\n");
        Err(Error::Tool {
            service: self.service.clone(),
            tool: tool.to_owned(),
            message,
        })
    }

    fn finish<T>(
        &self,
        op: &Operation,
        method: &str,
        target: &str,
        started: Instant,
        outcome: &Result<T>,
    ) {
        let elapsed = started.elapsed();
        op.record(elapsed, outcome.is_ok());
        if let Err(e) = outcome {
            if e.is_tool_error() {
                self.m.tool_errors.increment();
            }
            self.m.errors.increment();
        }
        if elapsed >= self.config.slow_call {
            tracing::warn!(
                service = %self.service,
                method,
                target,
                elapsed_ms = elapsed.as_millis() as u64,
                ok = outcome.is_ok(),
                "slow MCP call"
            );
        }
    }

    fn unexpected(&self, method: &'static str) -> Error {
        Error::Protocol {
            service: self.service.clone(),
            method,
            message: "the answer is of another kind".to_owned(),
        }
    }

    fn transport_error(&self, message: &str) -> Error {
        Error::Transport {
            service: self.service.clone(),
            message: message.to_owned(),
        }
    }

    fn connect_error(&self, message: String) -> Error {
        Error::Connect {
            service: self.service.clone(),
            endpoint: self.endpoint.to_string(),
            message,
        }
    }

    /// Learn from a `tools/list` on `session` (within `connect_timeout`) which tools are
    /// safe to repeat. True once known; a failure leaves what was known before.
    async fn learn_tools_on(&self, session: &Session) -> bool {
        let peer = &session.peer;
        if peer
            .peer_info()
            .is_some_and(|info| info.capabilities.tools.is_none())
        {
            self.hints.learn_none();
            return true;
        }
        match tokio::time::timeout(self.config.connect_timeout, peer.list_all_tools()).await {
            Ok(Ok(tools)) => {
                self.hints.learn(&tools);
                true
            }
            Ok(Err(ServiceError::McpError(e))) => {
                // The service answered: it lists no tools.
                tracing::debug!(service = %self.service, error = %e.message, "tools/list refused");
                self.hints.learn_none();
                true
            }
            Ok(Err(e)) => {
                let error = redact_urls_in(&e.to_string());
                tracing::debug!(service = %self.service, %error, "tools/list failed; tool annotations unknown");
                false
            }
            Err(_) => {
                tracing::debug!(service = %self.service, "tools/list timed out; tool annotations unknown");
                false
            }
        }
    }

    /// Learn the tools' annotations in the background, at most one such task at a
    /// time, and at most one try per `retry_delay` while they fail.
    fn spawn_learn_tools(self: &Arc<Self>) {
        if self.shutdown.is_cancelled() || !self.hints.start_refresh() {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            let session = inner.pool.lease(None).map(|lease| lease.session.clone());
            let learned = match session {
                Some(session) => tokio::select! {
                    () = inner.shutdown.cancelled() => true,
                    learned = inner.learn_tools_on(&session) => learned,
                },
                None => false,
            };
            if !learned {
                tokio::select! {
                    () = inner.shutdown.cancelled() => {}
                    () = tokio::time::sleep(inner.config.retry_delay) => {}
                }
            }
            inner.hints.end_refresh();
        });
    }

    /// One session within `connect_timeout`.
    async fn connect_once(&self) -> std::result::Result<Session, String> {
        match tokio::time::timeout(self.config.connect_timeout, self.connector.connect()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "no MCP session within {:?}",
                self.config.connect_timeout
            )),
        }
    }

    /// Empty the slot and rebuild it in the background.
    fn break_session(self: &Arc<Self>, slot: usize, session: &Arc<Session>) {
        if self.pool.evict(slot, session) {
            tracing::warn!(service = %self.service, slot, "MCP session broken; reconnecting");
            let session = session.clone();
            // Closing waits on rmcp's tasks; the caller should not.
            tokio::spawn(async move { session.close(Duration::from_secs(1)).await });
            self.spawn_reconnect(slot);
        }
    }

    /// Refill `slot` in the background: tries at once, then waits `retry_delay`
    /// doubling up to `max_retry_delay`, with jitter, until a session is made or the
    /// client is closed. At most one such task per slot.
    fn spawn_reconnect(self: &Arc<Self>, slot: usize) {
        let flag = &self.pool.slots[slot].reconnecting;
        if self.shutdown.is_cancelled() || flag.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            let mut delay = inner.config.retry_delay.max(Duration::from_millis(1));
            loop {
                let outcome = tokio::select! {
                    () = inner.shutdown.cancelled() => break,
                    outcome = inner.connect_once() => outcome,
                };
                match outcome {
                    Ok(session) => {
                        // The service may have been redeployed with other tools: learn
                        // them before the session takes calls.
                        let closing = tokio::select! {
                            () = inner.shutdown.cancelled() => true,
                            _ = inner.learn_tools_on(&session) => false,
                        };
                        if closing {
                            session.close(Duration::from_millis(100)).await;
                            break;
                        }
                        inner.pool.slots[slot]
                            .session
                            .store(Some(Arc::new(session)));
                        inner.m.reconnects.increment();
                        tracing::info!(service = %inner.service, slot, "MCP session reconnected");
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(service = %inner.service, slot, error = %e, "MCP reconnect failed");
                    }
                }
                tokio::select! {
                    () = inner.shutdown.cancelled() => break,
                    () = tokio::time::sleep(equal_jitter(delay)) => {}
                }
                delay = delay.saturating_mul(2).min(inner.config.max_retry_delay);
            }
            inner.pool.slots[slot]
                .reconnecting
                .store(false, Ordering::Release);
            if inner.shutdown.is_cancelled() {
                // A session made while closing must not outlive the client.
                if let Some(session) = inner.pool.slots[slot].session.swap(None) {
                    session.close(Duration::from_millis(100)).await;
                }
            }
        });
    }
}

/// The wait before retry number `retry + 1`: `retry_delay * 2^retry`, capped at
/// `max_retry_delay`, with equal jitter so clients that failed together do not retry
/// together.
fn backoff(config: &McpClientConfig, retry: u32) -> Duration {
    Backoff::new(config.retry_delay, config.max_retry_delay).delay(retry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_within_half() {
        let config = McpClientConfig {
            retry_delay: Duration::from_millis(100),
            max_retry_delay: Duration::from_millis(350),
            ..McpClientConfig::default()
        };
        for (retry, nominal) in [(0, 100), (1, 200), (2, 350), (40, 350)] {
            let nominal = Duration::from_millis(nominal);
            let waits: Vec<_> = (0..200).map(|_| backoff(&config, retry)).collect();
            assert!(
                waits.iter().all(|w| *w >= nominal / 2 && *w <= nominal),
                "{retry}: {waits:?}"
            );
            assert!(
                waits.iter().any(|w| *w != waits[0]),
                "jitter varies the waits"
            );
        }
    }
}
