//! `cortex-load`: an HTTP load generator (closed or open loop) over keep-alive
//! HTTP/1.1. Exit status: 0 when the run completed (failed requests are in the
//! report), 1 when it could not run (bad input, unreachable target, output error),
//! 2 for command-line usage errors.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Parser};
use cortex_load::{LoadConfig, LoadTest, Scenario};
use cortex_support::duration::parse_duration;

/// HTTP load generator: simulated users with keep-alive connections, closed loop or
/// open loop at a fixed rate (latency from the intended send time, as wrk2).
///
/// Durations (--duration, --ramp-up, --think-time, --timeout) take a number with a unit (500ms, 30s,
/// 2m, 1h) or a plain number of seconds.
#[derive(Debug, Parser)]
#[command(name = "cortex-load", version)]
#[command(group(ArgGroup::new("amount").required(true).args(["requests_per_user", "duration"])))]
struct Args {
    /// Target, `http://host[:port][/base]`, or `https://...` when built with the `tls`
    /// feature. Requests go only to this host and port.
    #[arg(long)]
    url: String,
    /// JSON array of scenarios: {"name","endpoint","method","payload","headers","weight"}.
    #[arg(long, conflicts_with_all = ["path", "method", "body", "header"])]
    scenario_file: Option<PathBuf>,
    /// Path of the single scenario (default: the URL's path).
    #[arg(long)]
    path: Option<String>,
    /// Method of the single scenario.
    #[arg(long, default_value = "GET")]
    method: String,
    /// JSON body of the single scenario.
    #[arg(long)]
    body: Option<String>,
    /// Header `K:V` of the single scenario (repeatable).
    #[arg(long, value_name = "K:V")]
    header: Vec<String>,
    /// Simulated users, one connection each.
    #[arg(long)]
    users: u32,
    /// Requests per user (closed loop), or users × this in total (open loop).
    #[arg(long)]
    requests_per_user: Option<u64>,
    /// Run this long instead (500ms, 30s, 2m, or plain seconds).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Open loop: total requests per second across all users.
    #[arg(long)]
    rate: Option<f64>,
    /// Spread user starts over this period (500ms, 30s, 2m, or plain seconds).
    #[arg(long, value_parser = parse_duration, default_value = "0")]
    ramp_up: Duration,
    /// Pause between a user's requests, closed loop (100ms, 0.5s, or plain seconds).
    /// Default: 100ms with --requests-per-user, 0 with --duration or --rate.
    #[arg(long, value_parser = parse_duration)]
    think_time: Option<Duration>,
    /// Per-request timeout, connecting included (500ms, 30s, 2m, or plain seconds).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    timeout: Duration,
    /// Bearer token.
    #[arg(long)]
    token: Option<String>,
    /// Write results: .json (summary + every request), .csv (every request, summary in
    /// `<name>.summary.json`) or .txt (report).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Write a latency-by-percentile plot (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Load-generator threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
    /// https:// targets: trust only the CA certificates of this PEM file (instead of
    /// the bundled web roots). Needs the `tls` feature.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// https:// targets: do not verify the server certificate (the traffic is still
    /// encrypted, with whoever answers). Needs the `tls` feature.
    #[arg(long, conflicts_with = "cacert")]
    insecure: bool,
}

fn scenarios(args: &Args) -> Result<Vec<Scenario>, String> {
    if let Some(file) = &args.scenario_file {
        return Scenario::load_file(file).map_err(|e| cortex_support::error_chain(&e));
    }
    let mut headers = BTreeMap::new();
    for h in &args.header {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("invalid --header {h:?}: expected K:V"))?;
        headers.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    let payload = args
        .body
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| format!("invalid --body: not JSON: {e}"))?;
    let endpoint = args.path.clone().unwrap_or_default();
    Ok(vec![Scenario {
        name: if endpoint.is_empty() {
            "/".to_owned()
        } else {
            endpoint.clone()
        },
        endpoint,
        method: args.method.clone(),
        payload,
        headers,
        weight: 1.0,
    }])
}

fn config(args: &Args) -> Result<LoadConfig, String> {
    Ok(LoadConfig {
        url: args.url.clone(),
        scenarios: scenarios(args)?,
        users: args.users,
        requests_per_user: args.requests_per_user.unwrap_or(0),
        duration: args.duration,
        rate: args.rate,
        ramp_up: args.ramp_up,
        think_time: args.think_time,
        timeout: args.timeout,
        token: args.token.clone(),
        output: args.output.clone(),
        progress: !args.quiet,
        threads: args.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        }),
        ca_file: args.cacert.clone(),
        insecure: args.insecure,
    })
}

async fn run(args: Args) -> Result<(), String> {
    let test = LoadTest::new(config(&args)?).map_err(|e| cortex_support::error_chain(&e))?;
    // Ctrl-C ends the run early but still prints the summary of what was sent.
    let stop = test.stop_handle();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ncortex-load: stopping (Ctrl-C)...");
            stop.stop();
        }
    });
    let summary = test
        .run()
        .await
        .map_err(|e| cortex_support::error_chain(&e))?;
    print!("{}", summary.report());
    if let Some(plot) = &args.plot {
        std::fs::write(plot, summary.plot_svg())
            .map_err(|e| format!("cannot write {}: {e}", plot.display()))?;
    }
    Ok(())
}

/// A fmt subscriber on stderr honouring `RUST_LOG`, `warn` when it is unset, so the
/// libraries' warnings (and, asked for, their debug spans) show beside the report. A
/// `RUST_LOG` that does not parse is named and `warn` is used.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) => EnvFilter::try_new(&v).unwrap_or_else(|e| {
            eprintln!("cortex-load: RUST_LOG={v:?} is not a valid filter ({e}); using warn");
            EnvFilter::new("warn")
        }),
        Err(_) => EnvFilter::new("warn"),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    // The users run on their own threads (--threads); this runtime only waits,
    // writes progress and files.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cortex-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cortex-load: error: {e}");
            ExitCode::FAILURE
        }
    }
}
