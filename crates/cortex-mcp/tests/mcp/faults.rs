//! Fault tests against in-process rmcp servers (`cortex_mcp::testing::TestServer`):
//! a server killed and restarted under load, slow tools, tool errors, which calls are
//! retried (and which run at most once), caching, hedging, graceful close, the
//! factory, and the metrics and stats the client keeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cortex_mcp::testing::TestServer;
use cortex_mcp::{
    CallOptions, CircuitState, Endpoint, Error, McpClient, McpClientConfig, McpClientFactory,
};
use cortex_metrics::Metrics;
use serde_json::json;

/// Settings scaled down so faults show within a second.
fn quick() -> McpClientConfig {
    McpClientConfig {
        pool_size: 2,
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(400),
        call_timeout: Duration::from_millis(1_000),
        max_retries: 2,
        retry_delay: Duration::from_millis(20),
        max_retry_delay: Duration::from_millis(100),
        breaker_failures: 5,
        breaker_cooldown: Duration::from_millis(300),
        ..McpClientConfig::default()
    }
}

/// A client of `server`, recording into `metrics`.
async fn client_in(server: &TestServer, config: McpClientConfig, metrics: &Metrics) -> McpClient {
    McpClient::builder("test", Endpoint::http(server.url()))
        .config(config)
        .metrics(metrics)
        .build()
        .await
        .expect("connect to the test server")
}

/// A client of `server` with a registry of its own, so tests do not share counters.
async fn client(server: &TestServer, config: McpClientConfig) -> McpClient {
    client_in(server, config, &Metrics::new()).await
}

fn text(result: &cortex_mcp::rmcp::model::CallToolResult) -> &str {
    &result.content[0].as_text().expect("a text answer").text
}

