//! A small MCP server on loopback, for testing code that calls MCP services (feature
//! `test-server`). It runs in the test's own process, and [`TestServer::kill`] drops
//! every connection at once, the way a crashed server would.
//!
//! Tools (see [`TestTools`]):
//!
//! | tool | answers | annotations |
//! |---|---|---|
//! | `echo {message}` | `Echo: <message>` | `readOnlyHint` |
//! | `add {a, b}` | the sum | `readOnlyHint` |
//! | `sleep {ms}` | after that long | `readOnlyHint` |
//! | `stall {ms}` | waits `ms` on the first call the server gets, at once after (for hedging) | none |
//! | `fail {message}` | a tool error | none |
//! | `count {ms}` | `call <n>`, its n-th call; the first call with `ms` waits that long | none |
//! | `count_idempotent {ms}` | as `count` | `idempotentHint` |
//!
//! `count` stands for a call with a side effect (a payment, a message sent): the client
//! must not run it twice. `count_idempotent` is the same tool declared safe to repeat.
//! [`TestServer::calls_of`] counts the calls of each tool, and
//! [`TestServer::drop_connections`] cuts every connection mid-request.
//!
//! Resources: `test://greeting` (text `hello`) and [`TRACEPARENT`] (the request's
//! `_meta` traceparent).
//!
//! ```
//! use cortex_mcp::testing::TestServer;
//! use cortex_mcp::{Endpoint, McpClient, McpClientConfig};
//! use serde_json::json;
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let server = TestServer::start().await.unwrap();
//! let client = McpClient::connect("test", Endpoint::http(server.url()), McpClientConfig::default())
//!     .await
//!     .unwrap();
//! let r = client.call_tool("add", json!({ "a": 2, "b": 3 })).await.unwrap();
//! assert_eq!(r.content[0].as_text().unwrap().text, "5");
//! assert_eq!(server.tool_calls(), 1);
//! server.kill();
//! # });
//! ```

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, ErrorData, ListResourcesResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, ServerCapabilities, ServerConfig,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, schemars, tool, tool_handler, tool_router};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Arguments of `echo`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct EchoArgs {
    /// Text to send back.
    pub message: String,
}

/// Arguments of `add`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct AddArgs {
    /// First term.
    pub a: i64,
    /// Second term.
    pub b: i64,
}

/// Arguments of `sleep`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct SleepArgs {
    /// Milliseconds to wait before answering.
    pub ms: u64,
}

/// Arguments of `count` and `count_idempotent`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct CountArgs {
    /// Milliseconds the first call of the tool that gives it waits before answering
    /// (to make an attempt time out); later calls answer at once. Default: 0.
    #[serde(default)]
    pub ms: u64,
}

/// What every session of one server shares: the call counts and the stalls spent.
#[derive(Debug, Default)]
struct Shared {
    calls: AtomicU64,
    by_tool: Mutex<HashMap<&'static str, u64>>,
    /// Tools whose one stall has been spent.
    stalled: Mutex<HashSet<&'static str>>,
}

impl Shared {
    /// Count a call of `tool`; its number among the calls of that tool.
    fn tally(&self, tool: &'static str) -> u64 {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut by_tool = self.by_tool.lock().unwrap_or_else(|p| p.into_inner());
        let n = by_tool.entry(tool).or_default();
        *n += 1;
        *n
    }

    /// True the first time `tool` asks to stall, false after.
    fn first_stall(&self, tool: &'static str) -> bool {
        self.stalled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tool)
    }
}

