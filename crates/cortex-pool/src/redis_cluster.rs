//! Redis Cluster support of the Redis pool: the connection type both modes share, the
//! cluster client made from the config, and the per-node view read from `CLUSTER NODES`.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use serde::{Deserialize, Serialize};

use crate::{Error, RedisConfig, Result};
use cortex_support::redact::redact_url;

/// A Redis connection of either mode: one multiplexed connection to a single server, or
/// a multiplexed [`ClusterConnection`] that routes every command by hash slot and
/// follows `MOVED`/`ASK` redirects. Cheap to clone (clones share the connection).
///
/// It implements redis-rs's [`ConnectionLike`], so commands, pipelines and scripts run
/// the same way on both:
/// `cmd.query_async(&mut conn)`, `pipe.query_async(&mut conn)`,
/// `script.key(k).invoke_async(&mut conn)`.
///
/// On a cluster every key of one multi-key command, transaction (`MULTI`) or script
/// must hash to the same slot: give them one hash tag, e.g. `{user:42}:profile` and
/// `{user:42}:posts` (only the part inside the first `{...}` is hashed). A pipeline
/// may mix slots: each command goes to its own node.
///
#[derive(Clone)]
pub struct RedisConnection {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Single(MultiplexedConnection),
    Cluster { cluster: ClusterConnection },
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = if self.is_cluster() {
            "cluster"
        } else {
            "single"
        };
        f.debug_struct("RedisConnection")
            .field("mode", &mode)
            .finish_non_exhaustive()
    }
}

impl RedisConnection {
    /// A connection to one server.
    pub fn single(conn: MultiplexedConnection) -> Self {
        Self {
            kind: Kind::Single(conn),
        }
    }

    /// A cluster connection.
    pub fn cluster(cluster: ClusterConnection) -> Self {
        Self {
            kind: Kind::Cluster { cluster },
        }
    }

    /// `true` when this routes over a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.kind, Kind::Cluster { .. })
    }

    /// The cluster connection, in cluster mode: for what only it offers, such as
    /// `route_command` to one chosen node.
    pub fn as_cluster_mut(&mut self) -> Option<&mut ClusterConnection> {
        match &mut self.kind {
            Kind::Cluster { cluster, .. } => Some(cluster),
            Kind::Single(_) => None,
        }
    }

    /// The single-server connection, in single mode.
    pub fn as_single_mut(&mut self) -> Option<&mut MultiplexedConnection> {
        match &mut self.kind {
            Kind::Single(conn) => Some(conn),
            Kind::Cluster { .. } => None,
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.kind {
            Kind::Single(conn) => conn.req_packed_command(cmd),
            Kind::Cluster { cluster, .. } => cluster.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.kind {
            Kind::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Kind::Cluster { cluster, .. } => cluster_pipeline(cluster, cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.kind {
            Kind::Single(conn) => conn.get_db(),
            Kind::Cluster { cluster, .. } => cluster.get_db(),
        }
    }
}

/// A connection of its own that reconnects by itself, in either mode: redis-rs's
/// `ConnectionManager` for a single server, a `ClusterConnection` (which reconnects and
/// follows the topology) for a cluster. What
/// [`RedisPool::dedicated_connection`](crate::RedisPool::dedicated_connection) returns,
/// for a component that keeps one connection for its whole life (a queue's producer
/// side) or runs blocking commands (`XREADGROUP BLOCK`, `BLPOP`) that would hold up
/// every other caller of a shared multiplexed connection. Cheap to clone (clones share
/// it); [`ConnectionLike`] like [`RedisConnection`], with the same routing rules.
#[derive(Clone)]
pub struct RedisManagedConnection {
    kind: Managed,
}

#[derive(Clone)]
enum Managed {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisManagedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = if self.is_cluster() {
            "cluster"
        } else {
            "single"
        };
        f.debug_struct("RedisManagedConnection")
            .field("mode", &mode)
            .finish_non_exhaustive()
    }
}

impl RedisManagedConnection {
    pub(crate) fn single(conn: ConnectionManager) -> Self {
        Self {
            kind: Managed::Single(conn),
        }
    }

    pub(crate) fn cluster(conn: ClusterConnection) -> Self {
        Self {
            kind: Managed::Cluster(conn),
        }
    }

    /// `true` when this routes over a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.kind, Managed::Cluster(_))
    }
}

impl ConnectionLike for RedisManagedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.kind {
            Managed::Single(conn) => conn.req_packed_command(cmd),
            Managed::Cluster(cluster) => cluster.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.kind {
            Managed::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Managed::Cluster(cluster) => cluster_pipeline(cluster, cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.kind {
            Managed::Single(conn) => conn.get_db(),
            Managed::Cluster(cluster) => cluster.get_db(),
        }
    }
}

/// `cmd` over `cluster`. redis-rs sends a pipeline to one node and refuses, before
/// sending anything, one whose keys span slots. A plain (non-transaction) pipeline is a
/// batch of independent commands, so it is then sent as such: every command to its own
/// node, all at once. A transaction is never split.
fn cluster_pipeline<'a>(
    cluster: &'a mut ClusterConnection,
    cmd: &'a Pipeline,
    offset: usize,
    count: usize,
) -> RedisFuture<'a, Vec<Value>> {
    Box::pin(async move {
        match cluster.req_packed_commands(cmd, offset, count).await {
            Err(e) if !cmd.is_transaction() && is_client_cross_slot(&e) => {
                spread(cluster, cmd).await
            }
            r => r,
        }
    })
}

