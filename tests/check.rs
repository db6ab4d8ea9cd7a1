//! Integration: the service in-process, a fake validator on loopback, a tonic client sending
//! real CheckRequests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::pb::CheckRequest;
use session_authz_testkit::check::*;
use session_authz_testkit::http::FORGED_ASSERTION;
use session_authz_testkit::service::*;
use session_authz_testkit::validator::*;

const TIMEOUT: &str = "400ms";

fn contract_answers() -> Vec<(&'static str, Answer)> {
    let big_user = "u".repeat(10 * 1024);
    vec![
        (
            "valid-alice",
            Answer::json(200, r#"{"valid":true,"user":"alice"}"#),
        ),
        ("valid-nouser", Answer::json(200, r#"{"valid":true}"#)),
        ("invalid-200", Answer::json(200, r#"{"valid":false}"#)),
        ("invalid-401", Answer::json(401, r#"{"valid":false}"#)),
        (
            "valid-but-401",
            Answer::json(401, r#"{"valid":true,"user":"mallory"}"#),
        ),
        (
            "valid-but-403",
            Answer::json(403, r#"{"valid":true,"user":"mallory"}"#),
        ),
        (
            "status-404",
            Answer::json(404, r#"{"valid":true,"user":"alice"}"#),
        ),
        (
            "status-429",
            Answer::json(429, r#"{"valid":true,"user":"alice"}"#),
        ),
        (
            "status-500",
            Answer::json(500, r#"{"valid":true,"user":"alice"}"#),
        ),
        (
            "html-200",
            Answer::raw(200, "text/html", "<html>welcome</html>"),
        ),
        ("empty-204", Answer::raw(204, "application/json", "")),
        (
            "valid-string",
            Answer::json(200, r#"{"valid":"true","user":"alice"}"#),
        ),
        (
            "valid-number",
            Answer::json(200, r#"{"valid":1,"user":"alice"}"#),
        ),
        (
            "valid-null",
            Answer::json(200, r#"{"valid":null,"user":"alice"}"#),
        ),
        ("valid-missing", Answer::json(200, r#"{"user":"alice"}"#)),
        (
            "user-crlf",
            Answer::json(200, r#"{"valid":true,"user":"alice\r\nx-admin: 1"}"#),
        ),
        (
            "user-nul",
            Answer::json(200, r#"{"valid":true,"user":"al\u0000ice"}"#),
        ),
        (
            "user-10k",
            Answer::json(200, &format!(r#"{{"valid":true,"user":"{big_user}"}}"#)),
        ),
        (
            "user-number",
            Answer::json(200, r#"{"valid":true,"user":7}"#),
        ),
        (
            "user-float",
            Answer::json(200, r#"{"valid":true,"user":7.5}"#),
        ),
        (
            "user-comma",
            Answer::json(200, r#"{"valid":true,"user":"user1, admin"}"#),
        ),
        (
            "user-zero-width",
            Answer::json(200, r#"{"valid":true,"user":"ad\u200bmin"}"#),
        ),
        (
            "user-line-separator",
            Answer::json(200, r#"{"valid":true,"user":"admin\u2028x"}"#),
        ),
        (
            "redirect",
            Answer::raw(302, "text/plain", "").header("location", "/session/validate?followed=1"),
        ),
        (
            "huge-body",
            Answer::raw(
                200,
                "application/json",
                format!(
                    r#"{{"valid":true,"user":"alice","pad":"{}"}}"#,
                    "x".repeat(100 * 1024)
                ),
            ),
        ),
        (
            "slow",
            Answer::json(200, r#"{"valid":true,"user":"alice"}"#).delayed(Duration::from_secs(3)),
        ),
    ]
}

#[tokio::test]
async fn every_validator_answer_maps_as_the_contract_says() {
    let validator = FakeValidator::start(contract_answers()).await;
    let running = start_service(&[
        ("aimenu_url", &validator.url()),
        ("validator_timeout", TIMEOUT),
    ])
    .await;
    let mut client = client(&running).await;

    let expectations = [
        ("valid-alice", allow_as("alice")),
        ("valid-nouser", allow_anonymous()),
        ("invalid-200", deny_401()),
        ("invalid-401", deny_401()),
        ("valid-but-401", deny_401()),
        ("valid-but-403", deny_401()),
        ("unknown-token", deny_401()),
        ("status-404", deny_503()),
        ("status-429", deny_503()),
        ("status-500", deny_503()),
        ("html-200", deny_503()),
        ("empty-204", deny_503()),
        ("valid-string", deny_503()),
        ("valid-number", deny_503()),
        ("valid-null", deny_503()),
        ("valid-missing", deny_503()),
        ("user-crlf", deny_503()),
        ("user-nul", deny_503()),
        ("user-10k", deny_503()),
        // The seed's database-backed validator answers with an integer user_id.
        ("user-number", allow_as("7")),
        ("user-float", deny_503()),
        ("user-comma", deny_503()),
        ("user-zero-width", deny_503()),
        ("user-line-separator", deny_503()),
        ("redirect", deny_503()),
        ("huge-body", deny_503()),
    ];
    for (token, expected) in expectations {
        let cookie = format!("session={token}");
        assert_eq!(
            outcome_of(&mut client, check_request(&[("cookie", &cookie)])).await,
            expected,
            "token {token}"
        );
    }
    // The redirect was not followed.
    assert!(validator
        .seen()
        .iter()
        .all(|s| s.path == "/session/validate"));

    let started = Instant::now();
    assert_eq!(
        outcome_of(&mut client, check_request(&[("cookie", "session=slow")])).await,
        deny_503()
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "timeout not honoured"
    );

    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn refused_connection_is_503() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let running = start_service(&[("aimenu_url", &url)]).await;
    let mut client = client(&running).await;
    assert_eq!(
        outcome_of(
            &mut client,
            check_request(&[("cookie", "session=anything")])
        )
        .await,
        deny_503()
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn grpc_error_mode_leaves_it_to_envoy() {
    let validator = FakeValidator::start(vec![("broken", Answer::json(500, "{}"))]).await;
    let running = start_service(&[
        ("aimenu_url", &validator.url()),
        ("on_validator_error", "grpc-error"),
    ])
    .await;
    let mut client = client(&running).await;
    let status = client
        .check(check_request(&[("cookie", "session=broken")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    // Other rows are unchanged by the mode.
    assert_eq!(
        outcome_of(&mut client, check_request(&[("cookie", "session=nobody")])).await,
        deny_401()
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn rows_that_never_call_the_validator() {
    let validator = FakeValidator::start(vec![]).await;
    let running = start_service(&[("aimenu_url", &validator.url())]).await;
    let mut client = client(&running).await;

    for headers in [
        vec![],
        vec![("cookie", "other=1; Session=T")],
        vec![("cookie", "session=")],
        vec![("cookie", "session=a; session=b")],
        vec![("cookie", "session=a"), ("x-session-token", "b")],
        vec![("x-session-token", "a,b")],
    ] {
        assert_eq!(
            outcome_of(&mut client, check_request(&headers)).await,
            deny_401(),
            "{headers:?}"
        );
    }

    let malformed = envoy_types::ext_authz::v3::pb::CheckRequest::default();
    let response = client.check(malformed).await.unwrap().into_inner();
    assert_eq!(
        outcome(&response),
        Outcome::Deny {
            grpc: tonic::Code::InvalidArgument as i32,
            http: 400,
            body: r#"{"error":"bad_request"}"#.to_owned()
        }
    );
    assert_eq!(validator.calls(), 0);
    running.shutdown().await.unwrap();
}

/// Cookie requests from other sites, on methods that may change state: the host each names is
/// `dash.example`.
const CROSS_SITE: &[&[(&str, &str)]] = &[
    &[("sec-fetch-site", "cross-site")],
    &[
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://dash.example"),
    ],
    &[
        ("sec-fetch-site", "same-site"),
        ("origin", "https://dash.example"),
    ],
    &[("origin", "https://evil.example")],
    &[("origin", "https://dash.example.evil.example")],
    &[("origin", "null")],
    &[("origin", "https://dash.example, https://evil.example")],
];

/// The same Check with the session cookie and these headers, for each unsafe method.
fn cookie_checks<'a>(
    headers: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = (&'static str, envoy_types::ext_authz::v3::pb::CheckRequest)> + 'a {
    ["POST", "PUT", "PATCH", "DELETE", "post"]
        .into_iter()
        .map(|method| {
            let mut all = vec![("cookie", "session=tok-1")];
            all.extend_from_slice(headers);
            (method, check_request_to(method, "dash.example", &all))
        })
}

#[tokio::test]
async fn cross_site_cookie_requests_are_refused_before_the_validator() {
    let valid = Answer::json(200, r#"{"valid":true,"user":"alice"}"#);
    let validator = FakeValidator::start(vec![("tok-1", valid)]).await;
    // No cache, so that every Check that reaches the validator is counted.
    let running = start_service(&[("aimenu_url", &validator.url()), ("cache_ttl", "0")]).await;
    let mut client = client(&running).await;

    for headers in CROSS_SITE {
        for (method, request) in cookie_checks(headers) {
            assert_eq!(
                outcome_of(&mut client, request).await,
                deny_cross_site(),
                "{method} {headers:?}"
            );
        }
    }
    assert_eq!(
        validator.calls(),
        0,
        "a cross-site request cost a validator call"
    );

    let evil = [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://evil.example"),
    ];
    let cookie = ("cookie", "session=tok-1");
    let allowed: &[(&str, &[(&str, &str)])] = &[
        // The dashboard's own pages, in a current browser and in an older one.
        (
            "POST",
            &[
                cookie,
                ("sec-fetch-site", "same-origin"),
                ("origin", "https://dash.example"),
            ],
        ),
        ("POST", &[cookie, ("sec-fetch-site", "none")]),
        ("DELETE", &[cookie, ("origin", "https://dash.example")]),
        ("PUT", &[cookie, ("origin", "http://DASH.example")]),
        // No browser: neither header.
        ("POST", &[cookie]),
        // Safe methods, whoever sends them.
        ("GET", &[cookie, evil[0], evil[1]]),
        ("HEAD", &[cookie, evil[0], evil[1]]),
        ("OPTIONS", &[cookie, evil[0], evil[1]]),
        // A header credential: browsers never add one by themselves.
        ("POST", &[("x-session-token", "tok-1"), evil[0], evil[1]]),
    ];
    for (method, headers) in allowed {
        assert_eq!(
            outcome_of(
                &mut client,
                check_request_to(method, "dash.example", headers)
            )
            .await,
            allow_as("alice"),
            "{method} {headers:?}"
        );
    }
    assert_eq!(validator.calls(), allowed.len());

    // The refusal comes before the session is judged: an invalid one is refused alike.
    assert_eq!(
        outcome_of(
            &mut client,
            check_request_to(
                "POST",
                "dash.example",
                &[("cookie", "session=stolen"), evil[0]]
            )
        )
        .await,
        deny_cross_site()
    );
    assert_eq!(validator.calls(), allowed.len());
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn trusted_origins_pass_and_csrf_false_turns_the_check_off() {
    let valid = Answer::json(200, r#"{"valid":true,"user":"alice"}"#);
    let validator = FakeValidator::start(vec![("tok-1", valid)]).await;
    let running = start_service(&[
        ("aimenu_url", &validator.url()),
        ("cache_ttl", "0"),
        (
            "csrf_trusted_origins",
            "https://admin.example,http://localhost:3000",
        ),
    ])
    .await;
    let mut client = client(&running).await;
    for origin in ["https://admin.example", "http://localhost:3000"] {
        for (method, request) in
            cookie_checks(&[("sec-fetch-site", "cross-site"), ("origin", origin)])
        {
            assert_eq!(
                outcome_of(&mut client, request).await,
                allow_as("alice"),
                "{method} {origin}"
            );
        }
    }
    let calls = validator.calls();
    for (method, request) in cookie_checks(&[
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://admin.example:8443"),
    ]) {
        assert_eq!(
            outcome_of(&mut client, request).await,
            deny_cross_site(),
            "{method}"
        );
    }
    assert_eq!(validator.calls(), calls);
    running.shutdown().await.unwrap();

    // Off: every one of those requests is validated as before.
    let running = start_service(&[
        ("aimenu_url", &validator.url()),
        ("cache_ttl", "0"),
        ("csrf", "false"),
    ])
    .await;
    let mut client = session_authz_testkit::service::client(&running).await;
    let mut checks = 0;
    for headers in CROSS_SITE {
        for (method, request) in cookie_checks(headers) {
            assert_eq!(
                outcome_of(&mut client, request).await,
                allow_as("alice"),
                "{method} {headers:?}"
            );
            checks += 1;
        }
    }
    assert_eq!(validator.calls(), calls + checks);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn auth_disabled_allows_and_strips_identity() {
    let validator = FakeValidator::start(vec![]).await;
    let running =
        start_service(&[("aimenu_url", &validator.url()), ("auth_enabled", "false")]).await;
    let mut client = client(&running).await;
    assert_eq!(
        outcome_of(&mut client, check_request(&[("x-auth-user", "admin")])).await,
        allow_anonymous()
    );
    assert_eq!(validator.calls(), 0);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn validator_sees_only_the_credential_as_sent() {
    let valid = Answer::json(200, r#"{"valid":true,"user":"alice"}"#);
    let validator = FakeValidator::start(vec![("tok-1", valid)]).await;
    let prefixed = format!("{}/internal/", validator.url());
    let running = start_service(&[("aimenu_url", &prefixed)]).await;
    let mut client = client(&running).await;

    assert_eq!(
        outcome_of(
            &mut client,
            check_request(&[
                ("cookie", "theme=dark; session=tok-1; csrf=secret"),
                ("authorization", "Bearer other"),
                ("x-request-id", "req-42"),
                (
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
            ])
        )
        .await,
        allow_as("alice")
    );

    assert_eq!(
        outcome_of(&mut client, check_request(&[("x-session-token", "tok-1")])).await,
        allow_as("alice")
    );

    let seen = validator.seen();
    assert_eq!(seen.len(), 2);
    let by_cookie = &seen[0].headers;
    assert_eq!(seen[0].path, "/internal/session/validate");
    assert_eq!(by_cookie.get("cookie").unwrap(), "session=tok-1");
    assert_eq!(by_cookie.get_all("cookie").iter().count(), 1);
    assert!(by_cookie.get("authorization").is_none());
    assert!(by_cookie.get("x-session-token").is_none());
    assert_eq!(by_cookie.get("x-request-id").unwrap(), "req-42");
    assert!(by_cookie.get("traceparent").is_some());

    let by_header = &seen[1].headers;
    assert_eq!(by_header.get("x-session-token").unwrap(), "tok-1");
    assert!(by_header.get("cookie").is_none());
    assert!(by_header.get("x-request-id").is_none());
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn raw_header_map_is_read() {
    let valid = Answer::json(200, r#"{"valid":true,"user":"bob"}"#);
    let validator = FakeValidator::start(vec![("raw-tok", valid)]).await;
    let running = start_service(&[("aimenu_url", &validator.url())]).await;
    let mut client = client(&running).await;

    assert_eq!(
        outcome_of(
            &mut client,
            raw_check_request(&[("cookie", b"a=1; session=raw-tok")])
        )
        .await,
        allow_as("bob")
    );

    // Repeated raw header entries are ambiguous, as Envoy's comma-joined form would be.
    assert_eq!(
        outcome_of(
            &mut client,
            raw_check_request(&[
                ("x-session-token", b"raw-tok"),
                ("x-session-token", b"other"),
            ])
        )
        .await,
        deny_401()
    );

    // Non-UTF-8 bytes in another cookie do not hide the session.
    assert_eq!(
        outcome_of(
            &mut client,
            raw_check_request(&[("cookie", b"junk=\xff\xfe; session=raw-tok",)])
        )
        .await,
        allow_as("bob")
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn concurrent_tokens_each_get_their_own_user() {
    let delay = Duration::from_millis(50);
    let validator = FakeValidator::start(vec![
        (
            "tok-bob",
            Answer::json(200, r#"{"valid":true,"user":"bob"}"#).delayed(delay),
        ),
        (
            "tok-carol",
            Answer::json(200, r#"{"valid":true,"user":"carol"}"#).delayed(delay),
        ),
    ])
    .await;
    let running = start_service(&[("aimenu_url", &validator.url())]).await;
    let client = client(&running).await;

    let mut tasks = Vec::new();
    for i in 0..100 {
        let (token, user) = if i % 2 == 0 {
            ("tok-bob", "bob")
        } else {
            ("tok-carol", "carol")
        };
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let cookie = format!("session={token}");
            assert_eq!(
                outcome_of(&mut client, check_request(&[("cookie", &cookie)])).await,
                allow_as(user),
                "{token}"
            );
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn roles_and_email_map_as_contract_v2_says() {
    let too_many: Vec<String> = (0..65).map(|i| format!("r{i}")).collect();
    let answers = vec![
        (
            "full",
            r#"{"valid":true,"user":"alice","roles":["admin","viewer"],"email":"alice@example.com"}"#.to_owned(),
        ),
        (
            "roles-only",
            r#"{"valid":true,"roles":["ops:read","team/a"]}"#.to_owned(),
        ),
        (
            "empty-roles",
            r#"{"valid":true,"user":7,"roles":[],"email":""}"#.to_owned(),
        ),
        (
            "unknown-fields",
            r#"{"valid":true,"user":"bob","groups":["root"],"isAdmin":true}"#.to_owned(),
        ),
        (
            "65-roles",
            serde_json::json!({"valid": true, "user": "a", "roles": too_many}).to_string(),
        ),
        (
            "65-byte-role",
            serde_json::json!({"valid": true, "user": "a", "roles": ["r".repeat(65)]}).to_string(),
        ),
        (
            "role-space",
            r#"{"valid":true,"user":"a","roles":["ad min"]}"#.to_owned(),
        ),
        (
            "role-comma",
            r#"{"valid":true,"user":"a","roles":["admin,root"]}"#.to_owned(),
        ),
        (
            "role-non-ascii",
            r#"{"valid":true,"user":"a","roles":["admín"]}"#.to_owned(),
        ),
        (
            "roles-string",
            r#"{"valid":true,"user":"a","roles":"admin"}"#.to_owned(),
        ),
        (
            "roles-null",
            r#"{"valid":true,"user":"a","roles":null}"#.to_owned(),
        ),
        (
            "role-number",
            r#"{"valid":true,"user":"a","roles":["admin",1]}"#.to_owned(),
        ),
        (
            "email-comma",
            r#"{"valid":true,"user":"a","email":"a@example.com,root@example.com"}"#.to_owned(),
        ),
        (
            "email-crlf",
            r#"{"valid":true,"user":"a","email":"a@example.com\r\nx-admin: 1"}"#.to_owned(),
        ),
        (
            "email-zero-width",
            r#"{"valid":true,"user":"a","email":"a\u200b@example.com"}"#.to_owned(),
        ),
        (
            "email-number",
            r#"{"valid":true,"user":"a","email":42}"#.to_owned(),
        ),
    ];
    let validator = FakeValidator::start(
        answers
            .iter()
            .map(|(token, body)| (*token, Answer::json(200, body)))
            .collect(),
    )
    .await;
    let running = start_service(&[("aimenu_url", &validator.url())]).await;
    let mut client = client(&running).await;

    let expectations = [
        (
            "full",
            allow_with(
                Some("alice"),
                Some("admin,viewer"),
                Some("alice@example.com"),
            ),
        ),
        (
            "roles-only",
            allow_with(None, Some("ops:read,team/a"), None),
        ),
        ("empty-roles", allow_as("7")),
        ("unknown-fields", allow_as("bob")),
        ("65-roles", deny_503()),
        ("65-byte-role", deny_503()),
        ("role-space", deny_503()),
        ("role-comma", deny_503()),
        ("role-non-ascii", deny_503()),
        ("roles-string", deny_503()),
        ("roles-null", deny_503()),
        ("role-number", deny_503()),
        ("email-comma", deny_503()),
        ("email-crlf", deny_503()),
        ("email-zero-width", deny_503()),
        ("email-number", deny_503()),
    ];
    assert_eq!(expectations.len(), answers.len());
    for (token, expected) in expectations {
        let cookie = format!("session={token}");
        // A client's own identity headers change nothing.
        let request = check_request(&[
            ("cookie", &cookie),
            ("x-auth-roles", "admin"),
            ("x-auth-email", "root@example.com"),
            ("x-auth-assertion", FORGED_ASSERTION),
        ]);
        assert_eq!(
            outcome_of(&mut client, request).await,
            expected,
            "token {token}"
        );
    }
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_answer_carries_dynamic_metadata() {
    let validator = FakeValidator::start(vec![
        (
            "admin",
            Answer::json(
                200,
                r#"{"valid":true,"user":"alice","roles":["admin"],"email":"a@example.com"}"#,
            ),
        ),
        ("anonymous", Answer::json(200, r#"{"valid":true}"#)),
        ("revoked", Answer::json(401, r#"{"valid":false}"#)),
        ("broken", Answer::json(500, "{}")),
        (
            "bad-role",
            Answer::json(200, r#"{"valid":true,"user":"a","roles":["a b"]}"#),
        ),
    ])
    .await;
    let running = start_service(&[("aimenu_url", &validator.url())]).await;
    let mut client = client(&running).await;
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case; 8] = [
        (
            &[("cookie", "session=admin")],
            &[
                "cache=miss",
                "reason=valid_session",
                "roles=admin",
                "user=alice",
            ],
        ),
        (
            &[("x-session-token", "admin")],
            &[
                "cache=miss",
                "reason=valid_session",
                "roles=admin",
                "user=alice",
            ],
        ),
        (
            &[("cookie", "session=admin")],
            &[
                "cache=hit",
                "reason=valid_session",
                "roles=admin",
                "user=alice",
            ],
        ),
        (
            &[("cookie", "session=anonymous")],
            &["cache=miss", "reason=valid_session"],
        ),
        (&[], &["cache=none", "reason=no_credential"]),
        (
            &[("cookie", "session=a; session=b")],
            &["cache=none", "reason=conflicting_cookies"],
        ),
        (
            &[("cookie", "session=revoked")],
            &["cache=miss", "reason=invalid_session"],
        ),
        (
            &[("cookie", "session=bad-role")],
            &["cache=miss", "reason=unsafe_roles"],
        ),
    ];
    for (headers, expected) in cases {
        let response = client
            .check(check_request(headers))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(metadata(&response), expected, "{headers:?}");
    }
    // Errors are never cached: each one is a miss.
    for _ in 0..2 {
        let response = client
            .check(check_request(&[("cookie", "session=broken")]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(metadata(&response), ["cache=miss", "reason=status"]);
    }
    let response = client
        .check(envoy_types::ext_authz::v3::pb::CheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        metadata(&response),
        ["cache=none", "reason=malformed_request"]
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn auth_disabled_says_so_in_metadata() {
    let validator = FakeValidator::start(vec![]).await;
    let running =
        start_service(&[("aimenu_url", &validator.url()), ("auth_enabled", "false")]).await;
    let mut client = client(&running).await;
    let response = client
        .check(check_request(&[("x-auth-roles", "admin")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outcome(&response), allow_anonymous());
    assert_eq!(metadata(&response), ["cache=none", "reason=auth_disabled"]);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_fresh_answer_passes_its_set_cookies_on_and_a_cached_one_none() {
    const RENEW: &str = "session=alive; Max-Age=3600; HttpOnly; SameSite=Lax; Path=/";
    const THEME: &str = "theme=dark; Path=/";
    const CLEAR: &str = "session=; Max-Age=0; Path=/";
    let validator = FakeValidator::start(vec![
        (
            "alive",
            Answer::json(200, r#"{"valid":true,"user":"alice"}"#)
                .header("set-cookie", RENEW)
                .header("set-cookie", THEME),
        ),
        (
            "dead",
            Answer::json(401, r#"{"valid":false}"#).header("set-cookie", CLEAR),
        ),
        (
            "broken",
            Answer::json(500, "{}").header("set-cookie", "session=x"),
        ),
        (
            "header-token",
            Answer::json(200, r#"{"valid":true,"user":"bob"}"#).header("set-cookie", RENEW),
        ),
    ])
    .await;
    let running = start_service(&[("aimenu_url", &validator.url())]).await;
    let client = client(&running).await;
    let ask = |headers: &'static [(&'static str, &'static str)]| {
        let request = check_request(headers);
        let mut client = client.clone();
        async move { client.check(request).await.unwrap().into_inner() }
    };

    let fresh = ask(&[("cookie", "session=alive")]).await;
    assert_eq!(outcome(&fresh), allow_as("alice"));
    assert_eq!(set_cookies(&fresh), [RENEW, THEME]);
    assert_eq!(metadata(&fresh)[0], "cache=miss");
    // The cache hit replays the verdict only.
    let cached = ask(&[("cookie", "session=alive")]).await;
    assert_eq!(outcome(&cached), allow_as("alice"));
    assert!(set_cookies(&cached).is_empty());
    assert_eq!(metadata(&cached)[0], "cache=hit");

    // A dead session's cookie is cleared with the 401; the cached 401 clears nothing.
    let dead = ask(&[("cookie", "session=dead")]).await;
    assert_eq!(outcome(&dead), deny_401());
    assert_eq!(set_cookies(&dead), [CLEAR]);
    let dead_again = ask(&[("cookie", "session=dead")]).await;
    assert_eq!(outcome(&dead_again), deny_401());
    assert!(set_cookies(&dead_again).is_empty());

    // An error verdict passes nothing on.
    let broken = ask(&[("cookie", "session=broken")]).await;
    assert_eq!(outcome(&broken), deny_503());
    assert!(set_cookies(&broken).is_empty());

    // A header credential gets the validator's cookie as well: it is the validator's call.
    let header = ask(&[("x-session-token", "header-token")]).await;
    assert_eq!(set_cookies(&header), [RENEW]);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn set_cookies_over_a_cap_are_a_validator_error() {
    let mut nine = Answer::json(200, r#"{"valid":true,"user":"alice"}"#);
    for i in 0..9 {
        nine = nine.header("set-cookie", &format!("c{i}=1"));
    }
    let long = format!("session={}", "x".repeat(4096));
    let validator = FakeValidator::start(vec![
        ("nine", nine),
        (
            "long",
            Answer::json(200, r#"{"valid":true,"user":"alice"}"#).header("set-cookie", &long),
        ),
    ])
    .await;
    let running = start_service(&[("aimenu_url", &validator.url())]).await;
    let mut client = client(&running).await;
    for token in ["nine", "long"] {
        let cookie = format!("session={token}");
        let response = client
            .check(check_request(&[("cookie", &cookie)]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(outcome(&response), deny_503(), "{token}");
        assert!(set_cookies(&response).is_empty(), "{token}");
        assert_eq!(
            metadata(&response),
            ["cache=miss", "reason=set_cookie"],
            "{token}"
        );
    }
    running.shutdown().await.unwrap();
}

fn roles_answers() -> Vec<(&'static str, Answer)> {
    vec![
        (
            "tok-admin",
            Answer::json(200, r#"{"valid":true,"user":"user1","roles":["admin"]}"#),
        ),
        (
            "tok-viewer",
            Answer::json(200, r#"{"valid":true,"user":"user2","roles":["viewer"]}"#),
        ),
    ]
}

fn token(token: &str) -> envoy_types::ext_authz::v3::pb::CheckRequest {
    check_request(&[("x-session-token", token)])
}

#[tokio::test]
async fn route_rules_apply_to_cached_verdicts_with_403() {
    let validator = FakeValidator::start(roles_answers()).await;
    let running = start_service(&[("aimenu_url", &validator.url())]).await;
    let mut client = client(&running).await;
    let admin_only = [("require_roles", "admin, ops")];

    // Warm the cache for user2 on a route without rules.
    assert_eq!(
        outcome_of(&mut client, token("tok-viewer")).await,
        allow_with(Some("user2"), Some("viewer"), None)
    );
    assert_eq!(validator.calls(), 1);
    // The rule is applied to the cached verdict: a 403, and no second validator call.
    let refused = with_extensions(token("tok-viewer"), &admin_only);
    let response = client.check(refused).await.unwrap().into_inner();
    assert_eq!(outcome(&response), deny_forbidden());
    assert!(
        metadata(&response).contains(&"reason=forbidden".to_owned()),
        "{:?}",
        metadata(&response)
    );
    assert_eq!(validator.calls(), 1);
    assert_eq!(
        outcome_of(
            &mut client,
            with_extensions(token("tok-admin"), &admin_only)
        )
        .await,
        allow_with(Some("user1"), Some("admin"), None)
    );
    assert_eq!(validator.calls(), 2);

    // Users any-of; roles and users together must both hold.
    let users = [("allow_users", "user2,user3")];
    assert_eq!(
        outcome_of(&mut client, with_extensions(token("tok-viewer"), &users)).await,
        allow_with(Some("user2"), Some("viewer"), None)
    );
    assert_eq!(
        outcome_of(&mut client, with_extensions(token("tok-admin"), &users)).await,
        deny_forbidden()
    );
    let both = [("require_roles", "admin"), ("allow_users", "user2")];
    for tok in ["tok-admin", "tok-viewer"] {
        assert_eq!(
            outcome_of(&mut client, with_extensions(token(tok), &both)).await,
            deny_forbidden(),
            "{tok}"
        );
    }
    // A rule never turns a missing or bad session into anything but the 401.
    assert_eq!(
        outcome_of(
            &mut client,
            with_extensions(check_request(&[]), &admin_only)
        )
        .await,
        deny_401()
    );
    assert_eq!(validator.calls(), 2);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn misconfigured_route_is_500_before_the_validator() {
    let validator = FakeValidator::start(roles_answers()).await;
    let running = start_service(&[("aimenu_url", &validator.url())]).await;
    let mut client = client(&running).await;
    for extensions in [
        &[("require_role", "admin")][..],
        &[("login_redirect", "maybe")],
        &[("csrf", "yes")],
        &[("require_roles", "")],
        &[("require_roles", "admin,,viewer")],
        &[("require_roles", "admin"), ("typo", "x")],
    ] {
        for tok in ["tok-admin", "tok-viewer"] {
            assert_eq!(
                outcome_of(&mut client, with_extensions(token(tok), extensions)).await,
                deny_misconfigured(),
                "{extensions:?}"
            );
        }
    }
    assert_eq!(validator.calls(), 0);
    // Valid ones beside them still work.
    assert_eq!(
        outcome_of(
            &mut client,
            with_extensions(token("tok-admin"), &[("login_redirect", "true")])
        )
        .await,
        allow_with(Some("user1"), Some("admin"), None)
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn route_csrf_replaces_the_global_switch() {
    let validator = FakeValidator::one_user("tok-1", "alice").await;
    let cross_site = || {
        check_request_to(
            "POST",
            "dash.example",
            &[
                ("cookie", "session=tok-1"),
                ("sec-fetch-site", "cross-site"),
            ],
        )
    };
    for (global, route, refused) in [
        ("true", None, true),
        ("true", Some("false"), false),
        ("false", None, false),
        ("false", Some("true"), true),
    ] {
        let running = start_service(&[("aimenu_url", &validator.url()), ("csrf", global)]).await;
        let mut client = client(&running).await;
        let request = match route {
            Some(value) => with_extensions(cross_site(), &[("csrf", value)]),
            None => cross_site(),
        };
        let expected = if refused {
            deny_cross_site()
        } else {
            allow_as("alice")
        };
        assert_eq!(
            outcome_of(&mut client, request).await,
            expected,
            "global {global}, route {route:?}"
        );
        running.shutdown().await.unwrap();
    }
}

/// Sign-in redirects through the gRPC door: who is sent (a browser's GET or HEAD with no
/// credential or a cookie), who is not (API clients, other methods, routes that say no, a
/// valid session refused by a rule, a failing validator), and the `Location`.
#[tokio::test]
async fn sign_in_redirects_only_browser_navigations_the_route_allows() {
    let validator = FakeValidator::start(roles_answers()).await;
    validator.set_answer("tok-broken", Answer::json(500, "{}"));
    let running = start_service_with_toml(
        "[[routes]]\nprefix = \"/api\"\nlogin_redirect = false\n",
        &[
            ("aimenu_url", &validator.url()),
            ("login_url", "https://auth.example/login?app=dash"),
            ("login_return_param", "rd"),
        ],
    )
    .await;
    let mut client = client(&running).await;
    let browser = |method: &str, path: &str, extra: &[(&str, &str)]| {
        let mut headers = vec![("accept", "text/html"), ("sec-fetch-mode", "navigate")];
        headers.extend_from_slice(extra);
        with_path(check_request_to(method, "dash.example", &headers), path)
    };

    for (method, extra) in [
        ("GET", &[][..]),
        ("HEAD", &[][..]),
        ("GET", &[("cookie", "session=tok-dead")][..]),
    ] {
        let response = client
            .check(browser(method, "/admin/x?y=1", extra))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(outcome(&response), deny_sign_in(), "{method} {extra:?}");
        assert_eq!(
            location(&response).as_deref(),
            Some("https://auth.example/login?app=dash&rd=%2Fadmin%2Fx%3Fy%3D1")
        );
        let reason = if extra.is_empty() {
            "reason=no_credential"
        } else {
            "reason=invalid_session"
        };
        assert!(metadata(&response).contains(&reason.to_owned()));
    }

    let refused: [(CheckRequest, Outcome); 7] = [
        (
            browser("GET", "/admin", &[("x-session-token", "tok-dead")]),
            deny_401(),
        ),
        (browser("POST", "/admin", &[]), deny_401()),
        (check_request(&[("accept", "application/json")]), deny_401()),
        (browser("GET", "/api/x", &[]), deny_401()),
        (
            with_extensions(
                browser("GET", "/admin", &[]),
                &[("login_redirect", "false")],
            ),
            deny_401(),
        ),
        (
            with_extensions(
                browser("GET", "/admin", &[("cookie", "session=tok-viewer")]),
                &[("require_roles", "admin")],
            ),
            deny_forbidden(),
        ),
        (
            browser("GET", "/admin", &[("cookie", "session=tok-broken")]),
            deny_503(),
        ),
    ];
    for (request, expected) in refused {
        assert_eq!(outcome_of(&mut client, request).await, expected);
    }
    // The route's own setting wins over the table's.
    let allowed = with_extensions(browser("GET", "/api/x", &[]), &[("login_redirect", "true")]);
    assert_eq!(outcome_of(&mut client, allowed).await, deny_sign_in());
    running.shutdown().await.unwrap();
}