/// The tools and resource of a [`TestServer`], one instance per MCP session.
#[derive(Debug, Clone)]
pub struct TestTools {
    shared: Arc<Shared>,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl TestTools {
    fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            tool_router: Self::tool_router(),
        }
    }

    /// Answers `Echo: <message>`.
    #[tool(
        description = "Echoes back the input string",
        annotations(read_only_hint = true)
    )]
    fn echo(&self, Parameters(EchoArgs { message }): Parameters<EchoArgs>) -> String {
        self.shared.tally("echo");
        format!("Echo: {message}")
    }

    /// Answers `a + b`.
    #[tool(
        description = "Returns the sum of two integers",
        annotations(read_only_hint = true)
    )]
    fn add(&self, Parameters(AddArgs { a, b }): Parameters<AddArgs>) -> String {
        self.shared.tally("add");
        a.saturating_add(b).to_string()
    }

    /// Answers after `ms` milliseconds.
    #[tool(
        description = "Waits, then answers",
        annotations(read_only_hint = true)
    )]
    async fn sleep(&self, Parameters(SleepArgs { ms }): Parameters<SleepArgs>) -> String {
        self.shared.tally("sleep");
        tokio::time::sleep(Duration::from_millis(ms)).await;
        format!("slept {ms} ms")
    }

    /// Waits `ms` on the server's first `stall` call only.
    #[tool(description = "Waits on the first call only, then answers")]
    async fn stall(&self, Parameters(SleepArgs { ms }): Parameters<SleepArgs>) -> String {
        self.shared.tally("stall");
        if !self.shared.first_stall("stall") {
            return "answered at once".to_owned();
        }
        tokio::time::sleep(Duration::from_millis(ms)).await;
        format!("stalled {ms} ms")
    }

    /// Reports a tool error.
    #[tool(description = "Always fails")]
    fn fail(&self, Parameters(EchoArgs { message }): Parameters<EchoArgs>) -> CallToolResult {
        self.shared.tally("fail");
        CallToolResult::error(vec![ContentBlock::text(message)])
    }

    /// Counts its calls and answers `call <n>`: a tool with a side effect, not
    /// declared safe to repeat.
    #[tool(description = "Counts its calls (a side effect); not safe to repeat")]
    async fn count(&self, Parameters(args): Parameters<CountArgs>) -> String {
        self.counted("count", args).await
    }

    /// As `count`, annotated `idempotentHint: true`.
    #[tool(
        description = "Counts its calls; declared safe to repeat",
        annotations(idempotent_hint = true, read_only_hint = false)
    )]
    async fn count_idempotent(&self, Parameters(args): Parameters<CountArgs>) -> String {
        self.counted("count_idempotent", args).await
    }
}

impl TestTools {
    async fn counted(&self, tool: &'static str, CountArgs { ms }: CountArgs) -> String {
        let n = self.shared.tally(tool);
        if ms > 0 && self.shared.first_stall(tool) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        format!("call {n}")
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for TestTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let greeting = Resource::new(GREETING, "greeting");
        Ok(ListResourcesResult::with_all_items(vec![greeting]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.shared.tally("resources/read");
        if request.uri == TRACEPARENT {
            // What the client put in the request's `_meta`, for tests of propagation.
            // rmcp moves the request's `_meta` into the context.
            let given = context.meta.get_traceparent().unwrap_or("none").to_owned();
            return Ok(ReadResourceResponse::Complete(ReadResourceResult::new(
                vec![ResourceContents::text(given, TRACEPARENT)],
            )));
        }
        if request.uri != GREETING {
            return Err(ErrorData::resource_not_found(
                format!("no resource {}", request.uri),
                None,
            ));
        }
        Ok(ReadResourceResponse::Complete(ReadResourceResult::new(
            vec![ResourceContents::text("hello", GREETING)],
        )))
    }
}

const GREETING: &str = "test://greeting";

/// A resource whose text is the `traceparent` of the request's `_meta` (`none`
/// without one).
pub const TRACEPARENT: &str = "test://traceparent";

/// An MCP server (streamable HTTP) on a loopback port, serving [`TestTools`].
pub struct TestServer {
    addr: SocketAddr,
    tls: Option<Acceptor>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    connections: Connections,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("url", &self.url())
            .field("tool_calls", &self.tool_calls())
            .finish_non_exhaustive()
    }
}

/// Cancelled to cut the connections open now; replaced by a fresh token for later ones.
type Connections = Arc<Mutex<CancellationToken>>;

impl TestServer {
    /// Start on a free loopback port.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Start on `addr`, e.g. the address of a server killed before, to restart it.
    /// Binding is retried for up to 5 s, while the old port is released.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        Self::start_with(addr, None, Arc::default()).await
    }

    /// Kill this server (see [`kill`](Self::kill)), then start a new one on its address
    /// that keeps its call counts ([`calls_of`](Self::calls_of)) and spent stalls: a
    /// crash and restart. The sessions are gone, as they would be.
    ///
    /// # Errors
    /// When the port cannot be bound again.
    pub async fn restart(self) -> std::io::Result<Self> {
        self.kill();
        Self::start_with(self.addr, self.tls.clone(), self.shared.clone()).await
    }