/// The error redis-rs's cluster connection returns, before sending anything, for a
/// pipeline whose commands hash to different slots (a server's `CROSSSLOT` answer says
/// the command did not run either, but a pipeline around it may have run in part: not
/// matched here).
fn is_client_cross_slot(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::CrossSlot)
        && e.to_string()
            .starts_with("Received crossed slots in pipeline")
}

/// Every command of `pipe` on its own, concurrently over clones of `cluster` (one
/// multiplexed connection underneath); the answers in order. The first failed command
/// fails the whole call (the others still ran, as in a pipeline on one server).
async fn spread(cluster: &ClusterConnection, pipe: &Pipeline) -> redis::RedisResult<Vec<Value>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, cmd) in pipe.cmd_iter().enumerate() {
        let mut conn = cluster.clone();
        let cmd = cmd.clone();
        tasks.spawn(async move { (i, conn.req_packed_command(&cmd).await) });
    }
    let mut answers: Vec<Option<Value>> = vec![None; tasks.len()];
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((i, Ok(v))) => answers[i] = Some(v),
            Ok((_, Err(e))) => {
                first_error.get_or_insert(e);
            }
            Err(join) => {
                first_error.get_or_insert_with(|| {
                    redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "a pipeline command's task failed",
                        join.to_string(),
                    ))
                });
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(answers
            .into_iter()
            .map(|v| v.unwrap_or(Value::Nil))
            .collect()),
    }
}

/// The role of a Redis node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NodeRole {
    /// Serves writes (a cluster master, or the single server).
    Master,
    /// Copies a master and takes over when it fails.
    Replica,
}

/// One node as the pool sees it: what [`RedisPool::nodes`](crate::RedisPool::nodes)
/// returns (a plain serde struct).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RedisNode {
    /// `host:port` of the node (for a single server, its URL with the password redacted).
    pub address: String,
    /// The cluster node id (empty for a single server).
    pub id: String,
    /// Master or replica, now (roles change after a failover).
    pub role: NodeRole,
    /// The node answers and no node flags it as failing.
    pub up: bool,
    /// For a replica, the id of its master.
    pub master_id: Option<String>,
    /// Hash slots the node serves (all 16384 for a single server, 0 for a replica).
    pub slots: u32,
}

