//! OpenTelemetry through the binary: a span per Check (either door) in the caller's trace, a
//! child per validator call whose id the auth service receives in `traceparent`, flushed at
//! shutdown to an OTLP receiver in this process; the caller's sampling decision kept; no token,
//! cookie or user in what is exported, and no span in the logs;
//! and, without `otel_endpoint`, nothing exported and the client's `traceparent` passed on as it
//! came.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use session_authz_testkit::check::*;
use session_authz_testkit::http::raw_get;
use session_authz_testkit::otlp::{ExportedSpan, Receiver};
use session_authz_testkit::service::*;
use session_authz_testkit::validator::*;
use session_authz_testkit::wait::eventually;

const TOKEN: &str = "otel-tok-3c9d1e";
const HEADER_TOKEN: &str = "otel-tok-header-6a6a";
const OTHER_COOKIE: &str = "other-cookie-5b5b";
const UNSAMPLED_TOKEN: &str = "otel-tok-unsampled-9f9f";
const USER: &str = "otel-user-77";

fn traceparent(trace_id: &str, parent_id: &str) -> String {
    format!("00-{trace_id}-{parent_id}-01")
}

/// SIGTERM, then waits for the exit off the runtime (the receiver and the fake validator run on
/// it, and the service's shutdown flush talks to the receiver); then for its last log line.
async fn stop(mut service: ServiceProcess) -> Vec<String> {
    kill(service.pid(), Signal::SIGTERM).unwrap();
    let (service, status) = tokio::task::spawn_blocking(move || {
        let status = service.wait_exit(Duration::from_secs(30));
        (service, status)
    })
    .await
    .unwrap();
    let status = status.expect("session-authz did not exit after SIGTERM");
    assert!(status.success(), "{status:?}");
    eventually(Duration::from_secs(10), || async {
        let logs = service.logs();
        logs.iter()
            .any(|line| line.contains("\"stopped\""))
            .then_some(logs)
    })
    .await
    .unwrap_or_else(|| panic!("no \"stopped\" line: {:?}", service.logs()))
}

fn the_span<'a>(
    spans: &'a [ExportedSpan],
    what: &str,
    test: impl Fn(&ExportedSpan) -> bool,
) -> &'a ExportedSpan {
    let found: Vec<&ExportedSpan> = spans.iter().filter(|span| test(span)).collect();
    assert_eq!(found.len(), 1, "{what}: {spans:#?}");
    found[0]
}

