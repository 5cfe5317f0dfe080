//! System checks for a PostgreSQL client or server host (Linux): OS, CPUs, memory,
//! memory use, the open-file limit, required environment variables (secrets masked)
//! and the pool size against the CPUs.
//!
//! Facts are read from `/proc` (no `unsafe` FFI: the open-file limit comes from
//! `/proc/self/limits`, which reports the same soft and hard values as `getrlimit`).
//! The checks are pure functions of the facts, so they are tested with fixed inputs.
//!
//! [`recommended_defaults`] gives the recommended service defaults
//! (pool size, overflow, statement timeout, worker threads) for a CPU count, and
//! [`compare_defaults`] sets them beside the values a caller plans to use.

use serde::Serialize;

/// What the host offers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SystemFacts {
    /// `std::env::consts::OS`, e.g. `"linux"`.
    pub os: String,
    /// Kernel release (`/proc/sys/kernel/osrelease`), when readable.
    pub kernel: Option<String>,
    /// CPUs available to this process.
    pub cpus: usize,
    /// `MemTotal`, bytes.
    pub memory_total_bytes: Option<u64>,
    /// `MemAvailable`, bytes.
    pub memory_available_bytes: Option<u64>,
    /// Soft limit on open files (`None` = unlimited or unreadable).
    pub open_files_soft: Option<u64>,
    /// Hard limit on open files.
    pub open_files_hard: Option<u64>,
}

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum CheckStatus {
    /// Fine.
    Ok,
    /// Works, but should be changed.
    Warning,
    /// Will not work as configured.
    Fail,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SystemCheck {
    /// What was checked, e.g. `"memory_total"`.
    pub name: String,
    /// The outcome.
    pub status: CheckStatus,
    /// The value found (secrets masked).
    pub value: String,
    /// Why the status, and what to do.
    pub message: String,
}

/// What the checks compare against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// The connection pool size the service will use, if known.
    pub pool_size: Option<u32>,
    /// Environment variables that must be set.
    pub required_env: Vec<String>,
    /// The pool's overflow (connections above `pool_size` under load), if known.
    pub max_overflow: Option<u32>,
    /// The statement timeout the service will set, ms, if known.
    pub statement_timeout_ms: Option<u64>,
    /// The async runtime's worker threads, if known.
    pub worker_threads: Option<u32>,
}

/// Upper bound of [`RecommendedDefaults::pool_size`]: past a few dozen connections
/// per service, PostgreSQL spends more on lock and snapshot contention (and a few MB
/// of memory per backend) than the extra connections return.
pub const MAX_POOL_SIZE: u32 = 64;

/// Default statement timeout: long enough for a report query, short enough that a
/// runaway one does not hold locks and a connection for minutes.
pub const DEFAULT_STATEMENT_TIMEOUT_MS: u64 = 30_000;

/// Service defaults for a host with a given CPU count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RecommendedDefaults {
    /// `min(cpus x 2 + 1, MAX_POOL_SIZE)`: the common sizing rule (two connections per
    /// core, one more to cover I/O waits).
    pub pool_size: u32,
    /// Extra connections allowed above the pool under load: the pool size again, so a
    /// burst can double the connections for a while but never more.
    pub max_overflow: u32,
    /// [`DEFAULT_STATEMENT_TIMEOUT_MS`].
    pub statement_timeout_ms: u64,
    /// One async worker thread per CPU (Tokio's own default).
    pub worker_threads: u32,
}

/// The defaults for `cpus` CPUs (at least 1 is assumed).
pub fn recommended_defaults(cpus: usize) -> RecommendedDefaults {
    let cpus = u32::try_from(cpus.max(1)).unwrap_or(u32::MAX);
    let pool_size = cpus.saturating_mul(2).saturating_add(1).min(MAX_POOL_SIZE);
    RecommendedDefaults {
        pool_size,
        max_overflow: pool_size,
        statement_timeout_ms: DEFAULT_STATEMENT_TIMEOUT_MS,
        worker_threads: cpus,
    }
}

/// One default beside the value the caller gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DefaultComparison {
    /// `pool_size`, `max_overflow`, `statement_timeout_ms` or `worker_threads`.
    pub name: String,
    /// The value given, if any.
    pub current: Option<String>,
    /// The recommended value.
    pub recommended: String,
}

