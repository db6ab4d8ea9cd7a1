//! The binary as a process: draining on SIGTERM, health during the drain, no token in any log
//! line, and config errors at start-up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use session_authz_testkit::check::*;
use session_authz_testkit::service::*;
use session_authz_testkit::validator::*;
use session_authz_testkit::wait::eventually;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test]
async fn sigterm_drains_in_flight_checks_and_logs_no_token() {
    let validator = FakeValidator::start(vec![
        (
            "slow-token-1f2e3d",
            Answer::json(200, r#"{"valid":true,"user":"alice"}"#)
                .delayed(Duration::from_millis(1500)),
        ),
        ("fast-token-9a8b7c", Answer::json(500, "{}")),
    ])
    .await;
    let url = validator.url();
    let mut service = ServiceProcess::spawn(&[
        ("AIMENU_URL", url.as_str()),
        ("RUST_LOG", "trace"),
        ("SESSION_AUTHZ_SHUTDOWN_GRACE", "10s"),
    ]);
    let mut client = client_at(service.grpc_addr).await;

    // A few decisions of every kind, with secrets in every place a token can be.
    for headers in [
        vec![(
            "cookie",
            "csrf=cookie-secret-5e6f; session=fast-token-9a8b7c",
        )],
        vec![("x-session-token", "header-token-4c4c4c")],
        vec![
            ("cookie", "session=mismatch-token-7d7d; x=1"),
            ("x-session-token", "other-token-8e8e"),
        ],
    ] {
        client.check(check_request(&headers)).await.unwrap();
    }

    let in_flight = tokio::spawn({
        let mut client = client.clone();
        async move {
            client
                .check(check_request(&[("cookie", "session=slow-token-1f2e3d")]))
                .await
        }
    });
    // SIGTERM once that Check waits on the validator.
    let slow_call = eventually(Duration::from_secs(10), || async {
        validator
            .seen()
            .iter()
            .any(|seen| {
                seen.headers
                    .get("cookie")
                    .is_some_and(|v| v == "session=slow-token-1f2e3d")
            })
            .then_some(())
    })
    .await;
    assert!(
        slow_call.is_some(),
        "the slow Check never reached the validator"
    );
    kill(service.pid(), Signal::SIGTERM).unwrap();

    let response = in_flight
        .await
        .unwrap()
        .expect("in-flight Check answered")
        .into_inner();
    assert_eq!(outcome(&response), allow_as("alice"));
    let status = service
        .wait_exit(Duration::from_secs(10))
        .expect("exits after draining");
    assert!(status.success(), "{status:?}");

    let logs = service.logs();
    assert!(
        logs.iter().any(|l| l.contains("check decided")),
        "no decision lines"
    );
    assert!(logs.iter().any(|l| l.contains("draining")));
    for secret in [
        "slow-token-1f2e3d",
        "fast-token-9a8b7c",
        "cookie-secret-5e6f",
        "header-token-4c4c4c",
        "mismatch-token-7d7d",
        "other-token-8e8e",
    ] {
        let leaks: Vec<_> = logs.iter().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret} logged: {leaks:?}");
    }
}

