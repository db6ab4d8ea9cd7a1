//! A real client: grpcurl 1.8.6 (installed pinned by scripts/install-tools.sh) sees the service
//! through reflection alone — no local .proto files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn grpcurl() -> PathBuf {
    let path = std::env::var_os("GRPCURL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/grpcurl"));
    assert!(
        path.exists(),
        "grpcurl not found at {}: run scripts/install-tools.sh (make test does)",
        path.display()
    );
    path
}

fn run(args: &[&str]) -> String {
    let out = Command::new(grpcurl()).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_lists_describes_health_checks_and_checks() {
    let validator = FakeValidator::start(vec![(
        "user1-token",
        Answer::json(200, r#"{"valid":true,"user":"user1"}"#),
    )])
    .await;
    let running = start_service(&[("aimenu_url", &validator.url())]).await;
    let addr = running.grpc_addr().to_string();

    let list = run(&["-plaintext", &addr, "list"]);
    for service in [
        "envoy.service.auth.v3.Authorization",
        "grpc.health.v1.Health",
    ] {
        assert!(list.contains(service), "{list}");
    }

    let describe = run(&[
        "-plaintext",
        &addr,
        "describe",
        "envoy.service.auth.v3.Authorization",
    ]);
    assert!(describe.contains("rpc Check"), "{describe}");
    let message = run(&[
        "-plaintext",
        &addr,
        "describe",
        "envoy.service.auth.v3.CheckRequest",
    ]);
    assert!(message.contains("attributes"), "{message}");

    let health = run(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]);
    assert!(health.contains("SERVING"), "{health}");
    let named = run(&[
        "-plaintext",
        "-d",
        r#"{"service":"envoy.service.auth.v3.Authorization"}"#,
        &addr,
        "grpc.health.v1.Health/Check",
    ]);
    assert!(named.contains("SERVING"), "{named}");

    let allowed = run(&[
        "-plaintext",
        "-d",
        r#"{"attributes":{"request":{"http":{"headers":{"cookie":"session=user1-token"}}}}}"#,
        &addr,
        "envoy.service.auth.v3.Authorization/Check",
    ]);
    assert!(
        allowed.contains("okResponse") && allowed.contains("user1"),
        "{allowed}"
    );

    let denied = run(&[
        "-plaintext",
        "-d",
        r#"{"attributes":{"request":{"http":{"headers":{}}}}}"#,
        &addr,
        "envoy.service.auth.v3.Authorization/Check",
    ]);
    assert!(
        denied.contains("Unauthorized") && denied.contains("\"code\": 16"),
        "{denied}"
    );

    running.shutdown().await.unwrap();
}