/// The four defaults for `cpus`, each beside the value in `opts` when given.
pub fn compare_defaults(cpus: usize, opts: &CheckOptions) -> Vec<DefaultComparison> {
    let d = recommended_defaults(cpus);
    let row = |name: &str, current: Option<String>, recommended: String| DefaultComparison {
        name: name.to_string(),
        current,
        recommended,
    };
    vec![
        row(
            "pool_size",
            opts.pool_size.map(|v| v.to_string()),
            d.pool_size.to_string(),
        ),
        row(
            "max_overflow",
            opts.max_overflow.map(|v| v.to_string()),
            d.max_overflow.to_string(),
        ),
        row(
            "statement_timeout_ms",
            opts.statement_timeout_ms.map(|v| v.to_string()),
            d.statement_timeout_ms.to_string(),
        ),
        row(
            "worker_threads",
            opts.worker_threads.map(|v| v.to_string()),
            d.worker_threads.to_string(),
        ),
    ]
}

/// The standard place of this process's cgroup files inside a container (cgroup
/// namespace): `memory.max` and `cpu.max` (v2) or `memory/` and `cpu/` (v1) below it.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Memory and CPU limits set on a cgroup; `None` where there is no limit (or no file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CgroupLimits {
    /// The memory limit, bytes.
    pub memory_bytes: Option<u64>,
    /// The CPU quota as whole CPUs, rounded up (a quota of 1.5 CPUs gives 2), at least 1.
    pub cpus: Option<u32>,
}

/// Reads the limits under `root` (usually [`CGROUP_ROOT`]): cgroup v2 `memory.max` and
/// `cpu.max` (`"max"` = none), else v1 `memory/memory.limit_in_bytes` (a value of
/// 2^62 or more is the kernel's "no limit") and `cpu/cpu.cfs_quota_us` over
/// `cpu/cpu.cfs_period_us` (`-1` = none). Unreadable or malformed files count as no
/// limit: the host's own figures are used then.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("cgroup-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// std::fs::write(dir.join("memory.max"), "2147483648\n")?;
/// std::fs::write(dir.join("cpu.max"), "150000 100000\n")?;
/// let l = cortex_dbtune::system::cgroup_limits(&dir);
/// assert_eq!((l.memory_bytes, l.cpus), (Some(2 << 30), Some(2)));
/// std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn cgroup_limits(root: &std::path::Path) -> CgroupLimits {
    let memory_bytes = v2_memory(root).unwrap_or_else(|| v1_memory(&root.join("memory")));
    let cpus = v2_cpus(root).unwrap_or_else(|| v1_cpus(&root.join("cpu")));
    CgroupLimits { memory_bytes, cpus }
}

/// The limits that bind this process: those under `root` (what a container's cgroup
/// namespace shows there) and those of the process's own group and each of its
/// ancestors, found from `self_cgroup` (the text of `/proc/self/cgroup`), the smallest
/// of each. Without a namespace the process sits in a nested group (v2 `0::/a/b`, v1
/// `4:memory:/a/b`) whose limit the top-level files do not show; limits nest, so an
/// ancestor's binds too.
///
/// ```
/// let root = std::env::temp_dir().join(format!("cgroup-self-doc-{}", std::process::id()));
/// std::fs::create_dir_all(root.join("memory/jobs/one"))?;
/// std::fs::write(root.join("memory/jobs/memory.limit_in_bytes"), "1073741824\n")?;
/// let l = cortex_dbtune::system::process_cgroup_limits(&root, "4:memory:/jobs/one\n");
/// assert_eq!(l.memory_bytes, Some(1 << 30));
/// std::fs::remove_dir_all(&root)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn process_cgroup_limits(root: &std::path::Path, self_cgroup: &str) -> CgroupLimits {
    let mut limits = cgroup_limits(root);
    let lower = |slot: &mut Option<u64>, found: Option<u64>| {
        if let Some(f) = found {
            *slot = Some(slot.map_or(f, |s| s.min(f)));
        }
    };
    let mut memory = limits.memory_bytes;
    let mut cpus = limits.cpus.map(u64::from);
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        // Only plain relative components: never a path that climbs out of `root`.
        let rel: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        if rel.is_empty() || rel.iter().any(|c| *c == "." || *c == "..") {
            continue;
        }
        // The group and its ancestors, innermost first, below a controller's base.
        let groups = |base: std::path::PathBuf| {
            (1..=rel.len())
                .rev()
                .map(|n| rel[..n].iter().fold(base.clone(), |d, c| d.join(c)))
                .collect::<Vec<_>>()
        };
        if controllers.is_empty() {
            // cgroup v2, mounted at `root` itself when it is the only hierarchy.
            for dir in groups(root.to_path_buf()) {
                lower(&mut memory, v2_memory(&dir).flatten());
                lower(&mut cpus, v2_cpus(&dir).flatten().map(u64::from));
            }
            continue;
        }
        let names: Vec<&str> = controllers.split(',').collect();
        if names.contains(&"memory") {
            for dir in groups(root.join("memory")) {
                lower(&mut memory, v1_memory(&dir));
            }
        }
        if names.contains(&"cpu") {
            // `cpu,cpuacct` is usually mounted under that name with `cpu` a link to it.
            let base = [root.join("cpu"), root.join(controllers)]
                .into_iter()
                .find(|b| b.is_dir())
                .unwrap_or_else(|| root.join("cpu"));
            for dir in groups(base) {
                lower(&mut cpus, v1_cpus(&dir).map(u64::from));
            }
        }
    }
    limits.memory_bytes = memory;
    limits.cpus = cpus.map(|c| u32::try_from(c).unwrap_or(u32::MAX));
    limits
}

