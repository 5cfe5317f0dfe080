//! The real servers that `scripts/services.sh` starts answer on loopback.
//!
//! These tests never skip: when a server is absent they fail with the URL they tried.

use std::time::Duration;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The URL with any password replaced, so a failure message never leaks it: the one
/// redaction every crate uses.
fn redact(url: &str) -> String {
    cortex_core::support::redact::redact_url(url)
}

#[tokio::test]
async fn postgres_answers_select_1() {
    let url = env_or("DATABASE_URL", "postgres://cortex@127.0.0.1:5432/cortex");
    let shown = redact(&url);
    let mut conn = tokio::time::timeout(
        Duration::from_secs(10),
        <sqlx::PgConnection as sqlx::Connection>::connect(&url),
    )
    .await
    .unwrap_or_else(|_| {
        panic!("PostgreSQL at {shown} did not answer within 10 s: run scripts/services.sh")
    })
    .unwrap_or_else(|e| {
        panic!("PostgreSQL at {shown} is not reachable ({e}): run scripts/services.sh")
    });
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("SELECT 1 on {shown} failed: {e}"));
    assert_eq!(one, 1);
}

#[tokio::test]
async fn redis_answers_ping() {
    let url = env_or("REDIS_URL", "redis://127.0.0.1:6379");
    let shown = redact(&url);
    let client = redis::Client::open(url.as_str())
        .unwrap_or_else(|e| panic!("REDIS_URL {shown} is not a valid Redis URL: {e}"));
    let mut conn = tokio::time::timeout(
        Duration::from_secs(10),
        client.get_multiplexed_async_connection(),
    )
    .await
    .unwrap_or_else(|_| {
        panic!("Redis at {shown} did not answer within 10 s: run scripts/services.sh")
    })
    .unwrap_or_else(|e| panic!("Redis at {shown} is not reachable ({e}): run scripts/services.sh"));
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("PING on {shown} failed: {e}"));
    assert_eq!(pong, "PONG");
}
