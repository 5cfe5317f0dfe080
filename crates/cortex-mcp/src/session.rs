//! Sessions: making them (HTTP or a child process) and the fixed set of slots that
//! holds them. A broken slot is emptied and refilled by a background reconnect.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
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

use crate::error::BoxError;
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

/// What the builder adds to a stdio child's environment.
#[derive(Debug, Default)]
pub(crate) struct StdioEnv {
    /// Set whatever the parent has.
    pub(crate) explicit: Vec<(OsString, OsString)>,
    /// The environment to pick allowed variables from; this process's when None.
    pub(crate) parent: Option<Vec<(OsString, OsString)>>,
}

impl StdioEnv {
    /// The child's whole environment: the parent's variables that `allowed` names
    /// (a trailing `*` matches a prefix), then the explicit ones, which win.
    fn resolve(self, allowed: &[&str]) -> Vec<(OsString, OsString)> {
        let parent = match self.parent {
            Some(vars) => vars,
            None => std::env::vars_os().collect(),
        };
        let mut env: BTreeMap<OsString, OsString> = parent
            .into_iter()
            .filter(|(name, _)| allowed.iter().any(|p| env_name_matches(p, name)))
            .collect();
        env.extend(self.explicit);
        env.into_iter().collect()
    }
}

/// Whether variable `name` is allowed by `pattern`: equal, or for `PREFIX*` starting
/// with `PREFIX`. Names are case-insensitive on Windows, as its environment is.
fn env_name_matches(pattern: &str, name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    let (prefix, exact) = match pattern.strip_suffix('*') {
        Some(prefix) => (prefix, false),
        None => (pattern, true),
    };
    let fold = |s: &str| {
        if cfg!(windows) {
            s.to_ascii_uppercase()
        } else {
            s.to_owned()
        }
    };
    let (prefix, name) = (fold(prefix), fold(name));
    if exact {
        name == prefix
    } else {
        name.starts_with(&prefix)
    }
}

/// Makes sessions to one endpoint.
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
        /// The child's whole environment (it inherits nothing else).
        env: Vec<(OsString, OsString)>,
    },
}

/// The URL redacted; of the child's environment, the names only.
impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Connector::Http {
                url, concurrency, ..
            } => f
                .debug_struct("Http")
                .field("url", &cortex_support::redact::redact_url(url))
                .field("concurrency", concurrency)
                .finish_non_exhaustive(),
            Connector::Stdio { program, args, env } => f
                .debug_struct("Stdio")
                .field("program", program)
                .field("args", args)
                .field(
                    "env",
                    &env.iter()
                        .map(|(k, _)| k.to_string_lossy())
                        .collect::<Vec<_>>(),
                )
                .finish(),
        }
    }
}

impl Connector {
    pub(crate) fn new(
        endpoint: &Endpoint,
        config: &McpClientConfig,
        stdio_env: StdioEnv,
    ) -> Result<Self> {
        endpoint.validate("endpoint")?;
        Ok(match endpoint {
            Endpoint::Http { url } => {
                let builder = reqwest::Client::builder()
                    .connect_timeout(config.connect_timeout)
                    .pool_max_idle_per_host(config.pool_size * config.max_concurrent_per_session)
                    .pool_idle_timeout(Duration::from_secs(90))
                    .tcp_nodelay(true);
                // The client's own TLS settings, with the ring provider named here: no
                // process-wide default provider is installed, so the application keeps
                // whichever one it chose (or none).
                #[cfg(feature = "tls")]
                let builder = builder.tls_backend_preconfigured(tls_config(config)?);
                let http = builder.build().map_err(|e| crate::Error::HttpClient {
                    endpoint: endpoint.to_string(),
                    source: e,
                })?;
                Connector::Http {
                    url: url.as_str().into(),
                    http,
                    concurrency: config.max_concurrent_per_session,
                }
            }
            Endpoint::Stdio { program, args } => {
                let allowed: Vec<&str> = McpClientConfig::DEFAULT_STDIO_ENV
                    .iter()
                    .copied()
                    .chain(config.stdio_env.iter().map(String::as_str))
                    .collect();
                Connector::Stdio {
                    program: program.clone(),
                    args: args.clone(),
                    env: stdio_env.resolve(&allowed),
                }
            }
        })
    }

    /// Connect and run the MCP handshake.
    pub(crate) async fn connect(&self) -> std::result::Result<Session, BoxError> {
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
                info.serve(transport)
                    .await
                    .map_err(crate::scrub::handshake)?
            }
            Connector::Stdio { program, args, env } => {
                let mut command = tokio::process::Command::new(program);
                // Only the allowed variables: this process's secrets stay here.
                command.args(args).env_clear().envs(env.iter().cloned());
                let (transport, _) = TokioChildProcess::builder(command)
                    .stderr(Stdio::null())
                    .spawn()?;
                info.serve(transport)
                    .await
                    .map_err(crate::scrub::handshake)?
            }
        };
        Ok(Session {
            peer: running.peer().clone(),
            running: Mutex::new(Some(running)),
        })
    }
}

