//! End to end through real nginx (`auth_request`), Caddy (`forward_auth`) and Traefik
//! (`forwardAuth`), running the shipped `proxies/` files (ports substituted), the session-authz binary with its
//! forward-auth door and the shipped `proxies/session-authz.toml`, a fake validator and an app
//! that echoes the headers it got.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use session_authz_testkit::forward_auth::ForwardAuthStack;
use session_authz_testkit::http::*;
use session_authz_testkit::process::free_addr;
use session_authz_testkit::proxies::{Kind, ProxyProcess};
use session_authz_testkit::validator::*;
use session_authz_testkit::wait::eventually;

async fn through(kind: Kind) {
    let mut answers = demo_answers();
    answers.extend([
        // Cached: its renewal reaches the client once, from the fresh answer only.
        (
            "user3-token",
            Answer::json(200, r#"{"valid":true,"user":"user3"}"#).header(
                "set-cookie",
                "session=user3-token; Expires=Wed, 21 Oct 2037 07:28:00 GMT; HttpOnly",
            ),
        ),
        // Two renewal cookies on one answer.
        (
            "user4-token",
            Answer::json(200, r#"{"valid":true,"user":"user4"}"#)
                .header("set-cookie", "session=user4-token; Max-Age=3600; HttpOnly")
                .header("set-cookie", "theme=dark; Max-Age=3600")
                .header("cache-control", "no-store"),
        ),
    ]);
    let ForwardAuthStack {
        validator,
        app,
        authz,
        door,
    } = ForwardAuthStack::start(
        answers,
        "proxies/session-authz.toml",
        &[
            // Absolute: Traefik resolves a relative Location against the door's own address.
            ("SESSION_AUTHZ_LOGIN_URL", "https://dash.example/login"),
            // Long enough that a cached answer is still cached on the next request, however
            // slow.
            ("SESSION_AUTHZ_CACHE_TTL", "10m"),
        ],
    )
    .await;
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
        "x-auth-assertion",
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
    // No other spelling of an identity header reaches the app beside the one the proxy set,
    // on the checked routes (the viewer's real headers with forged ones would be
    // `HTTP_X_AUTH_ROLES=viewer,admin` to a WSGI app) nor on the public ones.
    let aliases = forged_identity_aliases(true);
    let session = [("Cookie", "session=user2-token")];
    let aliased = raw_get(proxy.listener, "/admin", &with_aliases(&session, &aliases)).await;
    assert_eq!(aliased.status, 200, "{kind:?} {aliased:?} {}", log());
    assert_eq!(
        aliased.identity_as_cgi(),
        [vec!["user2"], vec!["viewer"], vec![], vec![]],
        "{kind:?}: {aliased:?}"
    );
    let aliased = raw_get(proxy.listener, "/", &with_aliases(&[], &aliases)).await;
    assert_eq!(aliased.status, 200, "{kind:?} {aliased:?} {}", log());
    assert_eq!(
        aliased.identity_as_cgi(),
        [Vec::<String>::new(), vec![], vec![], vec![]],
        "{kind:?}: {aliased:?}"
    );

    // Session renewal reaches the client, once, and never the app.
    assert_eq!(
        allowed.header_values("set-cookie"),
        ["session=user1-token; Max-Age=3600; HttpOnly"],
        "{kind:?} {}",
        log()
    );
    assert!(allowed.upstream_saw("set-cookie").is_empty(), "{allowed:?}");

    // A cacheable answer renews on the request that asked the validator, not on a cache hit.
    let calls = validator.calls();
    let fresh = get("/admin", vec![("Cookie", "session=user3-token")]).await;
    assert_eq!(fresh.status, 200, "{kind:?} {fresh:?}");
    assert_eq!(fresh.upstream_saw("x-auth-user"), ["user3"]);
    assert_eq!(
        fresh.header_values("set-cookie"),
        ["session=user3-token; Expires=Wed, 21 Oct 2037 07:28:00 GMT; HttpOnly"],
        "{kind:?} {}",
        log()
    );
    assert!(fresh.upstream_saw("set-cookie").is_empty(), "{fresh:?}");
    assert_eq!(validator.calls(), calls + 1, "{kind:?}");
    let cached = get("/admin", vec![("Cookie", "session=user3-token")]).await;
    assert_eq!(cached.status, 200, "{kind:?} {cached:?}");
    assert_eq!(cached.upstream_saw("x-auth-user"), ["user3"]);
    assert_eq!(validator.calls(), calls + 1, "{kind:?}: not a cache hit");
    assert!(
        cached.header_values("set-cookie").is_empty(),
        "{kind:?} {cached:?}"
    );

    // Two renewal cookies: what each proxy can pass on (proxies/README.md). Caddy 2.6 would
    // join them into one broken header, so its sample passes neither; never a joined one.
    let two = get("/admin", vec![("Cookie", "session=user4-token")]).await;
    assert_eq!(two.status, 200, "{kind:?} {two:?}");
    let expected: &[&str] = match kind {
        Kind::Nginx => &["session=user4-token; Max-Age=3600; HttpOnly"],
        Kind::Caddy => &[],
        Kind::Traefik => &["session=user4-token; Max-Age=3600; HttpOnly"],
    };
    assert_eq!(
        two.header_values("set-cookie"),
        expected,
        "{kind:?} {}",
        log()
    );

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
    for name in IDENTITY_HEADERS {
        assert!(
            public.upstream_saw(name).is_empty(),
            "{kind:?}: the app got {name}: {public:?}"
        );
    }
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

/// The first nginx config a user writes: `auth_request`, `auth_request_set` and
/// `error_page 401`, none of the shipped sample's `@authz_other` machinery. The door gives
/// nginx a browser's sign-in as its 401 with `Location`, so this redirects browsers, keeps API
/// clients' 401, and never shows nginx's "auth request unexpected status: 302" 500. (Not a
/// sample to copy: proxies/nginx/nginx.conf is the one that also normalises paths and strips
/// forged headers.)
const MINIMAL_NGINX: &str = r#"
worker_processes 1;
pid nginx.pid;
error_log stderr warn;
events {}
http {
    client_body_temp_path tmp/client_body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    server {
        listen LISTENER;
        location = /_auth {
            internal;
            proxy_pass http://DOOR;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URI $request_uri;
        }
        location /admin {
            auth_request /_auth;
            auth_request_set $user $upstream_http_x_auth_user;
            auth_request_set $signin $upstream_http_location;
            error_page 401 = @signin;
            proxy_set_header X-Auth-User $user;
            proxy_pass http://APP;
        }
        location @signin {
            if ($signin) {
                return 302 $signin;
            }
            return 401;
        }
    }
}
"#;

/// Each proxy keeps its connections to the door alive: nginx needs an upstream `keepalive` pool
/// over HTTP/1.1 for it (by default it opens a TCP connection for every `auth_request`, which
/// costs nginx and the door more than the check itself); Caddy and Traefik pool on their own.
/// Where the shipped file sets how long an idle one is kept (`idle`, the setting's name), that is
/// shorter than the door keeps it, so that the proxy never sends a check on a connection the
/// door is closing (Traefik has no such setting; Go's client retries a GET on a fresh one).
async fn reuses_connections_to_the_door(kind: Kind, idle: Option<&str>) {
    let stack = ForwardAuthStack::start(demo_answers(), "proxies/session-authz.toml", &[]).await;
    let relay = CountingRelay::start(stack.door).await;
    let proxy = ProxyProcess::start(kind, relay.addr, stack.app.addr).await;
    let checks = 20;
    for _ in 0..checks {
        let allowed = raw_get(
            proxy.listener,
            "/admin",
            &[("Cookie", "session=user1-token")],
        )
        .await;
        assert_eq!(allowed.status, 200, "{kind:?} {allowed:?} {}", proxy.log());
        assert_eq!(allowed.upstream_saw("x-auth-user"), ["user1"]);
    }
    // One connection, or a second should an idle one have been let go in between.
    assert!(
        relay.accepted() <= 2,
        "{kind:?}: {} connections to the door for {checks} sequential checks",
        relay.accepted()
    );

    let Some(idle) = idle else { return };
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(kind.shipped()),
    )
    .unwrap();
    let seconds: Vec<u64> = shipped
        .lines()
        .filter_map(|line| line.trim().strip_prefix(idle)?.strip_prefix(' '))
        .map(|value| {
            let value = value.trim_end_matches(';').strip_suffix('s');
            value
                .and_then(|s| s.parse().ok())
                .expect("idle time in seconds")
        })
        .collect();
    let door_idle = session_authz::doors::http::LIMITS.header_read_timeout;
    assert_eq!(seconds.len(), 1, "{}: one {idle}", kind.shipped());
    assert!(
        std::time::Duration::from_secs(seconds[0]) < door_idle,
        "{kind:?} keeps idle connections {} s, the door closes them after {door_idle:?}",
        seconds[0]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_reuses_connections_to_the_door() {
    reuses_connections_to_the_door(Kind::Nginx, Some("keepalive_timeout")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn caddy_reuses_connections_to_the_door() {
    reuses_connections_to_the_door(Kind::Caddy, Some("keepalive")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn traefik_reuses_connections_to_the_door() {
    reuses_connections_to_the_door(Kind::Traefik, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_minimal_config_sends_browsers_to_sign_in() {
    let stack = ForwardAuthStack::start(
        demo_answers(),
        "proxies/session-authz.toml",
        &[("SESSION_AUTHZ_LOGIN_URL", "https://dash.example/login")],
    )
    .await;
    let (door, app) = (stack.door, &stack.app);
    let listener = free_addr();
    let config = MINIMAL_NGINX
        .replace("LISTENER", &listener.to_string())
        .replace("DOOR", &door.to_string())
        .replace("APP", &app.addr.to_string());
    let proxy = ProxyProcess::start_with_config(Kind::Nginx, listener, config).await;

    let browser = [("accept", "text/html"), ("sec-fetch-mode", "navigate")];
    let redirect = raw_get(proxy.listener, "/admin/x?tab=1", &browser).await;
    assert_eq!(redirect.status, 302, "{redirect:?} {}", proxy.log());
    assert_eq!(
        redirect.header("location"),
        Some("https://dash.example/login?return_to=%2Fadmin%2Fx%3Ftab%3D1")
    );
    // A browser whose cookie the auth service rejects is sent too; an API client is not.
    let stale = [browser.as_slice(), &[("Cookie", "session=stolen")]].concat();
    let redirect = raw_get(proxy.listener, "/admin", &stale).await;
    assert_eq!(redirect.status, 302, "{redirect:?} {}", proxy.log());
    let api = raw_get(proxy.listener, "/admin", &[("accept", "application/json")]).await;
    assert_eq!(api.status, 401, "{api:?} {}", proxy.log());
    assert!(api.header("location").is_none(), "{api:?}");
    let header = [browser.as_slice(), &[("X-Session-Token", "stolen")]].concat();
    let api = raw_get(proxy.listener, "/admin", &header).await;
    assert_eq!(api.status, 401, "{api:?}");
    assert!(app.hits().is_empty(), "{:?}", app.hits());

    let allowed = raw_get(
        proxy.listener,
        "/admin",
        &[("Cookie", "session=user1-token")],
    )
    .await;
    assert_eq!(allowed.status, 200, "{allowed:?} {}", proxy.log());
    assert_eq!(allowed.upstream_saw("x-auth-user"), ["user1"]);
    assert!(
        !proxy.log().contains("unexpected status"),
        "{}",
        proxy.log()
    );
}
