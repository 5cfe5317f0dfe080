//! What the commands print: plain-text tables and JSON, built as strings so they can be
//! checked without a terminal.

use std::fmt::Write as _;

use crate::Analysis;
use crate::advisor::IndexAdvice;
use crate::maintenance::MaintenanceReport;
use crate::settings::SettingsReport;
use crate::system::{CheckStatus, DefaultComparison, SystemCheck};

/// Writes to stdout, ignoring a closed pipe (`| head`), where `print!` would panic.
pub(crate) fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Pretty JSON with a final newline.
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<String, crate::Error> {
    let mut out = serde_json::to_string_pretty(v).map_err(crate::Error::Serialize)?;
    out.push('\n');
    Ok(out)
}

/// `advise-indexes` as a table: each statement, then where it came from and its cost.
pub(crate) fn advice_table(advice: &[IndexAdvice]) -> String {
    let mut out = format!("{} index suggestion(s)\n", advice.len());
    for ad in advice {
        let cost = match (ad.cost_before, ad.cost_after) {
            (Some(b), Some(c)) => format!("cost {b:.2} -> {c:.2}"),
            _ => "cost not verified".to_string(),
        };
        let _ = writeln!(out, "{};", ad.create_sql);
        let _ = writeln!(
            out,
            "    {} ({cost}); from: {}",
            ad.note,
            ad.source.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    out
}

/// `settings` as a table: the server's figures, one line per setting (`*` where the
/// recommendation differs), then the observations.
pub(crate) fn settings_table(report: &SettingsReport) -> String {
    let st = &report.server;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "PostgreSQL {} | connections {}/{} | cache hit {} | temp files {} ({} bytes) | \
         checkpoints requested {} / timed {}",
        st.version,
        st.connections_in_use,
        st.max_connections,
        st.cache_hit_ratio
            .map_or("n/a".to_string(), |r| format!("{:.2}%", r * 100.0)),
        st.temp_files,
        st.temp_bytes,
        st.checkpoints_requested,
        st.checkpoints_timed
    );
    let _ = writeln!(
        out,
        "{:<36} {:<14} {:<14} REASON",
        "SETTING", "CURRENT", "RECOMMENDED"
    );
    for r in &report.recommendations {
        let mark = if r.differs() { "*" } else { " " };
        let restart = if r.needs_restart() { " (restart)" } else { "" };
        let _ = writeln!(
            out,
            "{mark}{:<35} {:<14} {:<14} {}{restart}",
            r.name,
            r.current.as_deref().unwrap_or("-"),
            r.recommended,
            r.reason
        );
    }
    for o in &report.observations {
        let _ = writeln!(out, "note: {o}");
    }
    out
}

/// `maintenance` as a table: unused and duplicate indexes, temporary tables, and the
/// health of every table, each with its SQL.
pub(crate) fn maintenance_table(report: &MaintenanceReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "unused indexes: {}", report.unused_indexes.len());
    for u in &report.unused_indexes {
        let _ = writeln!(out, "  {} bytes  {}", u.size_bytes, u.sql);
    }
    let _ = writeln!(out, "duplicate indexes: {}", report.duplicate_indexes.len());
    for d in &report.duplicate_indexes {
        let _ = writeln!(out, "  keep {:?}: {}", d.keep, d.definition);
        for q in &d.sql {
            let _ = writeln!(out, "    {q}");
        }
    }
    let orphans: Vec<_> = report
        .temp_tables
        .iter()
        .filter(|t| t.sql.is_some())
        .collect();
    let _ = writeln!(
        out,
        "temporary tables: {} ({} orphaned)",
        report.temp_tables.len(),
        orphans.len()
    );
    for t in &report.temp_tables {
        let _ = writeln!(
            out,
            "  {:<46} {:>10} bytes  owner {:?}{}",
            format!("{}.{}", t.schema, t.table),
            t.size_bytes,
            t.owner,
            t.sql
                .as_deref()
                .map(|q| format!("\n    {q}"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        out,
        "tables: {:<40} {:>10} {:>10} {:>6} {:>6}  LAST VACUUM / ANALYZE",
        "", "LIVE", "DEAD", "DEAD%", "BLOAT%"
    );
    for t in &report.tables {
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.0}", v * 100.0));
        let last = |a: &Option<String>, b: &Option<String>| {
            a.clone()
                .max(b.clone())
                .unwrap_or_else(|| "never".to_string())
        };
        let _ = writeln!(
            out,
            "  {:<46} {:>10} {:>10} {:>6} {:>6}  {} / {}{}",
            format!("{}.{}", t.schema, t.table),
            t.live_tuples,
            t.dead_tuples,
            pct(t.dead_ratio),
            pct(t.estimated_bloat_ratio),
            last(&t.last_vacuum, &t.last_autovacuum),
            last(&t.last_analyze, &t.last_autoanalyze),
            if t.needs_vacuum {
                format!("\n    {}", t.sql)
            } else {
                String::new()
            }
        );
    }
    out
}

/// `check-system` as a table: the checks, then the defaults beside the values given.
pub(crate) fn checks_table(checks: &[SystemCheck], defaults: &[DefaultComparison]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:<22} {:<32} MESSAGE",
        "STATUS", "CHECK", "VALUE"
    );
    for c in checks {
        let status = match c.status {
            CheckStatus::Ok => "ok",
            CheckStatus::Warning => "warning",
            CheckStatus::Fail => "FAIL",
        };
        let _ = writeln!(
            out,
            "{status:<8} {:<22} {:<32} {}",
            c.name, c.value, c.message
        );
    }
    let _ = writeln!(
        out,
        "\n{:<22} {:>12} {:>12}",
        "DEFAULT", "CURRENT", "RECOMMENDED"
    );
    for d in defaults {
        let _ = writeln!(
            out,
            "{:<22} {:>12} {:>12}",
            d.name,
            d.current.as_deref().unwrap_or("-"),
            d.recommended
        );
    }
    out
}

