//! A sample auth service speaking the seed guide's contract (v2): `GET /session/validate` answers
//! `{"valid": true, "user": …, "roles": […], "email": …}` for the demo sessions and
//! `{"valid": false}` with 401 otherwise. A session sent as a cookie is renewed on every valid
//! answer (a sliding `Set-Cookie` with the same token) and cleared with the 401, which
//! session-authz passes on to the browser.
//!
//! It also serves the sign-in page browsers are sent to (`login_url = "/login"`): `GET /login`
//! shows a form, `POST /login` sets the session cookie and returns the browser to `return_to`
//! when that is a local path (else to `/admin`).
//!
//! `cargo run --example sample_validator -- [ADDR]` (default `127.0.0.1:5000`).

use std::collections::HashMap;

use axum::extract::{Form, Query};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use cookie::Cookie;
use serde_json::{json, Value};
use session_authz::signin::is_safe_return;

/// The seed guide's demo sessions: token, user, roles, email.
const SESSIONS: &[(&str, &str, &[&str], &str)] = &[
    ("user1-token", "user1", &["admin"], "user1@example.com"),
    ("user2-token", "user2", &["viewer"], "user2@example.com"),
];

/// How long a renewed session cookie lives in the browser.
const SESSION_MAX_AGE_SECS: u32 = 3600;

async fn validate(headers: HeaderMap) -> (StatusCode, HeaderMap, Json<Value>) {
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
    let by_cookie = from_cookie.is_some();
    let token = from_cookie.or(from_header).unwrap_or_default();
    let mut set = HeaderMap::new();
    let session = SESSIONS.iter().find(|(t, ..)| *t == token);
    // Only a cookie session is the browser's to renew or clear; the demo tokens are plain ASCII.
    let cookie = match session {
        Some((token, ..)) => format!(
            "session={token}; Max-Age={SESSION_MAX_AGE_SECS}; HttpOnly; SameSite=Lax; Path=/"
        ),
        None => "session=; Max-Age=0; HttpOnly; SameSite=Lax; Path=/".to_owned(),
    };
    if by_cookie {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            set.insert(SET_COOKIE, value);
        }
    }
    match session {
        Some((_, user, roles, email)) => (
            StatusCode::OK,
            set,
            Json(json!({"valid": true, "user": user, "roles": roles, "email": email})),
        ),
        None => (StatusCode::UNAUTHORIZED, set, Json(json!({"valid": false}))),
    }
}

/// The sign-in form. It posts to this same URL, so `return_to` travels in the query and is never
/// written into the page.
async fn sign_in_page() -> (HeaderMap, &'static str) {
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (
        headers,
        "<!doctype html>\n<title>Sign in</title>\n<h1>Sign in to the admin dashboard</h1>\n\
         <form method=\"post\">\n\
         <label><input type=\"radio\" name=\"user\" value=\"user1\" checked> user1 (admin)</label>\n\
         <label><input type=\"radio\" name=\"user\" value=\"user2\"> user2 (viewer)</label>\n\
         <button>Sign in</button>\n</form>\n",
    )
}

/// Signs a demo user in: the session cookie, and a 303 back to where the browser was going.
async fn sign_in(
    Query(query): Query<HashMap<String, String>>,
    Form(form): Form<HashMap<String, String>>,
) -> (StatusCode, HeaderMap) {
    let mut headers = HeaderMap::new();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let session = SESSIONS
        .iter()
        .find(|(_, user, ..)| Some(*user) == form.get("user").map(String::as_str));
    let Some((token, ..)) = session else {
        return (StatusCode::UNAUTHORIZED, headers);
    };
    // Only a local path: anything else would make this page an open redirect.
    let back = query
        .get("return_to")
        .filter(|path| is_safe_return(path))
        .map_or("/admin", String::as_str);
    let cookie =
        format!("session={token}; Max-Age={SESSION_MAX_AGE_SECS}; HttpOnly; SameSite=Lax; Path=/");
    match (HeaderValue::from_str(&cookie), HeaderValue::from_str(back)) {
        (Ok(cookie), Ok(back)) => {
            headers.insert(SET_COOKIE, cookie);
            headers.insert(LOCATION, back);
            (StatusCode::SEE_OTHER, headers)
        }
        _ => (StatusCode::BAD_REQUEST, headers),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!(
        "sample validator on http://{0}/session/validate, sign-in page on http://{0}/login \
         (demo users: user1 admin, user2 viewer)",
        listener.local_addr()?
    );
    let app = Router::new()
        .route("/session/validate", get(validate))
        .route("/login", get(sign_in_page).post(sign_in));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
