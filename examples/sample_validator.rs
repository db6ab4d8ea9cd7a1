//! A sample auth service speaking the seed guide's contract (v2): `GET /session/validate` answers
//! `{"valid": true, "user": …, "roles": […], "email": …}` for the demo sessions and
//! `{"valid": false}` with 401 otherwise.
//!
//! `cargo run --example sample_validator -- [ADDR]` (default `127.0.0.1:5000`).

use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use cookie::Cookie;
use serde_json::{json, Value};

/// The seed guide's demo sessions: token, user, roles, email.
const SESSIONS: &[(&str, &str, &[&str], &str)] = &[
    ("user1-token", "user1", &["admin"], "user1@example.com"),
    ("user2-token", "user2", &["viewer"], "user2@example.com"),
];

async fn validate(headers: HeaderMap) -> (StatusCode, Json<Value>) {
    let from_cookie = headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| Cookie::split_parse(v).flatten().collect::<Vec<_>>())
        .find(|c| c.name() == "session")
        .map(|c| c.value_trimmed().to_owned());
    let from_header = headers
        .get("x-session-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let token = from_cookie.or(from_header).unwrap_or_default();
    match SESSIONS.iter().find(|(t, ..)| *t == token) {
        Some((_, user, roles, email)) => (
            StatusCode::OK,
            Json(json!({"valid": true, "user": user, "roles": roles, "email": email})),
        ),
        None => (StatusCode::UNAUTHORIZED, Json(json!({"valid": false}))),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!(
        "sample validator on http://{}/session/validate (demo users: user1 admin, user2 viewer)",
        listener.local_addr()?
    );
    let app = Router::new().route("/session/validate", get(validate));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
