//! `scripts/services.sh` takes nothing from `DATABASE_URL` into a shell command line
//! unchecked, and as root never chowns a path another local user could have planted.
//!
//! Each test runs the script with its own state folder and, where a server is started,
//! its own port, so it never touches the servers the other tests use.

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{redis_url, unique_name};

fn services_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services.sh")
}

/// A folder under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str, mode: u32) -> Self {
        let path = std::env::temp_dir().join(unique_name(what));
        std::fs::create_dir_all(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `script` with the given state folder and `DATABASE_URL`, in `cwd`. The Redis of
/// the other tests answers, so only PostgreSQL is (perhaps) started; the reference MCP
/// server counts as installed when `state` has its stub.
fn run(script: &Path, cwd: &Path, state: &Path, database_url: &str, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(script)
        .args(args)
        .current_dir(cwd)
        .env("CORTEX_SERVICES_DIR", state)
        .env("DATABASE_URL", database_url)
        .env("REDIS_URL", redis_url())
        .env("CORTEX_SERVICES_WAIT", "20")
        .output()
        .unwrap()
}

/// An empty stand-in for the reference MCP server, so `start` installs nothing.
fn stub_mcp_server(state: &Path) {
    let dist =
        state.join("mcp-everything/node_modules/@modelcontextprotocol/server-everything/dist");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(dist.join("index.js"), "").unwrap();
}

#[test]
fn a_port_that_is_not_a_number_is_refused_before_any_use() {
    // Everyone may write here: as root the script runs its commands as postgres.
    let dir = Scratch::new("services-port", 0o777);
    let state = dir.0.join("state");
    stub_mcp_server(&state);
    let marker = dir.0.join("injected");
    for port in [
        // The old script put the port into `sh -c`, which ran this.
        "1$(touch${IFS}injected)",
        "5432;touch${IFS}injected",
        "0",
        "65536",
        "54x32",
    ] {
        let url = format!("postgres://cortex@127.0.0.1:{port}/cortex");
        let out = run(&services_sh(), &dir.0, &state, &url, &[]);
        let err = text(&out.stderr);
        assert!(!marker.exists(), "port {port:?} ran a command: {err}");
        assert!(!out.status.success(), "port {port:?} accepted: {err}");
        assert!(
            err.contains("port") && err.contains("1 to 65535"),
            "port {port:?}: {err}"
        );
        assert!(
            !state.join("pg").exists() && !state.join("pg.path").exists(),
            "port {port:?}: a cluster folder was made before the port was checked"
        );
    }
    // The same for Redis (its port goes to redis-server as an argument, still checked).
    let out = Command::new("bash")
        .arg(services_sh())
        .current_dir(&dir.0)
        .env("CORTEX_SERVICES_DIR", &state)
        .env("DATABASE_URL", crate::database_url())
        .env("REDIS_URL", "redis://127.0.0.1:70000")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("1 to 65535"), "{err}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// As root, with a checkout the postgres user cannot reach, the old script put the
/// cluster under `/tmp/cortex-services-<cksum of the checkout path>` and chowned it:
/// another local user could plant a link there and have root chown its target. The
/// script now makes a fresh folder with `mktemp -d`.
#[test]
fn as_root_the_cluster_never_goes_to_a_predictable_tmp_path() {
    // Only root moves the cluster to /tmp: as anyone else there is nothing to prove,
    // so the test says so instead of passing without a check.
    assert!(
        is_root(),
        "this test must run as root (as CI does): only root moves the cluster out of the checkout"
    );
    // A copy of the script in a folder only root can enter (so postgres cannot reach
    // its state), with a path of its own, so its predictable /tmp path is unique too.
    let checkout = Scratch::new("services-checkout", 0o700);
    std::fs::create_dir_all(checkout.0.join("scripts")).unwrap();
    let script = checkout.0.join("scripts/services.sh");
    std::fs::copy(services_sh(), &script).unwrap();
    let state = checkout.0.join("target/services");
    stub_mcp_server(&state);
    let root = checkout.0.canonicalize().unwrap();
    let sum = Command::new("sh")
        .arg("-c")
        .arg("printf '%s' \"$1\" | cksum | cut -d' ' -f1")
        .arg("sh")
        .arg(&root)
        .output()
        .unwrap();
    let predictable = PathBuf::from(format!("/tmp/cortex-services-{}", text(&sum.stdout).trim()));
    // The planted link, to a folder root owns.
    let decoy = Scratch::new("services-decoy", 0o755);
    let _ = std::fs::remove_file(&predictable);
    std::os::unix::fs::symlink(&decoy.0, &predictable).unwrap();
    struct Unlink(PathBuf);
    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _unlink = Unlink(predictable.clone());

    let url = format!("postgres://cortex@127.0.0.1:{}/cortex", free_port());
    let started = run(&script, &checkout.0, &state, &url, &[]);
    let cluster = std::fs::read_to_string(state.join("pg.path")).unwrap_or_default();
    // Stop and remove whatever was started, whatever the outcome.
    let stopped = run(&script, &checkout.0, &state, &url, &["stop"]);
    if !cluster.is_empty() && !cluster.starts_with(&*decoy.0.to_string_lossy()) {
        let _ = std::fs::remove_dir_all(&cluster);
    }

    let decoy_meta = std::fs::metadata(&decoy.0).unwrap();
    assert_eq!(
        decoy_meta.uid(),
        0,
        "root chowned the target of a link planted at {}",
        predictable.display()
    );
    assert!(
        std::fs::read_dir(&decoy.0).unwrap().next().is_none(),
        "the script wrote through the planted link into {}",
        decoy.0.display()
    );
    assert!(
        started.status.success(),
        "start failed: {}",
        text(&started.stderr)
    );
    assert!(
        text(&started.stdout).contains(&format!("export DATABASE_URL={url}")),
        "{}",
        text(&started.stdout)
    );
    assert!(
        cluster.starts_with("/tmp/cortex-services.")
            && !cluster.starts_with(&*predictable.to_string_lossy()),
        "cluster folder {cluster:?}"
    );
    assert!(
        stopped.status.success(),
        "stop failed: {}",
        text(&stopped.stderr)
    );
}

/// `services.sh tls` a second time reuses the running TLS servers and prints the same
/// exports (the TLS tests call it from every test process).
#[test]
fn the_tls_mode_reuses_running_servers() {
    let run_tls = || {
        let out = Command::new("bash")
            .arg(services_sh())
            .arg("tls")
            .env("CORTEX_SERVICES_WAIT", "20")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "services.sh tls failed: {}",
            text(&out.stderr)
        );
        (text(&out.stdout), text(&out.stderr))
    };
    let (first, _) = run_tls();
    let (second, log) = run_tls();
    assert_eq!(first, second);
    for var in [
        "TLS_CA_FILE",
        "TLS_OTHER_CA_FILE",
        "TLS_DATABASE_URL",
        "TLS_REDIS_URL",
    ] {
        assert!(first.contains(&format!("export {var}=")), "{first}");
    }
    assert!(
        log.contains("TLS PostgreSQL already answers") && log.contains("TLS Redis already answers"),
        "{log}"
    );
    assert!(!log.contains("starting"), "{log}");
}

/// The TLS servers of another checkout (another state folder, so another CA) hold the
/// default ports: `services.sh tls` here starts its own on the next free ports instead
/// of failing, and its exports name them.
#[test]
fn the_tls_servers_of_another_checkout_do_not_block_this_one() {
    let tls = |state: Option<&Path>, mode: &str| {
        let mut cmd = Command::new("bash");
        cmd.arg(services_sh())
            .arg(mode)
            .env("CORTEX_SERVICES_WAIT", "20")
            .env_remove("TLS_PG_PORT")
            .env_remove("TLS_REDIS_PORT");
        if let Some(state) = state {
            cmd.env("CORTEX_SERVICES_DIR", state);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "services.sh {mode} failed: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let url = |exports: &str, var: &str| {
        exports
            .lines()
            .find_map(|l| l.strip_prefix(&format!("export {var}=")))
            .unwrap_or_else(|| panic!("{var} missing from {exports}"))
            .to_owned()
    };
    // This checkout's servers, on the default ports unless something else held them.
    let ours = tls(None, "tls");
    let other_state = Scratch::new("services-other-checkout", 0o755);
    let theirs = tls(Some(&other_state.0), "tls");
    for var in ["TLS_DATABASE_URL", "TLS_REDIS_URL"] {
        assert_ne!(
            url(&ours, var),
            url(&theirs, var),
            "{var}: one port for two CAs"
        );
    }
    assert_ne!(url(&ours, "TLS_CA_FILE"), url(&theirs, "TLS_CA_FILE"));
    tls(Some(&other_state.0), "tls-stop");
}
