//! A small MCP server on loopback, for testing code that calls MCP services (feature
//! `test-server`). It runs in the test's own process, and [`TestServer::kill`] drops
//! every connection at once, the way a crashed server would.
//!
//! Tools: `echo {message}` answers `Echo: <message>`; `add {a, b}` answers the sum;
//! `sleep {ms}` answers after that long; `stall {ms}` waits that long on the first
//! call the server gets and answers at once after (for hedging); `fail {message}`
//! reports a tool error.
//! Resource: `test://greeting` (text `hello`).
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

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// The tools and resource of a [`TestServer`], one instance per MCP session.
#[derive(Debug, Clone)]
pub struct TestTools {
    calls: Arc<AtomicU64>,
    stalled: Arc<AtomicBool>,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl TestTools {
    fn new(calls: Arc<AtomicU64>, stalled: Arc<AtomicBool>) -> Self {
        Self {
            calls,
            stalled,
            tool_router: Self::tool_router(),
        }
    }

    fn count(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Answers `Echo: <message>`.
    #[tool(description = "Echoes back the input string")]
    fn echo(&self, Parameters(EchoArgs { message }): Parameters<EchoArgs>) -> String {
        self.count();
        format!("Echo: {message}")
    }

    /// Answers `a + b`.
    #[tool(description = "Returns the sum of two integers")]
    fn add(&self, Parameters(AddArgs { a, b }): Parameters<AddArgs>) -> String {
        self.count();
        a.saturating_add(b).to_string()
    }

    /// Answers after `ms` milliseconds.
    #[tool(description = "Waits, then answers")]
    async fn sleep(&self, Parameters(SleepArgs { ms }): Parameters<SleepArgs>) -> String {
        self.count();
        tokio::time::sleep(Duration::from_millis(ms)).await;
        format!("slept {ms} ms")
    }

    /// Waits `ms` on the server's first `stall` call only.
    #[tool(description = "Waits on the first call only, then answers")]
    async fn stall(&self, Parameters(SleepArgs { ms }): Parameters<SleepArgs>) -> String {
        self.count();
        if self.stalled.swap(true, Ordering::AcqRel) {
            return "answered at once".to_owned();
        }
        tokio::time::sleep(Duration::from_millis(ms)).await;
        format!("stalled {ms} ms")
    }

    /// Reports a tool error.
    #[tool(description = "Always fails")]
    fn fail(&self, Parameters(EchoArgs { message }): Parameters<EchoArgs>) -> CallToolResult {
        self.count();
        CallToolResult::error(vec![ContentBlock::text(message)])
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
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.count();
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

/// An MCP server (streamable HTTP) on a loopback port, serving [`TestTools`].
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    scheme: &'static str,
    calls: Arc<AtomicU64>,
    stop: CancellationToken,
}

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
        Self::start_with(addr, None).await
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
        Self::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), Some(acceptor)).await
    }

    async fn start_with(addr: SocketAddr, tls: Option<Acceptor>) -> std::io::Result<Self> {
        let listener = bind(addr).await?;
        let addr = listener.local_addr()?;
        let calls = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let service: StreamableHttpService<TestTools, LocalSessionManager> =
            StreamableHttpService::new(
                {
                    let calls = calls.clone();
                    let stalled = Arc::new(AtomicBool::new(false));
                    move || Ok(TestTools::new(calls.clone(), stalled.clone()))
                },
                Arc::default(),
                StreamableHttpServerConfig::default()
                    .with_sse_keep_alive(None)
                    .with_cancellation_token(stop.child_token()),
            );
        let scheme = if tls.is_some() { "https" } else { "http" };
        tokio::spawn(serve(listener, service, stop.clone(), tls));
        Ok(Self {
            addr,
            scheme,
            calls,
            stop,
        })
    }

    /// The MCP endpoint, `http://127.0.0.1:<port>/mcp` (`https` from `start_tls`).
    pub fn url(&self) -> String {
        format!("{}://{}/mcp", self.scheme, self.addr)
    }

    /// The address listened on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Tool calls and resource reads served so far.
    pub fn tool_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
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
        connections.spawn(async move {
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
