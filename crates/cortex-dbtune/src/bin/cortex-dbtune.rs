//! `cortex-dbtune`: PostgreSQL settings from resources (as pgtune) and EXPLAIN analysis.

use std::process::ExitCode;

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use cortex_dbtune::pgtune::{self, DbType, PgtuneInput, Storage};
use cortex_dbtune::{AnalyzeOptions, Param};

/// PostgreSQL advice: pgtune's settings and EXPLAIN plan analysis.
#[derive(Debug, Parser)]
#[command(name = "cortex-dbtune", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Settings from machine resources, exactly as pgtune computes them.
    Pgtune(PgtuneArgs),
    /// EXPLAIN (ANALYZE, BUFFERS) a statement on a live server and report findings.
    /// The statement runs in a transaction that is rolled back.
    Explain(ExplainArgs),
    /// Check this host: OS, CPUs, memory, open-file limit, required environment
    /// variables (secrets masked), pool size against CPUs. Exits 1 when a check fails.
    CheckSystem(CheckSystemArgs),
}

#[derive(Debug, clap::Args)]
struct CheckSystemArgs {
    /// The connection pool size to check against the CPUs.
    #[arg(long)]
    pool_size: Option<u32>,
    /// An environment variable that must be set (repeatable).
    #[arg(long = "require")]
    require: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: ReportFormat,
}