#[tokio::test]
async fn each_check_is_a_span_in_the_callers_trace_with_a_child_per_validator_call() {
    let receiver = Receiver::start().await;
    let validator = FakeValidator::start(vec![(
        TOKEN,
        Answer::json(
            200,
            &format!(r#"{{"valid":true,"user":"{USER}","roles":["admin"]}}"#),
        ),
    )])
    .await;
    let (validator_url, otel_url) = (validator.url(), receiver.url());
    let service = ServiceProcess::spawn(&[
        ("AIMENU_URL", validator_url.as_str()),
        ("SESSION_AUTHZ_OTEL_ENDPOINT", otel_url.as_str()),
        ("SESSION_AUTHZ_OTEL_SERVICE_NAME", "authz-under-test"),
        ("SESSION_AUTHZ_FORWARD_AUTH_ADDR", "127.0.0.1:0"),
        // Everything logged, so that a span leaking into the logs or a log into the spans shows.
        ("RUST_LOG", "trace"),
    ]);
    let mut client = client_at(service.grpc_addr).await;
    let cookie = format!("session={TOKEN}; theme={OTHER_COOKIE}");
    let (trace_a, parent_a) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let (trace_b, parent_b) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let (trace_c, parent_c) = ("11111111111111111111111111111111", "2222222222222222");

    let (trace_f, parent_f) = ("77777777777777777777777777777777", "8888888888888888");

    // A: a miss, the validator asked, no route rule; B: the same session again, a hit, on a
    // route whose rule it meets; F: a hit, on a route whose rule it fails.
    for (trace_id, parent_id, roles) in [
        (trace_a, parent_a, None),
        (trace_b, parent_b, Some("admin")),
        (trace_f, parent_f, Some("ops")),
    ] {
        let tp = traceparent(trace_id, parent_id);
        let request = check_request(&[
            ("cookie", &cookie),
            ("traceparent", &tp),
            ("x-request-id", "req-1"),
        ]);
        let (request, expected) = match roles {
            None => (request, allow_with(Some(USER), Some("admin"), None)),
            Some("admin") => (
                with_extensions(request, &[("require_roles", "admin")]),
                allow_with(Some(USER), Some("admin"), None),
            ),
            Some(other) => (
                with_extensions(request, &[("require_roles", other)]),
                deny_forbidden(),
            ),
        };
        assert_eq!(outcome_of(&mut client, request).await, expected);
    }
    // C: through the forward-auth door, a session the validator rejects.
    let tp_c = traceparent(trace_c, parent_c);
    let answer = raw_get(
        service.forward_auth_addr.unwrap(),
        "/admin",
        &[
            ("host", "dashboard"),
            ("x-session-token", HEADER_TOKEN),
            ("traceparent", &tp_c),
        ],
    )
    .await;
    assert_eq!(answer.status, 401);
    // D: no credential and no trace context: a trace of its own.
    assert_eq!(
        outcome_of(&mut client, check_request(&[])).await,
        deny_401()
    );
    // E: a trace the caller does not sample: nothing exported, the context still passed on.
    let (trace_e, parent_e) = ("33333333333333333333333333333333", "4444444444444444");
    let tp_e = format!("00-{trace_e}-{parent_e}-00");
    let request = check_request(&[("x-session-token", UNSAMPLED_TOKEN), ("traceparent", &tp_e)]);
    assert_eq!(outcome_of(&mut client, request).await, deny_401());

    // What is still queued is sent at shutdown, before the process exits.
    let logs = stop(service).await;
    // The spans are for the collector only: even RUST_LOG=trace prints none of them (JSON lines
    // name the spans an event happened in), around the lines logged within them.
    assert!(
        logs.iter().any(|line| line.contains("check decided")),
        "{logs:#?}"
    );
    for line in &logs {
        assert!(
            !line.contains("session_authz.")
                && !line.contains("\"name\":\"check\"")
                && !line.contains("\"name\":\"validator\""),
            "a span in the logs: {line}"
        );
    }
    let spans = receiver.spans();
    assert!(spans
        .iter()
        .all(|s| s.service_name.as_deref() == Some("authz-under-test")));

    let check_a = the_span(&spans, "check A", |s| {
        s.trace_id() == trace_a && s.span.name == "check"
    });
    assert_eq!(check_a.parent_span_id(), parent_a);
    assert_eq!(
        check_a.attribute("session_authz.outcome").as_deref(),
        Some("allow")
    );
    assert_eq!(
        check_a.attribute("session_authz.reason").as_deref(),
        Some("valid_session")
    );
    assert_eq!(
        check_a.attribute("session_authz.cache").as_deref(),
        Some("miss")
    );
    assert_eq!(
        check_a.attribute("session_authz.route_rules").as_deref(),
        Some("none")
    );
    let call_a = the_span(&spans, "validator call of A", |s| {
        s.parent_span_id() == check_a.span_id()
    });
    assert_eq!(call_a.trace_id(), trace_a);
    assert_eq!(call_a.span.name, "validator");
    assert_eq!(
        call_a.attribute("session_authz.verdict").as_deref(),
        Some("valid")
    );

    let check_b = the_span(&spans, "check B", |s| s.trace_id() == trace_b);
    assert_eq!(check_b.parent_span_id(), parent_b);
    assert_eq!(
        check_b.attribute("session_authz.outcome").as_deref(),
        Some("allow")
    );
    assert_eq!(
        check_b.attribute("session_authz.cache").as_deref(),
        Some("hit")
    );
    assert_eq!(
        check_b.attribute("session_authz.route_rules").as_deref(),
        Some("passed")
    );
    let check_f = the_span(&spans, "check F", |s| s.trace_id() == trace_f);
    assert_eq!(check_f.parent_span_id(), parent_f);
    assert_eq!(
        check_f.attribute("session_authz.reason").as_deref(),
        Some("forbidden")
    );
    assert_eq!(
        check_f.attribute("session_authz.cache").as_deref(),
        Some("hit")
    );
    assert_eq!(
        check_f.attribute("session_authz.route_rules").as_deref(),
        Some("failed")
    );

    let check_c = the_span(&spans, "check C", |s| {
        s.trace_id() == trace_c && s.span.name == "check"
    });
    assert_eq!(check_c.parent_span_id(), parent_c);
    assert_eq!(
        check_c.attribute("session_authz.outcome").as_deref(),
        Some("deny")
    );
    assert_eq!(
        check_c.attribute("session_authz.reason").as_deref(),
        Some("invalid_session")
    );
    assert_eq!(
        check_c.attribute("session_authz.cache").as_deref(),
        Some("miss")
    );
    let call_c = the_span(&spans, "validator call of C", |s| {
        s.parent_span_id() == check_c.span_id()
    });
    assert_eq!(
        call_c.attribute("session_authz.verdict").as_deref(),
        Some("invalid")
    );

    let check_d = the_span(&spans, "check D", |s| {
        s.attribute("session_authz.reason").as_deref() == Some("no_credential")
    });
    assert_eq!(check_d.parent_span_id(), "");
    assert_eq!(
        check_d.attribute("session_authz.cache").as_deref(),
        Some("none")
    );
    assert_eq!(check_c.attribute("session_authz.route_rules"), None);
    assert_eq!(spans.len(), 7, "{spans:#?}");

    assert!(!spans.iter().any(|s| s.trace_id() == trace_e), "{spans:#?}");

    // The auth service was asked three times (A, C, E), each time as a child of our call's span.
    let seen = validator.seen();
    assert_eq!(seen.len(), 3);
    let sent = |i: usize, name: &str| {
        seen[i]
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        sent(0, "traceparent"),
        Some(traceparent(trace_a, &call_a.span_id()))
    );
    assert_eq!(sent(0, "x-request-id").as_deref(), Some("req-1"));
    assert_eq!(
        sent(1, "traceparent"),
        Some(traceparent(trace_c, &call_c.span_id()))
    );
    let sent_e = sent(2, "traceparent").unwrap();
    let (prefix, flags) = (format!("00-{trace_e}-"), "-00");
    assert!(
        sent_e.starts_with(&prefix) && sent_e.ends_with(flags),
        "{sent_e}"
    );
    assert_ne!(sent_e, tp_e, "the caller's own span id passed on");

    // Nothing secret or personal in any byte exported.
    let bodies = receiver.bodies();
    assert!(!bodies.is_empty());
    for body in &bodies {
        for secret in [TOKEN, HEADER_TOKEN, UNSAMPLED_TOKEN, OTHER_COOKIE, USER] {
            assert!(
                !body.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} exported"
            );
        }
    }
}