/// cgroup v2 `memory.max` in `dir`: `None` without the file, `Some(None)` for `max`.
fn v2_memory(dir: &std::path::Path) -> Option<Option<u64>> {
    let text = std::fs::read_to_string(dir.join("memory.max")).ok()?;
    Some(text.trim().parse::<u64>().ok())
}

/// cgroup v2 `cpu.max` in `dir` (`"<quota|max> <period>"`) as whole CPUs.
fn v2_cpus(dir: &std::path::Path) -> Option<Option<u32>> {
    let text = std::fs::read_to_string(dir.join("cpu.max")).ok()?;
    let mut it = text.split_whitespace();
    Some(match (it.next(), it.next().map(str::parse::<i64>)) {
        (Some(q), Some(Ok(period))) => q.parse::<i64>().ok().and_then(|q| quota(q, period)),
        _ => None,
    })
}

/// cgroup v1 `memory.limit_in_bytes` in `dir`; 2^62 or more is the kernel's "no limit".
fn v1_memory(dir: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(dir.join("memory.limit_in_bytes"))
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&b| b < 1 << 62)
}

/// cgroup v1 `cpu.cfs_quota_us` over `cpu.cfs_period_us` in `dir` (`-1` = none).
fn v1_cpus(dir: &std::path::Path) -> Option<u32> {
    let num = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    quota(num("cpu.cfs_quota_us")?, num("cpu.cfs_period_us")?)
}

/// A CPU quota as whole CPUs, rounded up, at least 1; `None` when either is not positive.
fn quota(q: i64, period: i64) -> Option<u32> {
    (q > 0 && period > 0).then(|| {
        let c = (q as u64).div_ceil(period as u64).max(1);
        u32::try_from(c).unwrap_or(u32::MAX)
    })
}

/// `facts` with memory and CPUs lowered to `limits` where a limit is smaller: inside a
/// container the host's `MemTotal` and CPU count are not what PostgreSQL may use.
pub fn apply_cgroup_limits(mut facts: SystemFacts, limits: &CgroupLimits) -> SystemFacts {
    if let Some(limit) = limits.memory_bytes {
        facts.memory_total_bytes = Some(facts.memory_total_bytes.map_or(limit, |t| t.min(limit)));
        facts.memory_available_bytes = facts.memory_available_bytes.map(|a| a.min(limit));
    }
    if let Some(c) = limits.cpus {
        facts.cpus = facts.cpus.min(c as usize).max(1);
    }
    facts
}

/// Reads the host's facts from `/proc` and the standard library, lowered to the
/// cgroup limits that bind this process ([`process_cgroup_limits`] under
/// [`CGROUP_ROOT`]), inside a container or in a limited group on a host.
pub fn gather() -> SystemFacts {
    let self_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    apply_cgroup_limits(
        gather_host(),
        &process_cgroup_limits(std::path::Path::new(CGROUP_ROOT), &self_cgroup),
    )
}

