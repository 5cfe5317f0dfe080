//! What to send, how hard and for how long; validated into a [`Plan`] of pre-built
//! requests so the hot path only clones cheap handles.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};
use serde::{Deserialize, Serialize};

use super::error::{LoadError, Result};

/// One kind of request of a load test, chosen at random with probability
/// proportional to its `weight`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name, for reports.
    pub name: String,
    /// Path (and query) on the target, e.g. `/users?id=1`. Joined to the path of the
    /// target URL. An absolute `http://` URL is accepted only if it names the same
    /// host and port as the target.
    pub endpoint: String,
    /// HTTP method (default `GET`).
    #[serde(default = "default_method")]
    pub method: String,
    /// JSON body, sent with `content-type: application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    /// Extra headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Relative weight (default 1).
    #[serde(default = "default_weight")]
    pub weight: f64,
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_weight() -> f64 {
    1.0
}

impl Scenario {
    /// A `GET` of `endpoint` with weight 1, named after the endpoint.
    pub fn get(endpoint: impl Into<String>) -> Self {
        let endpoint = endpoint.into();
        Self {
            name: endpoint.clone(),
            endpoint,
            method: default_method(),
            payload: None,
            headers: BTreeMap::new(),
            weight: 1.0,
        }
    }

    /// Read a JSON array of scenarios from a file. A malformed file gives an error
    /// naming the file and the line and column of the JSON error.
    pub fn load_file(path: impl AsRef<Path>) -> Result<Vec<Scenario>> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::ScenarioFileIo {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| LoadError::ScenarioFileJson {
            path: path.to_owned(),
            source,
        })
    }
}

/// Configuration of a load test. `Default`: one user, one request, a 10 s timeout,
/// and no scenario, so [`LoadTest::new`](super::LoadTest::new) refuses it until
/// scenarios are added. Durations are fractional seconds in JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadConfig {
    /// Target, `http://host[:port][/base]` or (feature `tls`) `https://...`. Every
    /// request goes to this host and port; scenario endpoints are joined to the base
    /// path.
    pub url: String,
    /// Requests to choose from (weighted).
    pub scenarios: Vec<Scenario>,
    /// Simulated users, each with one keep-alive connection.
    pub users: u32,
    /// Requests each user sends (closed loop), or `users × requests_per_user` requests
    /// in total (open loop). Ignored when `duration` is set.
    pub requests_per_user: u64,
    /// Run for this long instead of a request count.
    #[serde(with = "cortex_support::duration::opt_secs")]
    pub duration: Option<Duration>,
    /// Open loop: total requests per second across all users, on a fixed schedule.
    /// `None`: closed loop.
    pub rate: Option<f64>,
    /// Users start evenly spread over this period.
    #[serde(with = "cortex_support::duration::secs")]
    pub ramp_up: Duration,
    /// Pause between a user's requests (closed loop only). `None`:
    /// [`DEFAULT_THINK_TIME`] in a closed loop with a request count, 0 with a duration
    /// or a rate.
    #[serde(with = "cortex_support::duration::opt_secs")]
    pub think_time: Option<Duration>,
    /// Per-request timeout, connection included.
    #[serde(with = "cortex_support::duration::secs")]
    pub timeout: Duration,
    /// Bearer token, sent as `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Stream every request to this file (`.json`, `.csv`) or write the text report
    /// (`.txt`); see the [module docs](super#output-files) for the formats. `None`:
    /// nothing per request is kept.
    pub output: Option<PathBuf>,
    /// Show progress on stderr while running.
    pub progress: bool,
    /// Run the users on this many dedicated single-threaded runtimes (one OS thread
    /// each). 0: spawn them on the runtime that calls [`LoadTest::run`](super::LoadTest::run).
    pub threads: usize,
    /// `https://` targets: trust only the certificates of this PEM file instead of the
    /// bundled web roots (CLI `--cacert`), e.g. a private CA. Refused for `http://`.
    pub ca_file: Option<PathBuf>,
    /// `https://` targets: accept any server certificate (CLI `--insecure`). Traffic
    /// is still encrypted, but with whoever answers. Refused for `http://` and
    /// together with `ca_file`.
    pub insecure: bool,
    /// The HTTP version the users speak (CLI `--http-version`, `--http2`).
    pub http_version: HttpVersion,
}