#[tokio::test]
async fn without_otel_endpoint_nothing_is_exported_and_traceparent_passes_unchanged() {
    let receiver = Receiver::start().await;
    let validator = FakeValidator::start(vec![(
        TOKEN,
        Answer::json(200, &format!(r#"{{"valid":true,"user":"{USER}"}}"#)),
    )])
    .await;
    let (validator_url, otel_url) = (validator.url(), receiver.url());
    let traces_url = format!("{otel_url}/v1/traces");
    // The standard variables point at the receiver: they are not session-authz's settings.
    let service = ServiceProcess::spawn(&[
        ("AIMENU_URL", validator_url.as_str()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otel_url.as_str()),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces_url.as_str()),
        ("RUST_LOG", "trace"),
    ]);
    let mut client = client_at(service.grpc_addr).await;
    let tp = traceparent("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let request = check_request(&[
        ("cookie", &format!("session={TOKEN}")),
        ("traceparent", &tp),
    ]);
    assert_eq!(outcome_of(&mut client, request).await, allow_as(USER));
    stop(service).await;

    let seen = validator.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers.get("traceparent").unwrap().as_bytes(),
        tp.as_bytes()
    );
    // The process has exited: whatever it would have sent, it has.
    assert!(receiver.bodies().is_empty());
}

/// What the exporter would refuse at start-up, `--check-config` refuses too (exit 78, one line
/// naming the key): here the one standard variable it reads besides the headers.
#[test]
fn check_config_refuses_what_the_exporter_would() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_session-authz"))
            .env_clear()
            .env("SESSION_AUTHZ_OTEL_ENDPOINT", "http://127.0.0.1:4318")
            .env("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
            .env("SESSION_AUTHZ_GRPC_ADDR", "127.0.0.1:0")
            .env("SESSION_AUTHZ_HTTP_ADDR", "127.0.0.1:0")
            .args(args)
            .output()
            .unwrap()
    };
    for args in [&["--check-config"][..], &[]] {
        let out = run(args);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(78), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("otel_endpoint") && stderr.contains("gzip"),
            "{stderr}"
        );
    }
}

/// `otel_sample_ratio = 0`: a trace that would start here is not sampled (nothing exported, an
/// unsampled `traceparent` to the validator), while a caller's sampled trace still is.
#[tokio::test]
async fn sample_ratio_applies_to_traces_started_here_only() {
    let receiver = Receiver::start().await;
    let validator = FakeValidator::start(vec![
        (TOKEN, Answer::json(200, r#"{"valid":true}"#)),
        (HEADER_TOKEN, Answer::json(200, r#"{"valid":true}"#)),
    ])
    .await;
    let (validator_url, otel_url) = (validator.url(), receiver.url());
    let service = ServiceProcess::spawn(&[
        ("AIMENU_URL", validator_url.as_str()),
        ("SESSION_AUTHZ_OTEL_ENDPOINT", otel_url.as_str()),
        ("SESSION_AUTHZ_OTEL_SAMPLE_RATIO", "0"),
    ]);
    let mut client = client_at(service.grpc_addr).await;
    let request = check_request(&[("x-session-token", TOKEN)]);
    assert_eq!(outcome_of(&mut client, request).await, allow_anonymous());
    let (trace_id, parent_id) = ("55555555555555555555555555555555", "6666666666666666");
    let tp = traceparent(trace_id, parent_id);
    let request = check_request(&[("x-session-token", HEADER_TOKEN), ("traceparent", &tp)]);
    assert_eq!(outcome_of(&mut client, request).await, allow_anonymous());
    stop(service).await;

    let spans = receiver.spans();
    let check = the_span(&spans, "the caller's check", |s| s.span.name == "check");
    assert_eq!(check.trace_id(), trace_id);
    assert_eq!(check.parent_span_id(), parent_id);
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert!(spans.iter().all(|s| s.trace_id() == trace_id), "{spans:#?}");
    let seen = validator.seen();
    let unsampled = seen[0]
        .headers
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        unsampled.starts_with("00-") && unsampled.ends_with("-00"),
        "{unsampled}"
    );
}
