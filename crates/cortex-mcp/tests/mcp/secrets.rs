//! Secrets stay put: no password in `Debug` output, and no environment variable of the
//! client's process reaches a stdio child unless it is allowed.

use std::process::Stdio;
use std::time::Duration;

use cortex_mcp::{Endpoint, Error, McpClient, McpClientConfig, McpClientFactory};
use cortex_metrics::Metrics;
use serde_json::{Map, Value, json};
use tokio::process::Command;

const PASSWORD: &str = "s3cret-pw";

/// A loopback address nobody listens on.
fn closed_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn config() -> McpClientConfig {
    McpClientConfig {
        pool_size: 1,
        connect_timeout: Duration::from_millis(500),
        retry_delay: Duration::from_millis(50),
        max_retry_delay: Duration::from_millis(200),
        ..McpClientConfig::default()
    }
}

/// URLs of a service at `addr` with the secret in the userinfo, in a query parameter,
/// and in a password holding a `/`.
fn secret_urls(addr: impl std::fmt::Display) -> [String; 3] {
    [
        format!("http://app:{PASSWORD}@{addr}/mcp"),
        format!("http://app:{PASSWORD}@{addr}/mcp?access_token={PASSWORD}"),
        format!("http://app:a/{PASSWORD}@{addr}/mcp"),
    ]
}

/// `Display` and `Debug` of `err` and of every source under it.
fn chain_of(err: &(dyn std::error::Error + 'static)) -> String {
    let mut shown = format!("{err} {err:?}");
    let mut source = err.source();
    while let Some(e) = source {
        shown.push_str(&format!(" | {e} {e:?}"));
        source = e.source();
    }
    shown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_never_shows_the_password_of_the_url() {
    for url in secret_urls(closed_addr()) {
        let builder = McpClient::builder("secret", Endpoint::http(&url))
            .config(config())
            .metrics(&Metrics::new());
        let builder_debug = format!("{builder:?}");
        let client = builder.require_connection(false).build().await.unwrap();
        let err = McpClient::builder("secret", Endpoint::http(&url))
            .config(config())
            .metrics(&Metrics::new())
            .build()
            .await
            .unwrap_err();
        assert!(matches!(&err, Error::Connect { .. }), "{err}");
        let factory_url = url.clone();
        let factory = McpClientFactory::with_lookup(config(), move |_| Some(factory_url.clone()))
            .metrics(&Metrics::new());
        let made = factory.client("secret").await.unwrap();

        let shown = [
            ("client", format!("{client:?}")),
            ("client, pretty", format!("{client:#?}")),
            ("factory's client", format!("{made:?}")),
            ("factory", format!("{factory:?}")),
            ("builder", builder_debug),
            ("endpoint", format!("{:?}", client.endpoint())),
            ("endpoint, displayed", client.endpoint().to_string()),
            ("stats", format!("{:?}", client.stats())),
            ("connect error", chain_of(&err)),
        ];
        for (what, text) in &shown {
            assert!(
                !text.contains(PASSWORD),
                "{url}: {what} shows the password: {text}"
            );
        }
        let client_debug = &shown[0].1;
        assert!(
            client_debug.contains("app:***@"),
            "the client shows its redacted endpoint: {client_debug}"
        );
        client.close(Duration::from_millis(100)).await;
        factory.close_all(Duration::from_millis(100)).await;
    }
}

/// The transport's own messages (reqwest names the URL it failed on) are redacted too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_errors_never_show_the_password_of_the_url() {
    let server = cortex_mcp::testing::TestServer::start().await.unwrap();
    let url = &secret_urls(server.addr())[1];
    let config = McpClientConfig {
        max_retries: 0,
        breaker_failures: 0,
        ..config()
    };
    let client = McpClient::builder("secret", Endpoint::http(url))
        .config(config)
        .metrics(&Metrics::new())
        .build()
        .await
        .unwrap();
    let r = client
        .call_tool("echo", json!({ "message": "up" }))
        .await
        .unwrap();
    assert!(!r.content.is_empty());
    server.kill();
    drop(server);
    let err = client
        .call_tool("echo", json!({ "message": "down" }))
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Transport { .. }), "{err:?}");
    // The transport's error is kept as the source, with the URL taken out of it.
    assert!(
        std::error::Error::source(&err).is_some(),
        "the transport's error is the source: {err:?}"
    );
    let shown = chain_of(&err);
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(!shown.contains("access_token"), "{shown}");
    client.close(Duration::from_millis(100)).await;
}

/// The environment of the reference server's process, from its `get-env` tool.
fn env_of(result: &Value) -> Map<String, Value> {
    let text = result["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {result}"));
    match serde_json::from_str(text) {
        Ok(Value::Object(env)) => env,
        other => panic!("get-env answers a JSON object, not {other:?}"),
    }
}