#[tokio::test]
async fn validator_failures_are_logged_with_their_cause_rate_limited_and_uncoloured() {
    // A port nothing listens on: every validator call is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let service = ServiceProcess::spawn(&[
        ("AIMENU_URL", url.as_str()),
        ("SESSION_AUTHZ_LOG_FORMAT", "text"),
    ]);
    let mut client = client_at(service.grpc_addr).await;
    for i in 0..20 {
        let cookie = format!("session=refused-token-{i}-5a5a");
        let response = client
            .check(check_request(&[("cookie", &cookie)]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(outcome(&response), deny_503());
    }
    let failures = eventually(Duration::from_secs(10), || async {
        let lines: Vec<String> = service
            .logs()
            .into_iter()
            .filter(|l| l.contains("validator call failed"))
            .collect();
        (!lines.is_empty()).then_some(lines)
    })
    .await
    .expect("the cause of validator errors is logged");
    // 20 failures within seconds: one line, not twenty.
    assert!(failures.len() < 5, "{failures:#?}");
    assert!(failures[0].contains("WARN"), "{failures:?}");
    assert!(failures[0].contains("transport"), "{failures:?}");
    let logs = service.logs();
    assert!(!logs.iter().any(|l| l.contains("5a5a")), "token logged");
    // stderr is a pipe here, as in a container: no escape codes.
    assert!(!logs.iter().any(|l| l.contains('\u{1b}')), "{logs:?}");
}

#[tokio::test]
async fn health_turns_not_serving_when_draining() {
    let validator = FakeValidator::start(vec![]).await;
    let running = start_service(&[("aimenu_url", &validator.url())]).await;
    let mut health = HealthClient::new(channel(&running).await);
    for service in ["", "envoy.service.auth.v3.Authorization"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let ready = reqwest::get(format!("http://{}/readyz", running.http_addr()))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let alive = reqwest::get(format!("http://{}/healthz", running.http_addr()))
        .await
        .unwrap();
    assert_eq!(alive.status(), 200);

    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let shutdown = tokio::spawn(running.shutdown());
    let next = watch.message().await.unwrap().unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(watch);
    shutdown.await.unwrap().unwrap();
}

#[tokio::test]
async fn draining_keeps_answering_for_the_drain_delay() {
    let validator = FakeValidator::one_user("token-a", "alice").await;
    // Long enough that the checks below always fall inside it; the test ends before it does.
    let running = start_service(&[("aimenu_url", &validator.url()), ("drain_delay", "60s")]).await;
    let grpc_addr = running.grpc_addr();
    let http_addr = running.http_addr();
    let shutdown = tokio::spawn(running.shutdown());

    let ready = eventually(Duration::from_secs(10), || async {
        let status = reqwest::get(format!("http://{http_addr}/readyz"))
            .await
            .ok()?
            .status();
        (status == 503).then_some(())
    })
    .await;
    assert!(ready.is_some(), "/readyz never reported draining");
    // NOT_SERVING, yet new connections are still accepted and answered.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect()
        .await
        .expect("listener still open while draining");
    let mut health = HealthClient::new(channel);
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::NotServing as i32);
    let mut client = client_at(grpc_addr).await;
    let response = client
        .check(check_request(&[("cookie", "session=token-a")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outcome(&response), allow_as("alice"));
    assert!(!shutdown.is_finished());
    shutdown.abort();
}

/// The binary with exactly this environment and these arguments, run to its end.
fn run(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_session-authz"));
    command.env_clear().args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

#[test]
fn bad_config_exits_non_zero_with_one_line_naming_the_key() {
    let out = run(&[("AUTH_ENABLED", "flase")], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("auth_enabled") && stderr.contains("flase"),
        "{stderr}"
    );

    let out = run(&[], &["--validator-timeout", "soon"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("validator_timeout") && stderr.contains("--validator-timeout"),
        "{stderr}"
    );

    let out = run(&[("SESSION_AUTHZ_CONFIG", "/nonexistent/authz.toml")], &[]);
    assert!(!out.status.success());

    let out = run(
        &[("AIMENU_URL", "http://svc:pa55word@auth:5000")],
        &["--check-config", "--auth-enabled", "no"],
    );
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("auth_enabled = false"), "{stdout}");
    assert!(!stdout.contains("pa55word"), "{stdout}");

    let help = run(&[], &["--help"]);
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in [
        "--auth-enabled",
        "--aimenu-url",
        "--grpc-addr",
        "--http-addr",
        "--session-cookie",
        "--session-header",
        "--user-header",
        "--validator-timeout",
        "--on-validator-error",
        "--log-format",
        "--shutdown-grace",
        "--drain-delay",
        "--cache-ttl",
        "--cache-negative-ttl",
        "--cache-max-entries",
        "--stale-if-error",
        "--validator-max-concurrency",
        "--validator-max-queue",
        "--tls-cert",
        "--tls-key",
        "--tls-client-ca",
        "--validator-ca",
        "--config",
        "--check-config",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

/// What `--help` promises for each key holds: its `[default: …]`, given as a flag, changes
/// nothing in `--check-config`, and its `[env: …]` is the variable that is read.
#[test]
fn help_defaults_and_check_config_agree() {
    fn between<'a>(line: &'a str, open: &str) -> Option<&'a str> {
        let start = line.find(open)? + open.len();
        Some(&line[start..start + line[start..].find(']')?])
    }
    let help = String::from_utf8(run(&[], &["--help"]).stdout).unwrap();
    let mut with_defaults = vec!["--check-config"];
    let mut keys = 0;
    for line in help.lines() {
        let flag = line.split_whitespace().next().unwrap_or_default();
        let Some(env) = between(line, "[env: ") else {
            continue;
        };
        if flag == "--config" {
            continue;
        }
        keys += 1;
        let key = flag.trim_start_matches("--").replace('-', "_");
        // A blank value is wrong for every key: the error shows the variable was read.
        let out = run(&[(env, " ")], &["--check-config"]);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(78), "{env}: {stderr}");
        assert!(
            stderr.contains(&format!("config {key} ")) && stderr.contains(env),
            "{env}: {stderr}"
        );
        if let Some(default) = between(line, "[default: ") {
            with_defaults.extend([flag, default]);
        }
    }
    let keys_with_flags = session_authz::config::KEYS
        .iter()
        .filter(|key| !key.toml_only)
        .count();
    assert_eq!(keys, keys_with_flags, "{help}");
    // A TOML-only key has no flag, but --help names it.
    for key in session_authz::config::KEYS
        .iter()
        .filter(|key| key.toml_only)
    {
        assert!(
            help.contains("Only a TOML file (--config) can set:") && help.contains(key.name),
            "{help}"
        );
    }

    let plain = run(&[], &["--check-config"]);
    let explicit = run(&[], &with_defaults);
    assert!(plain.status.success() && explicit.status.success());
    let plain = String::from_utf8(plain.stdout).unwrap();
    assert_eq!(plain, String::from_utf8(explicit.stdout).unwrap());
    // Every key --check-config shows by default has its default in --help.
    assert_eq!(
        plain.lines().count(),
        (with_defaults.len() - 1) / 2,
        "{plain}"
    );
}

/// A misconfigured route is logged (naming the key, never the token), once however many
/// requests hit it, and the TOML `[[routes]]` of `SESSION_AUTHZ_CONFIG` apply to the binary.
#[tokio::test]
async fn misconfigured_routes_are_logged_once_and_toml_routes_apply() {
    let validator = FakeValidator::start(vec![(
        "viewer-token-7d7d",
        Answer::json(200, r#"{"valid":true,"user":"user2","roles":["viewer"]}"#),
    )])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("session-authz.toml");
    std::fs::write(
        &file,
        "[[routes]]\nprefix = \"/admin/settings\"\nrequire_roles = [\"admin\"]\n",
    )
    .unwrap();
    let url = validator.url();
    let service = ServiceProcess::spawn(&[
        ("AIMENU_URL", url.as_str()),
        ("SESSION_AUTHZ_CONFIG", file.to_str().unwrap()),
        ("RUST_LOG", "session_authz=debug"),
    ]);
    let mut client = client_at(service.grpc_addr).await;
    let viewer = || check_request(&[("x-session-token", "viewer-token-7d7d")]);

    for _ in 0..5 {
        let request = with_extensions(viewer(), &[("require_role", "admin")]);
        assert_eq!(outcome_of(&mut client, request).await, deny_misconfigured());
    }
    assert_eq!(validator.calls(), 0);
    assert_eq!(
        outcome_of(&mut client, viewer()).await,
        allow_with(Some("user2"), Some("viewer"), None)
    );
    assert_eq!(
        outcome_of(&mut client, with_path(viewer(), "/admin/settings/mail")).await,
        deny_forbidden()
    );
    // Both sources apply: the proxy's rule does not lift the file's.
    let users = [("allow_users", "user2")];
    assert_eq!(
        outcome_of(
            &mut client,
            with_extensions(with_path(viewer(), "/admin/settings"), &users)
        )
        .await,
        deny_forbidden()
    );
    assert_eq!(
        outcome_of(
            &mut client,
            with_extensions(with_path(viewer(), "/reports"), &users)
        )
        .await,
        allow_with(Some("user2"), Some("viewer"), None)
    );

    let warned = eventually(Duration::from_secs(10), || async {
        let lines: Vec<String> = service
            .logs()
            .into_iter()
            .filter(|line| line.contains("misconfigured route"))
            .collect();
        (!lines.is_empty()).then_some(lines)
    })
    .await
    .expect("a misconfigured route is logged");
    assert!(warned[0].contains("require_role"), "{warned:?}");
    assert!(warned[0].contains("WARN"), "{warned:?}");
    // Once: the other four requests came within the minute. Give them time to show up if they
    // were (wrongly) logged: the decision line of the last Check is there by now.
    eventually(Duration::from_secs(10), || async {
        let logs = service.logs();
        logs.iter()
            .any(|line| line.contains("forbidden") && line.contains("check decided"))
            .then_some(())
    })
    .await
    .expect("the last Check's decision line");
    let lines = service.logs();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("misconfigured route"))
            .count(),
        1,
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| !l.contains("viewer-token-7d7d")));
}