/// Polls `cond` every 10 ms for up to `within`; panics with `what` if it never holds.
async fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(within, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not within {within:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_under_load_fails_fast_opens_the_circuit_and_recovers() {
    let server = TestServer::start().await.unwrap();
    let addr = server.addr();
    let config = quick();
    let bound = config.call_timeout + Duration::from_millis(500);
    let client = client(&server, config).await;

    // Eight callers in a loop; every call is bounded from outside, so a caller kept
    // past its timeout fails the test rather than hanging it.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let circuit_open_errors = Arc::new(AtomicU64::new(0));
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..8 {
        let (client, stop, ok, open) = (
            client.clone(),
            stop.clone(),
            ok.clone(),
            circuit_open_errors.clone(),
        );
        callers.spawn(async move {
            let mut n = 0u64;
            let mut unexpected = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let message = format!("{caller}-{n}");
                let call = client.call_tool("echo", json!({ "message": message }));
                match tokio::time::timeout(bound, call).await {
                    Err(_) => panic!("caller {caller} waited past {bound:?}"),
                    Ok(Ok(r)) => {
                        assert_eq!(text(&r), format!("Echo: {message}"));
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(Error::CircuitOpen { .. })) => {
                        open.fetch_add(1, Ordering::Relaxed);
                        // Failing fast: back off a little rather than spin.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Ok(Err(e)) if e.is_retryable() => {}
                    Ok(Err(e)) => unexpected.push(e.to_string()),
                }
            }
            unexpected
        });
    }

    eventually(
        "calls succeed before the fault",
        Duration::from_secs(10),
        || ok.load(Ordering::Relaxed) >= 200,
    )
    .await;
    server.kill();
    drop(server);
    eventually("the circuit opens", Duration::from_secs(10), || {
        client.stats().circuit_opened >= 1 && circuit_open_errors.load(Ordering::Relaxed) > 0
    })
    .await;
    assert!(!client.is_healthy(), "{:?}", client.stats());
    // The attempts that opened the circuit may still be waiting out their backoff;
    // a retry is counted when its wait ends.
    eventually(
        "transport failures are retried",
        Duration::from_secs(5),
        || client.stats().retries > 0,
    )
    .await;

    let ok_while_down = ok.load(Ordering::Relaxed);
    let server = TestServer::start_on(addr).await.unwrap();
    eventually(
        "calls recover after the restart",
        Duration::from_secs(15),
        || ok.load(Ordering::Relaxed) >= ok_while_down + 200,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    while let Some(unexpected) = callers.join_next().await {
        let unexpected = unexpected.unwrap();
        assert!(
            unexpected.is_empty(),
            "non-retryable errors: {unexpected:?}"
        );
    }
    let up = client.stats();
    assert_eq!(up.circuit, CircuitState::Closed);
    // No `reconnects >= 1`: a session is rebuilt by the client only if a request met
    // the closed port (a transport failure breaks it); one that only timed out is
    // re-initialized by rmcp on the restarted server (its stale session gets a 404),
    // and which happens depends on timing.
    assert!(client.is_healthy(), "{up:?}");
    eventually("every session is rebuilt", Duration::from_secs(10), || {
        client.stats().sessions_connected == 2
    })
    .await;
    assert!(server.tool_calls() >= 200);
    client.close(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_tool_times_out_and_the_session_stays_usable() {
    let server = TestServer::start().await.unwrap();
    let config = McpClientConfig {
        max_retries: 0,
        ..quick()
    };
    let client = client(&server, config).await;

    let call = client.call_tool("sleep", json!({ "ms": 5_000 }));
    let outcome = tokio::time::timeout(Duration::from_secs(2), call)
        .await
        .expect("the client's own timeout answers first");
    assert!(
        matches!(outcome, Err(Error::Timeout { after, .. }) if after == Duration::from_millis(400)),
        "{outcome:?}"
    );

    // A per-call bound shorter than the request timeout wins.
    let opts = CallOptions::new().timeout(Duration::from_millis(50));
    let outcome = client
        .call_tool_with("sleep", json!({ "ms": 5_000 }), opts)
        .await;
    assert!(
        matches!(outcome, Err(Error::Timeout { after, .. }) if after == Duration::from_millis(50)),
        "{outcome:?}"
    );

    // Same sessions, still good: a timeout is not a broken session.
    let r = client
        .call_tool("echo", json!({ "message": "after" }))
        .await
        .unwrap();
    assert_eq!(text(&r), "Echo: after");
    let stats = client.stats();
    assert_eq!(stats.timeouts, 2);
    assert_eq!(stats.sessions_connected, 2);
    assert_eq!(stats.reconnects, 0);
    assert_eq!((stats.requests_total, stats.requests_error), (3, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_retried_within_the_call_deadline() {
    let server = TestServer::start().await.unwrap();
    let config = McpClientConfig {
        request_timeout: Duration::from_millis(100),
        call_timeout: Duration::from_millis(1_000),
        max_retries: 3,
        ..quick()
    };
    let client = client(&server, config).await;
    let outcome = tokio::time::timeout(
        Duration::from_secs(3),
        client.call_tool("sleep", json!({ "ms": 2_000 })),
    )
    .await
    .expect("bounded by call_timeout");
    assert!(matches!(outcome, Err(Error::Timeout { .. })), "{outcome:?}");
    let stats = client.stats();
    assert_eq!(stats.retries, 3, "{stats:?}");
    assert_eq!(stats.timeouts, 4, "{stats:?}");
    eventually(
        "the server saw every attempt",
        Duration::from_secs(2),
        || server.tool_calls() == 4,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_errors_are_final_not_retried_and_not_held_against_the_service() {
    let server = TestServer::start().await.unwrap();
    let config = McpClientConfig {
        breaker_failures: 1,
        ..quick()
    };
    let client = client(&server, config).await;
    for _ in 0..3 {
        let err = client
            .call_tool("fail", json!({ "message": "no such user" }))
            .await
            .unwrap_err();
        assert!(err.is_tool_error() && !err.is_retryable(), "{err}");
        assert!(err.to_string().contains("no such user"), "{err}");
    }
    let unknown = client.call_tool("nope", json!({})).await.unwrap_err();
    assert!(unknown.is_tool_error(), "{unknown}");
    let bad = client
        .call_tool("add", json!({ "a": "two", "b": 3 }))
        .await
        .unwrap_err();
    assert!(bad.is_tool_error(), "{bad}");
    let not_an_object = client.call_tool("add", json!([1, 2])).await.unwrap_err();
    assert!(
        matches!(&not_an_object, Error::InvalidArguments { tool, .. } if tool == "add"),
        "{not_an_object}"
    );
    let missing = client.read_resource("test://missing").await.unwrap_err();
    assert!(
        matches!(
            &missing,
            Error::Rpc {
                method: "resources/read",
                ..
            }
        ),
        "{missing}"
    );

    let stats = client.stats();
    assert_eq!(stats.retries, 0);
    assert_eq!(stats.tool_errors, 5);
    assert_eq!(
        stats.circuit,
        CircuitState::Closed,
        "tool errors never open it"
    );
    assert_eq!(
        server.tool_calls(),
        3 + 1,
        "each fail ran once; the missing read once"
    );
    let r = client
        .call_tool("add", json!({ "a": 2, "b": 3 }))
        .await
        .unwrap();
    assert_eq!(text(&r), "5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_calls_do_not_reach_the_server() {
    let server = TestServer::start().await.unwrap();
    let client = client(&server, quick()).await;
    let cached = CallOptions::new().cached(Duration::from_secs(60));
    for i in 0..10 {
        // The same arguments in another order are the same call.
        let args = if i % 2 == 0 {
            json!({ "a": 1, "b": 2 })
        } else {
            json!({ "b": 2, "a": 1 })
        };
        let r = client.call_tool_with("add", args, cached).await.unwrap();
        assert_eq!(text(&r), "3");
    }
    assert_eq!(server.tool_calls(), 1);
    client
        .call_tool_with("add", json!({ "a": 1, "b": 3 }), cached)
        .await
        .unwrap();
    client
        .call_tool("add", json!({ "a": 1, "b": 2 }))
        .await
        .unwrap();
    assert_eq!(
        server.tool_calls(),
        3,
        "other arguments and uncached calls go out"
    );

    // Tool errors are not cached.
    for _ in 0..2 {
        let err = client
            .call_tool_with("fail", json!({ "message": "x" }), cached)
            .await
            .unwrap_err();
        assert!(err.is_tool_error());
    }
    assert_eq!(server.tool_calls(), 5);

    // Resource reads are cached by default.
    for _ in 0..3 {
        let r = client.read_resource("test://greeting").await.unwrap();
        assert_eq!(r.contents.len(), 1);
    }
    assert_eq!(server.tool_calls(), 6);

    // An entry expires after its TTL.
    let short = CallOptions::new().cached(Duration::from_millis(50));
    client
        .call_tool_with("add", json!({ "a": 9, "b": 9 }), short)
        .await
        .unwrap();
    client
        .call_tool_with("add", json!({ "a": 9, "b": 9 }), short)
        .await
        .unwrap();
    assert_eq!(server.tool_calls(), 7);
    tokio::time::sleep(Duration::from_millis(120)).await;
    client
        .call_tool_with("add", json!({ "a": 9, "b": 9 }), short)
        .await
        .unwrap();
    assert_eq!(server.tool_calls(), 8);

    let stats = client.stats();
    assert_eq!(
        (stats.cache_hits, stats.cache_misses),
        (9 + 2 + 1, 1 + 1 + 2 + 1 + 2)
    );
    client.clear_cache();
    assert_eq!(client.stats().cache_size, 0);
    client.read_resource("test://greeting").await.unwrap();
    assert_eq!(server.tool_calls(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedged_call_answers_from_the_second_copy() {
    let server = TestServer::start().await.unwrap();
    let config = McpClientConfig {
        hedge_after: Some(Duration::from_millis(50)),
        request_timeout: Duration::from_secs(5),
        call_timeout: Duration::from_secs(5),
        ..quick()
    };
    let client = client(&server, config).await;
    // The first `stall` the server gets waits 10 s; the hedge, sent 50 ms later on
    // the other session, answers at once and wins.
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        client.call_tool_with(
            "stall",
            json!({ "ms": 10_000 }),
            CallOptions::new().idempotent(),
        ),
    )
    .await
    .expect("the hedge answers long before the stalled copy")
    .unwrap();
    assert_eq!(text(&r), "answered at once");
    assert_eq!(client.stats().hedges, 1);
    assert_eq!(server.tool_calls(), 2);

    // Calls not known to be safe to repeat are never sent twice.
    let r = client
        .call_tool("count", json!({ "ms": 120 }))
        .await
        .unwrap();
    assert_eq!(text(&r), "call 1");
    assert_eq!(client.stats().hedges, 1);
    assert_eq!(server.tool_calls(), 3);

    // A tool the server annotates idempotent may be: the hedge answers.
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        client.call_tool("count_idempotent", json!({ "ms": 10_000 })),
    )
    .await
    .expect("the hedge answers long before the stalled copy")
    .unwrap();
    assert_eq!(text(&r), "call 2");
    assert_eq!(client.stats().hedges, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_lets_calls_in_flight_finish_then_refuses_new_ones() {
    let server = TestServer::start().await.unwrap();
    let client = client(&server, quick()).await;
    client.read_resource("test://greeting").await.unwrap();
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.call_tool("sleep", json!({ "ms": 200 })).await }
    });
    eventually("the call is in flight", Duration::from_secs(2), || {
        client.stats().in_flight == 1
    })
    .await;
    client.close(Duration::from_secs(2)).await;
    let r = in_flight.await.unwrap().expect("an accepted call finishes");
    assert_eq!(text(&r), "slept 200 ms");
    let after = client.call_tool("echo", json!({ "message": "x" })).await;
    assert!(matches!(after, Err(Error::Closed { .. })), "{after:?}");
    // Not even from the cache.
    let cached = client.read_resource("test://greeting").await;
    assert!(matches!(cached, Err(Error::Closed { .. })), "{cached:?}");
    let health = client.health();
    assert!(!health.healthy);
    assert_eq!(health.sessions_connected, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_service_errors_at_connect_or_starts_unhealthy_and_connects_later() {
    // A port nobody listens on: bind, note it, release it.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = format!("http://{addr}/mcp");
    let metrics = Metrics::new();
    let err = McpClient::builder("down", Endpoint::http(&url))
        .config(quick())
        .metrics(&metrics)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");

    let client = McpClient::builder("late", Endpoint::http(&url))
        .config(quick())
        .metrics(&metrics)
        .require_connection(false)
        .build()
        .await
        .unwrap();
    assert!(!client.is_healthy());
    let err = client
        .call_tool("echo", json!({ "message": "x" }))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");

    let server = TestServer::start_on(addr).await.unwrap();
    eventually(
        "the late service is connected",
        Duration::from_secs(10),
        || client.stats().sessions_connected == 2,
    )
    .await;
    // The failed call above may have opened nothing, but let a probe through anyway.
    eventually("the circuit is not open", Duration::from_secs(2), || {
        client.health().circuit != CircuitState::Open
    })
    .await;
    let r = client
        .call_tool("echo", json!({ "message": "late" }))
        .await
        .unwrap();
    assert_eq!(text(&r), "Echo: late");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_factory_makes_one_client_per_service_from_the_environment() {
    let server = TestServer::start().await.unwrap();
    let url = server.url();
    let metrics = Metrics::new();
    let factory = McpClientFactory::with_lookup(quick(), move |var| {
        (var == "MEMORY_SERVICE_SERVICE_URL").then(|| url.clone())
    })
    .metrics(&metrics);

    let a = factory.client("memory-service").await.unwrap();
    let b = factory.client("memory-service").await.unwrap();
    a.call_tool("echo", json!({ "message": "x" }))
        .await
        .unwrap();
    assert_eq!(b.stats().requests_total, 1, "one shared client");
    assert_eq!(
        exposed(
            &metrics,
            "cortex_mcp_requests_total{service=\"memory-service\"}"
        ),
        "1"
    );
    assert_eq!(
        exposed(&metrics, "cortex_mcp_up{service=\"memory-service\"}"),
        "1"
    );
    assert_eq!(factory.clients().await.len(), 1);

    let both = factory
        .connect_all(&["memory-service", "cognition-service"])
        .await
        .unwrap_err();
    assert!(
        both.to_string().contains("COGNITION_SERVICE_SERVICE_URL"),
        "{both}"
    );
    let one = factory.connect_all(&["memory-service"]).await.unwrap();
    assert_eq!(one[0].stats().requests_total, 1, "the same client again");
    let missing = factory.client("cognition-service").await.unwrap_err();
    assert!(
        matches!(&missing, Error::MissingEndpoint { var, .. } if var == "COGNITION_SERVICE_SERVICE_URL"),
        "{missing}"
    );
    let bad = factory.client("memory service").await.unwrap_err();
    assert!(matches!(&bad, Error::InvalidConfig { .. }), "{bad}");

    let bad_url = McpClientFactory::with_lookup(quick(), |_| Some("ftp://x".to_owned()));
    let err = bad_url.client("x").await.unwrap_err();
    assert!(err.to_string().contains("X_SERVICE_URL"), "{err}");

    factory.close_all(Duration::from_secs(1)).await;
    let closed = a.call_tool("echo", json!({ "message": "x" })).await;
    assert!(matches!(closed, Err(Error::Closed { .. })), "{closed:?}");
    assert!(factory.clients().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_recorded_into_metrics_and_stats() {
    let server = TestServer::start().await.unwrap();
    let metrics = Metrics::new();
    // 200 calls at once take a while in a debug build: room enough not to time out.
    let config = McpClientConfig {
        request_timeout: Duration::from_secs(20),
        call_timeout: Duration::from_secs(30),
        ..quick()
    };
    let client = client_in(&server, config, &metrics).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..200 {
        let client = client.clone();
        calls.spawn(async move { client.call_tool("add", json!({ "a": i, "b": 1 })).await });
    }
    let mut errors = Vec::new();
    while let Some(r) = calls.join_next().await {
        if let Err(e) = r.unwrap() {
            errors.push(e.to_string());
        }
    }
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    client.list_tools().await.unwrap();
    let _ = client.call_tool("fail", json!({ "message": "x" })).await;

    let stats = client.stats();
    assert_eq!(stats.requests_total, 202);
    assert_eq!((stats.requests_success, stats.requests_error), (201, 1));
    assert_eq!((stats.sessions_connected, stats.sessions_max), (2, 2));
    assert_eq!(stats.in_flight, 0);
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["circuit"], "closed");

    let snapshot = metrics.snapshot();
    let op = |name: &str| {
        snapshot
            .operations
            .iter()
            .find(|o| o.name == name)
            .unwrap_or_else(|| panic!("operation {name} recorded"))
            .clone()
    };
    let call_tool = op("test.call_tool");
    assert_eq!(call_tool.category.as_deref(), Some("mcp"));
    assert_eq!(
        (call_tool.total.successes, call_tool.total.errors),
        (200, 1)
    );
    assert_eq!(op("test.list_tools").total.count, 1);

    // One family per measure, the service a label; latency in seconds.
    let text = metrics.prometheus();
    for line in [
        "# TYPE cortex_mcp_requests_total counter\n",
        "cortex_mcp_requests_total{service=\"test\"} 202\n",
        "cortex_mcp_errors_total{service=\"test\"} 1\n",
        "cortex_mcp_tool_errors_total{service=\"test\"} 1\n",
        "cortex_mcp_cache_hits_total{service=\"test\"} 0\n",
        "# TYPE cortex_mcp_call_seconds histogram\n",
        "cortex_mcp_call_seconds_bucket{service=\"test\",le=\"+Inf\"} 202\n",
        "cortex_mcp_call_seconds_count{service=\"test\"} 202\n",
        "# TYPE cortex_mcp_breaker_state gauge\n",
        "cortex_mcp_breaker_state{service=\"test\"} 0\n",
        "# TYPE cortex_mcp_up gauge\n",
        "cortex_mcp_up{service=\"test\"} 1\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(
        !text.contains("cortex_mcp_test_"),
        "the service is in a family name:\n{text}"
    );
    let service = [("service", "test")];
    assert_eq!(
        metrics
            .counter_with("mcp.requests", &service)
            .unwrap()
            .total(),
        202
    );
}

/// The value of the exposed series `series` (e.g. `cortex_mcp_up{service="test"}`) in
/// `metrics`' Prometheus text, as written there.
pub(crate) fn exposed(metrics: &Metrics, series: &str) -> String {
    let text = metrics.prometheus();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_gauge_goes_from_closed_to_open_and_up_to_zero() {
    let server = TestServer::start().await.unwrap();
    let metrics = Metrics::new();
    let config = McpClientConfig {
        breaker_failures: 2,
        // Long enough that the circuit is still open, not half-open, when scraped.
        breaker_cooldown: Duration::from_secs(600),
        ..quick()
    };
    let client = client_in(&server, config, &metrics).await;
    let state = "cortex_mcp_breaker_state{service=\"test\"}";
    let up = "cortex_mcp_up{service=\"test\"}";
    client
        .call_tool("echo", json!({ "message": "x" }))
        .await
        .unwrap();
    assert_eq!(
        (exposed(&metrics, state), exposed(&metrics, up)),
        ("0".to_owned(), "1".to_owned())
    );

    server.kill();
    // Calls fail on the dead server until the failures open the circuit.
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match client.call_tool("echo", json!({ "message": "x" })).await {
                Err(Error::CircuitOpen { .. }) => break,
                Err(e) => assert!(e.is_retryable(), "{e}"),
                Ok(r) => panic!("an answer from a killed server: {r:?}"),
            }
        }
    })
    .await
    .expect("the circuit opens");
    assert_eq!(client.health().circuit, CircuitState::Open);
    assert_eq!(
        (exposed(&metrics, state), exposed(&metrics, up)),
        ("2".to_owned(), "0".to_owned())
    );
    assert_eq!(
        exposed(
            &metrics,
            "cortex_mcp_circuit_opened_total{service=\"test\"}"
        ),
        "1"
    );

    // Gone: the gauges say so rather than repeat a stale level (the background tasks
    // let go of the client as they stop).
    drop(client);
    eventually("the gauges read NaN", Duration::from_secs(10), || {
        exposed(&metrics, state) == "NaN" && exposed(&metrics, up) == "NaN"
    })
    .await;
}

/// Collects what the fmt subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn slow_calls_are_logged_as_warnings() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    // This runtime has one thread, so the default subscriber sees the client's events.
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = TestServer::start().await.unwrap();
    let config = McpClientConfig {
        slow_call: Duration::from_millis(100),
        ..quick()
    };
    let client = client(&server, config).await;
    client
        .call_tool("sleep", json!({ "ms": 150 }))
        .await
        .unwrap();
    client
        .call_tool("echo", json!({ "message": "fast" }))
        .await
        .unwrap();

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let slow: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("slow MCP call"))
        .collect();
    assert_eq!(slow.len(), 1, "{log}");
    assert!(
        slow[0].contains("WARN") && slow[0].contains("target=\"sleep\""),
        "{log}"
    );
}

fn pid_alive(pid: &str) -> bool {
    std::process::Command::new("kill")
        .args(["-0", pid])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_stdio_child_is_started_again() {
    let js = crate::interop::everything_js();
    let pids = std::env::temp_dir().join(format!("cortex-mcp-child-pids-{}", std::process::id()));
    let _ = std::fs::remove_file(&pids);
    // The shell notes its pid, then becomes the server, so the pid is the server's.
    let script = format!(
        "echo $$ >> '{}'; exec node '{}' stdio",
        pids.display(),
        js.display()
    );
    let config = McpClientConfig {
        pool_size: 1,
        connect_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(5),
        call_timeout: Duration::from_secs(15),
        max_retries: 4,
        retry_delay: Duration::from_millis(200),
        max_retry_delay: Duration::from_secs(1),
        ..McpClientConfig::default()
    };
    let metrics = Metrics::new();
    let client = McpClient::builder("child", Endpoint::stdio("sh", ["-c", script.as_str()]))
        .config(config)
        .metrics(&metrics)
        .build()
        .await
        .unwrap();
    let r = client
        .call_tool("echo", json!({ "message": "one" }))
        .await
        .unwrap();
    assert_eq!(text(&r), "Echo: one");
    let first = std::fs::read_to_string(&pids).unwrap().trim().to_owned();
    assert!(pid_alive(&first));

    let killed = std::process::Command::new("kill")
        .args(["-9", &first])
        .status()
        .unwrap();
    assert!(killed.success());
    eventually("the child is gone", Duration::from_secs(5), || {
        !pid_alive(&first)
    })
    .await;

    let r = tokio::time::timeout(
        Duration::from_secs(20),
        client.call_tool("echo", json!({ "message": "two" })),
    )
    .await
    .expect("bounded by call_timeout")
    .expect("answered by a new child");
    assert_eq!(text(&r), "Echo: two");
    let all = std::fs::read_to_string(&pids).unwrap();
    let started: Vec<&str> = all.lines().collect();
    assert_eq!(started.len(), 2, "one child started again: {started:?}");
    let second = started[1].to_owned();
    assert!(pid_alive(&second));
    let stats = client.stats();
    assert_eq!(stats.reconnects, 1, "{stats:?}");
    assert!(stats.retries >= 1, "{stats:?}");

    client.close(Duration::from_secs(2)).await;
    eventually("close ends the child", Duration::from_secs(10), || {
        !pid_alive(&second)
    })
    .await;
    let _ = std::fs::remove_file(&pids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_still_running_when_the_grace_ends_fails_at_once_without_retries() {
    let server = TestServer::start().await.unwrap();
    let config = McpClientConfig {
        request_timeout: Duration::from_secs(10),
        call_timeout: Duration::from_secs(20),
        ..quick()
    };
    let client = client(&server, config).await;
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.call_tool("sleep", json!({ "ms": 10_000 })).await }
    });
    let counting = tokio::spawn({
        let client = client.clone();
        async move { client.call_tool("count", json!({ "ms": 10_000 })).await }
    });
    eventually("the calls are in flight", Duration::from_secs(2), || {
        client.stats().in_flight == 2
    })
    .await;
    running(&server, "count", 1).await;
    client.close(Duration::from_millis(100)).await;
    let bound = Duration::from_secs(3);
    let outcome = tokio::time::timeout(bound, slow)
        .await
        .expect("the session closed under it, so it ends")
        .unwrap();
    assert!(outcome.is_err(), "{outcome:?}");
    // The transport failed after the call was sent: it may have run, and it is not
    // safe to repeat.
    let counted = tokio::time::timeout(bound, counting)
        .await
        .expect("the session closed under it, so it ends")
        .unwrap()
        .unwrap_err();
    assert!(
        indeterminate(&counted, "count", |c| matches!(c, Error::Transport { .. })),
        "{counted:?}"
    );
    assert_eq!(server.calls_of("count"), 1);
    assert_eq!(client.stats().retries, 0, "a closed client does not retry");
}

/// Settings for the tests of what is retried: a short attempt, time for three retries.
fn retrying() -> McpClientConfig {
    McpClientConfig {
        request_timeout: Duration::from_millis(200),
        call_timeout: Duration::from_secs(5),
        max_retries: 3,
        ..quick()
    }
}

/// `tool` is running on the server: it has been called `n` times.
async fn running(server: &TestServer, tool: &str, n: u64) {
    eventually(&format!("{tool} is called"), Duration::from_secs(5), || {
        server.calls_of(tool) >= n
    })
    .await;
}

/// Whether `e` is [`Error::Indeterminate`] for `tool`, caused by a failure `cause` accepts.
fn indeterminate(e: &Error, tool: &str, cause: impl Fn(&Error) -> bool) -> bool {
    matches!(e, Error::Indeterminate { tool: t, source, .. } if t == tool && cause(source))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_not_known_to_be_idempotent_whose_attempt_times_out_runs_once() {
    let server = TestServer::start().await.unwrap();
    let client = client(&server, retrying()).await;
    // The first call waits 5 s, past the 200 ms attempt; a second would answer at once.
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        client.call_tool("count", json!({ "ms": 5_000 })),
    )
    .await
    .expect("bounded by call_timeout");
    running(&server, "count", 1).await;
    assert_eq!(
        server.calls_of("count"),
        1,
        "the tool ran more than once; the caller got {outcome:?}"
    );
    let err = outcome.unwrap_err();
    assert!(
        indeterminate(&err, "count", |c| matches!(c, Error::Timeout { .. })),
        "{err:?}"
    );
    assert!(err.is_indeterminate() && !err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .contains("may or may not have run (no answer in time"),
        "{err}"
    );
    let cause = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        cause
            .as_deref()
            .is_some_and(|c| c.contains("no answer within 200ms")),
        "{cause:?}"
    );
    let stats = client.stats();
    assert_eq!((stats.retries, stats.timeouts), (0, 1), "{stats:?}");
    // The session is still good (a timeout does not break it).
    let r = client.call_tool("count", json!({})).await.unwrap();
    assert_eq!(text(&r), "call 2");
}

/// Settings for a server that crashes under a call: a 1 s attempt (rmcp waits to
/// resume the response stream, so the crash shows as the attempt timing out), room
/// for retries while the server is back, and no breaker in the way.
fn crashing() -> McpClientConfig {
    McpClientConfig {
        request_timeout: Duration::from_secs(1),
        call_timeout: Duration::from_secs(10),
        max_retries: 10,
        retry_delay: Duration::from_millis(50),
        max_retry_delay: Duration::from_millis(200),
        breaker_failures: 0,
        ..quick()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_not_known_to_be_idempotent_whose_connection_is_killed_runs_once() {
    // A connection cut while the server lives on: rmcp resumes the response stream,
    // the answer arrives, and the tool ran once.
    let server = TestServer::start().await.unwrap();
    let cut = client(&server, crashing()).await;
    let call = tokio::spawn({
        let client = cut.clone();
        async move { client.call_tool("count", json!({ "ms": 300 })).await }
    });
    running(&server, "count", 1).await;
    server.drop_connections();
    let r = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("bounded by call_timeout")
        .unwrap()
        .expect("the resumed stream brings the answer");
    assert_eq!(text(&r), "call 1");
    assert_eq!(server.calls_of("count"), 1);

    // The server crashes under the call and is back at once, so a retry would run
    // the tool again.
    let server = TestServer::start().await.unwrap();
    let client = client(&server, crashing()).await;
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call_tool("count", json!({ "ms": 10_000 })).await }
    });
    running(&server, "count", 1).await;
    let server = server.restart().await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("bounded by call_timeout")
        .unwrap();
    assert_eq!(
        server.calls_of("count"),
        1,
        "the tool ran more than once; the caller got {outcome:?}"
    );
    let err = outcome.unwrap_err();
    assert!(indeterminate(&err, "count", Error::is_retryable), "{err:?}");
    assert_eq!(client.stats().retries, 0);
    // The client carries on with the restarted server.
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        client.call_tool("count", json!({})),
    )
    .await
    .expect("bounded by call_timeout")
    .unwrap();
    assert_eq!(text(&r), "call 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_never_reached_the_service_is_retried_even_if_not_idempotent() {
    let server = TestServer::start().await.unwrap();
    let addr = server.addr();
    let client = client(&server, crashing()).await;
    server.kill();
    drop(server);
    eventually("the port is closed", Duration::from_secs(5), || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
    // Back in a moment: until then the call's connections are refused, which proves
    // it never left.
    let restarted = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        TestServer::start_on(addr).await.unwrap()
    });
    let r = tokio::time::timeout(
        Duration::from_secs(15),
        client.call_tool("count", json!({})),
    )
    .await
    .expect("bounded by call_timeout")
    .expect("a call refused at connect is retried");
    let server = restarted.await.unwrap();
    assert_eq!(text(&r), "call 1");
    assert_eq!(server.calls_of("count"), 1);
    assert!(client.stats().retries >= 1, "{:?}", client.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_annotated_idempotent_is_retried_after_a_timeout_or_a_killed_connection() {
    // A timed-out attempt: the retry answers at once.
    let server = TestServer::start().await.unwrap();
    let timed_out = client(&server, retrying()).await;
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        timed_out.call_tool("count_idempotent", json!({ "ms": 5_000 })),
    )
    .await
    .expect("bounded by call_timeout")
    .expect("the retry answers");
    assert_eq!(text(&r), "call 2");
    assert_eq!(server.calls_of("count_idempotent"), 2);
    let stats = timed_out.stats();
    assert_eq!((stats.retries, stats.timeouts), (1, 1), "{stats:?}");

    // The server crashes under the call and is back: the retry reaches it.
    let server = TestServer::start().await.unwrap();
    let crashed = client(&server, crashing()).await;
    let call = tokio::spawn({
        let client = crashed.clone();
        async move {
            client
                .call_tool("count_idempotent", json!({ "ms": 10_000 }))
                .await
        }
    });
    running(&server, "count_idempotent", 1).await;
    let server = server.restart().await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("bounded by call_timeout")
        .unwrap()
        .expect("the retry answers");
    assert_eq!(text(&r), "call 2");
    assert_eq!(server.calls_of("count_idempotent"), 2);
    assert!(crashed.stats().retries >= 1, "{:?}", crashed.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_options_idempotent_opts_a_call_in_to_retries() {
    let server = TestServer::start().await.unwrap();
    let client = client(&server, retrying()).await;
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        client.call_tool_with(
            "count",
            json!({ "ms": 5_000 }),
            CallOptions::new().idempotent(),
        ),
    )
    .await
    .expect("bounded by call_timeout")
    .expect("the caller said the call is safe to repeat: it is retried");
    assert_eq!(text(&r), "call 2");
    assert_eq!(server.calls_of("count"), 2);
    assert_eq!(client.stats().retries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_hanging_while_connecting_does_not_block_lookups_of_another() {
    // Service A accepts connections and never answers: its connect takes the whole
    // connect_timeout.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_url = format!("http://{}/mcp", hanging.local_addr().unwrap());
    let accepted = Arc::new(AtomicU64::new(0));
    let holder = tokio::spawn({
        let accepted = accepted.clone();
        async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = hanging.accept().await {
                accepted.fetch_add(1, Ordering::Relaxed);
                held.push(stream);
            }
        }
    });
    let server = TestServer::start().await.unwrap();
    let url = server.url();
    let config = McpClientConfig {
        connect_timeout: Duration::from_secs(60),
        ..quick()
    };
    let factory = Arc::new(McpClientFactory::with_lookup(
        config,
        move |var| match var {
            "HANGING_SERVICE_URL" => Some(hanging_url.clone()),
            "QUICK_SERVICE_URL" => Some(url.clone()),
            _ => None,
        },
    ));
    let lookup = |service: &'static str| {
        let factory = factory.clone();
        tokio::spawn(async move { factory.client(service).await })
    };

    let a = lookup("hanging");
    eventually("service A is connecting", Duration::from_secs(5), || {
        accepted.load(Ordering::Relaxed) >= 1
    })
    .await;
    let b = tokio::time::timeout(Duration::from_secs(10), factory.client("quick"))
        .await
        .expect("the lookup of B does not wait for A's connect")
        .unwrap();
    let r = b
        .call_tool("echo", json!({ "message": "b" }))
        .await
        .unwrap();
    assert_eq!(text(&r), "Echo: b");

    // A second lookup of A waits for the same connect rather than making another.
    let a_again = lookup("hanging");
    assert!(!a.is_finished() && !a_again.is_finished());
    // A's server goes away: its connect fails at once and the client starts unhealthy.
    holder.abort();
    let a = tokio::time::timeout(Duration::from_secs(10), a)
        .await
        .expect("A's connect ends with its server")
        .unwrap()
        .unwrap();
    let a_again = tokio::time::timeout(Duration::from_secs(10), a_again)
        .await
        .expect("the second lookup of A ends with the first")
        .unwrap()
        .unwrap();
    assert!(!a.is_healthy() && !a_again.is_healthy());
    assert_eq!(factory.clients().await.len(), 2, "one client per service");
    factory.close_all(Duration::from_secs(1)).await;
}