/// The rustls settings of the HTTP client: the ring provider, the platform's trust
/// roots plus those of `MCP_TLS_CA_FILE`, HTTP/1.1 (what streamable HTTP needs).
#[cfg(feature = "tls")]
fn tls_config(config: &McpClientConfig) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let extra = match &config.tls_ca_file {
        Some(path) => read_ca_file(path)?,
        None => Vec::new(),
    };
    let tls_error = |source| crate::Error::Tls {
        ca_file: config.tls_ca_file.clone(),
        source,
    };
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(tls_error)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// The certificates of a PEM bundle.
#[cfg(feature = "tls")]
fn read_ca_file(path: &std::path::Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let bad = |reason: String| crate::Error::InvalidConfig {
        key: "MCP_TLS_CA_FILE",
        value: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("is not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no certificate".to_owned()));
    }
    Ok(certs)
}

fn client_info() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("cortex-mcp", env!("CARGO_PKG_VERSION")),
    )
}

/// A place for one session.
#[derive(Debug)]
pub(crate) struct Slot<S = Session> {
    pub(crate) session: ArcSwapOption<S>,
    /// Set while a reconnect task owns this slot, so there is at most one.
    pub(crate) reconnecting: AtomicBool,
    /// Set while a liveness check of this slot's session runs, so there is at most one.
    checking: AtomicBool,
    /// Requests on this slot's session now.
    in_flight: AtomicUsize,
}

impl<S> Default for Slot<S> {
    fn default() -> Self {
        Self {
            session: ArcSwapOption::empty(),
            reconnecting: AtomicBool::new(false),
            checking: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        }
    }
}

impl<S> Slot<S> {
    /// The session to check, if the slot holds one and no check of it runs: the
    /// caller then owns the check until [`end_check`](Self::end_check).
    pub(crate) fn start_check(&self) -> Option<Arc<S>> {
        let session = self.session.load_full()?;
        if self.checking.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(session)
    }

    /// The check begun by [`start_check`](Self::start_check) is over.
    pub(crate) fn end_check(&self) {
        self.checking.store(false, Ordering::Release);
    }
}

/// A request counted against its slot until dropped.
#[derive(Debug)]
pub(crate) struct Lease<'a, S = Session> {
    pub(crate) slot: usize,
    pub(crate) session: Arc<S>,
    pool: &'a Pool<S>,
}

