//! The servers the suite breaks: a private Redis, PostgreSQL and MCP server, and the
//! example-service instances on them. Private, so the faults never touch servers that
//! other programs on the machine use.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep};

use crate::Fail;

/// How long any server gets to start or stop.
const START_WAIT: Duration = Duration::from_secs(60);

/// A free loopback port (probed, so another process may still take it: starts check).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// Wait until `port` accepts TCP connections, or fail naming `what` and its log.
async fn wait_port(
    what: &'static str,
    port: u16,
    child: &mut Child,
    log: &Path,
) -> Result<(), Fail> {
    let deadline = Instant::now() + START_WAIT;
    loop {
        if tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if let Some(status) = child.try_wait().map_err(Fail::io(what))? {
            return Err(Fail(format!(
                "{what} exited with {status} before listening on {port}: {}",
                tail(log)
            )));
        }
        if Instant::now() > deadline {
            return Err(Fail(format!(
                "{what} did not listen on {port} within {START_WAIT:?}: {}",
                tail(log)
            )));
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// The last lines of a log, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Send a signal by name (`TERM`, `INT`) with kill(1): the suite needs more than
/// the SIGKILL that `Child::kill` sends.
pub async fn signal(child: &Child, name: &str) -> Result<(), Fail> {
    let pid = child
        .id()
        .ok_or_else(|| Fail(format!("no pid to send SIG{name} to")))?;
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .await
        .map_err(Fail::io("kill"))?
        .success();
    if ok {
        Ok(())
    } else {
        Err(Fail(format!("kill -{name} {pid} failed")))
    }
}

/// Wait for a child to exit, bounded.
pub async fn wait_exit(what: &'static str, child: &mut Child) -> Result<(), Fail> {
    match tokio::time::timeout(START_WAIT, child.wait()).await {
        Ok(r) => r.map(|_| ()).map_err(Fail::io(what)),
        Err(_) => {
            let _ = child.kill().await;
            Err(Fail(format!("{what} did not exit within {START_WAIT:?}")))
        }
    }
}

/// Start `cmd` with its output appended to `log`, killed when dropped, and wait until
/// it listens on `port`.
async fn launch(
    what: &'static str,
    cmd: &mut Command,
    port: u16,
    log: &Path,
) -> Result<Child, Fail> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log_file(log)?)
        .stderr(log_file(log)?)
        .kill_on_drop(true)
        .spawn()
        .map_err(Fail::io(what))?;
    wait_port(what, port, &mut child, log).await?;
    Ok(child)
}

/// Poll `ready` until it says yes (a server listens before it serves), bounded.
async fn wait_ready<F, Fut>(what: &str, mut ready: F) -> Result<(), Fail>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + START_WAIT;
    while !ready().await {
        if Instant::now() > deadline {
            return Err(Fail(format!("{what} did not answer within {START_WAIT:?}")));
        }
        sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn log_file(path: &Path) -> Result<std::fs::File, Fail> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(Fail::io("open a log"))
}

/// A private redis-server with an append-only file fsynced on every write: stopping it
/// (SIGTERM) and starting it again keeps every accepted task.
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    pub async fn start(dir: &Path) -> Result<Self, Fail> {
        std::fs::create_dir_all(dir).map_err(Fail::io("redis dir"))?;
        let mut redis = Self {
            port: free_port(),
            dir: dir.to_owned(),
            child: None,
        };
        redis.up().await?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Start (again) on the same port and data.
    pub async fn up(&mut self) -> Result<(), Fail> {
        let log = self.dir.join("redis.log");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args(["--protected-mode", "no", "--dir"])
            .arg(&self.dir);
        let child = launch("redis-server", &mut cmd, self.port, &log).await?;
        // Listening comes before the append-only file is loaded: wait for PONG.
        wait_ready("redis-server", || self.ping()).await?;
        self.child = Some(child);
        Ok(())
    }

    async fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let attempt = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), attempt).await,
            Ok(Ok(_))
        )
    }

    /// Graceful stop (SIGTERM: the server flushes its append-only file and exits).
    pub async fn stop(&mut self) -> Result<(), Fail> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| Fail("redis is not up".into()))?;
        signal(&child, "TERM").await?;
        wait_exit("redis-server", &mut child).await
    }

    /// `CLIENT PAUSE <ms> ALL`: every client's commands wait, connections stay open.
    pub async fn pause(&self, ms: u64) -> Result<(), Fail> {
        let client = redis::Client::open(self.url()).map_err(Fail::any("redis url"))?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(Fail::any("redis connect"))?;
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(ms)
            .arg("ALL")
            .query_async::<()>(&mut conn)
            .await
            .map_err(Fail::any("CLIENT PAUSE"))
    }
}

/// A private PostgreSQL cluster (`initdb` in a fresh folder), run as the `postgres`
/// system user when the suite runs as root. `max_connections` is small so another
/// client can take every slot.
pub struct Postgres {
    pub port: u16,
    data: PathBuf,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    child: Option<Child>,
}

/// Connections PostgreSQL accepts; three of them are kept for superusers.
pub const MAX_CONNECTIONS: u32 = 40;

