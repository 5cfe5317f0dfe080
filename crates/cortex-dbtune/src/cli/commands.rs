//! What each subcommand does: connect when it needs a server, call the library, print.

use std::time::Duration;

use super::args::{
    AdviseArgs, CheckSystemArgs, ConfFormat, ExplainArgs, FailOn, MaintenanceArgs, PgtuneArgs,
    ReportFormat, SettingsArgs, SettingsFormat,
};
use super::output::{self, emit, to_json};
use crate::pgtune::{self, DbType, PgtuneInput, PgtuneOptions, Storage};
use crate::{AnalyzeOptions, Error};

/// The process environment, as the commands read it.
fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// A runtime on this thread: each command makes a few sequential calls.
fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

/// Connects through cortex-pool: bounded connect and acquire, and a password in the
/// URL never reaches an error message.
async fn connect(url: String, size: u32) -> Result<cortex_pool::DbPool<sqlx::Postgres>, Error> {
    // Shown in errors with the password masked.
    let shown = cortex_support::redact::redact_url(&url);
    let config = cortex_pool::DbConfig {
        url,
        pool_size: size,
        max_overflow: 0,
        pool_timeout: Duration::from_secs(10),
        ..cortex_pool::DbConfig::default()
    };
    cortex_pool::DbPool::postgres(config)
        .await
        .map_err(|source| Error::Connect { url: shown, source })
}

/// The plan role and users: the flags where given, else the environment's.
fn advise_options(
    role: Option<String>,
    users: Vec<String>,
    env: crate::advisor::AdviseOptions,
) -> crate::advisor::AdviseOptions {
    crate::advisor::AdviseOptions {
        plan_role: role.or(env.plan_role),
        plan_users: if users.is_empty() {
            env.plan_users
        } else {
            users
        },
        ..env
    }
}

/// The `--fail-on` level a severity reaches, if any (info never does).
fn fail_level(s: crate::plan::Severity) -> Option<FailOn> {
    match s {
        crate::plan::Severity::Critical => Some(FailOn::Critical),
        crate::plan::Severity::Warning => Some(FailOn::Warning),
        _ => None,
    }
}

/// `true` when no finding reaches `fail_on` (always without it); each finding that
/// does is named on stderr, so the exit status comes with its reason.
fn passes(
    fail_on: Option<FailOn>,
    findings: impl IntoIterator<Item = (crate::plan::Severity, String)>,
) -> bool {
    let Some(fail_on) = fail_on else {
        return true;
    };
    let mut pass = true;
    for (severity, what) in findings {
        if fail_level(severity).is_some_and(|l| l >= fail_on) {
            eprintln!("finding: {severity}: {what}");
            pass = false;
        }
    }
    pass
}

/// Runs the advisor and prints its suggestions; `Ok(true)` when none is at or above
/// `--fail-on` (always without it).
pub(crate) fn advise(a: AdviseArgs) -> Result<bool, Error> {
    use crate::advisor::{AdviseOptions, QuerySource, advise_indexes};
    let url = a.conn.url(&process_env)?;
    let opts = advise_options(a.plan_role, a.plan_users, AdviseOptions::from_env()?);
    let opts = AdviseOptions {
        use_pg_stat_statements: !a.no_pg_stat_statements,
        use_hypopg: !a.no_hypopg,
        top_statements: a.top,
        min_cost_drop: a.min_cost_drop,
        ..opts
    };
    let queries: Vec<QuerySource> = a.queries.into_iter().map(QuerySource::new).collect();
    let advice = runtime()?.block_on(async {
        // Two connections: the advisor checks a statement on one while it may hold
        // another for pg_stat_statements.
        let pool = connect(url, 2).await?;
        let r = advise_indexes(pool.inner(), &queries, &opts).await;
        pool.close().await;
        r
    })?;
    let out = match a.format {
        ReportFormat::Json => to_json(&advice)?,
        ReportFormat::Table => output::advice_table(&advice),
    };
    emit(&out);
    Ok(passes(
        a.fail_on,
        advice
            .iter()
            .map(|ad| (ad.severity(), ad.create_sql.clone())),
    ))
}