impl<S> Drop for Lease<'_, S> {
    fn drop(&mut self) {
        self.pool.slots[self.slot]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The client's sessions.
///
/// Calls fill the first connected session up to `spill_at` requests in flight, then
/// spill to the next. One session multiplexes many calls, and on a small machine one
/// busy session moved 1.8x the calls of five sessions sharing the same load round
/// robin (fewer wake-ups, fuller batches); the other sessions stand by, already
/// initialized, so a broken session costs no reconnect wait, and carry the overflow.
#[derive(Debug)]
pub(crate) struct Pool<S = Session> {
    pub(crate) slots: Box<[Slot<S>]>,
    spill_at: usize,
}

impl<S> Pool<S> {
    pub(crate) fn new(size: usize, spill_at: usize) -> Self {
        Self {
            slots: (0..size).map(|_| Slot::default()).collect(),
            spill_at: spill_at.max(1),
        }
    }

    /// A connected session: the first with room, else the least loaded; not slot
    /// `avoid` (a hedge's first copy) unless it is the only one up.
    pub(crate) fn lease(&self, avoid: Option<usize>) -> Option<Lease<'_, S>> {
        let mut least: Option<(usize, usize)> = None;
        for (i, slot) in self.slots.iter().enumerate() {
            if Some(i) == avoid || slot.session.load().is_none() {
                continue;
            }
            let load = slot.in_flight.load(Ordering::Relaxed);
            if load < self.spill_at {
                least = Some((i, 0));
                break;
            }
            if least.is_none_or(|(_, l)| load < l) {
                least = Some((i, load));
            }
        }
        let slot = least.map(|(i, _)| i).or(avoid)?;
        let session = self.slots[slot].session.load_full()?;
        self.slots[slot].in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Lease {
            slot,
            session,
            pool: self,
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
    pub(crate) fn evict(&self, i: usize, session: &Arc<S>) -> bool {
        let prev = self.slots[i]
            .session
            .compare_and_swap(&Some(session.clone()), None::<Arc<S>>);
        prev.as_ref().is_some_and(|p| Arc::ptr_eq(p, session))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_gets_the_allowed_variables_and_the_explicit_ones_only() {
        let parent = [
            ("PATH", "/usr/bin"),
            ("HOME", "/home/app"),
            ("LC_ALL", "C"),
            ("LC_TIME", "C"),
            ("LCX", "no"),
            ("DATABASE_URL", "postgres://app:pw@db/app"),
            ("REDIS_URL", "redis://:pw@cache"),
            ("OTEL_ENDPOINT", "http://otel"),
            ("TOKEN", "from the parent"),
        ];
        let env = StdioEnv {
            explicit: vec![
                ("TOKEN".into(), "explicit".into()),
                ("ONLY".into(), "x".into()),
            ],
            parent: Some(parent.iter().map(|(k, v)| (k.into(), v.into())).collect()),
        };
        let allowed = [McpClientConfig::DEFAULT_STDIO_ENV, &["OTEL_*"]].concat();
        let got: Vec<(String, String)> = env
            .resolve(&allowed)
            .into_iter()
            .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
            .collect();
        let want = [
            ("HOME", "/home/app"),
            ("LC_ALL", "C"),
            ("LC_TIME", "C"),
            ("ONLY", "x"),
            ("OTEL_ENDPOINT", "http://otel"),
            ("PATH", "/usr/bin"),
            ("TOKEN", "explicit"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn connector_debug_hides_the_password_and_the_values_of_the_childs_environment() {
        let config = McpClientConfig::default();
        let http = Connector::new(
            &Endpoint::http("http://app:pw-123@127.0.0.1:1/mcp"),
            &config,
            StdioEnv::default(),
        )
        .unwrap();
        let shown = format!("{http:?}");
        assert!(
            !shown.contains("pw-123") && shown.contains("app:***@"),
            "{shown}"
        );
        let stdio = Connector::new(
            &Endpoint::stdio("server", ["--stdio"]),
            &config,
            StdioEnv {
                explicit: vec![("TOKEN".into(), "tok-456".into())],
                parent: Some(Vec::new()),
            },
        )
        .unwrap();
        let shown = format!("{stdio:?}");
        assert!(
            !shown.contains("tok-456") && shown.contains("TOKEN"),
            "{shown}"
        );
    }

    fn pool(up: &[bool], spill_at: usize) -> Pool<usize> {
        let pool = Pool::new(up.len(), spill_at);
        for (i, up) in up.iter().enumerate() {
            if *up {
                pool.slots[i].session.store(Some(Arc::new(i)));
            }
        }
        pool
    }

    #[test]
    fn fills_the_first_session_then_spills_to_the_least_loaded() {
        let p = pool(&[true, true, true], 2);
        let a = p.lease(None).unwrap();
        let b = p.lease(None).unwrap();
        assert_eq!((a.slot, b.slot), (0, 0));
        let c = p.lease(None).unwrap();
        let d = p.lease(None).unwrap();
        let e = p.lease(None).unwrap();
        assert_eq!((c.slot, d.slot, e.slot), (1, 1, 2));
        let f = p.lease(None).unwrap();
        assert_eq!(f.slot, 2);
        // All full: the least loaded takes the overflow.
        drop(c);
        assert_eq!(p.lease(None).unwrap().slot, 1);
        drop((a, b));
        assert_eq!(p.lease(None).unwrap().slot, 0, "room again in the first");
        drop((d, e, f));
    }

    #[test]
    fn passes_over_empty_slots_and_the_avoided_one_unless_alone() {
        let p = pool(&[false, true, true], 8);
        assert_eq!(p.lease(None).unwrap().slot, 1);
        assert_eq!(p.lease(Some(1)).unwrap().slot, 2);
        let alone = pool(&[false, true], 8);
        assert_eq!(alone.lease(Some(1)).unwrap().slot, 1);
        assert!(pool(&[false, false], 8).lease(None).is_none());

        let session = p.slots[1].session.load_full().unwrap();
        assert!(p.evict(1, &session));
        assert!(!p.evict(1, &session), "only the first eviction counts");
        assert_eq!(p.connected(), 1);
        assert_eq!(p.lease(None).unwrap().slot, 2);
    }

    #[test]
    fn one_check_per_slot_at_a_time_and_none_of_an_empty_slot() {
        let p = pool(&[true, false], 8);
        let first = p.slots[0].start_check().expect("a session to check");
        assert_eq!(*first, 0);
        assert!(p.slots[0].start_check().is_none(), "one check at a time");
        p.slots[0].end_check();
        assert!(
            p.slots[0].start_check().is_some(),
            "free again once it ended"
        );
        assert!(p.slots[1].start_check().is_none(), "nothing to check");
        p.slots[1].session.store(Some(Arc::new(1)));
        assert!(
            p.slots[1].start_check().is_some(),
            "an empty slot claimed nothing"
        );
    }
}
