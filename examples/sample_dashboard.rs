//! A stand-in for the seed guide's "Serverless Proxy": an admin dashboard under `/admin` and
//! `/api/admin` that greets the user Envoy names in `x-auth-user`, and public pages elsewhere.
//! It trusts `x-auth-user` only because Envoy in front of it sets or strips that header.
//!
//! `cargo run --example sample_dashboard -- [ADDR]` (default `127.0.0.1:8000`).

use axum::http::{HeaderMap, Uri};
use axum::Router;

async fn page(uri: Uri, headers: HeaderMap) -> String {
    let user = headers
        .get("x-auth-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(no user header)");
    let path = uri.path();
    if path.starts_with("/admin") || path.starts_with("/api/admin") {
        format!("Admin dashboard: hello, {user}! ({path})\n")
    } else {
        format!("Public page {path}: no session needed.\n")
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("sample dashboard on http://{}", listener.local_addr()?);
    axum::serve(listener, Router::new().fallback(page))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
