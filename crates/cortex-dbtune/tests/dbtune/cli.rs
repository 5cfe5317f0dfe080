//! The `cortex-dbtune` binary: output formats and errors.

use std::process::{Command, Output};

/// Runs the binary with `DATABASE_URL` set to the test server's.
fn run(args: &[&str]) -> Output {
    run_with_url(&db_url(), args)
}

fn run_with_url(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cortex-dbtune"))
        .args(args)
        .env("DATABASE_URL", url)
        .output()
        .expect("binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const WEB_16: [&str; 11] = [
    "pgtune",
    "--db-type",
    "web",
    "--ram",
    "16GB",
    "--cpus",
    "8",
    "--storage",
    "ssd",
    "--pg-version",
    "15",
];

#[test]
fn pgtune_conf_in_pgtune_order() {
    let o = run(&WEB_16);
    assert!(o.status.success(), "{}", stderr(&o));
    // Hand-computed from the spec (see the pgtune unit tests for the arithmetic),
    // under pgtune's input comments.
    assert_eq!(
        stdout(&o),
        "# DB Version: 15\n# OS Type: linux\n# DB Type: web\n\
         # Total Memory (RAM): 16 GB\n# CPUs num: 8\n# Data Storage: ssd\n\n\
         max_connections = 200\nshared_buffers = 4GB\neffective_cache_size = 12GB\n\
         maintenance_work_mem = 1GB\ncheckpoint_completion_target = 0.9\n\
         wal_buffers = 16MB\ndefault_statistics_target = 100\nrandom_page_cost = 1.1\n\
         effective_io_concurrency = 200\nwork_mem = 20164kB\nhuge_pages = off\n\
         min_wal_size = 1GB\nmax_wal_size = 4GB\nmax_worker_processes = 8\n\
         max_parallel_workers_per_gather = 4\nmax_parallel_workers = 8\n\
         max_parallel_maintenance_workers = 4\n"
    );
}

#[test]
fn pgtune_json_without_cpus_leaves_out_parallel_settings() {
    let o = run(&[
        "pgtune",
        "--db-type",
        "mixed",
        "--ram",
        "4GB",
        "--connections",
        "50",
        "--storage",
        "hdd",
        "--pg-version",
        "13",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let m = v.as_object().unwrap();
    assert_eq!(m["max_connections"], "50");
    assert_eq!(m["work_mem"], "9039kB"); // 3,145,728 / 174 / 2 = 9039.4
    assert_eq!(m["random_page_cost"], "4");
    assert!(
        m.keys()
            .all(|k| !k.contains("parallel") && k != "max_worker_processes")
    );
    assert!(stdout(&o).starts_with("{\"max_connections\":\"50\",\"shared_buffers\":\"1GB\""));
}

#[test]
fn bad_flags_fail_clearly() {
    let cases: [(&[&str], &str); 6] = [
        (
            &[
                "pgtune",
                "--db-type",
                "webb",
                "--ram",
                "16GB",
                "--storage",
                "ssd",
                "--pg-version",
                "15",
            ],
            "webb",
        ),
        (
            &[
                "pgtune",
                "--db-type",
                "web",
                "--ram",
                "16XB",
                "--storage",
                "ssd",
                "--pg-version",
                "15",
            ],
            "16XB",
        ),
        (
            &[
                "pgtune",
                "--db-type",
                "web",
                "--ram",
                "16GB",
                "--cpus",
                "0",
                "--storage",
                "ssd",
                "--pg-version",
                "15",
            ],
            "0",
        ),
        (
            &[
                "pgtune",
                "--db-type",
                "web",
                "--ram",
                "16GB",
                "--storage",
                "tape",
                "--pg-version",
                "15",
            ],
            "tape",
        ),
        (
            &[
                "pgtune",
                "--db-type",
                "web",
                "--ram",
                "16GB",
                "--storage",
                "ssd",
                "--pg-version",
                "9",
            ],
            "unsupported PostgreSQL version 9",
        ),
        (
            &[
                "pgtune",
                "--db-type",
                "web",
                "--ram",
                "512kB",
                "--storage",
                "ssd",
                "--pg-version",
                "15",
            ],
            "524288",
        ),
    ];
    for (args, needle) in cases {
        let o = run(args);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(o.stdout.is_empty(), "{args:?}");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
    let o = run(&["explain", "SELECT 1", "--param", "int:x"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("int:x"), "{}", stderr(&o));
}

#[test]
fn url_comes_from_the_environment_and_a_url_in_argv_warns() {
    let url = db_url();
    // DATABASE_URL by default, without a warning.
    let o = Command::new(env!("CARGO_BIN_EXE_cortex-dbtune"))
        .args(["maintenance", "--format", "json"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    // Another variable by name.
    let o = Command::new(env!("CARGO_BIN_EXE_cortex-dbtune"))
        .args([
            "settings",
            "--url-env",
            "DBTUNE_IT_URL",
            "--ram",
            "1GB",
            "--cpus",
            "2",
        ])
        .args(["--format", "json"])
        .env_remove("DATABASE_URL")
        .env("DBTUNE_IT_URL", &url)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // A variable that is not set: an error naming it.
    let o = Command::new(env!("CARGO_BIN_EXE_cortex-dbtune"))
        .args(["maintenance", "--url-env", "DBTUNE_IT_SURELY_UNSET"])
        .env_remove("DBTUNE_IT_SURELY_UNSET")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("DBTUNE_IT_SURELY_UNSET"),
        "{}",
        stderr(&o)
    );
    // --url still works, and says that argv is visible to every local user.
    let o = run(&["explain", "--url", &url, "SELECT 1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("warning") && err.contains("ps"), "{err}");
}

#[test]
fn check_system_masks_secrets_and_fails_on_missing_env() {
    let o = Command::new(env!("CARGO_BIN_EXE_cortex-dbtune"))
        .args([
            "check-system",
            "--format",
            "json",
            "--require",
            "DBTUNE_TEST_URL",
            "--require",
            "DBTUNE_TEST_SURELY_UNSET",
        ])
        .env("DBTUNE_TEST_URL", "postgres://app:s3cret@x/y@db/app")
        .env_remove("DBTUNE_TEST_SURELY_UNSET")
        .output()
        .unwrap();
    // A failing check is a finding: exit 3 (1 is a runtime error).
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(!out.contains("s3cret") && !out.contains("x/y"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let checks = v["checks"].as_array().unwrap();
    let get = |n: &str| checks.iter().find(|c| c["name"] == n).unwrap().clone();
    assert_eq!(
        get("env:DBTUNE_TEST_URL")["value"],
        "postgres://app:***@db/app"
    );
    assert_eq!(get("env:DBTUNE_TEST_SURELY_UNSET")["status"], "fail");
    assert!(v["facts"]["cpus"].as_u64().unwrap() >= 1);
}

fn db_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://cortex@127.0.0.1:5432/cortex".to_string())
}

fn json_of(args: &[&str]) -> serde_json::Value {
    let o = run(args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{args:?}: {e}\n{}", stdout(&o)))
}

const BAD_URL: &str = "postgres://cortex:s3cret@127.0.0.1:1/cortex";

/// With `DATABASE_URL` a URL nothing answers at, the error shows it without its password.
fn fails_without_password(args: &[&str]) {
    let o = run_with_url(BAD_URL, args);
    assert!(!o.status.success(), "{args:?} should fail");
    let err = stderr(&o);
    assert!(
        err.contains("cannot connect to PostgreSQL"),
        "{args:?}: {err}"
    );
    assert!(err.contains("cortex:***@127.0.0.1:1"), "{args:?}: {err}");
    assert!(
        !err.contains("s3cret") && !stdout(&o).contains("s3cret"),
        "{err}"
    );
}

#[test]
fn advise_indexes_json_and_bad_url() {
    let v = json_of(&[
        "advise-indexes",
        "--query",
        "SELECT 1",
        "--top",
        "5",
        "--format",
        "json",
    ]);
    assert!(v.is_array(), "{v}");
    fails_without_password(&["advise-indexes"]);
}

#[test]
fn advise_indexes_reads_the_plan_settings_from_the_environment() {
    let advise = |vars: &[(&str, &str)], args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cortex-dbtune"));
        c.arg("advise-indexes")
            .args(args)
            .env("DATABASE_URL", db_url())
            .env_remove("DBTUNE_PLAN_ROLE")
            .env_remove("DBTUNE_PLAN_USERS");
        for (k, v) in vars {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    // Another user's statements and no plan role: refused, naming the setting.
    let o = advise(&[("DBTUNE_PLAN_USERS", "cortex, someone_else")], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("DBTUNE_PLAN_ROLE") && err.contains("someone_else"),
        "{err}"
    );
    // The same from the flag.
    let o = advise(&[], &["--plan-user", "someone_else"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("DBTUNE_PLAN_ROLE"), "{}", stderr(&o));
    // A plan role that is not a role name, or a superuser, is refused.
    let o = advise(&[("DBTUNE_PLAN_ROLE", "x; RESET ROLE")], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("DBTUNE_PLAN_ROLE"), "{}", stderr(&o));
    let o = advise(&[("DBTUNE_PLAN_ROLE", "cortex")], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("superuser"), "{}", stderr(&o));
    // Nothing set: the advisor's own statements only, and it runs.
    let o = advise(&[], &["--top", "5", "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn settings_json_conf_alter_and_bad_url() {
    let base = [
        "settings",
        "--ram",
        "16GB",
        "--cpus",
        "8",
        "--storage",
        "ssd",
        "--db-type",
        "web",
        "--format",
    ];
    let v = json_of(&[&base[..], &["json"]].concat());
    let recs = v["recommendations"].as_array().unwrap();
    let sb = recs.iter().find(|r| r["name"] == "shared_buffers").unwrap();
    assert_eq!(sb["recommended"], "4GB");
    assert!(v["server"]["version_num"].as_i64().unwrap() >= 100_000);
    let o = run(&[&base[..], &["alter"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let alter = stdout(&o);
    assert!(
        alter.contains("ALTER SYSTEM SET shared_buffers = '4GB';\n"),
        "{alter}"
    );
    assert!(alter.contains("SELECT pg_reload_conf();\n"), "{alter}");
    assert!(!alter.contains("RESET"), "{alter}");
    let o = run(&[&base[..], &["conf"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("# --- memory ---\nshared_buffers = '4GB'"));
    fails_without_password(&["settings", "--ram", "1GB", "--cpus", "2"]);
}

#[test]
fn maintenance_json_and_bad_url() {
    let v = json_of(&["maintenance", "--format", "json"]);
    for k in ["unused_indexes", "duplicate_indexes", "tables"] {
        assert!(v[k].is_array(), "{k}: {v}");
    }
    fails_without_password(&["maintenance"]);
    fails_without_password(&["explain", "SELECT 1"]);
}

#[test]
fn check_system_shows_defaults_beside_given_values() {
    let v = json_of(&[
        "check-system",
        "--format",
        "json",
        "--pool-size",
        "5",
        "--max-overflow",
        "7",
        "--statement-timeout",
        "2min",
        "--worker-threads",
        "3",
    ]);
    let cpus = v["facts"]["cpus"].as_u64().unwrap();
    let d = v["defaults"].as_array().unwrap();
    let get = |n: &str| d.iter().find(|c| c["name"] == n).unwrap().clone();
    let pool = (cpus * 2 + 1).min(64).to_string();
    assert_eq!(get("pool_size")["current"], "5");
    assert_eq!(get("pool_size")["recommended"], pool.as_str());
    assert_eq!(get("max_overflow")["current"], "7");
    assert_eq!(get("max_overflow")["recommended"], pool.as_str());
    assert_eq!(get("statement_timeout_ms")["current"], "120000");
    assert_eq!(get("statement_timeout_ms")["recommended"], "30000");
    assert_eq!(get("worker_threads")["current"], "3");
    assert_eq!(
        get("worker_threads")["recommended"],
        cpus.to_string().as_str()
    );

    let o = run(&["check-system", "--statement-timeout", "30s"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("RECOMMENDED"), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("statement_timeout_ms"))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["statement_timeout_ms", "30000", "30000"]
    );
    let line = out.lines().find(|l| l.starts_with("max_overflow")).unwrap();
    assert_eq!(line.split_whitespace().nth(1), Some("-"));

    // A bare number is seconds, as everywhere in Cortex (it was milliseconds here).
    let v = json_of(&[
        "check-system",
        "--format",
        "json",
        "--statement-timeout",
        "2",
    ]);
    let d = v["defaults"].as_array().unwrap();
    let current = &d
        .iter()
        .find(|c| c["name"] == "statement_timeout_ms")
        .unwrap()["current"];
    assert_eq!(current, "2000", "{v}");

    let o = run(&["check-system", "--statement-timeout", "soon"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("soon"), "{}", stderr(&o));
}

#[test]
fn explain_reports_sql_lints() {
    let v = json_of(&[
        "explain",
        "--format",
        "json",
        "SELECT * FROM pg_class WHERE (SELECT count(*) FROM pg_namespace) > 0",
    ]);
    let rules: Vec<&str> = v["lints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["select_star", "count_for_existence"]);
    // The timeout takes the duration syntax; the old millisecond flag still works.
    for timeout in [
        ["--timeout", "1.5"],
        ["--timeout", "250ms"],
        ["--timeout-ms", "250"],
    ] {
        let mut args = vec!["explain", "SELECT 1"];
        args.extend(timeout);
        let o = run(&args);
        assert!(o.status.success(), "{timeout:?}: {}", stderr(&o));
    }
    let o = run(&["explain", "--timeout", "0", "SELECT 1"]);
    assert!(stderr(&o).contains("statement_timeout"), "{}", stderr(&o));
    let o = run(&["explain", "SELECT * FROM pg_class LIMIT 1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("select_star"), "{}", stdout(&o));
}

#[test]
fn rust_log_shows_the_library_logs_on_stderr_and_the_default_is_warn() {
    let explain = |rust_log: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cortex-dbtune"));
        c.args(["explain", "SELECT 1"])
            .env("DATABASE_URL", db_url());
        match rust_log {
            Some(v) => c.env("RUST_LOG", v),
            None => c.env_remove("RUST_LOG"),
        };
        let o = c.output().expect("binary runs");
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    let debug = explain(Some("cortex_dbtune=debug"));
    let err = stderr(&debug);
    assert!(err.contains("analyzed query plan"), "{err}");
    assert!(err.contains("dbtune.analyze"), "{err}");
    // Logs never mix into the command's output.
    assert!(!stdout(&debug).contains("analyzed query plan"));
    let quiet = explain(None);
    assert!(
        !stderr(&quiet).contains("analyzed query plan"),
        "{}",
        stderr(&quiet)
    );
    let bad = explain(Some("cortex_dbtune=loud"));
    let err = stderr(&bad);
    assert!(err.contains("RUST_LOG=\"cortex_dbtune=loud\""), "{err}");
}