/// Which HTTP version the users speak; each user keeps one connection either way
/// and sends its requests on it one after the other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HttpVersion {
    /// HTTP/1.1 on `http://`; on `https://` the server's pick by ALPN among `h2`
    /// and `http/1.1` (HTTP/1.1 when it picks none).
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// HTTP/1.1 only (ALPN offers only `http/1.1`).
    #[serde(rename = "1.1")]
    Http1,
    /// HTTP/2 only (feature `http2`, part of `tls`): ALPN offers only `h2` on
    /// `https://`, and `http://` gets HTTP/2 with prior knowledge (h2c).
    #[serde(rename = "2")]
    Http2,
}

impl HttpVersion {
    /// The name used on the command line and in JSON: `auto`, `1.1` or `2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Http1 => "1.1",
            Self::Http2 => "2",
        }
    }
}

impl std::str::FromStr for HttpVersion {
    type Err = LoadError;

    /// `auto`, `1.1` (or `1`, `http/1.1`) or `2` (or `h2`, `http/2`), any case.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "1.1" | "1" | "http/1.1" => Ok(Self::Http1),
            "2" | "h2" | "http/2" => Ok(Self::Http2),
            _ => Err(LoadError::BadSetting {
                name: "http_version",
                value: s.to_owned(),
                reason: "expected auto, 1.1 or 2",
            }),
        }
    }
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080".to_owned(),
            scenarios: Vec::new(),
            users: 1,
            requests_per_user: 1,
            duration: None,
            rate: None,
            ramp_up: Duration::ZERO,
            think_time: None,
            timeout: Duration::from_secs(10),
            token: None,
            output: None,
            progress: false,
            threads: 0,
            ca_file: None,
            insecure: false,
            http_version: HttpVersion::Auto,
        }
    }
}

/// The longest duration, ramp-up, think time or timeout accepted, and the longest gap
/// between two sends of an open loop (so the lowest rate is one request per this
/// period): 366 days. The run adds these to the clock, and far longer values (the
/// parsers accept up to `u64::MAX` seconds) would overflow it; no load test needs more.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 60 * 60);

/// The most simulated users accepted: 1,000,000. The run allocates per-user state
/// before the first connection, so a nonsense count (up to `u32::MAX`) would exhaust
/// memory instead of being refused; one client address cannot hold more connections
/// to one target than this anyway.
pub const MAX_USERS: u32 = 1_000_000;

/// The think time used when [`LoadConfig::think_time`] is `None` in a closed loop
/// with a request count: 0.1 s, a user who reads the answer before the next click.
pub const DEFAULT_THINK_TIME: Duration = Duration::from_millis(100);

impl LoadConfig {
    /// The think time in effect (see [`LoadConfig::think_time`]).
    pub fn effective_think_time(&self) -> Duration {
        match self.think_time {
            Some(t) => t,
            None if self.duration.is_none() && self.rate.is_none() => DEFAULT_THINK_TIME,
            None => Duration::ZERO,
        }
    }

