//! Call one MCP service from the command line and print the answer as JSON.
//!
//! ```text
//! cargo run -p cortex-mcp --example mcp-call -- --url http://127.0.0.1:3001/mcp --list-tools
//! cargo run -p cortex-mcp --example mcp-call -- --url http://127.0.0.1:3001/mcp \
//!     --tool get-sum --args '{"a": 2, "b": 3}'
//! cargo run -p cortex-mcp --example mcp-call -- --stdio "node dist/index.js stdio" \
//!     --resource demo://resource/dynamic/text/1
//! ```
//!
//! Exits 0 with the result on stdout; 1 with the error on stderr when the call fails or
//! the tool reports an error; 2 for bad command-line arguments.
//!
//! Settings come from the `MCP_*` variables (see `McpClientConfig::from_env`), then one
//! session, no cache and the `--timeout` bound are applied. A `--stdio` child gets only
//! `PATH`, `HOME`, `LANG`, `LC_*`, `TMPDIR` and the variables `MCP_STDIO_ENV` names
//! (comma-separated) from this process's environment.

use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Parser};
use cortex_mcp::{Endpoint, McpClient, McpClientConfig};

#[derive(Debug, Parser)]
#[command(
    name = "mcp-call",
    about = "Call a tool, read a resource or list the tools of an MCP server"
)]
#[command(group(ArgGroup::new("target").required(true).args(["url", "stdio"])))]
#[command(group(ArgGroup::new("action").required(true).args(["tool", "resource", "list_tools"])))]
struct Args {
    /// Streamable HTTP endpoint, e.g. http://127.0.0.1:3001/mcp.
    #[arg(long)]
    url: Option<String>,
    /// Command to start a server speaking MCP on stdin/stdout, e.g. "node server.js stdio".
    #[arg(long)]
    stdio: Option<String>,
    /// Tool to call.
    #[arg(long)]
    tool: Option<String>,
    /// Tool arguments as a JSON object.
    #[arg(long, default_value = "{}", requires = "tool")]
    args: String,
    /// Resource URI to read.
    #[arg(long)]
    resource: Option<String>,
    /// List the tools on offer.
    #[arg(long)]
    list_tools: bool,
    /// Seconds allowed for the whole call, retries included.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mcp-call: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> Result<String, Box<dyn std::error::Error>> {
    let endpoint = match (&args.url, &args.stdio) {
        (Some(url), _) => Endpoint::http(url),
        (None, Some(command)) => format!("stdio:{command}").parse()?,
        (None, None) => unreachable!("clap requires one of --url and --stdio"),
    };
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| {
            format!(
                "--timeout {}: must be a positive number of seconds",
                args.timeout
            )
        })?;
    let config = McpClientConfig {
        // One call: one session, no cache, quick retries, and the caller's bound.
        pool_size: 1,
        cache_capacity: 0,
        retry_delay: Duration::from_millis(200),
        max_retry_delay: Duration::from_secs(2),
        connect_timeout: timeout,
        request_timeout: timeout,
        call_timeout: timeout,
        ..McpClientConfig::from_env()?
    };
    let client = McpClient::connect("mcp-call", endpoint, config).await?;
    let out = if let Some(tool) = &args.tool {
        let tool_args: serde_json::Value = serde_json::from_str(&args.args)
            .map_err(|e| format!("--args {:?} is not JSON: {e}", args.args))?;
        serde_json::to_string_pretty(&client.call_tool(tool, tool_args).await?)?
    } else if let Some(uri) = &args.resource {
        serde_json::to_string_pretty(&client.read_resource(uri).await?)?
    } else {
        serde_json::to_string_pretty(&client.list_tools().await?)?
    };
    client.close(Duration::from_secs(2)).await;
    Ok(out)
}
