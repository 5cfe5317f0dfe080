use std::fmt;
use std::time::Duration;

use cortex_support::redact::redact_url;
use cortex_support::{EnvSource, EnvVar, FromEnv};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// Where a service listens: a streamable HTTP URL, or a command that speaks MCP on its
/// standard input and output.
///
/// As a string (environment, config files): `http://host:port/mcp`, `https://...`
/// (with the `tls` feature) or `stdio:program arg1 arg2`. Displaying or serializing an
/// endpoint hides any password in the URL, so config dumps and logs never leak it.
///
/// ```
/// use cortex_mcp::Endpoint;
///
/// let e: Endpoint = "http://app:secret@127.0.0.1:8080/mcp".parse().unwrap();
/// assert_eq!(e.to_string(), "http://app:***@127.0.0.1:8080/mcp");
/// let s: Endpoint = "stdio:node server.js stdio".parse().unwrap();
/// assert_eq!(s, Endpoint::stdio("node", ["server.js", "stdio"]));
/// assert!("ftp://x".parse::<Endpoint>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// MCP streamable HTTP at this URL (the path included, commonly `/mcp`).
    Http {
        /// The URL.
        url: String,
    },
    /// A child process started by the client, speaking MCP over stdin/stdout. Its
    /// stderr is discarded. A child that exits is started again by the reconnect.
    ///
    /// The child does not inherit the client's environment: it gets
    /// [`McpClientConfig::DEFAULT_STDIO_ENV`], the variables named in
    /// [`McpClientConfig::stdio_env`], and those set with
    /// [`McpClientBuilder::stdio_env`](crate::McpClientBuilder::stdio_env).
    Stdio {
        /// The program, looked up on `PATH`.
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
}

impl Endpoint {
    /// A streamable HTTP endpoint. Checked when the client is built.
    pub fn http(url: impl Into<String>) -> Self {
        Endpoint::Http { url: url.into() }
    }

    /// A child process endpoint.
    pub fn stdio<I, S>(program: impl Into<String>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Endpoint::Stdio {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// Check the endpoint: an `http://` or `https://` URL with a host, or a non-empty
    /// program. `https://` needs the `tls` feature.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming `key` and the (redacted) value.
    pub fn validate(&self, key: &'static str) -> Result<()> {
        let bad = |reason: &str| Error::InvalidConfig {
            key,
            value: self.to_string(),
            reason: reason.to_owned(),
        };
        match self {
            Endpoint::Http { url } => {
                let rest = if let Some(rest) = url.strip_prefix("http://") {
                    rest
                } else if let Some(rest) = url.strip_prefix("https://") {
                    if !cfg!(feature = "tls") {
                        return Err(bad(
                            "https needs the `tls` feature of cortex-mcp; enable it or use http://",
                        ));
                    }
                    rest
                } else {
                    return Err(bad(
                        "must start with http://, https:// or stdio: (a command)",
                    ));
                };
                let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
                if host.is_empty() || host.ends_with('@') {
                    return Err(bad("the URL has no host"));
                }
                if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(bad("the URL contains whitespace or control characters"));
                }
                Ok(())
            }
            Endpoint::Stdio { program, .. } => {
                if program.trim().is_empty() {
                    return Err(bad("the command is empty"));
                }
                Ok(())
            }
        }
    }
}

impl std::str::FromStr for Endpoint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let endpoint = match s.strip_prefix("stdio:") {
            Some(command) => {
                let mut words = command.split_whitespace().map(str::to_owned);
                let program = words.next().unwrap_or_default();
                Endpoint::Stdio {
                    program,
                    args: words.collect(),
                }
            }
            None => Endpoint::http(s),
        };
        endpoint.validate("endpoint")?;
        Ok(endpoint)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Http { url } => f.write_str(&redact_url(url)),
            Endpoint::Stdio { program, args } => {
                write!(f, "stdio:{program}")?;
                args.iter().try_for_each(|a| write!(f, " {a}"))
            }
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({self})")
    }
}

