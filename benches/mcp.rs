//! cortex-mcp's `McpClient` against one raw rmcp session, each comparison in one
//! criterion group, all on one 2-worker tokio runtime that also runs the server: the
//! in-process streamable-HTTP MCP server of `cortex_mcp::testing` on loopback.
//!
//! - `mcp/echo/{cortex,rmcp_raw}/1`: sequential `echo` tool calls (concurrency 1), so
//!   the time per call is the latency of one call and the ratio the client's overhead.
//! - `mcp/echo/{cortex,rmcp_raw}/32`: 32 tasks share the calls, so the throughput is
//!   the calls per second the client sustains under concurrency.
//!
//!   `cortex` is `McpClient` with its default settings (5 sessions, filled one at a
//!   time up to 64 requests in flight each, a shared keep-alive HTTP client, retries,
//!   breaker and metrics on), overridden by any `MCP_*` variable set (e.g.
//!   `MCP_POOL_SIZE=1`). `rmcp_raw` is one rmcp session made with rmcp's defaults
//!   (`ClientConfig::default().serve(StreamableHttpClientTransport::from_uri(url))`):
//!   its HTTP client keeps no idle connections, and it lets 16 requests be in flight.
//! - `mcp/cache_hit/{cortex,cortex_2_tasks}`: a cacheable call answered from the
//!   client's cache (primed first): no request leaves the process; sequential, then
//!   shared by 2 tasks.
//!
//! Every answer is checked (not a tool error, text `Echo: <message>`), so nothing is
//! optimized away and a failure panics.
//!
//! Run: `cargo bench --features full --bench mcp` (`-- mcp/echo` or `-- mcp/cache_hit`
//! for one part).

use std::time::{Duration, Instant};

use cortex_mcp::testing::TestServer;
use cortex_mcp::{CallOptions, Endpoint, McpClient, McpClientConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig};
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Map, Value};

const MESSAGE: &str = "hello";
const CONCURRENCY: u64 = 32;
const CACHE_TTL: Duration = Duration::from_secs(300);

/// The arguments of `echo {message}`.
fn args() -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("message".to_owned(), Value::String(MESSAGE.to_owned()));
    map
}

/// Panics unless `result` is the echo of [`MESSAGE`].
fn check(result: &CallToolResult) {
    assert_ne!(result.is_error, Some(true), "tool error: {result:?}");
    let text = result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.as_str());
    assert!(
        text.and_then(|t| t.strip_prefix("Echo: ")) == Some(MESSAGE),
        "unexpected answer: {result:?}"
    );
}

async fn cortex_call(client: &McpClient) {
    let result = client
        .call_tool("echo", Value::Object(args()))
        .await
        .expect("cortex echo call");
    check(&result);
}

async fn cortex_cached(client: &McpClient) {
    let result = client
        .call_tool_with(
            "echo",
            Value::Object(args()),
            CallOptions::new().cached(CACHE_TTL),
        )
        .await
        .expect("cortex cached echo call");
    check(&result);
}

async fn raw_call(peer: &rmcp::Peer<rmcp::RoleClient>) {
    let result = peer
        .call_tool(CallToolRequestParams::new("echo").with_arguments(args()))
        .await
        .expect("raw rmcp echo call");
    check(&result);
}

/// Split `iters` calls over `tasks` tasks, each holding a clone of `handle`; the wall
/// time until the last one is done. `$call` maps `&handle` to one checked call.
macro_rules! concurrent {
    ($handle:expr, $tasks:expr, $iters:expr, |$h:ident| $call:expr) => {{
        let (handle, tasks, iters) = ($handle.clone(), $tasks, $iters);
        async move {
            let (per, extra) = (iters / tasks, iters % tasks);
            let start = Instant::now();
            let handles: Vec<_> = (0..tasks)
                .map(|i| {
                    let $h = handle.clone();
                    let n = per + u64::from(i < extra);
                    tokio::spawn(async move {
                        for _ in 0..n {
                            $call.await;
                        }
                    })
                })
                .collect();
            for h in handles {
                h.await.expect("caller task panicked");
            }
            start.elapsed()
        }
    }};
}

fn mcp(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let registry = cortex_metrics::Metrics::new();
    let (server, client, raw) = rt.block_on(async {
        let server = TestServer::start().await.expect("test MCP server");
        let client = McpClient::builder("bench", Endpoint::http(server.url()))
            .config(McpClientConfig::from_env().expect("MCP_* settings"))
            .metrics(&registry)
            .build()
            .await
            .expect("cortex MCP client");
        // rmcp's default HTTP client needs a process-wide rustls provider when rustls
        // is compiled in (cortex-mcp installs none: it hands ring to its own client).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let raw = ClientConfig::default()
            .serve(StreamableHttpClientTransport::from_uri(server.url()))
            .await
            .expect("raw rmcp session");
        // Warm up both: connections, sessions, allocator; then prime the cache.
        let peer = raw.peer().clone();
        for _ in 0..200 {
            cortex_call(&client).await;
            raw_call(&peer).await;
        }
        concurrent!(client, CONCURRENCY, 1_000, |c| cortex_call(&c)).await;
        concurrent!(peer, CONCURRENCY, 1_000, |p| raw_call(&p)).await;
        cortex_cached(&client).await;
        (server, client, raw)
    });
    let peer = raw.peer().clone();

    let mut g = c.benchmark_group("mcp/echo");
    g.throughput(Throughput::Elements(1));
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    g.sample_size(20);
    g.bench_function("cortex/1", |b| {
        b.to_async(&rt).iter(|| cortex_call(&client));
    });
    g.bench_function("rmcp_raw/1", |b| {
        b.to_async(&rt).iter(|| raw_call(&peer));
    });
    g.bench_function(format!("cortex/{CONCURRENCY}"), |b| {
        b.to_async(&rt)
            .iter_custom(|iters| concurrent!(client, CONCURRENCY, iters, |c| cortex_call(&c)));
    });
    g.bench_function(format!("rmcp_raw/{CONCURRENCY}"), |b| {
        b.to_async(&rt)
            .iter_custom(|iters| concurrent!(peer, CONCURRENCY, iters, |p| raw_call(&p)));
    });
    g.finish();

    let served = server.tool_calls();
    let mut g = c.benchmark_group("mcp/cache_hit");
    g.throughput(Throughput::Elements(1));
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(20);
    g.bench_function("cortex", |b| {
        b.to_async(&rt).iter(|| cortex_cached(&client));
    });
    g.bench_function("cortex_2_tasks", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| concurrent!(client, 2, iters, |c| cortex_cached(&c)));
    });
    g.finish();
    assert_eq!(
        server.tool_calls(),
        served,
        "a cache hit must not reach the server"
    );

    rt.block_on(async {
        client.close(Duration::from_secs(1)).await;
        raw.cancel().await.expect("close the raw rmcp session");
        drop(server);
    });
}

criterion_group!(benches, mcp);
criterion_main!(benches);
