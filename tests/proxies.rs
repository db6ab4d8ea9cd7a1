//! End to end through real nginx (`auth_request`), Caddy (`forward_auth`) and Traefik
//! (`forwardAuth`), running the shipped `proxies/` files (ports substituted), the session-authz binary with its
//! forward-auth door and the shipped `proxies/session-authz.toml`, a fake validator and an app
//! that echoes the headers it got.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use session_authz_testkit::http::*;
use session_authz_testkit::process::root;
use session_authz_testkit::proxies::{Kind, ProxyProcess};
use session_authz_testkit::service::ServiceProcess;
use session_authz_testkit::validator::*;
use session_authz_testkit::wait::eventually;

/// Every header a client could forge to change what is checked or whom the app believes.
const FORGED: [(&str, &str); 8] = [
    ("x-auth-user", "root"),
    ("x-auth-roles", "superuser"),
    ("x-auth-email", "root@evil.example"),
    ("X-Forwarded-Method", "GET"),
    ("X-Forwarded-Uri", "/"),
    ("X-Original-Method", "GET"),
    ("X-Original-URI", "/"),
    ("X-Forwarded-Host", "evil.example"),
];

async fn through(kind: Kind) {
    let validator = FakeValidator::start(vec![
        (
            "user1-token",
            Answer::json(
                200,
                r#"{"valid":true,"user":"user1","roles":["admin"],"email":"user1@example.com"}"#,
            )
            .header("set-cookie", "session=user1-token; Max-Age=3600; HttpOnly")
            // Each request's own call, so that every one renews.
            .header("cache-control", "no-store"),
        ),
        (
            "user2-token",
            Answer::json(200, r#"{"valid":true,"user":"user2","roles":["viewer"]}"#),
        ),
        ("broken-token", Answer::json(500, "{}")),
    ])
    .await;
    let app = Upstream::start().await;
    let url = validator.url();
    let config = root().join("proxies/session-authz.toml");
    let authz = ServiceProcess::spawn(&[
        ("AIMENU_URL", url.as_str()),
        ("SESSION_AUTHZ_FORWARD_AUTH_ADDR", "127.0.0.1:0"),
        ("SESSION_AUTHZ_CONFIG", config.to_str().unwrap()),
        // Absolute: Traefik resolves a relative Location against the door's own address.
        ("SESSION_AUTHZ_LOGIN_URL", "https://dash.example/login"),
    ]);
    let door = authz.forward_auth_addr.expect("forward-auth door");
    let proxy = ProxyProcess::start(kind, door, app.addr).await;
    let get = |target: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let listener = proxy.listener;
        async move { raw_get(listener, target, &headers).await }
    };
    let with_forged = |session: (&'static str, &'static str)| {
        let mut headers = vec![session];
        headers.extend_from_slice(&FORGED);
        headers
    };
    let log = || proxy.log();

    // No session: 401, never the app; a browser's page load is sent to sign in.
    let denied = get("/admin", FORGED.to_vec()).await;
    assert_eq!(denied.status, 401, "{kind:?} {denied:?} {}", log());
    assert_eq!(denied.body, r#"{"error":"unauthenticated"}"#);
    let redirect = get(
        "/admin",
        vec![("accept", "text/html"), ("sec-fetch-mode", "navigate")],
    )
    .await;
    assert_eq!(redirect.status, 302, "{kind:?} {redirect:?}");
    assert_eq!(
        redirect.header("location"),
        Some("https://dash.example/login?return_to=%2Fadmin")
    );
    assert!(app.hits().is_empty(), "{kind:?}: {:?}", app.hits());

    // user1: the app sees user1 and its roles, and none of the client's forged headers.
    let allowed = get("/admin", with_forged(("Cookie", "session=user1-token"))).await;
    assert_eq!(allowed.status, 200, "{kind:?} {allowed:?} {}", log());
    assert_eq!(allowed.upstream_saw("x-auth-user"), ["user1"]);
    assert_eq!(allowed.upstream_saw("x-auth-roles"), ["admin"]);
    assert_eq!(allowed.upstream_saw("x-auth-email"), ["user1@example.com"]);
    for name in [
        "x-original-method",
        "x-original-uri",
        "x-forwarded-method",
        "x-forwarded-uri",
    ] {
        assert!(
            allowed.upstream_saw(name).is_empty(),
            "{kind:?}: the app got {name}: {allowed:?}"
        );
    }
    assert!(
        !allowed
            .upstream_saw("x-forwarded-host")
            .contains(&"evil.example".to_owned()),
        "{kind:?}: {allowed:?}"
    );
    if kind != Kind::Caddy {
        // Session renewal reaches the client (Caddy 2.6's forward_auth drops it: README).
        assert_eq!(
            allowed.header("set-cookie"),
            Some("session=user1-token; Max-Age=3600; HttpOnly")
        );
    }

    // The admin-only area: user2 refused whatever it forges, user1 let in.
    let refused = get(
        "/admin/settings",
        with_forged(("X-Session-Token", "user2-token")),
    )
    .await;
    assert_eq!(refused.status, 403, "{kind:?} {refused:?}");
    let refused = get(
        "/Admin/Settings/x",
        vec![("X-Session-Token", "user2-token")],
    )
    .await;
    assert_eq!(refused.status, 403, "{kind:?} {refused:?}");
    let admin = get("/admin/settings", vec![("X-Session-Token", "user1-token")]).await;
    assert_eq!(admin.status, 200, "{kind:?} {admin:?}");
    assert_eq!(admin.upstream_saw("x-auth-user"), ["user1"]);
    // Another spelling of the same path is refused (nginx, Caddy: 400), or normalised before
    // the check so that it is the same route (Traefik: 403); never checked as another route.
    let before = app.hits().len();
    for odd in [
        "/admin/%73ettings",
        "/admin//settings",
        "/admin/./settings",
        "/public/../admin/settings",
        "/admin;x/settings",
    ] {
        let response = raw_get(proxy.listener, odd, &[("X-Session-Token", "user2-token")]).await;
        assert!(
            [400, 403].contains(&response.status),
            "{kind:?} {odd}: {response:?}"
        );
    }
    assert_eq!(app.hits().len(), before, "{kind:?}: {:?}", app.hits());

    // No spelling of an admin path reaches the app without a session.
    let before = app.hits().len();
    for (target, headers) in PATH_SPELLINGS {
        let response = raw_get(proxy.listener, target, headers).await;
        assert!(
            [400, 401, 403, 404].contains(&response.status),
            "{kind:?} {target} {headers:?}: {response:?}"
        );
    }
    assert_eq!(app.hits().len(), before, "{kind:?}: {:?}", app.hits());

    // Public traffic: no check, no forged identity.
    let public = get("/", FORGED.to_vec()).await;
    assert_eq!(public.status, 200, "{kind:?} {public:?}");
    assert!(public.upstream_saw("x-auth-user").is_empty());
    assert!(public.upstream_saw("x-original-uri").is_empty());

    // The auth service failing: 503, never the app.
    let before = app.hits().len();
    let broken = get("/admin", vec![("Cookie", "session=broken-token")]).await;
    assert_eq!(broken.status, 503, "{kind:?} {broken:?} {}", log());
    assert_eq!(broken.header("retry-after"), Some("5"));
    // session-authz itself gone: 503 (Traefik's forwardAuth answers an unreachable auth
    // server with its own 500, and cannot be told otherwise), never the app.
    drop(authz);
    let expected = if kind == Kind::Traefik { 500 } else { 503 };
    let down = eventually(Duration::from_secs(20), || async {
        let response = get("/admin", vec![("Cookie", "session=user1-token")]).await;
        (response.status == expected).then_some(response)
    })
    .await;
    assert!(
        down.is_some(),
        "{kind:?}: no {expected} with session-authz down: {}",
        log()
    );
    assert_eq!(app.hits().len(), before, "{kind:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_auth_request() {
    through(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn caddy_forward_auth() {
    through(Kind::Caddy).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn traefik_forward_auth() {
    through(Kind::Traefik).await;
}