/// Serializes redacted: a config dump never shows a password.
impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Settings of an [`McpClient`](crate::McpClient): the same for every service a
/// [`McpClientFactory`](crate::McpClientFactory) builds.
///
/// Read from the environment with [`McpClientConfig::from_env`]; the variables are
/// listed in [`FromEnv::VARS`] (and, from it, in the crate README).
///
/// ```
/// use std::time::Duration;
/// use cortex_mcp::McpClientConfig;
///
/// let c = McpClientConfig::default();
/// assert_eq!((c.pool_size, c.max_retries), (5, 3));
/// assert_eq!(c.request_timeout, Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct McpClientConfig {
    /// Sessions per service. One session already carries many concurrent calls (they
    /// are told apart by JSON-RPC id), so calls fill one session first; the others take
    /// the overflow past `max_concurrent_per_session` and stand by for when a session
    /// breaks. Default: 5.
    pub pool_size: usize,
    /// Bound on making one session: connecting plus the MCP handshake. Default: 10 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub connect_timeout: Duration,
    /// Bound on one attempt of a call. Default: 30 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub request_timeout: Duration,
    /// Bound on a whole call: every attempt and every wait between them. No caller
    /// waits longer. Default: 60 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub call_timeout: Duration,
    /// Retries after the first attempt, for retryable failures only. Default: 3.
    pub max_retries: u32,
    /// Wait before the first retry; it doubles on each further retry, with jitter.
    /// Also the first wait of a session's reconnect. Default: 1 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub retry_delay: Duration,
    /// Cap of the doubling waits, for retries and reconnects. Default: 30 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub max_retry_delay: Duration,
    /// Consecutive failed attempts that open the circuit; 0 turns the breaker off.
    /// Default: 5.
    pub breaker_failures: u32,
    /// How long an open circuit fails calls at once before one probe call is let
    /// through. Default: 30 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub breaker_cooldown: Duration,
    /// Send a second copy of an idempotent call (cacheable calls, resource reads,
    /// listings, and calls marked idempotent) on another session when the first has
    /// not answered after this long; the first answer wins. Default: off.
    #[serde(with = "cortex_support::duration::opt_secs")]
    pub hedge_after: Option<Duration>,
    /// Calls slower than this are logged at `warn`. Default: 1 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub slow_call: Duration,
    /// Entries of the result cache of cacheable calls; 0 turns caching off.
    /// Default: 10000.
    pub cache_capacity: usize,
    /// Expiry of a cached result when the call does not give one. Default: 300 s.
    #[serde(with = "cortex_support::duration::secs")]
    pub cache_ttl: Duration,
    /// HTTP requests one session keeps in flight at once (rmcp's own default is 16).
    /// Default: 64.
    pub max_concurrent_per_session: usize,
    /// PEM file of certificate authorities to trust for `https://` endpoints besides
    /// the system's, e.g. a private CA of internal services (feature `tls`).
    /// Default: none.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Variables a stdio child gets from this process besides
    /// [`DEFAULT_STDIO_ENV`](Self::DEFAULT_STDIO_ENV), by name; `PREFIX*` takes every
    /// variable starting with `PREFIX`. The child inherits nothing else, so the
    /// service's own secrets (`DATABASE_URL`, `REDIS_URL`, ...) stay out of it. In the
    /// environment: `MCP_STDIO_ENV=OTEL_*,NODE_OPTIONS`. Default: none.
    pub stdio_env: Vec<String>,
}

impl Default for McpClientConfig {
    fn default() -> Self {
        Self {
            pool_size: 5,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(60),
            max_retries: 3,
            retry_delay: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(30),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            hedge_after: None,
            slow_call: Duration::from_secs(1),
            cache_capacity: 10_000,
            cache_ttl: Duration::from_secs(300),
            max_concurrent_per_session: 64,
            tls_ca_file: None,
            stdio_env: Vec::new(),
        }
    }
}

