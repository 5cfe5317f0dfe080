//! Bad input sweep: out-of-range and malformed flags of every `cortex-dbtune` command
//! (the binary, on the test server), and EXPLAIN JSON that is truncated, nonsense, of
//! the wrong shape or deeply nested (the library parser: the binary takes no plan
//! file). Each is refused with the documented status and a message naming the flag or
//! value, never a panic.

use cortex_dbtune::Error;
use cortex_dbtune::plan::{Plan, Thresholds, analyze};

/// EXPLAIN JSON no parser may accept, each with what must be refused.
fn bad_plans() -> Vec<(&'static str, String)> {
    let nest = |depth: usize| {
        let mut plan = String::from(r#"{"Node Type": "Result", "Plan Rows": 1}"#);
        for _ in 0..depth {
            plan = format!(r#"{{"Node Type": "Limit", "Plan Rows": 1, "Plans": [{plan}]}}"#);
        }
        format!(r#"[{{"Plan": {plan}}}]"#)
    };
    vec![
        ("empty", String::new()),
        ("blank", "   \n".into()),
        (
            "truncated",
            r#"[{"Plan": {"Node Type": "Seq Scan", "#.into(),
        ),
        ("truncated array", "[".into()),
        ("nonsense", "QUERY PLAN\n----------\nSeq Scan on t".into()),
        ("empty array", "[]".into()),
        ("empty object", "{}".into()),
        ("array of empty object", "[{}]".into()),
        ("plan not an object", r#"[{"Plan": 5}]"#.into()),
        ("plan null", r#"[{"Plan": null}]"#.into()),
        (
            "node type a number",
            r#"[{"Plan": {"Node Type": 5}}]"#.into(),
        ),
        (
            "rows a string",
            r#"[{"Plan": {"Node Type": "Seq Scan", "Plan Rows": "many"}}]"#.into(),
        ),
        (
            "children not a list",
            r#"[{"Plan": {"Node Type": "Limit", "Plans": {"Node Type": "Result"}}}]"#.into(),
        ),
        ("a string", r#""[{\"Plan\": {}}]""#.into()),
        ("a number", "42".into()),
        ("nested arrays", "[".repeat(10_000)),
        ("deep plan", nest(5_000)),
        (
            "invalid escape",
            r#"[{"Plan": {"Node Type": "\q"}}]"#.into(),
        ),
        (
            "trailing garbage",
            r#"[{"Plan": {"Node Type": "Result"}}] x"#.into(),
        ),
    ]
}

#[test]
fn explain_json_that_is_not_a_plan_is_an_error_never_a_panic() {
    let mut failures = Vec::new();
    let cases = bad_plans();
    for (what, text) in &cases {
        let result = std::panic::catch_unwind(|| {
            let parsed = Plan::from_json(text);
            // Anything parsed is also analysed: a panic there counts too.
            if let Ok(plan) = &parsed {
                let _ = plan.summary();
                let _ = analyze(plan, &Thresholds::default());
            }
            parsed
        });
        match result {
            Err(_) => failures.push(format!("{what}: panicked")),
            Ok(Ok(_)) => failures.push(format!("{what}: accepted as a plan")),
            Ok(Err(Error::PlanJson(e))) if e.to_string().is_empty() => {
                failures.push(format!("{what}: an error without a message"));
            }
            Ok(Err(Error::PlanJson(_) | Error::EmptyPlan)) => {}
            Ok(Err(other)) => failures.push(format!("{what}: unexpected error {other:?}")),
        }
    }
    eprintln!("EXPLAIN JSON sweep: {} inputs", cases.len());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[cfg(feature = "cli")]
mod cli {
    use std::process::Command;

    const PG: &[&str] = &["--db-type", "web", "--storage", "ssd", "--pg-version", "15"];

    /// `pgtune` with the usual flags plus `extra`.
    fn pgtune(extra: &[&'static str]) -> Vec<&'static str> {
        let mut args = vec!["pgtune"];
        args.extend_from_slice(PG);
        args.extend_from_slice(extra);
        args
    }

    /// Each command line, and what the error must name. Status 2 for every one:
    /// clap's usage errors and the commands' errors both exit 2.
    fn cases() -> Vec<(Vec<&'static str>, &'static str)> {
        vec![
            // pgtune: memory.
            (pgtune(&["--ram", "0GB"]), "0 bytes"),
            (pgtune(&["--ram", "0"]), "\"0\""),
            (pgtune(&["--ram=-1GB"]), "-1GB"),
            (pgtune(&["--ram", "99999999999TB"]), "99999999999TB"),
            (
                pgtune(&["--ram", "18446744073709551615kB"]),
                "18446744073709551615kB",
            ),
            (pgtune(&["--ram", "100000TB"]), "999999GB"),
            (pgtune(&["--ram", "1.5GB"]), "1.5GB"),
            (pgtune(&["--ram", "lots"]), "lots"),
            (pgtune(&["--ram", ""]), "--ram"),
            // pgtune: CPUs and connections.
            (pgtune(&["--ram", "1GB", "--cpus", "0"]), "--cpus"),
            (pgtune(&["--ram", "1GB", "--cpus=-1"]), "-1"),
            (
                pgtune(&["--ram", "1GB", "--cpus", "99999999999"]),
                "99999999999",
            ),
            (
                pgtune(&["--ram", "1GB", "--cpus", "4294967295"]),
                "4294967295",
            ),
            (pgtune(&["--ram", "1GB", "--cpus", "NaN"]), "NaN"),
            (
                pgtune(&["--ram", "1GB", "--connections", "0"]),
                "--connections",
            ),
            (
                pgtune(&["--ram", "1GB", "--connections", "4294967295"]),
                "4294967295",
            ),
            (
                pgtune(&["--ram", "1GB", "--connections", "262144"]),
                "262144",
            ),
            // pgtune: kinds and versions.
            (
                vec![
                    "pgtune",
                    "--db-type",
                    "nosql",
                    "--ram",
                    "1GB",
                    "--storage",
                    "ssd",
                    "--pg-version",
                    "15",
                ],
                "nosql",
            ),
            (
                vec![
                    "pgtune",
                    "--db-type",
                    "web",
                    "--ram",
                    "1GB",
                    "--storage",
                    "tape",
                    "--pg-version",
                    "15",
                ],
                "tape",
            ),
            (
                vec![
                    "pgtune",
                    "--db-type",
                    "web",
                    "--ram",
                    "1GB",
                    "--storage",
                    "ssd",
                    "--pg-version",
                    "99",
                ],
                "99",
            ),
            (
                vec![
                    "pgtune",
                    "--db-type",
                    "web",
                    "--ram",
                    "1GB",
                    "--storage",
                    "ssd",
                    "--pg-version=-1",
                ],
                "-1",
            ),
            (
                vec![
                    "pgtune",
                    "--db-type",
                    "web",
                    "--ram",
                    "1GB",
                    "--storage",
                    "ssd",
                    "--pg-version",
                    "9.6",
                ],
                "9.6",
            ),
            (pgtune(&["--ram", "1GB", "--format", "yaml"]), "yaml"),
            (pgtune(&["--ram", "1GB", "--bogus"]), "--bogus"),
            // explain.
            (
                vec!["explain", "SELECT 1", "--timeout", "0"],
                "statement_timeout",
            ),
            (vec!["explain", "SELECT 1", "--timeout=-5s"], "-5s"),
            (
                vec!["explain", "SELECT 1", "--timeout", "10 parsecs"],
                "10 parsecs",
            ),
            (
                vec!["explain", "SELECT 1", "--timeout", "99999999999h"],
                "statement_timeout",
            ),
            (vec!["explain", "SELECT 1", "--timeout", "1e999"], "1e999"),
            (
                vec!["explain", "SELECT 1", "--timeout-ms", "0"],
                "--timeout-ms",
            ),
            (
                vec![
                    "explain",
                    "SELECT 1",
                    "--timeout-ms",
                    "99999999999999999999",
                ],
                "99999999999999999999",
            ),
            (vec!["explain", "SELECT 1", "--param", "json:{"], "json:{"),
            (
                vec!["explain", "SELECT 1", "--param", "int:99999999999999999999"],
                "int:99999999999999999999",
            ),
            (
                vec!["explain", "SELECT 1", "--param", "bool:maybe"],
                "bool:maybe",
            ),
            (vec!["explain", "SELECT 1", "--format", "xml"], "xml"),
            (
                vec![
                    "explain",
                    "SELECT 1",
                    "--url-env",
                    "DBTUNE_NOT_SET_ANYWHERE",
                ],
                "DBTUNE_NOT_SET_ANYWHERE",
            ),
            (vec!["explain"], "<SQL>"),
            // advise-indexes.
            (vec!["advise-indexes", "--min-cost-drop", "NaN"], "NaN"),
            (
                vec!["advise-indexes", "--min-cost-drop", "2"],
                "min_cost_drop",
            ),
            (
                vec!["advise-indexes", "--min-cost-drop=-1"],
                "min_cost_drop",
            ),
            (vec!["advise-indexes", "--min-cost-drop", "inf"], "inf"),
            (vec!["advise-indexes", "--top=-1"], "-1"),
            (
                vec!["advise-indexes", "--top", "99999999999"],
                "99999999999",
            ),
            (vec!["advise-indexes", "--plan-role", "a b"], "a b"),
            (vec!["advise-indexes", "--plan-user", "x'y"], "x'y"),
            // settings and the others.
            (vec!["settings", "--ram", "0GB"], "0 bytes"),
            (vec!["settings", "--cpus", "0"], "--cpus"),
            (vec!["settings", "--format", "csv"], "csv"),
            (vec!["maintenance", "--format", "csv"], "csv"),
            (vec!["check-system", "--pool-size=-1"], "-1"),
            (vec!["check-system", "--statement-timeout", "soon"], "soon"),
            (vec!["check-system", "--worker-threads", "many"], "many"),
            (vec!["--bogus"], "--bogus"),
            (vec!["nosuchcmd"], "nosuchcmd"),
        ]
    }

    #[test]
    fn out_of_range_flags_exit_2_naming_the_value_never_a_panic() {
        // Commands that reach a server use the test server's; none of these should.
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://cortex@127.0.0.1:5432/cortex".to_string());
        let mut failures = Vec::new();
        let cases = cases();
        for (args, needle) in &cases {
            let out = Command::new(env!("CARGO_BIN_EXE_cortex-dbtune"))
                .args(args)
                .env("DATABASE_URL", &url)
                .env_remove("RUST_LOG")
                .output()
                .expect("the binary runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let code = out.status.code();
            if stderr.contains("panicked") || code == Some(101) || code.is_none() {
                failures.push(format!("{args:?}: crashed ({:?}): {stderr}", out.status));
            } else if code != Some(2) {
                failures.push(format!(
                    "{args:?}: exit {code:?}, want 2; stdout {}; stderr {stderr}",
                    String::from_utf8_lossy(&out.stdout)
                ));
            } else if !stderr.contains(needle) {
                failures.push(format!(
                    "{args:?}: stderr does not name {needle:?}: {stderr}"
                ));
            }
        }
        eprintln!("cortex-dbtune CLI sweep: {} command lines", cases.len());
        assert!(
            failures.is_empty(),
            "{} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}
