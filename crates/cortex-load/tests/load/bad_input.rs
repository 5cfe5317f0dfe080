//! Bad input sweep of the `cortex-load` binary: flags out of range or malformed, and
//! scenario files that are empty, truncated, nonsense, of the wrong shape, deeply
//! nested, binary or large and broken at the end. Each must exit with the documented
//! status (1: the run could not start; 2: a command-line usage error) and a message
//! naming the bad flag or value; never a panic.

use std::path::PathBuf;

use super::{cli, free_port, tmp};

/// The documented exit statuses.
const BAD_INPUT: i32 = 1;
const USAGE: i32 = 2;

/// Runs the binary; fails the case on a crash, a wrong status or a message that does
/// not name `needle`.
fn check(args: &[String], code: i32, needle: &str, failures: &mut Vec<String>) {
    let (got, _, err) = cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    if err.contains("panicked") || got == 101 || got == -1 {
        failures.push(format!("{args:?}: crashed (exit {got}): {err}"));
    } else if got != code {
        failures.push(format!("{args:?}: exit {got}, want {code}: {err}"));
    } else if !err.contains(needle) {
        failures.push(format!("{args:?}: stderr does not name {needle:?}: {err}"));
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

#[test]
fn out_of_range_flags_are_refused_by_name() {
    // Nothing listens: every case must be refused before connecting, except where
    // the case itself says otherwise.
    let url = format!("http://127.0.0.1:{}", free_port());
    let base = |rest: &[&str]| {
        let mut a = strings(&["--url", &url, "--quiet"]);
        a.extend(strings(rest));
        a
    };
    let closed = |rest: &[&str]| {
        let mut a = base(&["--users", "1", "--requests-per-user", "1"]);
        a.extend(strings(rest));
        a
    };
    let open = |rest: &[&str]| {
        let mut a = base(&["--users", "1", "--duration", "1s"]);
        a.extend(strings(rest));
        a
    };
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        // Users.
        (
            base(&["--users", "0", "--requests-per-user", "1"]),
            BAD_INPUT,
            "users: 0",
        ),
        (
            base(&["--users", "1000001", "--requests-per-user", "1"]),
            BAD_INPUT,
            "MAX_USERS",
        ),
        (
            base(&["--users", "99999999999", "--requests-per-user", "1"]),
            USAGE,
            "99999999999",
        ),
        (
            base(&["--users=-1", "--requests-per-user", "1"]),
            USAGE,
            "-1",
        ),
        (
            base(&["--users", "abc", "--requests-per-user", "1"]),
            USAGE,
            "abc",
        ),
        (
            base(&["--users", "1.5", "--requests-per-user", "1"]),
            USAGE,
            "1.5",
        ),
        (
            base(&["-c", "many", "--requests-per-user", "1"]),
            USAGE,
            "many",
        ),
        // Requests per user.
        (
            base(&["--users", "1", "--requests-per-user", "0"]),
            BAD_INPUT,
            "requests per user: 0",
        ),
        (
            base(&[
                "--users",
                "1",
                "--requests-per-user",
                "99999999999999999999",
            ]),
            USAGE,
            "99999999999999999999",
        ),
        (
            base(&["--users", "1", "--requests-per-user=-1"]),
            USAGE,
            "-1",
        ),
        (base(&["--users", "1"]), USAGE, "--requests-per-user"),
        // Rates.
        (open(&["--rate=-1"]), BAD_INPUT, "rate: -1"),
        (open(&["--rate", "0"]), BAD_INPUT, "rate: 0"),
        (open(&["--rate", "NaN"]), BAD_INPUT, "rate: NaN"),
        (open(&["--rate", "inf"]), BAD_INPUT, "rate: inf"),
        (open(&["--rate", "1e999"]), BAD_INPUT, "rate: inf"),
        (open(&["--rate", "1e-300"]), BAD_INPUT, "MAX_DURATION"),
        (open(&["--rate", "abc"]), USAGE, "abc"),
        // Durations.
        (
            base(&["--users", "1", "--duration", "0"]),
            BAD_INPUT,
            "duration",
        ),
        (
            base(&["--users", "1", "--duration", "367d"]),
            BAD_INPUT,
            "MAX_DURATION",
        ),
        (
            base(&["--users", "1", "--duration", "99999999999h"]),
            BAD_INPUT,
            "MAX_DURATION",
        ),
        (base(&["--users", "1", "--duration", "1e30"]), USAGE, "1e30"),
        (base(&["--users", "1", "--duration=-5s"]), USAGE, "-5s"),
        (
            base(&["--users", "1", "--duration", "10 parsecs"]),
            USAGE,
            "10 parsecs",
        ),
        (base(&["--users", "1", "--duration", "NaN"]), USAGE, "NaN"),
        (
            base(&[
                "--users",
                "3",
                "--requests-per-user",
                "1",
                "--ramp-up",
                "99999999999h",
            ]),
            BAD_INPUT,
            "ramp_up",
        ),
        (
            closed(&["--think-time", "99999999999h"]),
            BAD_INPUT,
            "think_time",
        ),
        (closed(&["--timeout", "0"]), BAD_INPUT, "timeout"),
        (closed(&["--timeout", "99999999999h"]), BAD_INPUT, "timeout"),
        (closed(&["--timeout", "inf"]), USAGE, "inf"),
        // Other flags.
        (closed(&["--bogus"]), USAGE, "--bogus"),
        (closed(&["--threads=-1"]), USAGE, "-1"),
        (closed(&["--threads", "abc"]), USAGE, "abc"),
        (closed(&["--header", "nocolon"]), BAD_INPUT, "nocolon"),
        (
            closed(&["--header", "bad header:v"]),
            BAD_INPUT,
            "bad header",
        ),
        (
            closed(&["--header", "k:a\u{1}b"]),
            BAD_INPUT,
            "header value",
        ),
        (closed(&["--body", "{"]), BAD_INPUT, "--body"),
        (closed(&["--method", "GE T"]), BAD_INPUT, "GE T"),
        (
            closed(&["--path", "http://elsewhere.example/x"]),
            BAD_INPUT,
            "elsewhere.example",
        ),
        (
            closed(&["--output", "/tmp/report.xml"]),
            BAD_INPUT,
            "report.xml",
        ),
        (
            strings(&["--url", "", "--users", "1", "--requests-per-user", "1"]),
            BAD_INPUT,
            "invalid URL",
        ),
        (
            strings(&[
                "--url",
                "http://[::1",
                "--users",
                "1",
                "--requests-per-user",
                "1",
            ]),
            BAD_INPUT,
            "http://[::1",
        ),
        (
            strings(&[
                "--url",
                "ftp://127.0.0.1:9",
                "--users",
                "1",
                "--requests-per-user",
                "1",
            ]),
            BAD_INPUT,
            "ftp://",
        ),
        (
            strings(&["--users", "1", "--requests-per-user", "1"]),
            USAGE,
            "--url",
        ),
    ];
    let mut failures = Vec::new();
    for (args, code, needle) in &cases {
        check(args, *code, needle, &mut failures);
    }
    eprintln!("cortex-load flag sweep: {} command lines", cases.len());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn broken_scenario_files_are_refused_naming_the_file_or_the_fault() {
    let large_then_broken = {
        let one = r#"{"name": "a", "endpoint": "/a", "method": "GET", "weight": 1}"#;
        let mut text = String::from("[");
        for _ in 0..100_000 {
            text.push_str(one);
            text.push_str(",\n");
        }
        text.push_str(r#"{"name": "b", "endpoint": "#);
        text
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "malformed scenario file"),
        ("blank", b"  \n".to_vec(), "malformed scenario file"),
        (
            "truncated",
            br#"[{"name":"a","endpoint":"/""#.to_vec(),
            "line 1 column",
        ),
        ("nonsense", b"nonsense".to_vec(), "malformed scenario file"),
        ("an object", b"{}".to_vec(), "expected a sequence"),
        ("no scenarios", b"[]".to_vec(), "no scenarios"),
        ("numbers", b"[1, 2]".to_vec(), "expected struct Scenario"),
        (
            "negative weight",
            br#"[{"name":"a","endpoint":"/","weight":-1}]"#.to_vec(),
            "weight -1",
        ),
        (
            "zero weight",
            br#"[{"name":"a","endpoint":"/","weight":0}]"#.to_vec(),
            "weight 0",
        ),
        (
            "infinite weight",
            br#"[{"name":"a","endpoint":"/","weight":1e999}]"#.to_vec(),
            "number out of range",
        ),
        (
            "wrong type",
            br#"[{"name":"a","endpoint":"/","method":5}]"#.to_vec(),
            "expected a string",
        ),
        (
            "unknown field",
            br#"[{"name":"a","endpoint":"/","unknown":1}]"#.to_vec(),
            "unknown field",
        ),
        (
            "bad header",
            br#"[{"name":"a","endpoint":"/","headers":{"bad header":"v"}}]"#.to_vec(),
            "bad header",
        ),
        (
            "bad method",
            br#"[{"name":"a","endpoint":"/","method":"GE T"}]"#.to_vec(),
            "GE T",
        ),
        (
            "another host",
            br#"[{"name":"a","endpoint":"http://elsewhere.example/"}]"#.to_vec(),
            "elsewhere.example",
        ),
        (
            "deeply nested",
            "[".repeat(100_000).into_bytes(),
            "malformed scenario file",
        ),
        (
            "binary",
            vec![0xff, 0xfe, 0x00, 0x01],
            "cannot read scenario file",
        ),
        (
            "large, broken at the end",
            large_then_broken.into_bytes(),
            "line 100001",
        ),
    ];
    let url = format!("http://127.0.0.1:{}", free_port());
    let mut failures = Vec::new();
    let mut tried = 0;
    for (i, (what, content, needle)) in cases.iter().enumerate() {
        let path = tmp(&format!("bad-input-scenarios-{i}.json"));
        std::fs::write(&path, content).unwrap();
        let args = strings(&[
            "--url",
            &url,
            "--users",
            "1",
            "--requests-per-user",
            "1",
            "--quiet",
            "--scenario-file",
            path.to_str().unwrap(),
        ]);
        let before = failures.len();
        check(&args, BAD_INPUT, needle, &mut failures);
        if failures.len() > before {
            failures.push(format!("  (that was: {what})"));
        }
        tried += 1;
        let _ = std::fs::remove_file(&path);
    }
    // Not a file at all: missing, or a directory.
    for (path, needle) in [
        (PathBuf::from("/nonexistent/scenarios.json"), "No such file"),
        (std::env::temp_dir(), "cannot read scenario file"),
    ] {
        let args = strings(&[
            "--url",
            &url,
            "--users",
            "1",
            "--requests-per-user",
            "1",
            "--scenario-file",
            path.to_str().unwrap(),
        ]);
        check(&args, BAD_INPUT, needle, &mut failures);
        tried += 1;
    }
    eprintln!("cortex-load scenario file sweep: {tried} files");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