impl McpClientConfig {
    /// What a stdio child always gets from this process (when set): the program
    /// search path, the home directory, the locale and the temporary directory.
    pub const DEFAULT_STDIO_ENV: &'static [&'static str] = if cfg!(windows) {
        &[
            "PATH",
            "HOME",
            "LANG",
            "LC_*",
            "TMPDIR",
            "SYSTEMROOT",
            "WINDIR",
            "TEMP",
            "TMP",
            "USERPROFILE",
            "PATHEXT",
            "COMSPEC",
        ]
    } else {
        &["PATH", "HOME", "LANG", "LC_*", "TMPDIR"]
    };

    /// Defaults overridden by the environment variables of [`FromEnv::VARS`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable of a bad value.
    pub fn from_env() -> Result<Self> {
        <Self as FromEnv>::from_env()
    }
}

impl FromEnv for McpClientConfig {
    type Error = Error;

    const VARS: &'static [EnvVar] = &[
        EnvVar {
            name: "MCP_POOL_SIZE",
            default: "5",
            doc: "Sessions per service (1 to 256); calls fill one first, the others take the overflow and stand by.",
        },
        EnvVar {
            name: "MCP_CONNECT_TIMEOUT",
            default: "10s",
            doc: "Bound on making one session: connecting plus the MCP handshake.",
        },
        EnvVar {
            name: "MCP_REQUEST_TIMEOUT",
            default: "30s",
            doc: "Bound on one attempt of a call.",
        },
        EnvVar {
            name: "MCP_CALL_TIMEOUT",
            default: "60s",
            doc: "Bound on a whole call, every attempt and wait included.",
        },
        EnvVar {
            name: "MCP_MAX_RETRIES",
            default: "3",
            doc: "Retries after the first attempt, for retryable failures of calls safe to repeat (at most 100).",
        },
        EnvVar {
            name: "MCP_RETRY_DELAY",
            default: "1s",
            doc: "First wait before a retry or reconnect; doubles, jittered.",
        },
        EnvVar {
            name: "MCP_MAX_RETRY_DELAY",
            default: "30s",
            doc: "Cap of the doubling waits (not below `MCP_RETRY_DELAY`).",
        },
        EnvVar {
            name: "MCP_BREAKER_FAILURES",
            default: "5",
            doc: "Consecutive failed attempts that open the circuit (`0` = no breaker).",
        },
        EnvVar {
            name: "MCP_BREAKER_COOLDOWN",
            default: "30s",
            doc: "How long an open circuit fails calls before one probe goes through.",
        },
        EnvVar {
            name: "MCP_HEDGE_AFTER",
            default: "unset",
            doc: "Send a second copy of a call safe to repeat after this long (`0` or unset = never).",
        },
        EnvVar {
            name: "MCP_SLOW_CALL",
            default: "1s",
            doc: "Calls slower than this are logged at `warn`.",
        },
        EnvVar {
            name: "MCP_CACHE_CAPACITY",
            default: "10000",
            doc: "Entries of the result cache of cacheable calls (`0` = no cache).",
        },
        EnvVar {
            name: "MCP_CACHE_TTL",
            default: "5m",
            doc: "Expiry of a cached result when the call gives none.",
        },
        EnvVar {
            name: "MCP_SESSION_CONCURRENCY",
            default: "64",
            doc: "HTTP requests one session keeps in flight (1 to 4096).",
        },
        EnvVar {
            name: "MCP_TLS_CA_FILE",
            default: "unset",
            doc: "PEM file of CAs to trust for `https://` besides the system's (feature `tls`).",
        },
        EnvVar {
            name: "MCP_STDIO_ENV",
            default: "unset",
            doc: "Variables a stdio child gets besides `PATH`, `HOME`, `LANG`, `LC_*`, `TMPDIR`: names, comma-separated, `PREFIX*` allowed.",
        },
    ];

    fn from_env_source(env: &EnvSource<'_>) -> Result<Self> {
        let mut c = Self::default();
        if let Some(v) = env.parse("MCP_POOL_SIZE")? {
            c.pool_size = v;
        }
        if let Some(v) = env.duration("MCP_CONNECT_TIMEOUT")? {
            c.connect_timeout = v;
        }
        if let Some(v) = env.duration("MCP_REQUEST_TIMEOUT")? {
            c.request_timeout = v;
        }
        if let Some(v) = env.duration("MCP_CALL_TIMEOUT")? {
            c.call_timeout = v;
        }
        if let Some(v) = env.parse("MCP_MAX_RETRIES")? {
            c.max_retries = v;
        }
        if let Some(v) = env.duration("MCP_RETRY_DELAY")? {
            c.retry_delay = v;
        }
        if let Some(v) = env.duration("MCP_MAX_RETRY_DELAY")? {
            c.max_retry_delay = v;
        }
        if let Some(v) = env.parse("MCP_BREAKER_FAILURES")? {
            c.breaker_failures = v;
        }
        if let Some(v) = env.duration("MCP_BREAKER_COOLDOWN")? {
            c.breaker_cooldown = v;
        }
        if let Some(v) = env.duration("MCP_HEDGE_AFTER")? {
            c.hedge_after = (!v.is_zero()).then_some(v);
        }
        if let Some(v) = env.duration("MCP_SLOW_CALL")? {
            c.slow_call = v;
        }
        if let Some(v) = env.parse("MCP_CACHE_CAPACITY")? {
            c.cache_capacity = v;
        }
        if let Some(v) = env.duration("MCP_CACHE_TTL")? {
            c.cache_ttl = v;
        }
        if let Some(v) = env.parse("MCP_SESSION_CONCURRENCY")? {
            c.max_concurrent_per_session = v;
        }
        if let Some(v) = env.var("MCP_TLS_CA_FILE") {
            c.tls_ca_file = Some(v.into());
        }
        if let Some(v) = env.var("MCP_STDIO_ENV") {
            c.stdio_env = v
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect();
        }
        c.validate()?;
        Ok(c)
    }
}