    /// Check everything and pre-build the requests.
    pub(crate) fn plan(&self) -> Result<Plan> {
        if self.users == 0 {
            return Err(LoadError::ZeroUsers(self.users));
        }
        if self.users > MAX_USERS {
            return Err(LoadError::BadSetting {
                name: "users",
                value: self.users.to_string(),
                reason: "more than MAX_USERS (1000000)",
            });
        }
        for (name, d) in [
            ("duration", self.duration),
            ("ramp_up", Some(self.ramp_up)),
            ("think_time", self.think_time),
            ("timeout", Some(self.timeout)),
        ] {
            if let Some(d) = d
                && d > MAX_DURATION
            {
                return Err(LoadError::BadSetting {
                    name,
                    value: format!("{d:?}"),
                    reason: "longer than MAX_DURATION (366 days)",
                });
            }
        }
        match self.duration {
            Some(d) if d.is_zero() => {
                return Err(LoadError::BadSetting {
                    name: "duration",
                    value: format!("{d:?}"),
                    reason: "must be positive",
                });
            }
            Some(_) => {}
            None if self.requests_per_user == 0 => {
                return Err(LoadError::ZeroRequests(self.requests_per_user));
            }
            None => {}
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(LoadError::BadSetting {
                name: "rate",
                value: rate.to_string(),
                reason: "need a finite number of requests per second > 0",
            });
        }
        // A lower rate leaves more than MAX_DURATION between two sends: a run with a
        // request count would wait for ever.
        if let Some(rate) = self.rate
            && rate < 1.0 / MAX_DURATION.as_secs_f64()
        {
            return Err(LoadError::BadSetting {
                name: "rate",
                value: rate.to_string(),
                reason: "below one request per MAX_DURATION (366 days)",
            });
        }
        if self.timeout.is_zero() {
            return Err(LoadError::BadSetting {
                name: "timeout",
                value: format!("{:?}", self.timeout),
                reason: "must be positive",
            });
        }
        if self.scenarios.is_empty() {
            return Err(LoadError::NoScenarios);
        }
        let target = Target::parse(&self.url)?;
        if self.http_version == HttpVersion::Http2 && !cfg!(feature = "http2") {
            return Err(LoadError::BadSetting {
                name: "http_version",
                value: "2".to_owned(),
                reason: "HTTP/2 needs the `http2` feature (or `tls`) of cortex-load",
            });
        }
        #[cfg(feature = "tls")]
        let tls = self.tls_client(&target)?;
        #[cfg(not(feature = "tls"))]
        self.check_tls_settings(&target)?;
        let auth = match &self.token {
            Some(t) => Some(HeaderValue::try_from(format!("Bearer {t}")).map_err(|_| {
                LoadError::BadRequestPart {
                    scenario: String::new(),
                    what: "token",
                    value: t.clone(),
                }
            })?),
            None => None,
        };
        let mut scenarios = Vec::with_capacity(self.scenarios.len());
        let mut cumulative = Vec::with_capacity(self.scenarios.len());
        let mut total_weight = 0.0;
        for s in &self.scenarios {
            if !(s.weight.is_finite() && s.weight > 0.0) {
                return Err(LoadError::BadWeight {
                    scenario: s.name.clone(),
                    weight: s.weight,
                });
            }
            total_weight += s.weight;
            // Finite weights can still add up to infinity; the pick would then always
            // land on the last scenario.
            if !total_weight.is_finite() {
                return Err(LoadError::BadSetting {
                    name: "weight",
                    value: format!("{} (scenario {:?})", s.weight, s.name),
                    reason: "the weights add up past the largest f64",
                });
            }
            cumulative.push(total_weight);
            scenarios.push(Prepared::new(s, &target, auth.as_ref())?);
        }
        if let Some(out) = &self.output {
            OutputFormat::of(out)?;
        }
        Ok(Plan {
            http_version: self.http_version,
            target,
            #[cfg(feature = "tls")]
            tls,
            scenarios,
            cumulative,
            total_weight,
        })
    }
}

impl LoadConfig {
    /// Check the TLS settings against the scheme and, for `https://`, build the client
    /// (reading the CA file), so a bad file fails before the run.
    #[cfg(feature = "tls")]
    fn tls_client(&self, target: &Target) -> Result<Option<crate::tls::TlsClient>> {
        use crate::tls::{TlsClient, Trust};
        self.check_tls_settings(target)?;
        if !target.tls {
            return Ok(None);
        }
        let trust = match (&self.ca_file, self.insecure) {
            (Some(path), _) => Trust::CaFile(path),
            (None, true) => Trust::Insecure,
            (None, false) => Trust::WebPki,
        };
        TlsClient::new(&self.url, &target.host, trust, self.http_version).map(Some)
    }

