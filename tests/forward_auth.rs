//! The forward-auth door: every row of the decision table through it in-process (its router
//! driven request by request on a core from the configuration, a fake validator on loopback),
//! with requests as nginx, Caddy, Traefik and Envoy's `http_service` send them and the same
//! bodies and headers as the gRPC door; and the binary with `forward_auth_addr`, for what only
//! a real listener shows (kept-alive, idle and half-sent connections; the door off by default).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use session_authz_testkit::forward_auth::InProcessDoor;
use session_authz_testkit::http::{RawResponse, FORGED_ASSERTION, IDENTITY_HEADERS};
use session_authz_testkit::service::ServiceProcess;
use session_authz_testkit::validator::{Answer, FakeValidator};
use session_authz_testkit::wait::eventually;

const ROUTES: &str = "[[routes]]\nprefix = \"/admin/settings\"\nrequire_roles = [\"admin\"]\n";

fn valid(user: &str, role: &str) -> Answer {
    Answer::json(
        200,
        &format!(
            r#"{{"valid":true,"user":"{user}","roles":["{role}"],"email":"{user}@example.com"}}"#
        ),
    )
}

async fn validator() -> FakeValidator {
    FakeValidator::start(vec![
        (
            "user1-token",
            valid("user1", "admin").header("set-cookie", "session=user1-token; Max-Age=3600"),
        ),
        ("user2-token", valid("user2", "viewer")),
        ("nameless", Answer::json(200, r#"{"valid":true}"#)),
        (
            "stolen",
            Answer::json(401, r#"{"valid":false}"#).header("set-cookie", "session=; Max-Age=0"),
        ),
        ("broken", Answer::json(500, "{}")),
    ])
    .await
}

struct Door {
    _service: ServiceProcess,
    addr: SocketAddr,
    _config: tempfile::NamedTempFile,
}

fn start(validator: &FakeValidator, extra: &[(&str, &str)]) -> Door {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), ROUTES).unwrap();
    let url = validator.url();
    let mut env = vec![
        ("AIMENU_URL", url.as_str()),
        ("SESSION_AUTHZ_FORWARD_AUTH_ADDR", "127.0.0.1:0"),
        ("SESSION_AUTHZ_CONFIG", config.path().to_str().unwrap()),
        ("SESSION_AUTHZ_LOGIN_URL", "/login"),
    ];
    env.extend_from_slice(extra);
    let service = ServiceProcess::spawn(&env);
    let addr = service
        .forward_auth_addr
        .expect("the ready line names the forward-auth address");
    Door {
        _service: service,
        addr,
        _config: config,
    }
}

/// The door in-process on `validator`, with the routes above and `login_url = "/login"`.
fn in_process(validator: &FakeValidator, extra: &[(&str, &str)]) -> InProcessDoor {
    let url = validator.url();
    let mut keys = vec![("aimenu_url", url.as_str()), ("login_url", "/login")];
    keys.extend_from_slice(extra);
    InProcessDoor::new(ROUTES, &keys)
}

/// As Caddy and Traefik ask: their own request line, the original in `X-Forwarded-*`.
async fn forwarded(
    door: &InProcessDoor,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> RawResponse {
    let mut all = vec![
        ("X-Forwarded-Method", method),
        ("X-Forwarded-Uri", uri),
        ("X-Forwarded-Host", "dash.example"),
    ];
    all.extend_from_slice(headers);
    door.request("GET", "/", &all).await
}

fn assert_denied(response: &RawResponse, status: u16, error: &str) {
    assert_eq!(response.status, status, "{response:?}");
    assert_eq!(response.body, format!("{{\"error\":\"{error}\"}}"));
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(
        response.header("retry-after"),
        (status == 503).then_some("5"),
        "{response:?}"
    );
    for name in IDENTITY_HEADERS {
        assert_eq!(response.header(name), None, "{name} on a denial");
    }
}

#[tokio::test]
async fn every_decision_through_the_forward_auth_door() {
    let validator = validator().await;
    let door = in_process(&validator, &[]);

    // No session: 401 for an API client, a 302 to sign in for a browser's page load.
    assert_denied(
        &forwarded(&door, "GET", "/admin", &[]).await,
        401,
        "unauthenticated",
    );
    let browser = [("accept", "text/html"), ("sec-fetch-mode", "navigate")];
    let redirect = forwarded(&door, "GET", "/admin?tab=1", &browser).await;
    assert_eq!(redirect.status, 302, "{redirect:?}");
    assert_eq!(
        redirect.header("location"),
        Some("/login?return_to=%2Fadmin%3Ftab%3D1")
    );
    assert_eq!(redirect.header("cache-control"), Some("no-store"));
    // The browser's POST is no page load: the 401 stands.
    let post = forwarded(&door, "POST", "/admin", &browser).await;
    assert_denied(&post, 401, "unauthenticated");
    assert_eq!(validator.calls(), 0);

    // user1, nginx style: exactly 200, the identity in headers, the renewal cookie; the
    // client's own identity headers change nothing.
    let allowed = door
        .request(
            "GET",
            "/_auth",
            &[
                ("Host", "dash.example"),
                ("X-Original-Method", "GET"),
                ("X-Original-URI", "/admin"),
                ("Cookie", "theme=dark; session=user1-token"),
                ("x-auth-user", "root"),
                ("x-auth-roles", "superuser"),
                ("x-auth-assertion", FORGED_ASSERTION),
            ],
        )
        .await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.header_values("x-auth-user"), ["user1"]);
    assert_eq!(allowed.header_values("x-auth-roles"), ["admin"]);
    assert_eq!(allowed.header_values("x-auth-email"), ["user1@example.com"]);
    // Assertions are off: no assertion, and the proxy told to drop the client's.
    assert!(
        allowed.header_values("x-auth-assertion").is_empty(),
        "{allowed:?}"
    );
    assert_eq!(
        allowed.header("x-envoy-auth-headers-to-remove"),
        Some("x-auth-assertion")
    );
    assert_eq!(
        allowed.header_values("set-cookie"),
        ["session=user1-token; Max-Age=3600"]
    );
    assert_eq!(allowed.body, "");
    // The validator got the session only.
    let seen = validator.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["cookie"], "session=user1-token");
    // Cached now: allowed again without a call, and without a renewal.
    let again = forwarded(&door, "GET", "/admin", &[("Cookie", "session=user1-token")]).await;
    assert_eq!(again.status, 200);
    assert!(again.header_values("set-cookie").is_empty());
    assert_eq!(validator.calls(), 1);

    // A session without a user: allowed, no identity, and Envoy told to drop client copies.
    let nameless = forwarded(&door, "GET", "/admin", &[("X-Session-Token", "nameless")]).await;
    assert_eq!(nameless.status, 200);
    assert_eq!(nameless.header("x-auth-user"), None);
    assert_eq!(
        nameless.header("x-envoy-auth-headers-to-remove"),
        Some("x-auth-user,x-auth-roles,x-auth-email,x-auth-assertion")
    );

    // The route rule from [[routes]]: admin only.
    assert_eq!(
        forwarded(
            &door,
            "GET",
            "/admin/settings",
            &[("X-Session-Token", "user1-token")]
        )
        .await
        .status,
        200
    );
    assert_denied(
        &forwarded(
            &door,
            "GET",
            "/admin/settings",
            &[("X-Session-Token", "user2-token")],
        )
        .await,
        403,
        "forbidden",
    );

    // An invalid session: 401, and its cookie cleared.
    let stolen = forwarded(&door, "GET", "/admin", &[("Cookie", "session=stolen")]).await;
    assert_denied(&stolen, 401, "unauthenticated");
    assert_eq!(stolen.header_values("set-cookie"), ["session=; Max-Age=0"]);
    // Ambiguous: cookie and header disagree.
    assert_denied(
        &forwarded(
            &door,
            "GET",
            "/admin",
            &[
                ("Cookie", "session=user1-token"),
                ("X-Session-Token", "user2-token"),
            ],
        )
        .await,
        401,
        "unauthenticated",
    );

    // Cross-site, compared with the forwarded host: refused before the validator is asked.
    let calls = validator.calls();
    let evil = forwarded(
        &door,
        "POST",
        "/admin",
        &[
            ("Cookie", "session=user1-token"),
            ("Origin", "https://evil.example"),
        ],
    )
    .await;
    assert_denied(&evil, 403, "cross-site request");
    assert_eq!(validator.calls(), calls);
    let own_site = forwarded(
        &door,
        "POST",
        "/admin",
        &[
            ("Cookie", "session=user1-token"),
            ("Origin", "http://dash.example"),
        ],
    )
    .await;
    assert_eq!(own_site.status, 200, "{own_site:?}");

    // A validator error fails closed with 503.
    assert_denied(
        &forwarded(&door, "GET", "/admin", &[("X-Session-Token", "broken")]).await,
        503,
        "auth_unavailable",
    );

    // The core's metrics count this door's decisions.
    let metrics = door.metrics();
    assert!(
        metrics.contains(r#"session_authz_decisions_total{outcome="deny",reason="cross_site"} 1"#),
        "{metrics}"
    );

    // The validator gone: 503, never an allow.
    drop(validator);
    let down = eventually(Duration::from_secs(20), || async {
        let response = forwarded(
            &door,
            "GET",
            "/admin",
            &[("X-Session-Token", "fresh-token")],
        )
        .await;
        (response.status == 503).then_some(response)
    })
    .await
    .expect("503 once the validator is gone");
    assert_denied(&down, 503, "auth_unavailable");
}

#[tokio::test]
async fn unreadable_requests_are_400_and_never_reach_the_validator() {
    let validator = validator().await;
    let door = in_process(&validator, &[("forward_auth_path_prefix", "/authz")]);
    let session = ("X-Session-Token", "user1-token");
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        // Both conventions, naming different requests.
        (
            "GET",
            "/",
            vec![
                ("X-Forwarded-Method", "GET"),
                ("X-Forwarded-Uri", "/public"),
                ("X-Original-Method", "GET"),
                ("X-Original-URI", "/admin/settings"),
            ],
        ),
        // A repeat.
        (
            "GET",
            "/",
            vec![
                ("X-Forwarded-Method", "GET"),
                ("X-Forwarded-Uri", "/public"),
                ("X-Forwarded-Uri", "/public"),
            ],
        ),
        (
            "GET",
            "/authz/admin",
            vec![
                ("X-Forwarded-Host", "a.example"),
                ("X-Forwarded-Host", "b.example"),
            ],
        ),
        // Half a pair, a method that is no token, a URI that is no path.
        ("GET", "/", vec![("X-Original-URI", "/admin")]),
        (
            "GET",
            "/",
            vec![
                ("X-Original-Method", "GET,POST"),
                ("X-Original-URI", "/admin"),
            ],
        ),
        (
            "GET",
            "/",
            vec![
                ("X-Forwarded-Method", "GET"),
                ("X-Forwarded-Uri", "https://dash.example/admin"),
            ],
        ),
        // The own path outside forward_auth_path_prefix.
        ("GET", "/admin", vec![]),
        ("GET", "/authz", vec![]),
    ];
    for (method, target, mut headers) in cases {
        headers.push(session);
        headers.push(("Host", "dash.example"));
        let response = door.request(method, target, &headers).await;
        assert_denied(&response, 400, "bad_request");
    }
    assert_eq!(validator.calls(), 0);

    // Under the prefix, the own line is the original request (Envoy's http_service).
    let allowed = door
        .request(
            "GET",
            "/authz/admin/settings",
            &[session, ("Host", "dash.example")],
        )
        .await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.header("x-auth-user"), Some("user1"));
    let refused = door
        .request(
            "GET",
            "/authz/admin/settings?x=1",
            &[("X-Session-Token", "user2-token")],
        )
        .await;
    assert_denied(&refused, 403, "forbidden");
    // The own Host is what CSRF compares with when no X-Forwarded-Host is sent.
    let same_host = door
        .request(
            "POST",
            "/authz/admin",
            &[
                ("Host", "dash.example:8443"),
                ("Cookie", "session=user1-token"),
                ("Origin", "https://dash.example:8443"),
            ],
        )
        .await;
    assert_eq!(same_host.status, 200, "{same_host:?}");
}