impl McpClientConfig {
    /// Check every value.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable of the first bad value.
    pub fn validate(&self) -> Result<()> {
        fn bad(key: &'static str, value: impl fmt::Debug, reason: &str) -> Error {
            Error::InvalidConfig {
                key,
                value: format!("{value:?}"),
                reason: reason.to_owned(),
            }
        }
        let ms = Duration::from_millis(1);
        if !(1..=256).contains(&self.pool_size) {
            return Err(bad("MCP_POOL_SIZE", self.pool_size, "must be 1 to 256"));
        }
        if !(1..=4096).contains(&self.max_concurrent_per_session) {
            return Err(bad(
                "MCP_SESSION_CONCURRENCY",
                self.max_concurrent_per_session,
                "must be 1 to 4096",
            ));
        }
        if self.max_retries > 100 {
            return Err(bad(
                "MCP_MAX_RETRIES",
                self.max_retries,
                "must be at most 100",
            ));
        }
        for (key, d) in [
            ("MCP_CONNECT_TIMEOUT", self.connect_timeout),
            ("MCP_REQUEST_TIMEOUT", self.request_timeout),
            ("MCP_CALL_TIMEOUT", self.call_timeout),
            ("MCP_BREAKER_COOLDOWN", self.breaker_cooldown),
            ("MCP_CACHE_TTL", self.cache_ttl),
        ] {
            if d < ms {
                return Err(bad(key, d, "must be at least 0.001 s"));
            }
        }
        if let Some(path) = &self.tls_ca_file {
            if !cfg!(feature = "tls") {
                return Err(bad(
                    "MCP_TLS_CA_FILE",
                    path,
                    "needs the `tls` feature of cortex-mcp",
                ));
            }
            if !path.is_file() {
                return Err(bad("MCP_TLS_CA_FILE", path, "is not a readable file"));
            }
        }
        for name in &self.stdio_env {
            let star = name.find('*');
            if name.is_empty()
                || name == "*"
                || star.is_some_and(|i| i + 1 != name.len())
                || name.contains(|c: char| c == '=' || c == '\0' || c.is_whitespace())
            {
                return Err(bad(
                    "MCP_STDIO_ENV",
                    name,
                    "must be variable names, comma-separated, each a name or a prefix ending in `*`",
                ));
            }
        }
        if self.max_retry_delay < self.retry_delay {
            return Err(bad(
                "MCP_MAX_RETRY_DELAY",
                self.max_retry_delay,
                "must not be below MCP_RETRY_DELAY",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<McpClientConfig> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| map.get(k).cloned();
        McpClientConfig::from_env_source(&EnvSource::from_fn(&lookup))
    }

    #[test]
    fn environment_overrides_and_bad_values_name_the_variable() {
        assert_eq!(from(&[]).unwrap(), McpClientConfig::default());
        let c = from(&[
            ("MCP_POOL_SIZE", "2"),
            ("MCP_RETRY_DELAY", "0.25"),
            ("MCP_HEDGE_AFTER", "0.05"),
            ("MCP_MAX_RETRIES", "0"),
        ])
        .unwrap();
        assert_eq!(c.pool_size, 2);
        assert_eq!(c.retry_delay, Duration::from_millis(250));
        assert_eq!(c.hedge_after, Some(Duration::from_millis(50)));
        assert_eq!(c.max_retries, 0);
        let c = from(&[("MCP_STDIO_ENV", " OTEL_*, NODE_OPTIONS ,,")]).unwrap();
        assert_eq!(c.stdio_env, ["OTEL_*", "NODE_OPTIONS"]);
        for (k, v) in [
            ("MCP_POOL_SIZE", "0"),
            ("MCP_POOL_SIZE", "five"),
            ("MCP_CONNECT_TIMEOUT", "-1"),
            ("MCP_REQUEST_TIMEOUT", "0"),
            ("MCP_MAX_RETRIES", "1000"),
            ("MCP_RETRY_DELAY", "soon"),
            ("MCP_MAX_RETRY_DELAY", "0"),
            ("MCP_SESSION_CONCURRENCY", "0"),
            ("MCP_TLS_CA_FILE", "/nonexistent/ca.pem"),
            ("MCP_STDIO_ENV", "A=B"),
            ("MCP_STDIO_ENV", "*"),
            ("MCP_STDIO_ENV", "A*B"),
        ] {
            let err = from(&[(k, v)]).unwrap_err();
            assert!(err.to_string().contains(k), "{k}={v:?}: {err}");
        }
    }

    #[test]
    fn endpoints_parse_validate_and_redact() {
        let e: Endpoint = " http://u:pw@h:1/mcp ".parse().unwrap();
        assert_eq!(e, Endpoint::http("http://u:pw@h:1/mcp"));
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            "\"http://u:***@h:1/mcp\""
        );
        assert!(!format!("{e:?}").contains("pw"));
        for bad in [
            "",
            "h:1/mcp",
            "http://",
            "http:///mcp",
            "stdio:",
            "stdio:   ",
            "http://a b/",
        ] {
            let err = bad.parse::<Endpoint>().unwrap_err();
            assert!(err.to_string().contains("endpoint"), "{bad:?}: {err}");
        }
        #[cfg(not(feature = "tls"))]
        assert!(
            "https://h/mcp"
                .parse::<Endpoint>()
                .unwrap_err()
                .to_string()
                .contains("tls")
        );
    }

    #[test]
    fn serde_round_trip() {
        let c = McpClientConfig {
            hedge_after: Some(Duration::from_millis(20)),
            stdio_env: vec!["OTEL_*".to_owned()],
            ..McpClientConfig::default()
        };
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<McpClientConfig>(&json).unwrap(), c);
    }
}