    fn check_tls_settings(&self, target: &Target) -> Result<()> {
        if let Some(path) = &self.ca_file {
            if !target.tls {
                return Err(LoadError::BadSetting {
                    name: "ca_file",
                    value: path.display().to_string(),
                    reason: "only for https:// targets",
                });
            }
            if self.insecure {
                return Err(LoadError::BadSetting {
                    name: "insecure",
                    value: "true".to_owned(),
                    reason: "contradicts ca_file: trust the CA or skip verification, not both",
                });
            }
        }
        if self.insecure && !target.tls {
            return Err(LoadError::BadSetting {
                name: "insecure",
                value: "true".to_owned(),
                reason: "only for https:// targets",
            });
        }
        Ok(())
    }
}

/// The host and port every request goes to, and the base path.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// `https://`: requests go over TLS.
    pub(crate) tls: bool,
    /// The host as the TLS server name (IPv6 without brackets).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) host: String,
    /// `host:port`, for connecting and for messages.
    pub(crate) addr: String,
    /// The `host` header value (`host[:port]` as given).
    pub(crate) host_header: HeaderValue,
    /// Base path without a trailing `/`.
    pub(crate) base: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self> {
        let bad = |reason: &str| LoadError::BadUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") if cfg!(feature = "tls") => true,
            Some("https") => {
                return Err(LoadError::TlsNotEnabled {
                    url: url.to_owned(),
                });
            }
            Some(other) => {
                return Err(LoadError::UnsupportedScheme {
                    scheme: other.to_owned(),
                    url: url.to_owned(),
                });
            }
            None => return Err(bad("missing scheme: expected http://host[:port]")),
        };
        let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user info is not supported"));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let host_header = HeaderValue::from_str(authority.as_str())
            .map_err(|_| bad("host is not a valid header value"))?;
        if uri.query().is_some() {
            return Err(bad(
                "the target URL takes no query; put it in the scenario endpoint",
            ));
        }
        Ok(Self {
            tls,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            addr: format!("{host}:{port}"),
            host_header,
            base: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The scheme of every request.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// Whether an absolute URL names this target's scheme, host and port.
    fn same_origin(&self, uri: &Uri) -> bool {
        let default_port = if self.tls { 443 } else { 80 };
        uri.scheme_str() == Some(self.scheme())
            && uri.authority().is_some_and(|a| {
                format!("{}:{}", a.host(), a.port_u16().unwrap_or(default_port)) == self.addr
            })
    }
}

/// A scenario turned into the parts of a request, built once.
#[derive(Clone, Debug)]
pub(crate) struct Prepared {
    pub(crate) name: String,
    pub(crate) method: Method,
    /// The endpoint as reported (the path and query sent).
    pub(crate) endpoint: String,
    /// The whole HTTP/1.1 request, serialized once: what each request writes.
    pub(crate) h1: Bytes,
    /// HTTP/2: the absolute URI (`:scheme`, `:authority` and `:path` come from it).
    #[cfg(feature = "http2")]
    pub(crate) uri: Uri,
    /// HTTP/2: the headers, without `host` (the authority says it).
    #[cfg(feature = "http2")]
    pub(crate) headers: HeaderMap,
    #[cfg(feature = "http2")]
    pub(crate) body: Bytes,
}

impl Prepared {
    fn new(s: &Scenario, target: &Target, auth: Option<&HeaderValue>) -> Result<Self> {
        let bad_endpoint = |reason: &str| LoadError::BadEndpoint {
            scenario: s.name.clone(),
            endpoint: s.endpoint.clone(),
            reason: reason.to_owned(),
        };
        let path = if s.endpoint.starts_with('/') {
            format!("{}{}", target.base, s.endpoint)
        } else if s.endpoint.contains("://") {
            let abs: Uri = s
                .endpoint
                .parse()
                .map_err(|e: http::uri::InvalidUri| bad_endpoint(&e.to_string()))?;
            if !target.same_origin(&abs) {
                return Err(bad_endpoint(&format!(
                    "absolute URL to another origin (the target is {}://{})",
                    target.scheme(),
                    target.addr
                )));
            }
            abs.path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
        } else if s.endpoint.is_empty() {
            format!("{}/", target.base)
        } else {
            return Err(bad_endpoint("must start with '/'"));
        };
        let uri: Uri = path
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad_endpoint(&e.to_string()))?;
        let method =
            Method::from_bytes(s.method.to_ascii_uppercase().as_bytes()).map_err(|_| {
                LoadError::BadRequestPart {
                    scenario: s.name.clone(),
                    what: "method",
                    value: s.method.clone(),
                }
            })?;
        let mut headers = HeaderMap::new();
        headers.insert(HOST, target.host_header.clone());
        let body = match &s.payload {
            Some(v) => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Bytes::from(serde_json::to_vec(v).unwrap_or_default())
            }
            None => Bytes::new(),
        };
        if let Some(a) = auth {
            headers.insert(AUTHORIZATION, a.clone());
        }
        for (k, v) in &s.headers {
            let name =
                HeaderName::from_bytes(k.as_bytes()).map_err(|_| LoadError::BadRequestPart {
                    scenario: s.name.clone(),
                    what: "header name",
                    value: k.clone(),
                })?;
            let value = HeaderValue::from_str(v).map_err(|_| LoadError::BadRequestPart {
                scenario: s.name.clone(),
                what: "header value",
                value: v.clone(),
            })?;
            headers.insert(name, value);
        }
        let h1 = serialize_h1(&method, &uri, &headers, &body);
        #[cfg(feature = "http2")]
        let (uri, headers) = {
            let mut headers = headers;
            headers.remove(HOST);
            let absolute = format!(
                "{}://{}{}",
                target.scheme(),
                target.host_header.to_str().unwrap_or_default(),
                path
            );
            let uri: Uri = absolute
                .parse()
                .map_err(|e: http::uri::InvalidUri| bad_endpoint(&e.to_string()))?;
            (uri, headers)
        };
        Ok(Self {
            name: s.name.clone(),
            method,
            endpoint: path,
            h1,
            #[cfg(feature = "http2")]
            uri,
            #[cfg(feature = "http2")]
            headers,
            #[cfg(feature = "http2")]
            body,
        })
    }
}