/// `explain` as a table: the times, each finding with its fix, then the text lints.
pub(crate) fn analysis_table(analysis: &Analysis) -> String {
    let mut out = String::new();
    let p = &analysis.plan;
    let _ = writeln!(
        out,
        "planning {:.3} ms, execution {:.3} ms, {} finding(s)",
        p.planning_time_ms.unwrap_or(0.0),
        p.execution_time_ms.unwrap_or(0.0),
        analysis.findings.len()
    );
    if !analysis.findings.is_empty() {
        let _ = writeln!(
            out,
            "{:<9} {:<23} {:<10} {:<18} {:>14} {:>12}",
            "SEVERITY", "RULE", "NODE", "NODE TYPE", "MEASURED", "THRESHOLD"
        );
    }
    for f in &analysis.findings {
        let _ = writeln!(
            out,
            "{:<9} {:<23} {:<10} {:<18} {:>14.2} {:>12.2}",
            f.severity.to_string(),
            f.rule,
            f.node_path,
            f.node_type,
            f.measured,
            f.threshold
        );
        let _ = writeln!(out, "          {}", f.message);
        let _ = writeln!(out, "          fix: {}", f.suggestion);
    }
    for l in &analysis.lints {
        let _ = writeln!(
            out,
            "{:<9} {:<23} {}",
            l.severity.to_string(),
            l.rule,
            l.message
        );
        let _ = writeln!(out, "          fix: {}", l.suggestion);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maintenance::{TableHealth, TempOwner, TempTable, UnusedIndex};
    use crate::plan::{Plan, Thresholds, analyze, lint_sql};
    use crate::system::{CheckOptions, SystemFacts, compare_defaults, run_checks};

    #[test]
    fn analysis_lists_findings_with_fixes_and_lints() {
        let plan = Plan::from_json(
            r#"{"Plan": {"Node Type": "Seq Scan", "Relation Name": "orders", "Total Cost": 1.0,
                "Plan Rows": 1, "Plan Width": 8, "Actual Loops": 1, "Actual Rows": 1,
                "Actual Total Time": 2.0}, "Planning Time": 0.5, "Execution Time": 2.0}"#,
        )
        .unwrap();
        let findings = analyze(&plan, &Thresholds::default());
        let text = analysis_table(&Analysis {
            plan,
            findings,
            lints: lint_sql("SELECT * FROM orders"),
        });
        assert!(
            text.starts_with("planning 0.500 ms, execution 2.000 ms,"),
            "{text}"
        );
        assert!(text.contains("SEVERITY"), "{text}");
        assert!(text.contains("seq_scan"), "{text}");
        assert!(text.contains("fix: consider an index on orders"), "{text}");
        assert!(text.contains("select_star"), "{text}");
    }

    #[test]
    fn checks_show_failures_and_defaults() {
        let facts = SystemFacts {
            cpus: 2,
            ..SystemFacts::default()
        };
        let opts = CheckOptions {
            required_env: vec!["MUST_BE_SET".into()],
            pool_size: Some(5),
            ..CheckOptions::default()
        };
        let checks = run_checks(&facts, &opts, &|_| None);
        let text = checks_table(&checks, &compare_defaults(2, &opts));
        let line = text
            .lines()
            .find(|l| l.contains("MUST_BE_SET"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(line.starts_with("FAIL"), "{line}");
        let pool = text.lines().find(|l| l.starts_with("pool_size")).unwrap();
        assert_eq!(
            pool.split_whitespace().collect::<Vec<_>>(),
            ["pool_size", "5", "5"]
        );
    }

    #[test]
    fn advice_shows_the_statement_and_whether_it_was_verified() {
        let advice = IndexAdvice {
            schema: None,
            table: "orders".into(),
            keys: Vec::new(),
            columns: vec!["customer_id".into()],
            create_sql: r#"CREATE INDEX CONCURRENTLY ON "orders" ("customer_id")"#.into(),
            cost_before: Some(100.0),
            cost_after: Some(8.5),
            verified: true,
            source: "SELECT *\n  FROM orders".into(),
            note: "verified".into(),
        };
        let text = advice_table(std::slice::from_ref(&advice));
        assert!(text.starts_with("1 index suggestion(s)\n"), "{text}");
        assert!(text.contains(r#"("customer_id");"#), "{text}");
        assert!(
            text.contains("(cost 100.00 -> 8.50); from: SELECT * FROM orders"),
            "{text}"
        );
        let unverified = IndexAdvice {
            cost_after: None,
            ..advice
        };
        assert!(advice_table(&[unverified]).contains("cost not verified"));
    }

    #[test]
    fn maintenance_shows_sql_where_something_is_to_do() {
        let report = MaintenanceReport {
            unused_indexes: vec![UnusedIndex {
                schema: "s".into(),
                table: "t".into(),
                index: "i".into(),
                size_bytes: 8192,
                sql: r#"DROP INDEX CONCURRENTLY "s"."i";"#.into(),
            }],
            duplicate_indexes: Vec::new(),
            tables: vec![TableHealth {
                schema: "s".into(),
                table: "t".into(),
                live_tuples: 10,
                dead_tuples: 5000,
                dead_ratio: Some(0.5),
                estimated_bloat_ratio: None,
                last_vacuum: None,
                last_autovacuum: Some("2026-01-01".into()),
                last_analyze: None,
                last_autoanalyze: None,
                needs_vacuum: true,
                sql: r#"VACUUM (ANALYZE) "s"."t";"#.into(),
            }],
            temp_tables: vec![TempTable {
                schema: "pg_temp_9".into(),
                table: "x".into(),
                backend_id: 9,
                size_bytes: 0,
                owner: TempOwner::Orphaned,
                sql: Some(r#"DROP TABLE "pg_temp_9"."x";"#.into()),
            }],
        };
        let text = maintenance_table(&report);
        assert!(
            text.contains("unused indexes: 1\n  8192 bytes  DROP INDEX"),
            "{text}"
        );
        assert!(text.contains("temporary tables: 1 (1 orphaned)"), "{text}");
        assert!(
            text.contains("\n    DROP TABLE \"pg_temp_9\".\"x\";"),
            "{text}"
        );
        assert!(
            text.contains("2026-01-01 / never\n    VACUUM (ANALYZE)"),
            "{text}"
        );
        assert!(text.contains(" 50 "), "dead share in percent: {text}");
    }

    #[test]
    fn json_ends_with_a_newline() {
        assert_eq!(to_json(&[1, 2]).unwrap(), "[\n  1,\n  2\n]\n");
    }
}
