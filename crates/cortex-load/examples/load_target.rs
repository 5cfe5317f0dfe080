//! A tiny HTTP target for load tests: `GET /` answers a small body.
//! Usage: `cargo run --release --example load_target -- [PORT]` (default 8080).

use axum::{Router, routing::get};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let app = Router::new().route("/", get(|| async { "hello, load\n" }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("load_target listening on http://127.0.0.1:{port}");
    axum::serve(listener, app).await
}