/// The pgtune input of `settings`: the host's resources (or the flags'), the server's
/// version, the workload and storage given.
fn settings_input(a: &SettingsArgs, major_version: u32) -> Result<PgtuneInput, Error> {
    let mut input = match (a.ram, a.cpus) {
        // Nothing to read from the host when both are given.
        (Some(ram), Some(cpus)) => PgtuneInput {
            db_type: DbType::Web,
            total_memory_bytes: ram,
            cpus: Some(cpus),
            connections: None,
            storage: Storage::Ssd,
            pg_version: major_version.clamp(pgtune::MIN_PG_VERSION, pgtune::MAX_PG_VERSION),
        },
        _ => crate::settings::host_input(major_version)?,
    };
    if let Some(ram) = a.ram {
        input.total_memory_bytes = ram;
    }
    if let Some(cpus) = a.cpus {
        input.cpus = Some(cpus);
    }
    input.connections = a.connections;
    input.db_type = a.db_type.into();
    input.storage = a.storage.into();
    Ok(input)
}

pub(crate) fn settings(a: SettingsArgs) -> Result<(), Error> {
    use crate::settings::{alter_system_statements, compare, read_live, to_postgresql_conf};
    let url = a.conn.url(&process_env)?;
    let live = runtime()?.block_on(async {
        let pool = connect(url, 1).await?;
        let r = read_live(pool.inner()).await;
        pool.close().await;
        r
    })?;
    let input = settings_input(&a, live.major_version())?;
    let report = compare(&live, &input)?;
    let out = match a.format {
        SettingsFormat::Json => to_json(&report)?,
        SettingsFormat::Conf => to_postgresql_conf(&report.recommendations)?,
        SettingsFormat::Alter => {
            let mut s = alter_system_statements(&report.recommendations)?.join("\n");
            s.push('\n');
            s
        }
        SettingsFormat::Table => output::settings_table(&report),
    };
    emit(&out);
    Ok(())
}

/// Reads and prints the maintenance report; `Ok(true)` when no finding is at or above
/// `--fail-on` (always without it).
pub(crate) fn maintenance(a: MaintenanceArgs) -> Result<bool, Error> {
    let url = a.conn.url(&process_env)?;
    let report = runtime()?.block_on(async {
        let pool = connect(url, 1).await?;
        let r = crate::maintenance::maintenance_report(pool.inner()).await;
        pool.close().await;
        r
    })?;
    let out = match a.format {
        ReportFormat::Json => to_json(&report)?,
        ReportFormat::Table => output::maintenance_table(&report),
    };
    emit(&out);
    Ok(passes(
        a.fail_on,
        report
            .findings()
            .into_iter()
            .map(|f| (f.severity, format!("{} {}", f.kind, f.object))),
    ))
}

/// Runs the checks; `Ok(true)` when none is at or above `--fail-on`.
pub(crate) fn check_system(a: CheckSystemArgs) -> Result<bool, Error> {
    use crate::system::{self, CheckOptions, CheckStatus};
    let facts = system::gather();
    let opts = CheckOptions {
        pool_size: a.pool_size,
        required_env: a.require,
        max_overflow: a.max_overflow,
        statement_timeout_ms: a
            .statement_timeout
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        worker_threads: a.worker_threads,
    };
    let checks = system::run_checks(&facts, &opts, &process_env);
    let defaults = system::compare_defaults(facts.cpus, &opts);
    let out = match a.format {
        ReportFormat::Json => {
            to_json(&serde_json::json!({ "facts": facts, "checks": checks, "defaults": defaults }))?
        }
        ReportFormat::Table => output::checks_table(&checks, &defaults),
    };
    emit(&out);
    let level = |s: CheckStatus| match s {
        CheckStatus::Fail => Some(FailOn::Critical),
        CheckStatus::Warning => Some(FailOn::Warning),
        _ => None,
    };
    Ok(!checks
        .iter()
        .any(|c| level(c.status).is_some_and(|l| l >= a.fail_on)))
}

