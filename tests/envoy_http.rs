//! End to end through Envoy's ext_authz `http_service`: real Envoy 1.40 running the shipped
//! `envoy/envoy-http.yaml` (ports substituted), the session-authz binary with the shipped
//! `envoy/session-authz-http.toml` and its forward-auth door, a fake validator and an app that
//! echoes the headers it got.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use session_authz_testkit::envoy::{shipped_file_config, validate_file, EnvoyProcess};
use session_authz_testkit::forward_auth::ForwardAuthStack;
use session_authz_testkit::http::*;
use session_authz_testkit::manifests::yaml_file;
use session_authz_testkit::process::root;
use session_authz_testkit::validator::*;
use session_authz_testkit::wait::eventually;

/// The forward-auth stack behind the shipped Envoy.
struct Stack {
    behind: ForwardAuthStack,
    envoy: EnvoyProcess,
}

impl Stack {
    async fn start() -> Self {
        let mut answers = demo_answers();
        answers.push(("nouser-token", Answer::json(200, r#"{"valid":true}"#)));
        let behind = ForwardAuthStack::start(
            answers,
            "envoy/session-authz-http.toml",
            &[("SESSION_AUTHZ_LOGIN_URL", "/login")],
        )
        .await;
        let envoy = EnvoyProcess::start_with_config(&shipped_file_config(
            "envoy-http.yaml",
            &[behind.door],
            behind.app.addr,
        ))
        .await;
        Self { behind, envoy }
    }

    async fn get(&self, target: &str, headers: &[(&str, &str)]) -> RawResponse {
        raw_get(self.envoy.listener, target, headers).await
    }
}

fn assert_json_deny(response: &RawResponse, status: u16, error: &str) {
    assert_eq!(response.status, status, "{response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{response:?}"
    );
    assert_eq!(response.body, format!("{{\"error\":\"{error}\"}}"));
}

#[test]
fn the_shipped_config_is_valid() {
    validate_file(&root().join("envoy/envoy-http.yaml"));
}

/// The filter that drops aliased header names is the same in both Envoy samples (the sidecar's
/// is checked against envoy.yaml in tests/deploy_kubernetes.rs).
#[test]
fn both_samples_drop_aliased_header_names_alike() {
    let first_filter = |file: &str| {
        let doc = yaml_file(file).remove(0);
        doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            ["http_filters"][0]
            .clone()
    };
    let grpc = first_filter("envoy/envoy.yaml");
    assert_eq!(grpc["name"], "envoy.filters.http.lua", "{grpc}");
    assert_eq!(first_filter("envoy/envoy-http.yaml"), grpc);
}

#[tokio::test(flavor = "multi_thread")]
async fn envoy_http_service_through_the_forward_auth_door() {
    let mut stack = Stack::start().await;
    let forged = FORGED;

    // No session: 401 with the door's JSON; a browser's page load: the 302 reaches it.
    assert_json_deny(&stack.get("/admin", &[]).await, 401, "unauthenticated");
    let redirect = stack
        .get(
            "/admin?tab=1",
            &[("accept", "text/html"), ("sec-fetch-mode", "navigate")],
        )
        .await;
    assert_eq!(redirect.status, 302, "{redirect:?}");
    assert_eq!(
        redirect.header("location"),
        Some("/login?return_to=%2Fadmin%3Ftab%3D1")
    );
    assert_eq!(redirect.header("cache-control"), Some("no-store"));
    assert!(stack.behind.app.hits().is_empty());

    // user1: the app sees its identity, never the client's; the renewal cookie reaches the
    // client (and not the app).
    let mut headers = vec![("Cookie", "session=user1-token")];
    headers.extend_from_slice(&forged);
    let allowed = stack.get("/admin", &headers).await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.upstream_saw("x-auth-user"), ["user1"]);
    assert_eq!(allowed.upstream_saw("x-auth-roles"), ["admin"]);
    assert_eq!(allowed.upstream_saw("x-auth-email"), ["user1@example.com"]);
    // Assertions are off: the door names x-auth-assertion to remove, and the client's is gone.
    assert!(
        allowed.upstream_saw("x-auth-assertion").is_empty(),
        "{allowed:?}"
    );
    assert_eq!(
        allowed.header_values("set-cookie"),
        ["session=user1-token; Max-Age=3600; HttpOnly"]
    );
    assert!(allowed.upstream_saw("set-cookie").is_empty());

    // Any other spelling of an identity header: an underscore one refused (400), every other
    // alias dropped before any route; the app reads exactly the door's identity.
    let aliases = forged_identity_aliases(false);
    let viewer = [("Cookie", "session=user2-token")];
    let aliased = stack.get("/admin", &with_aliases(&viewer, &aliases)).await;
    assert_eq!(aliased.status, 200, "{aliased:?}");
    assert_eq!(
        aliased.identity_as_cgi(),
        [vec!["user2"], vec!["viewer"], vec![], vec![]],
        "{aliased:?}"
    );
    let aliased = stack.get("/", &with_aliases(&[], &aliases)).await;
    assert_eq!(aliased.status, 200, "{aliased:?}");
    assert_eq!(
        aliased.identity_as_cgi(),
        [Vec::<String>::new(), vec![], vec![], vec![]],
        "{aliased:?}"
    );
    let hits = stack.behind.app.hits().len();
    for target in ["/admin", "/"] {
        let refused = stack.get(target, &[("X_Auth-Roles", "admin")]).await;
        assert_eq!(refused.status, 400, "{target}: {refused:?}");
    }
    assert_eq!(stack.behind.app.hits().len(), hits);

    // A session without a user: the client's identity headers are removed, not passed on.
    let mut headers = vec![("X-Session-Token", "nouser-token")];
    headers.extend_from_slice(&forged);
    let nameless = stack.get("/api/admin/stats", &headers).await;
    assert_eq!(nameless.status, 200, "{nameless:?}");
    for name in IDENTITY_HEADERS {
        assert!(
            nameless.upstream_saw(name).is_empty(),
            "{name}: {nameless:?}"
        );
    }

    // The admin-only rule from the shipped TOML, in any letter case; forged X-Forwarded-* and
    // X-Original-* change nothing (Envoy sends the door only its allowed headers).
    for path in ["/admin/settings", "/ADMIN/Settings/x"] {
        let mut headers = vec![("X-Session-Token", "user2-token")];
        headers.extend_from_slice(&forged);
        assert_json_deny(&stack.get(path, &headers).await, 403, "forbidden");
        let admin = stack.get(path, &[("X-Session-Token", "user1-token")]).await;
        assert_eq!(admin.status, 200, "{admin:?}");
    }

    // The original method and host reach the door: a cross-site POST is refused, the
    // dashboard's own origin passes.
    for (origin, status) in [
        ("https://evil.example", 403),
        ("http://dashboard.local", 200),
    ] {
        let session = ("Cookie", "session=user1-token");
        let response = raw_request(
            stack.envoy.listener,
            "POST",
            "/admin",
            &[session, ("Origin", origin)],
        )
        .await;
        assert_eq!(response.status, status, "{origin}: {response:?}");
        if status == 403 {
            assert_json_deny(&response, 403, "cross-site request");
        }
    }

    // No spelling of an admin path reaches the app without a session.
    let before = stack.behind.app.hits().len();
    for (target, headers) in PATH_SPELLINGS {
        let response = stack.get(target, headers).await;
        assert!(
            [400, 401, 404].contains(&response.status),
            "{target} {headers:?}: {response:?}"
        );
    }
    assert_eq!(
        stack.behind.app.hits().len(),
        before,
        "{:?}",
        stack.behind.app.hits()
    );

    // Public traffic: no check, no forged identity.
    let public = stack.get("/", &forged).await;
    assert_eq!(public.status, 200);
    assert!(public.upstream_saw("x-auth-user").is_empty());

    // A validator error: 503, never the app. Envoy takes any 5xx from an http_service for its
    // own error path (status_on_error), so the client gets Envoy's empty 503, not the door's
    // JSON and retry-after (envoy/README.md).
    let before = stack.behind.app.hits().len();
    let broken = stack
        .get("/admin", &[("Cookie", "session=broken-token")])
        .await;
    assert_eq!(broken.status, 503, "{broken:?}");
    // session-authz itself gone: Envoy's status_on_error, 503, never the app.
    drop(stack.behind.authz.take());
    let down = eventually(Duration::from_secs(20), || async {
        let response = stack
            .get("/admin", &[("Cookie", "session=user1-token")])
            .await;
        (response.status == 503).then_some(response)
    })
    .await;
    assert!(down.is_some(), "no 503 with session-authz down");
    assert_eq!(stack.behind.app.hits().len(), before);
    assert!(stack.behind.validator.calls() > 0);
}