#[tokio::test]
async fn the_door_is_off_unless_configured() {
    let validator = validator().await;
    let url = validator.url();
    let service = ServiceProcess::spawn(&[("AIMENU_URL", url.as_str())]);
    assert_eq!(service.forward_auth_addr, None);
    assert!(!service
        .logs()
        .iter()
        .any(|line| line.contains("forward_auth_addr")));
}

/// Waits until the server closes `stream` (a read returns end of file or an error), reading
/// whatever it answered first.
fn closed_by_server(stream: &mut std::net::TcpStream, limit: Duration) -> Option<String> {
    use std::io::Read;
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&seen).into_owned()),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(_) => return Some(String::from_utf8_lossy(&seen).into_owned()),
        }
    }
}

/// The door is served by the ops port's accept loop with its own limits: a proxy's kept-alive
/// connection answers one check after another, and idle or half-sent connections are closed.
#[tokio::test]
async fn kept_alive_idle_and_half_sent_connections() {
    let validator = validator().await;
    let door = start(&validator, &[]);
    let addr = door.addr;
    // Blocking sockets off the runtime, which serves the fake validator.
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        use std::net::TcpStream;

        let limit = session_authz::doors::http::LIMITS.header_read_timeout * 4;
        let check = "GET / HTTP/1.1\r\nHost: dash.example\r\nX-Forwarded-Method: GET\r\n\
                     X-Forwarded-Uri: /admin\r\nX-Session-Token: user2-token\r\n\r\n";
        let mut kept_alive = TcpStream::connect(addr).unwrap();
        kept_alive.write_all(check.as_bytes()).unwrap();
        kept_alive.write_all(check.as_bytes()).unwrap();
        let mut idle = TcpStream::connect(addr).unwrap();
        let mut half = TcpStream::connect(addr).unwrap();
        half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();

        let answered = closed_by_server(&mut kept_alive, limit).expect("idle kept-alive kept open");
        assert_eq!(
            answered.matches("HTTP/1.1 200 OK").count(),
            2,
            "two checks on one connection: {answered}"
        );
        assert_eq!(answered.matches("x-auth-user: user2").count(), 2);
        assert!(
            closed_by_server(&mut idle, limit).is_some(),
            "idle socket kept open"
        );
        assert!(
            closed_by_server(&mut half, limit).is_some(),
            "half-sent request kept open"
        );
    })
    .await
    .unwrap();
    drop(door);
}