/// The whole HTTP/1.1 request as sent: request line, headers, `content-length` when
/// there is a body (or the method defines one, as `POST` with an empty body), the
/// empty line and the body. Header names are lowercase, as `http` stores them.
fn serialize_h1(method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Bytes {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Vec::with_capacity(64 + path.len() + body.len());
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let defines_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if (!body.is_empty() || defines_body) && !headers.contains_key(CONTENT_LENGTH) {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// The validated configuration: target and pre-built requests.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) http_version: HttpVersion,
    pub(crate) target: Target,
    /// The TLS client of an `https://` target.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::TlsClient>,
    pub(crate) scenarios: Vec<Prepared>,
    cumulative: Vec<f64>,
    total_weight: f64,
}

impl Plan {
    /// The scenario for a uniform random `u64`, by weight.
    #[inline]
    pub(crate) fn pick(&self, random: u64) -> usize {
        if self.scenarios.len() == 1 {
            return 0;
        }
        // 53 random bits make a uniform f64 in [0, 1).
        let x = (random >> 11) as f64 / (1u64 << 53) as f64 * self.total_weight;
        self.cumulative
            .iter()
            .position(|&c| x < c)
            .unwrap_or(self.scenarios.len() - 1)
    }
}

/// How the per-request output file is written, from its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    Json,
    Csv,
    Text,
}

impl OutputFormat {
    pub(crate) fn of(path: &Path) -> Result<Self> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("json") => Ok(Self::Json),
            Some("csv") => Ok(Self::Csv),
            Some("txt") => Ok(Self::Text),
            _ => Err(LoadError::OutputFormat {
                path: path.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_value() {
        let mut c = LoadConfig {
            scenarios: vec![Scenario::get("/")],
            ..LoadConfig::default()
        };
        c.users = 0;
        assert!(c.plan().unwrap_err().to_string().contains("users: 0"));
        c.users = 1;
        c.url = "ftp://example.com".into();
        assert!(c.plan().unwrap_err().to_string().contains("ftp"));
        c.url = "http://127.0.0.1:1".into();
        c.insecure = true;
        assert!(matches!(
            c.plan(),
            Err(LoadError::BadSetting {
                name: "insecure",
                ..
            })
        ));
        c.insecure = false;
        c.ca_file = Some("ca.pem".into());
        assert!(matches!(
            c.plan(),
            Err(LoadError::BadSetting {
                name: "ca_file",
                ..
            })
        ));
        c.ca_file = None;
        c.url = "http://127.0.0.1:1".into();
        c.scenarios[0].weight = -1.0;
        assert!(c.plan().unwrap_err().to_string().contains("weight -1"));
        c.scenarios[0] = Scenario::get("http://evil.example:80/x");
        assert!(matches!(c.plan(), Err(LoadError::BadEndpoint { .. })));
        c.scenarios[0] = Scenario::get("http://127.0.0.1:1/x?y=1");
        assert_eq!(c.plan().unwrap().scenarios[0].endpoint, "/x?y=1");
        c.scenarios.clear();
        assert!(matches!(c.plan(), Err(LoadError::NoScenarios)));
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn https_without_the_feature_says_to_enable_it() {
        let c = LoadConfig {
            url: "https://127.0.0.1:8443".into(),
            scenarios: vec![Scenario::get("/")],
            ..LoadConfig::default()
        };
        let err = c.plan().unwrap_err();
        assert!(matches!(err, LoadError::TlsNotEnabled { .. }), "{err}");
        assert!(err.to_string().contains("`tls` feature"), "{err}");
    }

    #[cfg(not(feature = "http2"))]
    #[test]
    fn http2_without_the_feature_says_to_enable_it() {
        let c = LoadConfig {
            scenarios: vec![Scenario::get("/")],
            http_version: HttpVersion::Http2,
            ..LoadConfig::default()
        };
        let err = c.plan().unwrap_err();
        assert!(
            matches!(
                err,
                LoadError::BadSetting {
                    name: "http_version",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("`http2` feature"), "{err}");
    }

    #[test]
    fn http_versions_parse_by_their_names() {
        for (text, v) in [
            ("auto", HttpVersion::Auto),
            ("1.1", HttpVersion::Http1),
            ("HTTP/1.1", HttpVersion::Http1),
            ("2", HttpVersion::Http2),
            ("h2", HttpVersion::Http2),
        ] {
            assert_eq!(text.parse::<HttpVersion>().unwrap(), v, "{text}");
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{}\"", v.as_str()));
            assert_eq!(serde_json::from_str::<HttpVersion>(&json).unwrap(), v);
        }
        let err = "3".parse::<HttpVersion>().unwrap_err();
        assert!(err.to_string().contains('3'), "{err}");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn https_targets_default_to_port_443_and_check_the_ca_file() {
        let c = LoadConfig {
            url: "https://localhost/api".into(),
            scenarios: vec![Scenario::get("https://localhost:443/x")],
            ..LoadConfig::default()
        };
        let plan = c.plan().unwrap();
        assert_eq!(plan.target.addr, "localhost:443");
        assert_eq!(plan.scenarios[0].endpoint, "/x");
        assert!(plan.tls.is_some());

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for (path, kind) in [
            (missing, std::io::ErrorKind::NotFound),
            (empty, std::io::ErrorKind::InvalidData),
        ] {
            let c = LoadConfig {
                ca_file: Some(path.clone()),
                ..c.clone()
            };
            match c.plan() {
                Err(LoadError::CaFile { path: p, source }) => {
                    assert_eq!(p, path);
                    assert_eq!(source.kind(), kind, "{source}");
                }
                other => panic!("expected CaFile for {}: {other:?}", path.display()),
            }
        }
    }

    #[test]
    fn weighted_pick_covers_all() {
        let mut a = Scenario::get("/a");
        a.weight = 3.0;
        let c = LoadConfig {
            url: "http://h:1/base/".into(),
            scenarios: vec![a, Scenario::get("/b")],
            ..LoadConfig::default()
        };
        let p = c.plan().unwrap();
        assert_eq!(p.scenarios[1].endpoint, "/base/b");
        assert_eq!(p.pick(0), 0);
        assert_eq!(p.pick(u64::MAX), 1);
    }
}