    /// Start on a free loopback port over HTTPS, with the certificate chain and
    /// private key of these PEM files (feature `test-server-tls`). The URL is then
    /// `https://127.0.0.1:<port>/mcp`.
    ///
    /// # Errors
    /// When a file cannot be read or holds no usable certificate or key, or the port
    /// cannot be bound.
    #[cfg(feature = "test-server-tls")]
    pub async fn start_tls(
        cert_chain: &std::path::Path,
        key: &std::path::Path,
    ) -> std::io::Result<Self> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let invalid = |e: &dyn std::fmt::Display| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
        };
        let certs = CertificateDer::pem_file_iter(cert_chain)
            .map_err(|e| invalid(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&e))?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(&e))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(&e))?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::start_with(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Some(acceptor),
            Arc::default(),
        )
        .await
    }

    async fn start_with(
        addr: SocketAddr,
        tls: Option<Acceptor>,
        shared: Arc<Shared>,
    ) -> std::io::Result<Self> {
        let listener = bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let connections = Connections::default();
        let service: StreamableHttpService<TestTools, LocalSessionManager> =
            StreamableHttpService::new(
                {
                    let shared = shared.clone();
                    move || Ok(TestTools::new(shared.clone()))
                },
                Arc::default(),
                StreamableHttpServerConfig::default()
                    .with_sse_keep_alive(None)
                    .with_cancellation_token(stop.child_token()),
            );
        tokio::spawn(serve(
            listener,
            service,
            stop.clone(),
            connections.clone(),
            tls.clone(),
        ));
        Ok(Self {
            addr,
            tls,
            shared,
            stop,
            connections,
        })
    }

    /// The MCP endpoint, `http://127.0.0.1:<port>/mcp` (`https` from `start_tls`).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/mcp", self.addr)
    }

    /// The address listened on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Tool calls and resource reads served so far.
    pub fn tool_calls(&self) -> u64 {
        self.shared.calls.load(Ordering::Relaxed)
    }

    /// Calls of `tool` so far (every session; `resources/read` for the reads). Counted
    /// when the tool starts, so a call whose answer never arrived counts too.
    pub fn calls_of(&self, tool: &str) -> u64 {
        let by_tool = self
            .shared
            .by_tool
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        by_tool.get(tool).copied().unwrap_or(0)
    }

    /// Cut every open connection, mid-request, as a network fault or a proxy restart
    /// would; unlike [`kill`](Self::kill), the server keeps listening and keeps its
    /// sessions, and the tools already running carry on (their answers are lost).
    pub fn drop_connections(&self) {
        let mut current = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        current.cancel();
        *current = CancellationToken::new();
    }

    /// Stop at once: the listener closes, every connection is dropped mid-request and
    /// every session is forgotten, as when the process dies.
    pub fn kill(&self) {
        self.stop.cancel();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut tries = 0;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(feature = "test-server-tls")]
type Acceptor = tokio_rustls::TlsAcceptor;
/// Without TLS support there is no acceptor to pass.
#[cfg(not(feature = "test-server-tls"))]
#[derive(Clone)]
enum Acceptor {}

type Service = StreamableHttpService<TestTools, LocalSessionManager>;

async fn serve(
    listener: TcpListener,
    service: Service,
    stop: CancellationToken,
    cut: Connections,
    tls: Option<Acceptor>,
) {
    // Connections live in this set, so returning drops (aborts) all of them.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Ok((stream, _)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let tls = tls.clone();
        let cut = cut.lock().unwrap_or_else(|p| p.into_inner()).clone();
        connections.spawn(async move {
            let connection = async move {
                match tls {
                    None => serve_connection(stream, service).await,
                    #[cfg(feature = "test-server-tls")]
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve_connection(stream, service).await;
                        }
                    }
                    #[cfg(not(feature = "test-server-tls"))]
                    Some(never) => match never {},
                }
            };
            // Dropping the connection's future closes its socket.
            tokio::select! {
                () = connection => {}
                () = cut.cancelled() => {}
            }
        });
    }
}

async fn serve_connection<I>(io: I, service: Service)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .await;
}