impl RedisConfig {
    /// The cluster client for [`cluster_urls`](Self::cluster_urls), with the pool's
    /// timeouts (`pool_timeout` bounds connecting and every response) and TLS settings
    /// (`rediss://` seeds, [`tls_ca_file`](Self::tls_ca_file)).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming `REDIS_CLUSTER_URLS` (redacted) when there are no
    /// seeds or a seed is not one Redis accepts.
    pub fn cluster_client(&self) -> Result<ClusterClient> {
        self.cluster_client_with(self.pool_timeout)
    }

    /// As [`cluster_client`](Self::cluster_client), waiting at most `response_timeout`
    /// for each answer (longer than `pool_timeout` for blocking commands).
    pub(crate) fn cluster_client_with(&self, response_timeout: Duration) -> Result<ClusterClient> {
        self.validate()?;
        let seeds = self.redacted_seeds();
        let bad = |reason: String| Error::InvalidConfig {
            key: "REDIS_CLUSTER_URLS",
            value: seeds.clone(),
            reason,
        };
        if self.cluster_urls.is_empty() {
            return Err(bad("no seed node given".to_owned()));
        }
        let builder = ClusterClient::builder(self.cluster_urls.iter().map(String::as_str))
            .connection_timeout(self.pool_timeout)
            .response_timeout(response_timeout);
        #[cfg(feature = "tls")]
        let builder = match &self.tls_ca_file {
            Some(path) => builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(crate::redis_pool::read_ca_file(path)?),
            }),
            None => builder,
        };
        builder.build().map_err(|e| bad(e.to_string()))
    }

    /// The seeds, redacted, comma-separated: for errors and logs.
    pub(crate) fn redacted_seeds(&self) -> String {
        self.cluster_urls
            .iter()
            .map(|u| redact_url(u))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// This config pointed at one node `host:port` (a seed's scheme, password and TLS
    /// settings kept), in single-server mode: how the pool reaches one cluster node.
    pub(crate) fn for_node(&self, host: &str, port: u16) -> RedisConfig {
        let seed = self.cluster_urls.first().unwrap_or(&self.url);
        RedisConfig {
            url: with_address(seed, host, port),
            cluster_urls: Vec::new(),
            ..self.clone()
        }
    }
}

/// `url` with its `host:port` replaced, user, password, path and query kept.
fn with_address(url: &str, host: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let userinfo = authority
        .rsplit_once('@')
        .map(|(u, _)| format!("{u}@"))
        .unwrap_or_default();
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    format!("{scheme}://{userinfo}{host}:{port}{tail}")
}

/// The nodes of a `CLUSTER NODES` answer (one line per node:
/// `id ip:port@bus[,hostname] flags master ping pong epoch link slot...`). Lines that
/// do not have this shape are skipped: a newer server may add fields, never remove them.
pub(crate) fn parse_cluster_nodes(text: &str) -> Vec<RedisNode> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let address = f[1].split(['@', ',']).next()?.to_owned();
            // A node that lost its address (`:0`) cannot be reached: not listed.
            if address.is_empty() || address.ends_with(":0") {
                return None;
            }
            let flags: Vec<&str> = f[2].split(',').collect();
            let role = if flags.contains(&"master") {
                NodeRole::Master
            } else {
                NodeRole::Replica
            };
            let failing = flags
                .iter()
                .any(|fl| matches!(*fl, "fail" | "fail?" | "noaddr" | "handshake"));
            let linked = flags.contains(&"myself") || f[7] == "connected";
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .map(|s| match s.split_once('-') {
                    Some((a, b)) => match (a.parse::<u32>(), b.parse::<u32>()) {
                        (Ok(a), Ok(b)) if b >= a => b - a + 1,
                        _ => 0,
                    },
                    None => u32::from(s.parse::<u32>().is_ok()),
                })
                .sum();
            Some(RedisNode {
                address,
                id: f[0].to_owned(),
                role,
                up: linked && !failing,
                master_id: (f[3] != "-").then(|| f[3].to_owned()),
                slots,
            })
        })
        .collect()
}