fn gather_host() -> SystemFacts {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let (total, available) = read("/proc/meminfo")
        .map(|t| parse_meminfo(&t))
        .unwrap_or((None, None));
    let (soft, hard) = read("/proc/self/limits")
        .map(|t| parse_open_files(&t))
        .unwrap_or((None, None));
    SystemFacts {
        os: std::env::consts::OS.to_string(),
        kernel: read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_total_bytes: total,
        memory_available_bytes: available,
        open_files_soft: soft,
        open_files_hard: hard,
    }
}

/// `MemTotal` and `MemAvailable` in bytes from `/proc/meminfo` text.
pub fn parse_meminfo(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            kb.checked_mul(1024)
        })
    };
    (field("MemTotal"), field("MemAvailable"))
}

/// Soft and hard `Max open files` from `/proc/self/limits` text (`None` = unlimited).
pub fn parse_open_files(text: &str) -> (Option<u64>, Option<u64>) {
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix("Max open files")?;
            let mut it = rest.split_whitespace();
            let soft = it.next()?.parse().ok();
            let hard = it.next()?.parse().ok();
            Some((soft, hard))
        })
        .unwrap_or((None, None))
}

/// Masks a secret for display: the whole value when the variable's name says it is a
/// secret (`****`), else the value through [`cortex_support::redact::redact_url`], which hides the
/// password of a URL (`user:***@host`, whatever characters the password holds) and
/// secret query parameters (`?password=***`).
pub fn mask(name: &str, value: &str) -> String {
    let upper = name.to_ascii_uppercase();
    if ["PASSWORD", "SECRET", "TOKEN", "KEY", "PASS"]
        .iter()
        .any(|s| upper.contains(s))
    {
        return "****".to_string();
    }
    cortex_support::redact::redact_url(value)
}

const GB: u64 = 1024 * 1024 * 1024;

fn check(
    name: &str,
    status: CheckStatus,
    value: String,
    message: impl Into<String>,
) -> SystemCheck {
    SystemCheck {
        name: name.to_string(),
        status,
        value,
        message: message.into(),
    }
}

