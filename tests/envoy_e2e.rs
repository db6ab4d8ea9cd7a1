//! End to end: real Envoy 1.40 running the shipped `envoy/envoy.yaml` (ports substituted),
//! the real session-authz binary, a fake validator and a dashboard that echoes the headers it got.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use session_authz_testkit::envoy::{validate_file, EnvoyProcess};
use session_authz_testkit::http::*;
use session_authz_testkit::service::ServiceProcess;
use session_authz_testkit::validator::*;
use session_authz_testkit::wait::eventually;

struct Stack {
    validator: FakeValidator,
    dashboard: Upstream,
    authz: ServiceProcess,
    envoy: EnvoyProcess,
    /// The shipped sample's sign-in page, when the test runs it.
    _signin: Option<SampleValidator>,
}

impl Stack {
    async fn start(authz_env: &[(&str, &str)]) -> Self {
        Self::start_inner(authz_env, false).await
    }

    /// With the shipped sample sign-in page behind Envoy's /login and `login_url = "/login"`,
    /// as `make demo` runs them.
    async fn start_with_signin(authz_env: &[(&str, &str)]) -> Self {
        let mut env = vec![("SESSION_AUTHZ_LOGIN_URL", "/login")];
        env.extend_from_slice(authz_env);
        Self::start_inner(&env, true).await
    }

