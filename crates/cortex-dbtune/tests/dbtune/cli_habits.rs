//! The binary as pgtune, pghero and dexter users expect it: pgtune's header and
//! ALTER SYSTEM output, --os and nvme, the modern algorithm, exit codes that tell usage
//! errors, runtime errors and findings apart, DATABASE_URL by default.

use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cortex-dbtune"))
}

fn db_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://cortex@127.0.0.1:5432/cortex".to_string())
}

fn run(args: &[&str]) -> Output {
    bin()
        .args(args)
        .env("DATABASE_URL", db_url())
        .output()
        .expect("binary runs")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `pgtune` for 16GB web on `storage`, with `extra` flags.
fn pgtune(ram: &str, storage: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "pgtune",
        "--db-type",
        "web",
        "--ram",
        ram,
        "--storage",
        storage,
        "--pg-version",
        "18",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// The `name = value` lines of conf output as pairs.
fn conf(o: &Output) -> Vec<(String, String)> {
    assert_eq!(o.status.code(), Some(0), "{}", err(o));
    out(o)
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once(" = ").unwrap_or_else(|| panic!("{l:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn value(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

#[test]
fn header_names_every_input_given() {
    let o = pgtune("1536MB", "hdd", &["--connections", "50", "--os", "windows"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let text = out(&o);
    assert!(
        text.starts_with(
            "# DB Version: 18\n# OS Type: windows\n# DB Type: web\n\
             # Total Memory (RAM): 1536 MB\n# Connections num: 50\n\
             # Data Storage: hdd\n\nmax_connections = 50\n"
        ),
        "{text}"
    );
    // No CPUs given: no CPUs line.
    assert!(!text.contains("CPUs num"), "{text}");
}

#[test]
fn alter_format_is_one_checked_statement_per_setting() {
    let o = pgtune("16GB", "ssd", &["--cpus", "8", "--format", "alter"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let text = out(&o);
    let mut statements = 0;
    for line in text.lines() {
        if line.is_empty() || line.starts_with("-- ") {
            continue;
        }
        // ^ALTER SYSTEM SET [a-z_]+ = '...';$ without a regex crate.
        let rest = line
            .strip_prefix("ALTER SYSTEM SET ")
            .unwrap_or_else(|| panic!("{line:?}"));
        let (name, value) = rest.split_once(" = ").unwrap_or_else(|| panic!("{line:?}"));
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{line:?}"
        );
        let inner = value
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix("';"))
            .unwrap_or_else(|| panic!("{line:?}"));
        assert!(!inner.contains('\''), "{line:?}");
        statements += 1;
    }
    assert_eq!(statements, 17, "{text}");
    assert!(text.starts_with("-- DB Version: 18\n"), "{text}");
    assert!(
        text.contains("ALTER SYSTEM SET shared_buffers = '4GB';\n"),
        "{text}"
    );
}

#[test]
fn os_and_nvme_change_the_documented_values() {
    // 64GB: maintenance_work_mem reaches the 2GB cap.
    let linux = conf(&pgtune("64GB", "ssd", &[]));
    assert_eq!(
        value(&linux, "maintenance_work_mem").as_deref(),
        Some("2GB")
    );
    assert_eq!(
        value(&linux, "effective_io_concurrency").as_deref(),
        Some("200")
    );
    let windows = conf(&pgtune("64GB", "ssd", &["--os", "windows"]));
    assert_eq!(
        value(&windows, "maintenance_work_mem").as_deref(),
        Some("2047MB")
    );
    assert_eq!(value(&windows, "effective_io_concurrency"), None);
    let mac = conf(&pgtune("64GB", "ssd", &["--os", "mac"]));
    assert_eq!(value(&mac, "maintenance_work_mem").as_deref(), Some("2GB"));
    assert_eq!(value(&mac, "effective_io_concurrency"), None);
    let nvme = conf(&pgtune("64GB", "nvme", &[]));
    assert_eq!(
        value(&nvme, "effective_io_concurrency").as_deref(),
        Some("1000")
    );
    assert_eq!(value(&nvme, "random_page_cost").as_deref(), Some("1.1"));
}

#[test]
fn modern_algorithm_adds_settings_and_moves_floor_and_cap() {
    let classic = conf(&pgtune("256GB", "ssd", &["--connections", "5000"]));
    let modern = conf(&pgtune(
        "256GB",
        "ssd",
        &["--connections", "5000", "--algorithm", "modern"],
    ));
    // The default is the classic algorithm.
    let named = conf(&pgtune(
        "256GB",
        "ssd",
        &["--connections", "5000", "--algorithm", "classic"],
    ));
    assert_eq!(classic, named);
    assert_eq!(
        value(&classic, "maintenance_work_mem").as_deref(),
        Some("2GB")
    );
    assert_eq!(
        value(&modern, "maintenance_work_mem").as_deref(),
        Some("8GB")
    );
    for name in ["jit", "wal_compression", "autovacuum_work_mem", "io_method"] {
        assert!(value(&classic, name).is_none(), "{name} in classic");
        assert!(value(&modern, name).is_some(), "{name} missing in modern");
    }
    // The work_mem floor: 1GB with 5000 connections computes ~50kB.
    let classic = conf(&pgtune("1GB", "ssd", &["--connections", "5000"]));
    let modern = conf(&pgtune(
        "1GB",
        "ssd",
        &["--connections", "5000", "--algorithm", "modern"],
    ));
    assert_eq!(value(&classic, "work_mem").as_deref(), Some("64kB"));
    assert_eq!(value(&modern, "work_mem").as_deref(), Some("4MB"));
    // The classic pgtune has no data size input.
    let o = pgtune("16GB", "ssd", &["--db-size", "less-ram"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("less_ram"), "{}", err(&o));
}

/// `pgtune --algorithm modern` with `args`, its whole stdout and stderr.
fn modern(args: &[&str]) -> (String, String) {
    let mut all = vec!["pgtune", "--algorithm", "modern"];
    all.extend_from_slice(args);
    let o = run(&all);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    (out(&o), err(&o))
}

#[test]
fn modern_output_is_pgtune_7caef27c_for_a_dw_on_nvme() {
    // pgtune 7caef27c for: dw, 128GB, 24 CPUs, 60 connections, NVMe, PostgreSQL 18,
    // Linux, data over 3x RAM.
    // sb = 128GB / 4 = 32GB; mwm = 128GB / 8 = 16GB -> the 8GB cap, so
    // autovacuum_work_mem = 2GB; W = 100,663,296 / ((60 + 24) * 3) / 2 = 199,728.8
    // -> 199728, x 0.9 = 179,755.2 -> 179755kB; dw on NVMe larger than RAM:
    // random_page_cost stays 4; 24 CPUs: 4 autovacuum workers, 12 per gather (dw).
    let (stdout, stderr) = modern(&[
        "--db-type",
        "dw",
        "--ram",
        "128GB",
        "--cpus",
        "24",
        "--connections",
        "60",
        "--storage",
        "nvme",
        "--pg-version",
        "18",
        "--db-size",
        "greater-ram",
    ]);
    assert_eq!(
        stdout,
        "# DB Version: 18\n# OS Type: linux\n# DB Type: dw\n# Total Memory (RAM): 128 GB\n\
         # CPUs num: 24\n# Connections num: 60\n# Data Storage: nvme\n\n\
         max_connections = 60\n\
         shared_buffers = 32GB\n\
         effective_cache_size = 96GB\n\
         maintenance_work_mem = 8GB\n\
         checkpoint_completion_target = 0.9\n\
         wal_buffers = 16MB\n\
         default_statistics_target = 500\n\
         random_page_cost = 4\n\
         effective_io_concurrency = 1000\n\
         work_mem = 179755kB\n\
         huge_pages = try\n\
         wal_compression = lz4\n\
         autovacuum_max_workers = 4\n\
         autovacuum_work_mem = 2GB\n\
         io_method = io_uring\n\
         min_wal_size = 4GB\n\
         max_wal_size = 16GB\n\
         max_worker_processes = 24\n\
         max_parallel_workers_per_gather = 12\n\
         max_parallel_workers = 24\n\
         max_parallel_maintenance_workers = 4\n"
    );
    // pgtune's warnings: lz4 and liburing builds, and the warehouse cost parameters.
    for needle in ["--with-lz4", "--with-liburing", "NVMe drives"] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
}

#[test]
fn modern_output_is_pgtune_7caef27c_for_web_on_windows() {
    // pgtune 7caef27c for: web, 12GB, 16 CPUs, SSD, PostgreSQL 17, Windows, data
    // smaller than RAM, as ALTER SYSTEM.
    // sb = 3GB >= 2GB: huge_pages try; mwm = 12GB / 16 = 768MB; W = 9,437,184 / ((200 + 16) * 3) = 14,563.6 -> 14563,
    // x 1.3 = 18,931.9 -> 18931kB; data in RAM: random_page_cost 1.1; Windows: no
    // effective_io_concurrency; PostgreSQL 17: no io_method.
    let (stdout, stderr) = modern(&[
        "--db-type",
        "web",
        "--ram",
        "12GB",
        "--cpus",
        "16",
        "--storage",
        "ssd",
        "--pg-version",
        "17",
        "--os",
        "windows",
        "--db-size",
        "less_ram",
        "--format",
        "alter",
    ]);
    let statements: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("ALTER SYSTEM"))
        .collect();
    assert_eq!(
        statements,
        [
            "ALTER SYSTEM SET max_connections = '200';",
            "ALTER SYSTEM SET shared_buffers = '3GB';",
            "ALTER SYSTEM SET effective_cache_size = '9GB';",
            "ALTER SYSTEM SET maintenance_work_mem = '768MB';",
            "ALTER SYSTEM SET checkpoint_completion_target = '0.9';",
            "ALTER SYSTEM SET wal_buffers = '16MB';",
            "ALTER SYSTEM SET default_statistics_target = '100';",
            "ALTER SYSTEM SET random_page_cost = '1.1';",
            "ALTER SYSTEM SET work_mem = '18931kB';",
            "ALTER SYSTEM SET huge_pages = 'try';",
            "ALTER SYSTEM SET jit = 'off';",
            "ALTER SYSTEM SET wal_compression = 'lz4';",
            "ALTER SYSTEM SET autovacuum_max_workers = '4';",
            "ALTER SYSTEM SET min_wal_size = '1GB';",
            "ALTER SYSTEM SET max_wal_size = '4GB';",
            "ALTER SYSTEM SET max_worker_processes = '16';",
            "ALTER SYSTEM SET max_parallel_workers_per_gather = '4';",
            "ALTER SYSTEM SET max_parallel_workers = '16';",
            "ALTER SYSTEM SET max_parallel_maintenance_workers = '4';",
        ]
    );
    assert!(stderr.contains("--with-lz4"), "{stderr}");
    assert!(!stderr.contains("liburing"), "{stderr}");
}

#[test]
fn usage_errors_exit_2_naming_the_flag() {
    for (args, needle) in [
        (&["pgtune", "--os", "beos"][..], "--os"),
        (&["pgtune", "--algorithm", "newest"][..], "--algorithm"),
        (
            &["explain", "--fail-on", "info", "SELECT 1"][..],
            "--fail-on",
        ),
        (&["check-system", "--fail-on", "never"][..], "--fail-on"),
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", err(&o));
        assert!(err(&o).contains(needle), "{args:?}: {}", err(&o));
        assert!(err(&o).contains("invalid value"), "{args:?}: {}", err(&o));
    }
    // A value the command itself refuses is a usage error too.
    let o = pgtune("16GB", "ssd", &["--pg-version", "9"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    // --help succeeds on stdout.
    let o = run(&["pgtune", "--help"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(out(&o).contains("--algorithm"), "{}", out(&o));
    let o = run(&["--help"]);
    assert!(out(&o).contains("Exit status"), "{}", out(&o));
}

#[test]
fn a_wrong_database_url_is_a_runtime_error_shown_redacted() {
    // Nothing listens on port 1: connecting fails at once.
    let o = bin()
        .args(["maintenance"])
        .env("DATABASE_URL", "postgres://app:s3cret@127.0.0.1:1/app")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let e = err(&o);
    assert!(e.contains("postgres://app:***@127.0.0.1:1/app"), "{e}");
    assert!(!e.contains("s3cret"), "{e}");
}

#[test]
fn fail_on_gates_the_exit_status_on_findings() {
    // check-system: a missing required variable is a failing (critical) check.
    let check = |fail_on: Option<&str>, require: &str| {
        let mut c = bin();
        c.args(["check-system", "--format", "json", "--require", require]);
        if let Some(f) = fail_on {
            c.args(["--fail-on", f]);
        }
        c.env("DBTUNE_HABITS_SET", "x")
            .env_remove("DBTUNE_HABITS_UNSET")
            .output()
            .unwrap()
    };
    assert_eq!(check(None, "DBTUNE_HABITS_UNSET").status.code(), Some(3));
    assert_eq!(
        check(Some("critical"), "DBTUNE_HABITS_UNSET").status.code(),
        Some(3)
    );
    let o = check(Some("critical"), "DBTUNE_HABITS_SET");
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));

    // explain on the real server: a statement with a critical finding.
    let sql = EXPLAIN_WITH_FINDINGS;
    let o = run(&["explain", "--format", "json", sql]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    let severities: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["severity"].as_str())
        .collect();
    assert!(severities.contains(&"critical"), "{severities:?}");
    for level in ["warning", "critical"] {
        let o = run(&["explain", "--fail-on", level, sql]);
        assert_eq!(o.status.code(), Some(3), "{level}: {}", err(&o));
    }
    // A statement without findings passes the gate.
    let o = run(&[
        "explain",
        "--format",
        "json",
        "--fail-on",
        "warning",
        "SELECT 1",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
}

/// A sort that spills to disk under a small work_mem.
const EXPLAIN_WITH_FINDINGS: &str = "SELECT g FROM generate_series(1, 300000) g ORDER BY g DESC";

/// `db_url()` with its database name replaced by `name`.
fn url_of_database(name: &str) -> String {
    let url = db_url();
    let (base, query) = url.split_once('?').unwrap_or((&url, ""));
    let (server, _) = base.rsplit_once('/').expect("a database URL has a path");
    if query.is_empty() {
        format!("{server}/{name}")
    } else {
        format!("{server}/{name}?{query}")
    }
}

/// `maintenance` on the database at `url`, with `extra` flags.
fn maintenance(url: &str, extra: &[&str]) -> Output {
    bin()
        .arg("maintenance")
        .args(extra)
        .env("DATABASE_URL", url)
        .output()
        .expect("binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_on_gates_maintenance_on_a_database_of_its_own() {
    use sqlx::{AssertSqlSafe, Connection};
    // A database of its own: other tests' tables cannot add findings.
    let admin = super::pool().await;
    let name = format!("dbtune_failon_{}", std::process::id());
    let admin_exec = |sql: String| {
        let admin = admin.clone();
        async move {
            sqlx::raw_sql(AssertSqlSafe(sql.clone()))
                .execute(&admin)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    };
    admin_exec(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    admin_exec(format!("CREATE DATABASE {name}")).await;
    let url = url_of_database(&name);
    let codes = |url: &str| {
        [None, Some("warning"), Some("critical")].map(|level| {
            let o = match level {
                Some(l) => maintenance(url, &["--fail-on", l]),
                None => maintenance(url, &[]),
            };
            (o.status.code(), err(&o))
        })
    };

    // Empty: no finding at any level.
    let [none, warning, critical] = codes(&url);
    assert_eq!(none.0, Some(0), "{}", none.1);
    assert_eq!(warning.0, Some(0), "{}", warning.1);
    assert_eq!(critical.0, Some(0), "{}", critical.1);

    // An index nothing has scanned: a warning.
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    sqlx::raw_sql(
        "CREATE TABLE t (id int PRIMARY KEY, v int) WITH (autovacuum_enabled = false); \
         INSERT INTO t SELECT g, g % 10 FROM generate_series(1, 5000) g; \
         CREATE INDEX t_v ON t (v); ANALYZE t",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let [none, warning, critical] = codes(&url);
    assert_eq!(none.0, Some(0), "{}", none.1);
    assert_eq!(warning.0, Some(3), "{}", warning.1);
    assert!(
        warning
            .1
            .contains(r#"warning: unused_index "public"."t_v""#),
        "{}",
        warning.1
    );
    assert_eq!(critical.0, Some(0), "{}", critical.1);

    // 4000 of 5000 rows deleted (autovacuum off for the table): more dead than live,
    // critical. The session ends so its statistics reach the server.
    sqlx::raw_sql("DELETE FROM t WHERE id > 1000")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    // The statistics of an ended session arrive shortly after it ends: wait, bounded,
    // until the report shows the dead tuples.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let o = maintenance(&url, &["--format", "json"]);
        assert_eq!(o.status.code(), Some(0), "{}", err(&o));
        let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
        let dead = v["tables"][0]["dead_tuples"].as_i64();
        if dead == Some(4000) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no dead tuples reported within 30s: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let [none, warning, critical] = codes(&url);
    assert_eq!(none.0, Some(0), "{}", none.1);
    assert_eq!(warning.0, Some(3), "{}", warning.1);
    assert_eq!(critical.0, Some(3), "{}", critical.1);
    assert!(
        critical.1.contains(r#"critical: vacuum "public"."t""#),
        "{}",
        critical.1
    );
    // --fail-on critical names only the critical finding.
    assert!(!critical.1.contains("unused_index"), "{}", critical.1);

    admin_exec(format!("DROP DATABASE {name} WITH (FORCE)")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_on_gates_advise_indexes_on_verified_advice() {
    let pool = super::pool().await;
    super::advisor::extensions(&pool).await;
    let s = super::Schema::new(&pool, "failon_adv").await;
    let big = s.t("big");
    s.exec(&format!(
        "CREATE TABLE {big} AS SELECT g AS id, g % 100000 AS val, md5(g::text) AS pad \
         FROM generate_series(1, 200000) g; ANALYZE {big}"
    ))
    .await;
    let sql = format!("SELECT id, pad FROM {big} WHERE val = 4242");
    let advise = |extra: &[&str]| {
        let mut args = vec!["advise-indexes", "--no-pg-stat-statements", "--query", &sql];
        args.extend_from_slice(extra);
        run(&args)
    };
    // Verified by HypoPG: a seq scan of 200,000 rows against an index lookup of 2 saves
    // far over 90% of the cost, so the suggestion is critical.
    for level in ["warning", "critical"] {
        let o = advise(&["--fail-on", level]);
        assert_eq!(o.status.code(), Some(3), "{level}: {}", err(&o));
        assert!(
            err(&o).contains("critical: CREATE INDEX CONCURRENTLY"),
            "{level}: {}",
            err(&o)
        );
        assert!(out(&o).contains("CREATE INDEX CONCURRENTLY"), "{}", out(&o));
    }
    // Without --fail-on the advice does not change the status.
    let o = advise(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    // Unverified (no HypoPG): info, never gating.
    let o = advise(&["--no-hypopg", "--fail-on", "warning"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(out(&o).contains("CREATE INDEX CONCURRENTLY"), "{}", out(&o));
    // No advice at all.
    let o = run(&[
        "advise-indexes",
        "--no-pg-stat-statements",
        "--query",
        "SELECT 1",
        "--fail-on",
        "warning",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    s.drop().await;
}

/// A cgroup made for one test, removed when dropped (once its processes are gone).
struct TestGroup(std::path::PathBuf);

impl TestGroup {
    /// A child of this process's own group in the v1 hierarchy `controller`, with
    /// `files` written into it.
    fn v1(controller: &str, files: &[(&str, &str)]) -> Self {
        let own = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
        let path = own
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, ':').skip(1);
                parts.next().zip(parts.next())
            })
            .find(|(c, _)| c.split(',').any(|c| c == controller))
            .map(|(_, p)| p.trim_start_matches('/').to_string())
            .unwrap_or_else(|| panic!("no v1 {controller} group in {own:?}"));
        let dir = std::path::Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(path)
            .join(format!("cortex-dbtune-test-{}", std::process::id()));
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot make the cgroup {}: {e}", dir.display()));
        let group = Self(dir);
        for (name, value) in files {
            std::fs::write(group.0.join(name), value)
                .unwrap_or_else(|e| panic!("cannot write {name} = {value}: {e}"));
        }
        group
    }

    fn procs(&self) -> String {
        self.0.join("cgroup.procs").display().to_string()
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Inside a real cgroup with 1 GiB of memory and one CPU's quota below this process's
/// own (nested) groups, `check-system` reports those, not the host's. It used to read
/// only the top-level files, which in a nested group say "no limit".
#[test]
fn check_system_reports_the_limits_of_the_cgroup_it_runs_in() {
    let memory = TestGroup::v1("memory", &[("memory.limit_in_bytes", "1073741824")]);
    let cpu = TestGroup::v1(
        "cpu",
        &[
            ("cpu.cfs_period_us", "100000"),
            ("cpu.cfs_quota_us", "100000"),
        ],
    );
    // The shell moves itself into both groups, then becomes the binary.
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} && echo $$ > {} && exec \"$0\" check-system --format json",
            memory.procs(),
            cpu.procs()
        ))
        .arg(env!("CARGO_BIN_EXE_cortex-dbtune"))
        .output()
        .expect("sh runs");
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", err(&o));
    let report: serde_json::Value = serde_json::from_str(&out(&o)).expect("JSON report");
    let check = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} check in {report}"))["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(check("cpus"), "1");
    let gb: f64 = check("memory_total")
        .trim_end_matches(" GB")
        .parse()
        .expect("memory in GB");
    assert!((gb - 1.0).abs() < 0.05, "memory_total {gb} GB, limit 1 GiB");
}
