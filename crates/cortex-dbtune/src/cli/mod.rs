//! The `cortex-dbtune` command line (feature `cli`): argument parsing, the commands and
//! their output. The binary is [`main`]; the commands are listed in the
//! [crate docs](crate#cli).
//!
//! ```no_run
//! // The whole binary:
//! fn main() -> std::process::ExitCode {
//!     cortex_dbtune::cli::main()
//! }
//! ```

mod args;
mod commands;
mod output;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

/// Exit code: done.
pub const EXIT_OK: u8 = 0;
/// Exit code: a runtime error (cannot connect, the server refused, I/O).
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code: a usage error (a bad flag or value, a required setting missing).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: a finding at or above `--fail-on`.
pub const EXIT_FINDINGS: u8 = 3;

/// The exit code of an error: usage for what the caller can fix in the command line or
/// the environment, runtime for the rest.
fn exit_code(e: &crate::Error) -> u8 {
    use crate::Error::*;
    match e {
        InvalidMemory { .. }
        | MemoryTooSmall { .. }
        | MemoryNotWholeKb { .. }
        | InvalidCpus { .. }
        | InvalidConnections { .. }
        | UnsupportedVersion { .. }
        | InvalidChoice { .. }
        | InvalidOption { .. }
        | PlanRoleRequired { .. }
        | InvalidConfig { .. } => EXIT_USAGE,
        _ => EXIT_RUNTIME,
    }
}

/// The error and each of its sources, one a line: a message never repeats its
/// source's text, so the whole chain is printed.
fn error_report(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = format!("error: {e}");
    for s in cortex_support::error_sources(e).skip(1) {
        out.push_str(&format!("\n  caused by: {s}"));
    }
    out
}

/// Runs the command line of this process. Exit codes: [`EXIT_OK`] on success,
/// [`EXIT_RUNTIME`] on a runtime error (cannot connect, the server refused a
/// statement), [`EXIT_USAGE`] on a usage error (clap's, or a value the command refuses),
/// [`EXIT_FINDINGS`] when `--fail-on` (explain, check-system, maintenance,
/// advise-indexes) met a finding at or above its level. Errors are printed to stderr.
///
/// Logs of the library (warnings by default, more with `RUST_LOG`, e.g.
/// `RUST_LOG=cortex_dbtune=debug`) go to stderr, so stdout stays the command's output.
pub fn main() -> ExitCode {
    init_logging();
    run(std::env::args_os())
}

/// A fmt subscriber on stderr honouring `RUST_LOG`, `warn` when it is unset. A
/// `RUST_LOG` that does not parse is named on stderr and `warn` is used; a subscriber
/// installed already (by an embedding program) is kept.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) => EnvFilter::try_new(&v).unwrap_or_else(|e| {
            eprintln!("warning: RUST_LOG={v:?} is not a valid filter ({e}); using warn");
            EnvFilter::new("warn")
        }),
        Err(_) => EnvFilter::new("warn"),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs a command line given as `args` (the first is the program name), as [`main`].
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; the rest is usage.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    let result = match cli.command {
        Command::Pgtune(a) => commands::pgtune(a).map(|()| true),
        Command::Explain(a) => commands::explain(a),
        Command::CheckSystem(a) => commands::check_system(a),
        Command::AdviseIndexes(a) => commands::advise(a),
        Command::Settings(a) => commands::settings(a).map(|()| true),
        Command::Maintenance(a) => commands::maintenance(a),
    };
    match result {
        Ok(true) => ExitCode::from(EXIT_OK),
        Ok(false) => ExitCode::from(EXIT_FINDINGS),
        Err(e) => {
            eprintln!("{}", error_report(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_prints_every_source() {
        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let text = json.to_string();
        let report = error_report(&crate::Error::PlanJson(json));
        assert_eq!(
            report,
            format!("error: invalid EXPLAIN JSON\n  caused by: {text}")
        );
    }
}
