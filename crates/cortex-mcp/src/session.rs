//! Sessions: making them (HTTP or a child process) and the fixed set of slots that
//! holds them. A broken slot is emptied and refilled by a background reconnect.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use rmcp::ServiceExt;
use rmcp::model::{ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::{Peer, RoleClient, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};

use crate::{Endpoint, McpClientConfig, Result};

type Running = RunningService<RoleClient, ClientConfig>;

/// One initialized MCP session.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) peer: Peer<RoleClient>,
    running: Mutex<Option<Running>>,
}

impl Session {
    /// Close within `grace`; the child process of a stdio session is killed after it.
    pub(crate) async fn close(&self, grace: Duration) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut running) = running {
            let _ = running.close_with_timeout(grace).await;
        }
    }
}

/// Makes sessions to one endpoint.
#[derive(Debug)]
pub(crate) enum Connector {
    Http {
        url: Arc<str>,
        /// Shared by every session of the client: keep-alive connections are reused
        /// across calls (rmcp's default client opens one per request).
        http: reqwest::Client,
        concurrency: usize,
    },
    Stdio {
        program: String,
        args: Vec<String>,
    },
}

impl Connector {
    pub(crate) fn new(endpoint: &Endpoint, config: &McpClientConfig) -> Result<Self> {
        endpoint.validate("endpoint")?;
        Ok(match endpoint {
            Endpoint::Http { url } => {
                #[cfg(feature = "tls")]
                {
                    // Once per process; an application that installed its own provider keeps it.
                    let _ = rustls::crypto::ring::default_provider().install_default();
                }
                let http = reqwest::Client::builder()
                    .connect_timeout(config.connect_timeout)
                    .pool_max_idle_per_host(config.pool_size * config.max_concurrent_per_session)
                    .pool_idle_timeout(Duration::from_secs(90))
                    .tcp_nodelay(true)
                    .build()
                    .map_err(|e| crate::Error::InvalidConfig {
                        key: "endpoint",
                        value: endpoint.to_string(),
                        reason: format!("the HTTP client could not be built: {e}"),
                    })?;
                Connector::Http {
                    url: url.as_str().into(),
                    http,
                    concurrency: config.max_concurrent_per_session,
                }
            }
            Endpoint::Stdio { program, args } => Connector::Stdio {
                program: program.clone(),
                args: args.clone(),
            },
        })
    }

    /// Connect and run the MCP handshake.
    pub(crate) async fn connect(&self) -> std::result::Result<Session, String> {
        let info = client_info();
        let running = match self {
            Connector::Http {
                url,
                http,
                concurrency,
            } => {
                let config = StreamableHttpClientTransportConfig::with_uri(url.clone())
                    .max_concurrent_requests(*concurrency);
                let transport = StreamableHttpClientTransport::with_client(http.clone(), config);
                info.serve(transport).await.map_err(|e| e.to_string())?
            }
            Connector::Stdio { program, args } => {
                let mut command = tokio::process::Command::new(program);
                command.args(args);
                let (transport, _) = TokioChildProcess::builder(command)
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("could not start {program:?}: {e}"))?;
                info.serve(transport).await.map_err(|e| e.to_string())?
            }
        };
        Ok(Session {
            peer: running.peer().clone(),
            running: Mutex::new(Some(running)),
        })
    }
}

fn client_info() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("cortex-mcp", env!("CARGO_PKG_VERSION")),
    )
}

/// A place for one session.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    pub(crate) session: ArcSwapOption<Session>,
    /// Set while a reconnect task owns this slot, so there is at most one.
    pub(crate) reconnecting: AtomicBool,
}

/// The client's sessions. Calls go round robin over the connected ones: one session
/// multiplexes many calls, so there is nothing to check out or wait for.
#[derive(Debug)]
pub(crate) struct Pool {
    pub(crate) slots: Box<[Slot]>,
    next: AtomicUsize,
}

impl Pool {
    pub(crate) fn new(size: usize) -> Self {
        Self {
            slots: (0..size).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The next connected session, round robin.
    pub(crate) fn pick(&self) -> Option<(usize, Arc<Session>)> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|k| {
            let i = (start + k) % n;
            self.slots[i].session.load_full().map(|s| (i, s))
        })
    }

    /// Sessions up now.
    pub(crate) fn connected(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.session.load().is_some())
            .count()
    }

    /// Empty slot `i` if it still holds `session`; true if this call emptied it.
    pub(crate) fn evict(&self, i: usize, session: &Arc<Session>) -> bool {
        let prev = self.slots[i]
            .session
            .compare_and_swap(&Some(session.clone()), None::<Arc<Session>>);
        prev.as_ref().is_some_and(|p| Arc::ptr_eq(p, session))
    }
}