    async fn start_inner(authz_env: &[(&str, &str)], with_signin: bool) -> Self {
        let validator = FakeValidator::start(vec![
            (
                "user1-token",
                Answer::json(
                    200,
                    r#"{"valid":true,"user":"user1","roles":["admin"],"email":"user1@example.com"}"#,
                ),
            ),
            (
                "user2-token",
                Answer::json(200, r#"{"valid":true,"user":"user2","roles":["viewer"]}"#),
            ),
            ("nouser-token", Answer::json(200, r#"{"valid":true}"#)),
            (
                "broken-token",
                Answer::json(500, r#"{"valid":true,"user":"user1"}"#),
            ),
        ])
        .await;
        let dashboard = Upstream::start().await;
        let url = validator.url();
        let mut env = vec![("AIMENU_URL", url.as_str())];
        env.extend_from_slice(authz_env);
        let authz = ServiceProcess::spawn(&env);
        let (envoy, signin) = if with_signin {
            let signin = SampleValidator::spawn().await;
            let envoy =
                EnvoyProcess::start_with_signin(authz.grpc_addr, dashboard.addr, signin.addr).await;
            (envoy, Some(signin))
        } else {
            (
                EnvoyProcess::start(authz.grpc_addr, dashboard.addr).await,
                None,
            )
        };
        Self {
            validator,
            dashboard,
            authz,
            envoy,
            _signin: signin,
        }
    }

    async fn get(&self, target: &str, headers: &[(&str, &str)]) -> RawResponse {
        raw_get(self.envoy.listener, target, headers).await
    }

    async fn post(&self, target: &str, headers: &[(&str, &str)]) -> RawResponse {
        self.raw("POST", target, headers).await
    }

    async fn raw(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> RawResponse {
        raw_request(self.envoy.listener, method, target, headers).await
    }
}

fn assert_json_deny(response: &RawResponse, status: u16, error: &str) {
    assert_eq!(response.status, status, "{response:?}");
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.body, format!("{{\"error\":\"{error}\"}}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn decision_table_rows_seen_by_the_client() {
    let stack = Stack::start(&[]).await;

    // Row 2: no credential.
    let response = stack.get("/admin", &[]).await;
    assert_json_deny(&response, 401, "unauthenticated");

    // Row 3: valid with a user, by cookie and by header.
    let response = stack
        .get("/admin", &[("Cookie", "theme=dark; session=user1-token")])
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.upstream_saw("x-auth-user"), ["user1"]);
    let response = stack
        .get("/api/admin/stats", &[("X-Session-Token", "user2-token")])
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.upstream_saw("x-auth-user"), ["user2"]);

    // Row 4: valid without a user; a client-sent identity is removed.
    let response = stack
        .get(
            "/admin",
            &[("Cookie", "session=nouser-token"), ("x-auth-user", "root")],
        )
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert!(response.upstream_saw("x-auth-user").is_empty());

    // Row 5: not valid.
    let response = stack.get("/admin", &[("Cookie", "session=stolen")]).await;
    assert_json_deny(&response, 401, "unauthenticated");

    // Row 6: validator error fails closed, with retry-after.
    let response = stack
        .get("/admin", &[("Cookie", "session=broken-token")])
        .await;
    assert_json_deny(&response, 503, "auth_unavailable");
    assert!(response.header("retry-after").is_some());

    // Ambiguity: cookie and header disagree.
    let response = stack
        .get(
            "/admin",
            &[
                ("Cookie", "session=user1-token"),
                ("X-Session-Token", "user2-token"),
            ],
        )
        .await;
    assert_json_deny(&response, 401, "unauthenticated");

    // Only the allowed requests reached the dashboard.
    assert_eq!(
        stack.dashboard.hits().len(),
        3,
        "{:?}",
        stack.dashboard.hits()
    );
    // Envoy passed only the credential headers; the validator saw only the session cookie.
    let seen = stack.validator.seen();
    assert_eq!(
        seen[0].headers.get("cookie").unwrap(),
        "session=user1-token"
    );
}

/// Session renewal through the shipped config: a fresh answer's `Set-Cookie` headers reach the
/// client (all of them, on the 200 and on the 401), never the app, and a cached answer sends none.
#[tokio::test(flavor = "multi_thread")]
async fn set_cookie_reaches_the_client_on_fresh_answers_only() {
    const RENEW: &str = "session=renew-token; Max-Age=3600; HttpOnly; SameSite=Lax; Path=/";
    const THEME: &str = "theme=dark; Path=/";
    const CLEAR: &str = "session=; Max-Age=0; Path=/";
    // Minutes, so that the repeats below are hits however slow the machine.
    let stack = Stack::start(&[
        ("SESSION_AUTHZ_CACHE_TTL", "10m"),
        ("SESSION_AUTHZ_CACHE_NEGATIVE_TTL", "10m"),
    ])
    .await;
    stack.validator.set_answer(
        "renew-token",
        Answer::json(200, r#"{"valid":true,"user":"user1"}"#)
            .header("set-cookie", RENEW)
            .header("set-cookie", THEME),
    );
    stack.validator.set_answer(
        "dead-token",
        Answer::json(401, r#"{"valid":false}"#).header("set-cookie", CLEAR),
    );
    let set_cookies = |response: &RawResponse| -> Vec<String> {
        response
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, value)| value.clone())
            .collect()
    };

    let renewed = stack
        .get("/admin", &[("Cookie", "session=renew-token")])
        .await;
    assert_eq!(renewed.status, 200, "{renewed:?}");
    assert_eq!(set_cookies(&renewed), [RENEW, THEME], "{renewed:?}");
    assert_eq!(renewed.upstream_saw("x-auth-user"), ["user1"]);
    assert!(renewed.upstream_saw("set-cookie").is_empty());
    let cached = stack
        .get("/admin", &[("Cookie", "session=renew-token")])
        .await;
    assert_eq!(cached.status, 200, "{cached:?}");
    assert!(set_cookies(&cached).is_empty(), "{cached:?}");

    let cleared = stack
        .get("/admin", &[("Cookie", "session=dead-token")])
        .await;
    assert_json_deny(&cleared, 401, "unauthenticated");
    assert_eq!(set_cookies(&cleared), [CLEAR], "{cleared:?}");
    let cached = stack
        .get("/admin", &[("Cookie", "session=dead-token")])
        .await;
    assert_json_deny(&cached, 401, "unauthenticated");
    assert!(set_cookies(&cached).is_empty(), "{cached:?}");
    assert_eq!(stack.validator.calls(), 2);
}

/// The shipped config must send `origin` and `sec-fetch-site` to session-authz: were either
/// left out, the cross-site requests here would be let through, not refused.
#[tokio::test(flavor = "multi_thread")]
async fn cross_site_cookie_posts_never_reach_the_dashboard() {
    let stack = Stack::start(&[]).await;
    let cookie = ("Cookie", "session=user1-token");
    let evil = ("Origin", "https://evil.example");
    for forged in [
        &[evil][..],
        &[("Sec-Fetch-Site", "cross-site")],
        &[
            ("Sec-Fetch-Site", "same-site"),
            ("Origin", "http://dashboard.local"),
        ],
    ] {
        let mut headers = vec![cookie];
        headers.extend_from_slice(forged);
        let response = stack.post("/admin", &headers).await;
        assert_json_deny(&response, 403, "cross-site request");
        assert_eq!(response.header("cache-control"), Some("no-store"));
    }
    assert!(
        stack.dashboard.hits().is_empty(),
        "reached the dashboard: {:?}",
        stack.dashboard.hits()
    );
    assert_eq!(stack.validator.calls(), 0);

    // From the dashboard's own pages (the client's Host is dashboard.local): allowed.
    for own in [
        ("Sec-Fetch-Site", "same-origin"),
        ("Origin", "http://dashboard.local"),
    ] {
        let response = stack.post("/admin", &[cookie, own]).await;
        assert_eq!(response.status, 200, "{own:?}: {response:?}");
        assert_eq!(response.upstream_saw("x-auth-user"), ["user1"], "{own:?}");
    }
    // A session in a header is no browser's doing: exempt, from anywhere.
    let response = stack
        .post(
            "/api/admin/users",
            &[
                ("X-Session-Token", "user2-token"),
                evil,
                ("Sec-Fetch-Site", "cross-site"),
            ],
        )
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.upstream_saw("x-auth-user"), ["user2"]);
    // Reading is always allowed.
    let response = stack.get("/admin", &[cookie, evil]).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(stack.dashboard.hits().len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn row1_auth_disabled_allows_without_identity() {
    let stack = Stack::start(&[("AUTH_ENABLED", "false")]).await;
    let response = stack.get("/admin", &[("x-auth-user", "root")]).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert!(response.upstream_saw("x-auth-user").is_empty());
    assert_eq!(stack.validator.calls(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_cannot_be_spoofed() {
    let stack = Stack::start(&[]).await;
    let session = ("Cookie", "session=user1-token");
    for forged in [
        vec![("x-auth-user", "root")],
        vec![("x-auth-user", "root"), ("x-auth-user", "admin")],
        vec![("X-AUTH-USER", "root"), ("X-Auth-User", "admin")],
    ] {
        let mut headers = vec![session];
        headers.extend(forged.iter().copied());
        let response = stack.get("/admin", &headers).await;
        assert_eq!(response.status, 200, "{forged:?}: {response:?}");
        assert_eq!(
            response.upstream_saw("x-auth-user"),
            ["user1"],
            "{forged:?}"
        );
    }

    // An underscore spelling is rejected outright, never passed on.
    let hits = stack.dashboard.hits().len();
    let response = stack
        .get("/admin", &[session, ("x_auth_user", "root")])
        .await;
    assert_eq!(response.status, 400, "{response:?}");
    assert_eq!(stack.dashboard.hits().len(), hits);

    // Every underscore spelling of every identity header is refused, on checked and public
    // routes; every other alias (`X.Auth.User`, `x~auth~roles`: one header to a CGI, WSGI or
    // PHP app) is dropped before any route, so the app reads exactly session-authz's identity.
    for (spelling, value) in forged_identity_aliases(true) {
        if spelling.contains('_') {
            for target in ["/admin", "/public/page"] {
                let response = stack.get(target, &[session, (&spelling, value)]).await;
                assert_eq!(response.status, 400, "{spelling} {target}: {response:?}");
            }
        }
    }
    assert_eq!(stack.dashboard.hits().len(), hits);
    let aliases = forged_identity_aliases(false);
    let viewer = [("Cookie", "session=user2-token")];
    let response = stack.get("/admin", &with_aliases(&viewer, &aliases)).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.identity_as_cgi(),
        [vec!["user2"], vec!["viewer"], vec![], vec![]],
        "{response:?}"
    );
    for target in ["/", "/public/page", "/login"] {
        let response = stack.get(target, &with_aliases(&[], &aliases)).await;
        assert_eq!(response.status, 200, "{target}: {response:?}");
        assert_eq!(
            response.identity_as_cgi(),
            [Vec::<String>::new(), vec![], vec![], vec![]],
            "{target}: {response:?}"
        );
    }

    // Naming the header as hop-by-hop does not make Envoy drop the identity it set.
    let response = stack
        .get("/admin", &[session, ("Connection", "close, x-auth-user")])
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.upstream_saw("x-auth-user"), ["user1"]);

    // Public paths: no session needed, and a forged identity never arrives.
    for target in ["/", "/public/page", "/adm"] {
        let response = stack
            .get(
                target,
                &[
                    ("x-auth-user", "root"),
                    ("X-Auth-User", "admin"),
                    ("X-Auth-Roles", "admin"),
                    ("x-auth-email", "root@example.com"),
                    ("X-Auth-Assertion", "eyJhbGciOiJub25lIn0.e30."),
                ],
            )
            .await;
        assert_eq!(response.status, 200, "{target}: {response:?}");
        for name in IDENTITY_HEADERS {
            assert!(response.upstream_saw(name).is_empty(), "{target}: {name}");
        }
    }
}

/// On admin routes Envoy removes nothing itself: only session-authz's answer can keep a client's
/// own roles or email from the app.
#[tokio::test(flavor = "multi_thread")]
async fn forged_roles_and_email_never_reach_the_app_on_admin_routes() {
    let stack = Stack::start(&[]).await;
    let forged = [
        ("x-auth-roles", "admin"),
        ("X-Auth-Roles", "superuser"),
        ("x-auth-email", "root@example.com"),
        ("X-AUTH-EMAIL", "admin@example.com"),
        ("x-auth-assertion", "eyJhbGciOiJub25lIn0.e30."),
    ];
    // What the app reads of each identity header: the validator's identity (user2 names a
    // role and no email, nouser none at all), and nothing of the client's.
    let none = Vec::<String>::new;
    for (session, path, expected) in [
        (
            ("Cookie", "session=user2-token"),
            "/admin",
            [
                vec!["user2".to_owned()],
                vec!["viewer".to_owned()],
                none(),
                none(),
            ],
        ),
        (
            ("X-Session-Token", "nouser-token"),
            "/api/admin/users",
            [none(), none(), none(), none()],
        ),
        (
            ("Cookie", "session=user1-token"),
            "/admin",
            [
                vec!["user1".to_owned()],
                vec!["admin".to_owned()],
                vec!["user1@example.com".to_owned()],
                none(),
            ],
        ),
    ] {
        let mut headers = vec![session];
        headers.extend(forged);
        let response = stack.get(path, &headers).await;
        assert_eq!(response.status, 200, "{response:?}");
        let seen: Vec<Vec<String>> = IDENTITY_HEADERS
            .iter()
            .map(|name| response.upstream_saw(name))
            .collect();
        assert_eq!(seen, expected, "{session:?}");
    }
}

/// The shipped access log: one JSON line per request with session-authz's user, roles, reason
/// and cache from its dynamic metadata, and never a token, a cookie or the query string.
#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_names_user_and_reason_and_never_a_token() {
    let stack = Stack::start(&[]).await;
    type Request<'a> = (&'a str, &'a [(&'a str, &'a str)], u16);
    let requests: [Request; 5] = [
        (
            "/admin?next=query-secret",
            &[("Cookie", "session=user1-token")],
            200,
        ),
        ("/admin/users", &[("Cookie", "session=user1-token")], 200),
        ("/admin", &[], 401),
        (
            "/api/admin/stats",
            &[("X-Session-Token", "stolen-token")],
            401,
        ),
        ("/public", &[("Cookie", "session=user2-token")], 200),
    ];
    for (target, headers, status) in requests {
        let response = stack.get(target, headers).await;
        assert_eq!(response.status, status, "{target}: {response:?}");
    }
    let lines = eventually(Duration::from_secs(30), || async {
        let lines: Vec<serde_json::Value> = stack
            .envoy
            .stdout()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect();
        (lines.len() >= requests.len()).then_some(lines)
    })
    .await
    .unwrap_or_else(|| panic!("access log: {}", stack.envoy.stdout()));
    let fields = |line: &serde_json::Value| {
        [
            "method", "path", "status", "user", "roles", "reason", "cache",
        ]
        .map(|key| match &line[key] {
            serde_json::Value::Null => "-".to_owned(),
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        })
    };
    let seen: Vec<_> = lines.iter().map(fields).collect();
    let expected = [
        [
            "GET",
            "/admin",
            "200",
            "user1",
            "admin",
            "valid_session",
            "miss",
        ],
        [
            "GET",
            "/admin/users",
            "200",
            "user1",
            "admin",
            "valid_session",
            "hit",
        ],
        ["GET", "/admin", "401", "-", "-", "no_credential", "none"],
        [
            "GET",
            "/api/admin/stats",
            "401",
            "-",
            "-",
            "invalid_session",
            "miss",
        ],
        // Public: ext_authz does not run, so there is nothing of session-authz's.
        ["GET", "/public", "200", "-", "-", "-", "-"],
    ];
    assert_eq!(
        seen,
        expected.map(|row| row.map(str::to_owned)),
        "{lines:#?}"
    );
    let text = stack.envoy.stdout();
    for secret in [
        "user1-token",
        "user2-token",
        "stolen-token",
        "session=",
        "query-secret",
        "user1@example.com",
    ] {
        assert!(!text.contains(secret), "{secret} in the access log: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_path_spelling_reaches_the_dashboard_without_a_session() {
    let stack = Stack::start(&[]).await;
    for (target, headers) in PATH_SPELLINGS {
        let response = stack.get(target, headers).await;
        assert_ne!(response.status, 200, "{target} {headers:?}: {response:?}");
        assert!(
            [400, 401, 404].contains(&response.status),
            "{target}: unexpected {response:?}"
        );
    }
    assert!(
        stack.dashboard.hits().is_empty(),
        "reached the dashboard: {:?}",
        stack.dashboard.hits()
    );

    // The same spellings with a session are checked (not merely blocked) and land on /admin.
    for target in ["//admin", "/ADMIN", "/public/../admin", "/%61dmin"] {
        let response = stack
            .get(target, &[("Cookie", "session=user1-token")])
            .await;
        assert_eq!(response.status, 200, "{target}: {response:?}");
        assert_eq!(response.upstream_saw("x-auth-user"), ["user1"], "{target}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_with_semicolons_or_encoded_percent_never_reach_the_dashboard() {
    let stack = Stack::start(&[]).await;
    let session = ("Cookie", "session=user1-token");
    // normalize_path keeps `;`, `%3B` and `%25`; a Java server would route most of these to
    // /admin (path parameters stripped, or %25 decoded twice).
    let refused = [
        "/;x/admin",
        "/;/admin",
        "/admin;x",
        "/public;jsessionid=1",
        "/%3Bx/admin",
        "/admin%3bx",
        "/%2561dmin",
        "/%25",
        "/%2525",
        "/api/admin%252Fusers",
        "/public/%252e%252e/admin",
    ];
    for target in refused {
        for headers in [&[][..], &[session][..]] {
            let response = stack.get(target, headers).await;
            assert_eq!(response.status, 400, "{target} {headers:?}: {response:?}");
        }
    }
    assert!(
        stack.dashboard.hits().is_empty(),
        "reached the dashboard: {:?}",
        stack.dashboard.hits()
    );
    // Refused before any check.
    assert_eq!(stack.validator.calls(), 0);

    // Normalisation drops the `;` of a dot segment: this one is /admin, and checked.
    let response = stack.get("/x/..;/admin", &[]).await;
    assert_json_deny(&response, 401, "unauthenticated");
    assert!(stack.dashboard.hits().is_empty());

    // The query string is not the path: both may appear there.
    let response = stack.get("/public/page?q=%25;x", &[]).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(stack.dashboard.hits(), ["/public/page?q=%25;x"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn half_sent_requests_are_closed_after_the_request_headers_timeout() {
    use tokio::io::AsyncReadExt;

    let stack = Stack::start(&[]).await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let stream = connect_and_send(
            stack.envoy.listener,
            b"GET /public HTTP/1.1\r\nHost: dashboard.local\r\nX-Slow: 1",
        )
        .await;
        slow.push(stream);
    }
    // Meanwhile whole requests are served.
    assert_eq!(stack.get("/public", &[]).await.status, 200);

    // The shipped request_headers_timeout is 10 s; the rest is room for a slow machine.
    let closing: Vec<_> = slow
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut bytes = Vec::new();
                let read =
                    tokio::time::timeout(Duration::from_secs(40), stream.read_to_end(&mut bytes))
                        .await;
                (read, String::from_utf8_lossy(&bytes).into_owned())
            })
        })
        .collect();
    for (n, task) in closing.into_iter().enumerate() {
        let (read, answer) = task.await.unwrap();
        match read {
            Err(_) => panic!("half-sent request {n} still open after 40 s"),
            Ok(result) => result.unwrap_or_else(|err| panic!("request {n}: {err}")),
        };
        assert!(answer.starts_with("HTTP/1.1 408 "), "request {n}: {answer}");
    }
    let stats = stack
        .envoy
        .admin_text("/stats?filter=^http\\.dashboard\\.downstream_rq_header_timeout$")
        .await;
    assert_eq!(
        stats.trim(),
        "http.dashboard.downstream_rq_header_timeout: 20"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn envoy_starts_with_a_downstream_connection_limit() {
    let stack = Stack::start(&[]).await;
    // Serving, so start-up and its warnings are over.
    assert_eq!(stack.get("/public", &[]).await.status, 200);
    let log = stack.envoy.log();
    assert!(
        !log.contains("no configured limit to the number of allowed active downstream"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_request_headers_are_refused() {
    use tokio::io::AsyncReadExt;

    let stack = Stack::start(&[]).await;
    let fits = "a".repeat(24 * 1024);
    let response = stack.get("/public", &[("x-big", &fits)]).await;
    assert_eq!(response.status, 200, "{}", response.status);

    // max_request_headers_kb: 32. Envoy answers and closes without reading the rest, so the
    // connection may end in a reset after the answer: keep what arrived before it.
    let request = format!(
        "GET /public HTTP/1.1\r\nHost: dashboard.local\r\nx-big: {}\r\n\r\n",
        "a".repeat(33 * 1024)
    );
    let mut stream = connect_and_send(stack.envoy.listener, request.as_bytes()).await;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(Ok(n @ 1..)) =
        tokio::time::timeout(Duration::from_secs(15), stream.read(&mut chunk)).await
    {
        answer.extend_from_slice(&chunk[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert_eq!(stack.dashboard.hits().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_clients_get_stream_and_window_limits() {
    use std::collections::HashMap;
    use tokio::io::AsyncReadExt;

    let stack = Stack::start(&[]).await;
    // HTTP/2 with prior knowledge: the preface, then an empty SETTINGS frame.
    let mut stream = connect_and_send(
        stack.envoy.listener,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0",
    )
    .await;
    // Envoy's SETTINGS, and the WINDOW_UPDATE that grows its connection window.
    let mut settings = HashMap::new();
    let mut connection_window = None;
    while settings.is_empty() || connection_window.is_none() {
        let mut head = [0u8; 9];
        tokio::time::timeout(Duration::from_secs(15), stream.read_exact(&mut head))
            .await
            .expect("Envoy's SETTINGS and WINDOW_UPDATE within 15 s")
            .unwrap();
        let mut payload = vec![0u8; usize::from(head[1]) << 8 | usize::from(head[2])];
        assert_eq!(head[0], 0, "frame too long for this test");
        stream.read_exact(&mut payload).await.unwrap();
        let (kind, ack, stream_id) = (
            head[3],
            head[4] & 1 == 1,
            u32::from_be_bytes([head[5], head[6], head[7], head[8]]),
        );
        let word = |bytes: &[u8]| u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        match kind {
            0x4 if !ack => {
                for setting in payload.chunks_exact(6) {
                    settings.insert(
                        u16::from_be_bytes([setting[0], setting[1]]),
                        word(&setting[2..]),
                    );
                }
            }
            0x8 if stream_id == 0 => {
                connection_window = Some(65_535 + (word(&payload) & 0x7fff_ffff));
            }
            _ => {}
        }
    }
    assert_eq!(settings.get(&0x3), Some(&100), "MAX_CONCURRENT_STREAMS");
    assert_eq!(settings.get(&0x4), Some(&65_536), "INITIAL_WINDOW_SIZE");
    assert_eq!(connection_window, Some(1_048_576));
}

#[tokio::test(flavor = "multi_thread")]
async fn envoy_health_checks_session_authz_and_fails_closed_without_it() {
    let mut stack = Stack::start(&[]).await;
    let health = eventually(Duration::from_secs(15), || async {
        let flags = stack.envoy.authz_health().await;
        (flags == "healthy").then_some(flags)
    })
    .await;
    assert_eq!(health.as_deref(), Some("healthy"));

    let grpc_addr = stack.authz.grpc_addr;
    stack.authz.kill();

    for _ in 0..10 {
        let response = stack
            .get("/admin", &[("Cookie", "session=user1-token")])
            .await;
        assert_eq!(response.status, 503, "{response:?}");
    }
    let unhealthy = eventually(Duration::from_secs(15), || async {
        let flags = stack.envoy.authz_health().await;
        flags.contains("failed_active_hc").then_some(flags)
    })
    .await;
    assert!(
        unhealthy.is_some(),
        "Envoy never marked session-authz unhealthy: {:?}",
        stack.envoy.authz_health().await
    );

    let url = stack.validator.url();
    let addr = grpc_addr.to_string();
    stack.authz = ServiceProcess::spawn(&[
        ("AIMENU_URL", url.as_str()),
        ("SESSION_AUTHZ_GRPC_ADDR", addr.as_str()),
    ]);
    let recovered = eventually(Duration::from_secs(20), || async {
        let response = stack
            .get("/admin", &[("Cookie", "session=user1-token")])
            .await;
        (response.status == 200).then_some(response)
    })
    .await
    .expect("admin paths recover once session-authz is back");
    assert_eq!(recovered.upstream_saw("x-auth-user"), ["user1"]);
    let healthy = eventually(Duration::from_secs(15), || async {
        (stack.envoy.authz_health().await == "healthy").then_some(())
    })
    .await;
    assert!(healthy.is_some());
}

#[test]
fn every_envoy_yaml_validates() {
    let dir = session_authz_testkit::process::root().join("envoy");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            validate_file(&path);
            checked += 1;
        }
    }
    assert!(checked > 0, "no Envoy config under envoy/");
}

#[tokio::test(flavor = "multi_thread")]
async fn restarting_session_authz_under_load_never_lets_anyone_through() {
    let mut stack = Stack::start(&[]).await;
    let listener = stack.envoy.listener;
    let stop = Arc::new(AtomicBool::new(false));
    // Valid sessions allowed and refused (503) so far: what the steps below wait on.
    let allowed = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let kinds: [(&str, &[(&str, &str)]); 5] = [
        ("valid", &[("Cookie", "session=user1-token")]),
        ("invalid", &[("Cookie", "session=forged-token")]),
        ("none", &[]),
        ("forged-identity", &[("x-auth-user", "user1")]),
        (
            "ambiguous",
            &[
                ("Cookie", "session=user1-token"),
                ("X-Session-Token", "user2-token"),
            ],
        ),
    ];
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (stop, allowed, refused) = (stop.clone(), allowed.clone(), refused.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let (kind, headers) = kinds[i % kinds.len()];
                    let response = raw_get(listener, "/admin", headers).await;
                    let user = if response.status == 200 {
                        response.upstream_saw("x-auth-user")
                    } else {
                        Vec::new()
                    };
                    match (kind, response.status) {
                        ("valid", 200) => allowed.fetch_add(1, Ordering::Relaxed),
                        ("valid", 503) => refused.fetch_add(1, Ordering::Relaxed),
                        _ => 0,
                    };
                    seen.push((kind, response.status, user));
                    i += 1;
                }
                seen
            })
        })
        .collect();
    let grows_by = |counter: &Arc<AtomicUsize>, by: usize| {
        let target = counter.load(Ordering::Relaxed) + by;
        let counter = counter.clone();
        eventually(Duration::from_secs(30), move || {
            let reached = counter.load(Ordering::Relaxed) >= target;
            async move { reached.then_some(()) }
        })
    };

    // Under load and allowing sessions; then killed, and clients see it down for a while.
    grows_by(&allowed, 10).await.expect("sessions allowed");
    let grpc_addr = stack.authz.grpc_addr;
    stack.authz.kill();
    grows_by(&refused, 20)
        .await
        .expect("valid sessions refused while session-authz is down");
    let url = stack.validator.url();
    let addr = grpc_addr.to_string();
    stack.authz = ServiceProcess::spawn(&[
        ("AIMENU_URL", url.as_str()),
        ("SESSION_AUTHZ_GRPC_ADDR", addr.as_str()),
    ]);
    grows_by(&allowed, 20)
        .await
        .expect("valid sessions allowed again after the restart");
    stop.store(true, Ordering::Relaxed);

    let mut valid_ok_after_restart = 0;
    let mut total = 0;
    for worker in workers {
        let seen = worker.await.unwrap();
        for (kind, status, user) in &seen {
            total += 1;
            if *kind == "valid" {
                assert!([200, 503].contains(status), "valid session got {status}");
                if *status == 200 {
                    assert_eq!(user, &["user1"], "wrong identity");
                }
            } else {
                assert_ne!(*status, 200, "{kind} request let through");
            }
        }
        valid_ok_after_restart += seen
            .iter()
            .rev()
            .take(20)
            .filter(|(kind, status, _)| *kind == "valid" && *status == 200)
            .count();
    }
    assert!(total > 100, "too little load: {total}");
    assert!(valid_ok_after_restart > 0, "valid sessions never recovered");
}

/// Per-route rules through the shipped config: `/admin/settings` carries
/// `context_extensions: {require_roles: admin}`, so the admin gets through and the viewer gets
/// the 403 — from a cached verdict too, in any letter case — while `/admin` lets both in.
#[tokio::test(flavor = "multi_thread")]
async fn admin_settings_need_the_admin_role() {
    let stack = Stack::start(&[]).await;
    let admin = [("X-Session-Token", "user1-token")];
    let viewer = [("Cookie", "session=user2-token")];

    let response = stack.get("/admin/settings", &admin).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.upstream_saw("x-auth-roles"), ["admin"]);

    // The viewer's session is valid (and now cached) on /admin ...
    let response = stack.get("/admin", &viewer).await;
    assert_eq!(response.status, 200, "{response:?}");
    let calls = stack.validator.calls();
    // ... and refused on the settings, however the path is spelled.
    for target in [
        "/admin/settings",
        "/admin/settings/mail?x=1",
        "/ADMIN/Settings",
        "/admin//settings",
        "/admin/%73ettings",
        "/admin/./settings",
        "/admin/x/../settings",
    ] {
        let response = stack.get(target, &viewer).await;
        assert_json_deny(&response, 403, "forbidden");
    }
    assert_eq!(stack.validator.calls(), calls, "the rule needs no new call");
    // Without a session it is still the 401, never a 403.
    assert_json_deny(
        &stack.get("/admin/settings", &[]).await,
        401,
        "unauthenticated",
    );
    assert_eq!(stack.dashboard.hits(), ["/admin/settings", "/admin"]);
}

/// A browser's page load, as Chrome and Firefox send it.
const BROWSER: &[(&str, &str)] = &[
    (
        "Accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    ("Sec-Fetch-Mode", "navigate"),
    ("Sec-Fetch-Site", "none"),
];

fn with<'a>(base: &[(&'a str, &'a str)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(more).copied().collect()
}

/// The browser flow of the README: sent to the shipped sign-in page with the page it asked for,
/// signed in there, and back on that page with its session; API clients get the 401.
#[tokio::test(flavor = "multi_thread")]
async fn browsers_are_sent_to_sign_in_and_come_back_where_they_were_going() {
    let stack = Stack::start_with_signin(&[]).await;
    let target = "/admin/reports?month=11&sort=-date";
    const LOCATION: &str = "/login?return_to=%2Fadmin%2Freports%3Fmonth%3D11%26sort%3D-date";

    let sent = stack.get(target, BROWSER).await;
    assert_eq!(sent.status, 302, "{sent:?}");
    assert_eq!(sent.header("location"), Some(LOCATION), "{sent:?}");
    assert_eq!(sent.header("cache-control"), Some("no-store"));
    // Each signal alone is enough, so Envoy must forward both `accept` and `sec-fetch-mode`.
    for only in [("Accept", "text/html"), ("Sec-Fetch-Mode", "navigate")] {
        let response = stack.get(target, &[only]).await;
        assert_eq!(response.status, 302, "{only:?}: {response:?}");
        assert_eq!(response.header("location"), Some(LOCATION));
    }
    assert_eq!(
        stack.raw("HEAD", target, BROWSER).await.header("location"),
        Some(LOCATION)
    );

    // Not a page load, or an API client's credential: the JSON 401, never a redirect.
    let api_like: [&[(&str, &str)]; 4] = [
        &[],
        &[("Accept", "application/json")],
        &[("Accept", "text/html"), ("Sec-Fetch-Mode", "cors")],
        &[("X-Session-Token", "stolen"), ("Accept", "text/html")],
    ];
    for headers in api_like {
        assert_json_deny(&stack.get(target, headers).await, 401, "unauthenticated");
    }
    let post = stack.post(target, &with(BROWSER, &[])).await;
    assert_json_deny(&post, 401, "unauthenticated");
    assert!(stack.dashboard.hits().is_empty(), "nothing reached the app");
    assert_eq!(
        stack.validator.calls(),
        1,
        "only the stolen token was asked about"
    );

    // The sign-in page, through Envoy: a form, then the session cookie and the way back.
    let page = stack.get(LOCATION, BROWSER).await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("<form method=\"post\">"), "{page:?}");
    let signed_in = raw_request_with_body(
        stack.envoy.listener,
        "POST",
        LOCATION,
        &with(
            BROWSER,
            &[("Content-Type", "application/x-www-form-urlencoded")],
        ),
        "user=user1",
    )
    .await;
    assert_eq!(signed_in.status, 303, "{signed_in:?}");
    assert_eq!(signed_in.header("location"), Some(target));
    let cookie = signed_in
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie: {signed_in:?}"))
        .to_owned();
    assert_eq!(cookie, "session=user1-token");

    let back = stack
        .get(target, &with(BROWSER, &[("Cookie", &cookie)]))
        .await;
    assert_eq!(back.status, 200, "{back:?}");
    assert_eq!(stack.dashboard.hits(), [target]);
    assert_eq!(back.upstream_saw("x-auth-user"), ["user1"]);
    assert_eq!(back.upstream_saw("x-auth-roles"), ["admin"]);

    // The sign-in page returns nowhere but here.
    for evil in ["//evil.example", "https://evil.example/", "/\\evil.example"] {
        let target = format!("/login?return_to={evil}");
        let response = raw_request_with_body(
            stack.envoy.listener,
            "POST",
            &target,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            "user=user2",
        )
        .await;
        assert_eq!(response.status, 303, "{response:?}");
        assert_eq!(response.header("location"), Some("/admin"), "{evil}");
    }
}

/// A dead cookie is cleared on the way to sign in; a valid session refused by a rule gets 403
/// and a failing auth service 503, never a sign-in page (no redirect loop for a signed-in user).
#[tokio::test(flavor = "multi_thread")]
async fn only_a_missing_or_dead_session_is_sent_to_sign_in() {
    const CLEAR: &str = "session=; Max-Age=0; Path=/";
    let stack = Stack::start_with_signin(&[]).await;
    stack.validator.set_answer(
        "dead-token",
        Answer::json(401, r#"{"valid":false}"#).header("set-cookie", CLEAR),
    );
    let dead = stack
        .get(
            "/admin",
            &with(BROWSER, &[("Cookie", "session=dead-token")]),
        )
        .await;
    assert_eq!(dead.status, 302, "{dead:?}");
    assert_eq!(dead.header("location"), Some("/login?return_to=%2Fadmin"));
    assert_eq!(dead.header("set-cookie"), Some(CLEAR));

    for (target, cookie, status, error) in [
        ("/admin/settings", "session=user2-token", 403, "forbidden"),
        ("/admin", "session=broken-token", 503, "auth_unavailable"),
    ] {
        let response = stack
            .get(target, &with(BROWSER, &[("Cookie", cookie)]))
            .await;
        assert_json_deny(&response, status, error);
    }
    assert!(stack.dashboard.hits().is_empty());
}
