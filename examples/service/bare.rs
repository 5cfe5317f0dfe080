//! `service --bare FILE`: a plain axum server answering `GET /workspaces/{id}` with the
//! bytes of FILE and nothing else (no limiter, metrics, timeout or cache), the baseline
//! `scripts/service-load.sh` measures the service's own layers against.

use axum::Router;
use axum::http::header;
use axum::routing::get;

pub async fn serve(
    addr: std::net::SocketAddr,
    file: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let body = bytes_of(file)?;
    let app = Router::new().route(
        "/workspaces/{id}",
        get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("bare server listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::app::shutdown_signal())
        .await?;
    Ok(())
}

fn bytes_of(file: &str) -> std::io::Result<axum::body::Bytes> {
    Ok(axum::body::Bytes::from(std::fs::read(file)?))
}