/// Runs the checks on `facts`; `lookup` reads environment variables (pass
/// `|k| std::env::var(k).ok()` for the process environment).
pub fn run_checks(
    facts: &SystemFacts,
    opts: &CheckOptions,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Vec<SystemCheck> {
    use CheckStatus::*;
    let mut out = Vec::new();
    let os_value = match &facts.kernel {
        Some(k) => format!("{} {k}", facts.os),
        None => facts.os.clone(),
    };
    out.push(if facts.os == "linux" {
        check("os", Ok, os_value, "Linux: every check applies")
    } else {
        check(
            "os",
            Warning,
            os_value,
            "not Linux: the memory and open-file checks read /proc and may be missing",
        )
    });
    out.push(check(
        "cpus",
        if facts.cpus >= 2 { Ok } else { Warning },
        facts.cpus.to_string(),
        if facts.cpus >= 2 {
            "enough for parallel work"
        } else {
            "a single CPU: PostgreSQL and the service compete for it"
        },
    ));
    match facts.memory_total_bytes {
        Some(t) => out.push(check(
            "memory_total",
            if t < 4 * GB { Warning } else { Ok },
            format!("{:.1} GB", t as f64 / GB as f64),
            if t < 4 * GB {
                "under 4 GB: keep shared_buffers and work_mem small (see pgtune)"
            } else {
                "at least 4 GB"
            },
        )),
        None => out.push(check(
            "memory_total",
            Warning,
            "unknown".into(),
            "/proc/meminfo unreadable",
        )),
    }
    if let (Some(t), Some(a)) = (facts.memory_total_bytes, facts.memory_available_bytes) {
        let used = (t.saturating_sub(a)) as f64 / t.max(1) as f64 * 100.0;
        out.push(check(
            "memory_used",
            if used > 80.0 { Warning } else { Ok },
            format!("{used:.0}%"),
            if used > 80.0 {
                "over 80% of memory in use: risk of swapping or the OOM killer"
            } else {
                "at most 80% of memory in use"
            },
        ));
    }
    out.push(match facts.open_files_soft {
        Some(n) if n < 1024 => check(
            "open_files",
            Warning,
            n.to_string(),
            format!(
                "open-file limit under 1024: raise it (ulimit -n, LimitNOFILE) up to the hard limit {}",
                facts.open_files_hard.map_or("unlimited".into(), |h| h.to_string())
            ),
        ),
        Some(n) => check("open_files", Ok, n.to_string(), "at least 1024"),
        None => check("open_files", Ok, "unlimited".into(), "no limit reported"),
    });
    for name in &opts.required_env {
        out.push(match lookup(name).filter(|v| !v.trim().is_empty()) {
            Some(v) => check(&format!("env:{name}"), Ok, mask(name, &v), "set"),
            None => check(
                &format!("env:{name}"),
                Fail,
                "unset".into(),
                format!("{name} is required but not set"),
            ),
        });
    }
    if let Some(p) = opts.pool_size {
        // The common sizing rule: about 2 connections per core (plus spindles); far
        // more only queue inside PostgreSQL.
        let max = (facts.cpus as u32).max(1) * 4;
        out.push(check(
            "pool_size",
            if p == 0 {
                Fail
            } else if p > max {
                Warning
            } else {
                Ok
            },
            p.to_string(),
            if p == 0 {
                "a pool of 0 connections cannot serve anything".to_string()
            } else if p > max {
                format!(
                    "over 4 connections per CPU ({max} for {} CPUs): extra connections queue \
                     inside PostgreSQL; about {} is a common size",
                    facts.cpus,
                    facts.cpus * 2 + 1
                )
            } else {
                format!("at most 4 connections per CPU ({max})")
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> SystemFacts {
        SystemFacts {
            os: "linux".into(),
            kernel: Some("6.1.0".into()),
            cpus: 2,
            memory_total_bytes: Some(2 * GB),
            memory_available_bytes: Some(GB / 4),
            open_files_soft: Some(512),
            open_files_hard: Some(4096),
        }
    }

    fn status(cs: &[SystemCheck], name: &str) -> CheckStatus {
        cs.iter().find(|c| c.name == name).unwrap().status
    }

    #[test]
    fn parses_proc_files() {
        let m = "MemTotal:       24684092 kB\nMemFree:  1 kB\nMemAvailable:   23655080 kB\n";
        assert_eq!(
            parse_meminfo(m),
            (Some(24_684_092 * 1024), Some(23_655_080 * 1024))
        );
        let l = "Limit                     Soft Limit           Hard Limit           Units     \n\
                 Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_files(l), (Some(1024), Some(524_288)));
        let l = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files(l), (None, None));
    }

    #[test]
    fn small_busy_host_warns() {
        let env = |k: &str| {
            (k == "DATABASE_URL").then(|| "postgres://app:s3cret@db:5432/app".to_string())
        };
        let cs = run_checks(
            &facts(),
            &CheckOptions {
                pool_size: Some(20),
                required_env: vec!["DATABASE_URL".into(), "API_TOKEN".into()],
                ..Default::default()
            },
            &env,
        );
        assert_eq!(status(&cs, "os"), CheckStatus::Ok);
        assert_eq!(status(&cs, "memory_total"), CheckStatus::Warning);
        assert_eq!(status(&cs, "memory_used"), CheckStatus::Warning); // 87.5%
        assert_eq!(status(&cs, "open_files"), CheckStatus::Warning);
        assert_eq!(status(&cs, "pool_size"), CheckStatus::Warning); // 20 > 2 x 4
        assert_eq!(status(&cs, "env:API_TOKEN"), CheckStatus::Fail);
        let db = cs.iter().find(|c| c.name == "env:DATABASE_URL").unwrap();
        assert_eq!(db.value, "postgres://app:***@db:5432/app");
        assert!(cs.iter().all(|c| !c.value.contains("s3cret")));
    }

    #[test]
    fn healthy_host_passes() {
        let f = SystemFacts {
            cpus: 8,
            memory_total_bytes: Some(32 * GB),
            memory_available_bytes: Some(20 * GB),
            open_files_soft: Some(65_536),
            ..facts()
        };
        let cs = run_checks(
            &f,
            &CheckOptions {
                pool_size: Some(17),
                ..Default::default()
            },
            &|_| None,
        );
        assert!(cs.iter().all(|c| c.status == CheckStatus::Ok), "{cs:#?}");
    }

    #[test]
    fn masking() {
        assert_eq!(mask("DB_PASSWORD", "hunter2"), "****");
        assert_eq!(mask("SECRET_KEY", "x"), "****");
        assert_eq!(
            mask("DATABASE_URL", "postgres://u@h/db"),
            "postgres://u@h/db"
        );
        assert_eq!(
            mask("REDIS_URL", "redis://:pw@h:6379"),
            "redis://:***@h:6379"
        );
        assert_eq!(mask("HOST", "localhost"), "localhost");
        // One rule with cortex-pool: `@ / ? # :` in the password, and secret parameters.
        for (url, shown) in [
            ("postgres://u:s3c@r/t?x#y:z@h/db", "postgres://u:***@h/db"),
            ("redis://:s3cr@t@h:6379", "redis://:***@h:6379"),
            (
                "postgres://u@h/db?password=s3cret",
                "postgres://u@h/db?password=***",
            ),
            (
                "postgres://h/db?sslpassword=s3cret&sslmode=require",
                "postgres://h/db?sslpassword=***&sslmode=require",
            ),
        ] {
            assert_eq!(mask("DATABASE_URL", url), shown, "{url}");
            assert_eq!(
                mask("DATABASE_URL", url),
                cortex_support::redact::redact_url(url),
                "{url}"
            );
        }
    }

    /// A fresh directory for one test's cgroup files.
    fn cgroup_dir(name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("dbtune-cgroup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, text) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn cgroup_v2_and_v1_limits() {
        let v2 = cgroup_dir(
            "v2",
            &[
                ("memory.max", "1073741824\n"),
                ("cpu.max", "250000 100000\n"),
            ],
        );
        assert_eq!(
            cgroup_limits(&v2),
            CgroupLimits {
                memory_bytes: Some(GB),
                cpus: Some(3)
            }
        );
        let unlimited = cgroup_dir(
            "v2max",
            &[("memory.max", "max\n"), ("cpu.max", "max 100000\n")],
        );
        assert_eq!(cgroup_limits(&unlimited), CgroupLimits::default());
        let v1 = cgroup_dir(
            "v1",
            &[
                ("memory/memory.limit_in_bytes", "536870912\n"),
                ("cpu/cpu.cfs_quota_us", "50000\n"),
                ("cpu/cpu.cfs_period_us", "100000\n"),
            ],
        );
        assert_eq!(
            cgroup_limits(&v1),
            CgroupLimits {
                memory_bytes: Some(GB / 2),
                cpus: Some(1)
            }
        );
        let v1_none = cgroup_dir(
            "v1none",
            &[
                ("memory/memory.limit_in_bytes", "9223372036854771712\n"),
                ("cpu/cpu.cfs_quota_us", "-1\n"),
                ("cpu/cpu.cfs_period_us", "100000\n"),
            ],
        );
        assert_eq!(cgroup_limits(&v1_none), CgroupLimits::default());
        let garbage = cgroup_dir("bad", &[("memory.max", "lots\n"), ("cpu.max", "x y\n")]);
        assert_eq!(cgroup_limits(&garbage), CgroupLimits::default());
        let empty = cgroup_dir("empty", &[]);
        assert_eq!(cgroup_limits(&empty), CgroupLimits::default());
        for d in [v2, unlimited, v1, v1_none, garbage, empty] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn the_process_group_and_its_ancestors_bind_not_only_the_top_level() {
        // v1 hybrid: the top level has no limit, the process's group none either, its
        // parent 1 GB of memory; the CPU limit sits on the group itself.
        let v1 = cgroup_dir(
            "self-v1",
            &[
                ("memory/memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory/svc/memory.limit_in_bytes", "1073741824\n"),
                (
                    "memory/svc/one/memory.limit_in_bytes",
                    "9223372036854771712\n",
                ),
                ("cpu,cpuacct/svc/one/cpu.cfs_quota_us", "150000\n"),
                ("cpu,cpuacct/svc/one/cpu.cfs_period_us", "100000\n"),
            ],
        );
        let text = "12:cpu,cpuacct:/svc/one\n4:memory:/svc/one\n0::/\n";
        assert_eq!(cgroup_limits(&v1), CgroupLimits::default());
        assert_eq!(
            process_cgroup_limits(&v1, text),
            CgroupLimits {
                memory_bytes: Some(GB),
                cpus: Some(2)
            }
        );
        // v2: the smallest of the group's and its ancestors' limits.
        let v2 = cgroup_dir(
            "self-v2",
            &[
                ("memory.max", "max\n"),
                ("a/memory.max", "2147483648\n"),
                ("a/b/memory.max", "max\n"),
                ("a/b/cpu.max", "100000 100000\n"),
                ("a/cpu.max", "400000 100000\n"),
            ],
        );
        assert_eq!(
            process_cgroup_limits(&v2, "0::/a/b\n"),
            CgroupLimits {
                memory_bytes: Some(2 * GB),
                cpus: Some(1)
            }
        );
        // A path that would climb out of the root, or nonsense lines, count for nothing.
        for text in ["0::/../a\n", "4:memory:/svc/../svc\n", "garbage\n", ""] {
            assert_eq!(
                process_cgroup_limits(&v2, text),
                CgroupLimits::default(),
                "{text:?}"
            );
        }
        for d in [v1, v2] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn the_smaller_of_host_and_limit_wins() {
        let host = SystemFacts {
            cpus: 8,
            memory_total_bytes: Some(32 * GB),
            memory_available_bytes: Some(20 * GB),
            ..facts()
        };
        let f = apply_cgroup_limits(
            host.clone(),
            &CgroupLimits {
                memory_bytes: Some(4 * GB),
                cpus: Some(2),
            },
        );
        assert_eq!(
            (f.cpus, f.memory_total_bytes, f.memory_available_bytes),
            (2, Some(4 * GB), Some(4 * GB))
        );
        // A limit above the host changes nothing.
        let f = apply_cgroup_limits(
            host.clone(),
            &CgroupLimits {
                memory_bytes: Some(64 * GB),
                cpus: Some(16),
            },
        );
        assert_eq!(f, host);
        assert_eq!(
            apply_cgroup_limits(host.clone(), &CgroupLimits::default()),
            host
        );
    }

    #[test]
    fn gather_reads_this_host() {
        let f = gather();
        assert!(f.cpus >= 1);
        if cfg!(target_os = "linux") {
            assert!(f.memory_total_bytes.is_some());
        }
    }

    #[test]
    fn recommended_defaults_follow_the_formula() {
        let d = recommended_defaults(8);
        assert_eq!(
            d,
            RecommendedDefaults {
                pool_size: 17,
                max_overflow: 17,
                statement_timeout_ms: 30_000,
                worker_threads: 8,
            }
        );
        // 0 CPUs (unknown) counts as 1; a large host is capped.
        assert_eq!(recommended_defaults(0).pool_size, 3);
        assert_eq!(recommended_defaults(0).worker_threads, 1);
        assert_eq!(recommended_defaults(31).pool_size, 63);
        assert_eq!(recommended_defaults(32).pool_size, MAX_POOL_SIZE);
        assert_eq!(recommended_defaults(128).max_overflow, MAX_POOL_SIZE);
        assert_eq!(recommended_defaults(128).worker_threads, 128);
    }

    #[test]
    fn defaults_sit_beside_the_given_values() {
        let opts = CheckOptions {
            pool_size: Some(10),
            statement_timeout_ms: Some(5_000),
            ..Default::default()
        };
        let c = compare_defaults(4, &opts);
        let names: Vec<&str> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "pool_size",
                "max_overflow",
                "statement_timeout_ms",
                "worker_threads"
            ]
        );
        assert_eq!(
            (c[0].current.as_deref(), c[0].recommended.as_str()),
            (Some("10"), "9")
        );
        assert_eq!(
            (c[1].current.as_deref(), c[1].recommended.as_str()),
            (None, "9")
        );
        assert_eq!(
            (c[2].current.as_deref(), c[2].recommended.as_str()),
            (Some("5000"), "30000")
        );
        assert_eq!(
            (c[3].current.as_deref(), c[3].recommended.as_str()),
            (None, "4")
        );
    }
}