/// Runs EXPLAIN and prints the findings; `Ok(true)` when none is at or above
/// `--fail-on` (always without it).
pub(crate) fn explain(a: ExplainArgs) -> Result<bool, Error> {
    let url = a.conn.url(&process_env)?;
    if a.timeout_ms.is_some() {
        eprintln!("warning: --timeout-ms is deprecated; use --timeout (e.g. 500ms, 30s)");
    }
    let opts = AnalyzeOptions {
        statement_timeout: a.timeout_ms.map_or(a.timeout, Duration::from_millis),
        ..AnalyzeOptions::default()
    };
    let analysis = runtime()?.block_on(async {
        let pool = connect(url, 1).await?;
        let r = crate::analyze_query(pool.inner(), &a.sql, &a.params, &opts).await;
        pool.close().await;
        r
    })?;
    let out = match a.format {
        ReportFormat::Json => to_json(&analysis)?,
        ReportFormat::Table => output::analysis_table(&analysis),
    };
    emit(&out);
    let Some(fail_on) = a.fail_on else {
        return Ok(true);
    };
    Ok(!analysis
        .findings
        .iter()
        .any(|f| fail_level(f.severity).is_some_and(|l| l >= fail_on)))
}

pub(crate) fn pgtune(a: PgtuneArgs) -> Result<(), Error> {
    let input = PgtuneInput {
        db_type: a.db_type.into(),
        total_memory_bytes: a.ram,
        cpus: a.cpus,
        connections: a.connections,
        storage: a.storage.into(),
        pg_version: a.pg_version,
    };
    let opts = PgtuneOptions::new(a.os.into(), a.algorithm.into()).with_db_size(a.db_size.into());
    let settings = pgtune::pgtune_with(&input, &opts)?;
    for w in pgtune::pgtune_warnings_with(&input, &opts) {
        eprintln!("warning: {w}");
    }
    // pgtune's input comments, then a blank line, then the settings.
    let header = |marker: &str| -> String {
        let mut h: String = pgtune::header_lines(&input, &opts)
            .iter()
            .map(|l| format!("{marker} {l}\n"))
            .collect();
        h.push('\n');
        h
    };
    match a.format {
        ConfFormat::Conf => emit(&format!("{}{}", header("#"), pgtune::to_conf(&settings))),
        ConfFormat::Alter => emit(&format!(
            "{}{}",
            header("--"),
            pgtune::to_alter_system(&settings)?
        )),
        ConfFormat::Json => emit(&format!("{}\n", pgtune::to_json(&settings))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{ConnArgs, DbTypeArg, StorageArg};

    #[test]
    fn flags_win_over_the_environment() {
        use crate::advisor::AdviseOptions;
        let env = AdviseOptions {
            plan_role: Some("planner".into()),
            plan_users: vec!["app".into(), "reporting".into()],
            ..AdviseOptions::default()
        };
        let o = advise_options(None, Vec::new(), env.clone());
        assert_eq!(o, env);
        let o = advise_options(Some("r".into()), vec!["x".into()], env);
        assert_eq!(o.plan_role.as_deref(), Some("r"));
        assert_eq!(o.plan_users, ["x"]);
    }

    #[test]
    fn settings_input_takes_the_flags_over_the_host() {
        let a = SettingsArgs {
            conn: ConnArgs {
                url_env: "DATABASE_URL".into(),
                url: None,
            },
            ram: Some(8 << 30),
            cpus: Some(4),
            connections: Some(50),
            storage: StorageArg::Hdd,
            db_type: DbTypeArg::Oltp,
            format: SettingsFormat::Table,
        };
        let input = settings_input(&a, 99).unwrap();
        assert_eq!(input.total_memory_bytes, 8 << 30);
        assert_eq!(input.cpus, Some(4));
        assert_eq!(input.connections, Some(50));
        assert_eq!(input.db_type, DbType::Oltp);
        assert_eq!(input.storage, Storage::Hdd);
        // A server newer than pgtune knows is tuned as the newest it knows.
        assert_eq!(input.pg_version, pgtune::MAX_PG_VERSION);
    }
}