/// `host` and `port` of an `ip:port` address (IPv6 addresses hold colons too).
pub(crate) fn split_address(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_are_parsed() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host replica e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master,fail - 0 1426238318243 3 disconnected 10923-16383
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 [5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
6ec23923021cf3ffec47632106199cb7f496ce01 :0@0 master,noaddr - 0 0 0 disconnected
";
        let nodes = parse_cluster_nodes(text);
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes[0].role, NodeRole::Replica);
        assert_eq!(nodes[0].address, "127.0.0.1:30004");
        assert_eq!(
            nodes[0].master_id.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert!(nodes[0].up);
        assert_eq!((nodes[1].slots, nodes[1].up), (5462, true));
        assert_eq!((nodes[2].slots, nodes[2].up), (5461, false));
        assert_eq!((nodes[3].slots, nodes[3].up), (5461, true));
        assert_eq!(split_address("127.0.0.1:7000"), Some(("127.0.0.1", 7000)));
        assert_eq!(split_address("[::1]:7000"), Some(("::1", 7000)));
        assert_eq!(split_address("nope"), None);
    }

    fn from_env(vars: &[(&str, &str)]) -> Result<RedisConfig> {
        use cortex_support::env::{EnvSource, FromEnv};
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        RedisConfig::from_env_source(&EnvSource::from_fn(&lookup))
    }

    #[test]
    fn cluster_urls_come_from_the_environment_and_are_checked() {
        let c = from_env(&[(
            "REDIS_CLUSTER_URLS",
            " redis://127.0.0.1:7000, redis://127.0.0.1:7001 ,",
        )])
        .unwrap();
        assert!(c.is_cluster() && !c.is_tls());
        assert_eq!(
            c.cluster_urls,
            ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
        assert!(!from_env(&[]).unwrap().is_cluster());
        let mixed = from_env(&[(
            "REDIS_CLUSTER_URLS",
            "redis://:hunter2@a:7000,rediss://:hunter2@b:7000",
        )])
        .unwrap_err();
        assert!(
            matches!(
                &mixed,
                Error::InvalidConfig {
                    key: "REDIS_CLUSTER_URLS",
                    ..
                }
            ),
            "{mixed}"
        );
        assert!(!mixed.to_string().contains("hunter2"), "{mixed}");
        let unix = from_env(&[("REDIS_CLUSTER_URLS", "redis+unix:///tmp/r.sock")]).unwrap_err();
        assert!(unix.to_string().contains("REDIS_CLUSTER_URLS"), "{unix}");
        // TLS is decided by the seeds in cluster mode.
        let tls = from_env(&[("REDIS_CLUSTER_URLS", "rediss://a:7000")]);
        if cfg!(feature = "tls") {
            assert!(tls.unwrap().is_tls());
        } else {
            let err = tls.unwrap_err();
            assert!(err.to_string().contains("`tls` feature"), "{err}");
        }
    }

    #[test]
    fn node_urls_keep_credentials_and_scheme() {
        assert_eq!(
            with_address("rediss://u:pw@seed:7000/0?x=1", "10.0.0.2", 7001),
            "rediss://u:pw@10.0.0.2:7001/0?x=1"
        );
        assert_eq!(
            with_address("redis://seed:7000", "::1", 7002),
            "redis://[::1]:7002"
        );
    }

    #[test]
    fn seeds_are_redacted_everywhere() {
        let c = RedisConfig {
            cluster_urls: vec![
                "redis://:hunter2@127.0.0.1:7000".into(),
                "redis://:hunter2@127.0.0.1:7001".into(),
            ],
            ..RedisConfig::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!c.redacted_seeds().contains("hunter2"));
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        let bad = RedisConfig {
            cluster_urls: vec!["redis+unix:///:hunter2@x".into()],
            ..RedisConfig::default()
        };
        let err = bad.cluster_client().unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidConfig {
                    key: "REDIS_CLUSTER_URLS",
                    ..
                }
            ),
            "{err}"
        );
    }
}