fn assert_lacks(env: &Map<String, Value>, names: &[&str]) {
    for name in names {
        assert!(
            !env.contains_key(*name),
            "the child sees {name}: {:?}",
            env.keys().collect::<Vec<_>>()
        );
    }
    let all = Value::Object(env.clone()).to_string();
    assert!(!all.contains("secret"), "a secret reached the child: {all}");
}

fn assert_has(env: &Map<String, Value>, vars: &[(&str, &str)]) {
    for (name, value) in vars {
        assert_eq!(
            env.get(*name).and_then(Value::as_str),
            Some(*value),
            "{name} in {:?}",
            env.keys().collect::<Vec<_>>()
        );
    }
}

/// The database and Redis URLs are in the environment of the process that runs the
/// client (the `mcp-call` example); its stdio child, the reference server, does not
/// get them, but gets `PATH`, the locale and what `MCP_STDIO_ENV` names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_child_does_not_inherit_the_environment_of_the_client_process() {
    let js = crate::interop::everything_js();
    let js = js.to_str().unwrap();
    assert!(!js.contains(char::is_whitespace), "{js}");
    let command = format!("node {js} stdio");
    let args = ["--stdio", command.as_str(), "--tool", "get-env"];
    let run = Command::new(crate::interop::mcp_call_bin())
        .args(args)
        .env("DATABASE_URL", "postgres://app:db-secret@db.internal/app")
        .env("REDIS_URL", "redis://:redis-secret@cache.internal:6379")
        .env("CORTEX_TEST_ALLOWED", "passed")
        .env("MCP_STDIO_ENV", "CORTEX_TEST_ALLOWED")
        .env("LC_CORTEX_TEST", "locale")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
        .wait_with_output();
    let run = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("mcp-call finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "mcp-call {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&run.stderr)
    );
    let env = env_of(&serde_json::from_str(&stdout).unwrap());
    assert_lacks(&env, &["DATABASE_URL", "REDIS_URL"]);
    assert_has(
        &env,
        &[
            ("LC_CORTEX_TEST", "locale"),
            ("CORTEX_TEST_ALLOWED", "passed"),
        ],
    );
    assert!(env.contains_key("PATH"), "{:?}", env.keys());
}

/// The same through the builder: the environment the allow-list picks from, the
/// names the config adds, and variables set for the child alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_child_gets_the_allow_list_the_config_and_the_builder_say() {
    let js = crate::interop::everything_js();
    let path = std::env::var("PATH").expect("PATH is set");
    let home = std::env::var("HOME").unwrap_or_else(|_| "/".to_owned());
    let parent = [
        ("PATH", path.as_str()),
        ("HOME", home.as_str()),
        ("LANG", "C.UTF-8"),
        ("LC_ALL", "C"),
        ("DATABASE_URL", "postgres://app:db-secret@db.internal/app"),
        ("REDIS_URL", "redis://:redis-secret@cache.internal:6379"),
        ("CORTEX_EXTRA_ONE", "one"),
        ("CORTEX_EXTRA_TWO", "two"),
        ("CORTEX_NAMED", "named"),
        ("CORTEX_OTHER", "other-secret"),
    ];
    let config = McpClientConfig {
        connect_timeout: Duration::from_secs(20),
        stdio_env: vec!["CORTEX_EXTRA_*".to_owned(), "CORTEX_NAMED".to_owned()],
        ..config()
    };
    let builder = McpClient::builder(
        "env",
        Endpoint::stdio("node", [js.to_str().unwrap(), "stdio"]),
    )
    .config(config)
    .metrics(&Metrics::new())
    .parent_env(parent)
    .stdio_env("CORTEX_TOKEN", "tok-only-for-the-child")
    .stdio_env("CORTEX_NAMED", "overridden");
    let shown = format!("{builder:?}");
    assert!(
        !shown.contains("tok-only")
            && !shown.contains("db-secret")
            && shown.contains("CORTEX_TOKEN"),
        "{shown}"
    );
    let client = builder.build().await.unwrap();
    let result = client.call_tool("get-env", json!({})).await.unwrap();
    let env = env_of(&serde_json::to_value(&result).unwrap());
    assert_lacks(&env, &["DATABASE_URL", "REDIS_URL", "CORTEX_OTHER"]);
    assert_has(
        &env,
        &[
            ("PATH", path.as_str()),
            ("HOME", home.as_str()),
            ("LANG", "C.UTF-8"),
            ("LC_ALL", "C"),
            ("CORTEX_EXTRA_ONE", "one"),
            ("CORTEX_EXTRA_TWO", "two"),
            ("CORTEX_NAMED", "overridden"),
            ("CORTEX_TOKEN", "tok-only-for-the-child"),
        ],
    );
    assert!(!format!("{client:?}").contains("tok-only"), "{client:?}");
    client.close(Duration::from_secs(2)).await;
}