/// Runs the checks; `Ok(true)` when none failed.
fn run_check_system(a: CheckSystemArgs) -> Result<bool, cortex_dbtune::Error> {
    use cortex_dbtune::system::{self, CheckOptions, CheckStatus};
    use std::fmt::Write as _;
    let facts = system::gather();
    let opts = CheckOptions {
        pool_size: a.pool_size,
        required_env: a.require,
    };
    let checks = system::run_checks(&facts, &opts, &|k| std::env::var(k).ok());
    let mut out = String::new();
    match a.format {
        ReportFormat::Json => {
            let v = serde_json::json!({ "facts": facts, "checks": checks });
            out = serde_json::to_string_pretty(&v).map_err(cortex_dbtune::Error::PlanJson)?;
            out.push('\n');
        }
        ReportFormat::Table => {
            let _ = writeln!(
                out,
                "{:<8} {:<22} {:<32} MESSAGE",
                "STATUS", "CHECK", "VALUE"
            );
            for c in &checks {
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
        }
    }
    emit(&out);
    Ok(checks.iter().all(|c| c.status != CheckStatus::Fail))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ReportFormat {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
struct ExplainArgs {
    /// postgres:// URL; defaults to $DATABASE_URL.
    #[arg(long)]
    url: Option<String>,
    /// The statement, with $1, $2, ... for parameters.
    sql: String,
    /// A parameter value, in order. Typed by its look (null, true/false, integer,
    /// number, else text) or explicitly: text:V, int:V, float:V, bool:V, json:V.
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<Param>,
    /// Statement timeout in ms.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: ReportFormat,
}

fn parse_param(s: &str) -> Result<Param, String> {
    let bad = |t: &str| format!("{s:?} is not a valid {t}");
    if let Some((kind, v)) = s.split_once(':') {
        match kind {
            "text" => return Ok(Param::Text(v.to_string())),
            "int" => return v.parse().map(Param::Int).map_err(|_| bad("integer")),
            "float" => return v.parse().map(Param::Float).map_err(|_| bad("number")),
            "bool" => return v.parse().map(Param::Bool).map_err(|_| bad("boolean")),
            "json" => {
                return serde_json::from_str(v)
                    .map(Param::Json)
                    .map_err(|e| format!("{s:?} is not valid JSON: {e}"));
            }
            _ => {}
        }
    }
    Ok(match s {
        "null" => Param::Null,
        "true" => Param::Bool(true),
        "false" => Param::Bool(false),
        _ => match (s.parse::<i64>(), s.parse::<f64>()) {
            (Ok(i), _) => Param::Int(i),
            (_, Ok(f)) if f.is_finite() => Param::Float(f),
            _ => Param::Text(s.to_string()),
        },
    })
}

fn run_explain(a: ExplainArgs) -> Result<(), cortex_dbtune::Error> {
    let url = match a.url.or_else(|| std::env::var("DATABASE_URL").ok()) {
        Some(u) => u,
        None => {
            return Err(cortex_dbtune::Error::InvalidOption {
                name: "url",
                reason: "give --url or set DATABASE_URL".to_string(),
            });
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| cortex_dbtune::Error::InvalidOption {
            name: "runtime",
            reason: e.to_string(),
        })?;
    let opts = AnalyzeOptions {
        statement_timeout: Duration::from_millis(a.timeout_ms),
        ..AnalyzeOptions::default()
    };
    let analysis = rt.block_on(async {
        // One connection through cortex-pool: bounded connect and acquire, and a
        // password in the URL never reaches an error message.
        let config = cortex_pool::DbConfig {
            url,
            pool_size: 1,
            max_overflow: 0,
            pool_timeout: Duration::from_secs(10),
            ..cortex_pool::DbConfig::default()
        };
        let pool = cortex_pool::DbPool::postgres(config).await?;
        let r = cortex_dbtune::analyze_query(pool.inner(), &a.sql, &a.params, &opts).await;
        pool.close().await;
        r
    })?;
    use std::fmt::Write as _;
    let mut out = String::new();
    match a.format {
        ReportFormat::Json => {
            out =
                serde_json::to_string_pretty(&analysis).map_err(cortex_dbtune::Error::PlanJson)?;
            out.push('\n');
        }
        ReportFormat::Table => {
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
        }
    }
    emit(&out);
    Ok(())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DbTypeArg {
    Web,
    Oltp,
    Dw,
    Desktop,
    Mixed,
}

impl From<DbTypeArg> for DbType {
    fn from(v: DbTypeArg) -> Self {
        match v {
            DbTypeArg::Web => DbType::Web,
            DbTypeArg::Oltp => DbType::Oltp,
            DbTypeArg::Dw => DbType::Dw,
            DbTypeArg::Desktop => DbType::Desktop,
            DbTypeArg::Mixed => DbType::Mixed,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StorageArg {
    Ssd,
    Hdd,
    San,
}

impl From<StorageArg> for Storage {
    fn from(v: StorageArg) -> Self {
        match v {
            StorageArg::Ssd => Storage::Ssd,
            StorageArg::Hdd => Storage::Hdd,
            StorageArg::San => Storage::San,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ConfFormat {
    Conf,
    Json,
}

#[derive(Debug, clap::Args)]
struct PgtuneArgs {
    /// The workload.
    #[arg(long, value_enum)]
    db_type: DbTypeArg,
    /// Total RAM, e.g. 16GB, 512MB, 1TB.
    #[arg(long, value_parser = parse_ram)]
    ram: u64,
    /// CPU count; without it the parallel settings are left out.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    cpus: Option<u32>,
    /// max_connections; without it pgtune's default for the workload.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    connections: Option<u32>,
    /// The data disks' kind.
    #[arg(long, value_enum)]
    storage: StorageArg,
    /// PostgreSQL major version (10..=18).
    #[arg(long)]
    pg_version: u32,
    /// Output format.
    #[arg(long, value_enum, default_value = "conf")]
    format: ConfFormat,
}

/// Writes to stdout, ignoring a closed pipe (`| head`), where `print!` would panic.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn parse_ram(s: &str) -> Result<u64, String> {
    pgtune::parse_memory(s).map_err(|e| e.to_string())
}

fn run_pgtune(a: PgtuneArgs) -> Result<(), cortex_dbtune::Error> {
    let input = PgtuneInput {
        db_type: a.db_type.into(),
        total_memory_bytes: a.ram,
        cpus: a.cpus,
        connections: a.connections,
        storage: a.storage.into(),
        pg_version: a.pg_version,
    };
    let settings = pgtune::pgtune(&input)?;
    for w in pgtune::pgtune_warnings(&input) {
        eprintln!("warning: {w}");
    }
    match a.format {
        ConfFormat::Conf => emit(&pgtune::to_conf(&settings)),
        ConfFormat::Json => emit(&format!("{}\n", pgtune::to_json(&settings))),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pgtune(a) => run_pgtune(a).map(|()| true),
        Command::Explain(a) => run_explain(a).map(|()| true),
        Command::CheckSystem(a) => run_check_system(a),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
