//! A stand-in for the seed guide's "Serverless Proxy": an admin dashboard under `/admin` and
//! `/api/admin` that greets the user Envoy names in `x-auth-user` with the roles in
//! `x-auth-roles`, and public pages elsewhere. It trusts those headers only because Envoy and
//! session-authz in front of it set or strip them on every request.
//!
//! `cargo run --example sample_dashboard -- [ADDR]` (default `127.0.0.1:8000`).

use axum::http::{HeaderMap, Uri};
use axum::Router;

async fn page(uri: Uri, headers: HeaderMap) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let user = header("x-auth-user").unwrap_or("(no user header)");
    let roles = header("x-auth-roles").unwrap_or("none");
    let path = uri.path();
    if path.starts_with("/admin") || path.starts_with("/api/admin") {
        format!("Admin dashboard: hello, {user}! Your roles: {roles}. ({path})\n")
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