impl Postgres {
    pub async fn start(dir: &Path) -> Result<Self, Fail> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(Fail::io("/usr/lib/postgresql (Debian package postgresql)"))?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("postgres").is_file())
            .max()
            .ok_or_else(|| Fail("no PostgreSQL under /usr/lib/postgresql".into()))?;
        // PostgreSQL refuses to run as root.
        let owner = if is_root() {
            Some(postgres_ids()?)
        } else {
            None
        };
        std::fs::create_dir_all(dir).map_err(Fail::io("postgres dir"))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(Fail::io("chown"))?;
        }
        let data = dir.join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "cortex", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(log_file(&dir.join("initdb.log"))?);
        as_owner(&mut initdb, owner);
        let ok = initdb.status().await.map_err(Fail::io("initdb"))?.success();
        if !ok {
            return Err(Fail(format!(
                "initdb failed: {}",
                tail(&dir.join("initdb.log"))
            )));
        }
        let mut pg = Self {
            port: free_port(),
            data,
            bin,
            owner,
            child: None,
        };
        pg.up().await?;
        Ok(pg)
    }

    /// The superuser's URL for `db`.
    pub fn admin_url(&self, db: &str) -> String {
        format!("postgres://cortex@127.0.0.1:{}/{db}", self.port)
    }

    /// Start (again) on the same port and data.
    pub async fn up(&mut self) -> Result<(), Fail> {
        let log = self.data.with_file_name("postgres.log");
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.data.parent().unwrap_or(Path::new("/tmp")))
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", &format!("max_connections={MAX_CONNECTIONS}")])
            .args(["-c", "fsync=off", "-c", "log_min_messages=warning"]);
        as_owner(&mut cmd, self.owner);
        let child = launch("postgres", &mut cmd, self.port, &log).await?;
        // Listening comes before recovery ends: wait until a query answers.
        let url = self.admin_url("postgres");
        wait_ready("postgres", || async {
            crate::sql::connect(&url).await.is_ok()
        })
        .await?;
        self.child = Some(child);
        Ok(())
    }

    /// Fast shutdown (SIGINT: running transactions are rolled back, clients cut off).
    pub async fn stop_fast(&mut self) -> Result<(), Fail> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| Fail("postgres is not up".into()))?;
        signal(&child, "INT").await?;
        wait_exit("postgres", &mut child).await
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The `postgres` system user's uid and gid, from /etc/passwd.
fn postgres_ids() -> Result<(u32, u32), Fail> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(Fail::io("/etc/passwd"))?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"postgres"))
        .and_then(|f| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))
        .ok_or_else(|| Fail("no postgres user (Debian package postgresql)".into()))
}

fn as_owner(cmd: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
}

/// The reference MCP server (`@modelcontextprotocol/server-everything`, installed by
/// `scripts/services.sh`, which exports `MCP_EVERYTHING_JS`) over streamable HTTP.
pub struct Mcp {
    pub port: u16,
    js: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Mcp {
    pub async fn start(dir: &Path) -> Result<Self, Fail> {
        let js = std::env::var_os("MCP_EVERYTHING_JS")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| {
                Fail("MCP_EVERYTHING_JS is not set: run `eval \"$(scripts/services.sh)\"`".into())
            })?;
        let mut mcp = Self {
            port: free_port(),
            js,
            log: dir.join("mcp.log"),
            child: None,
        };
        mcp.up().await?;
        Ok(mcp)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    pub async fn up(&mut self) -> Result<(), Fail> {
        let mut cmd = Command::new("node");
        cmd.arg(&self.js)
            .arg("streamableHttp")
            .env("PORT", self.port.to_string());
        let child = launch("the MCP server", &mut cmd, self.port, &self.log).await?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: a crash, its sessions gone.
    pub async fn kill(&mut self) -> Result<(), Fail> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| Fail("mcp is not up".into()))?;
        child.kill().await.map_err(Fail::io("kill node"))
    }
}

/// One example-service instance.
pub struct Instance {
    pub name: &'static str,
    pub port: u16,
    bin: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// Exits seen that the suite did not cause.
    pub crashes: Vec<String>,
}

impl Instance {
    pub async fn start(
        name: &'static str,
        bin: &Path,
        env: Vec<(String, String)>,
        dir: &Path,
    ) -> Result<Self, Fail> {
        let mut instance = Self {
            name,
            port: free_port(),
            bin: bin.to_owned(),
            env,
            log: dir.join(format!("{name}.log")),
            child: None,
            crashes: vec![],
        };
        instance.up().await?;
        Ok(instance)
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    pub async fn up(&mut self) -> Result<(), Fail> {
        let mut cmd = Command::new(&self.bin);
        // Only what the suite sets: no cluster or replica settings from the caller's
        // shell, which would point the instance at other servers.
        for var in [
            "REDIS_CLUSTER_URLS",
            "DB_REPLICA_URLS",
            "DATABASE_URL",
            "REDIS_URL",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("CORTEX_ADDR", format!("127.0.0.1:{}", self.port));
        let child = launch(self.name, &mut cmd, self.port, &self.log).await?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, as a machine or OOM kill would.
    pub async fn kill(&mut self) -> Result<(), Fail> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| Fail(format!("{} is not up", self.name)))?;
        child.kill().await.map_err(Fail::io("kill the service"))
    }

    /// Whether the process runs; an exit is recorded as a crash.
    pub fn check_alive(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                self.crashes.push(format!(
                    "{} exited with {status}: {}",
                    self.name,
                    tail(&self.log)
                ));
                self.child = None;
                false
            }
            Err(e) => {
                self.crashes.push(format!("{}: {e}", self.name));
                false
            }
        }
    }

    /// Resident memory in MiB, from /proc.
    pub fn rss_mib(&self) -> Option<f64> {
        let pid = self.child.as_ref()?.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }

    /// Stop with SIGTERM at the end of the run (the service drains and exits 0).
    pub async fn stop(&mut self) -> Result<(), Fail> {
        if let Some(mut child) = self.child.take() {
            signal(&child, "TERM").await?;
            wait_exit(self.name, &mut child).await?;
        }
        Ok(())
    }
}
