//! A real client: grpcurl 1.8.6 (installed pinned by scripts/install-tools.sh) sees the service
//! through reflection alone — no local .proto files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use session_authz_testkit::process::{run, tool};
use session_authz_testkit::service::*;
use session_authz_testkit::validator::*;

/// `GRPCURL` may name another grpcurl; the pinned one otherwise.
fn grpcurl(args: &[&str]) -> String {
    let path = std::env::var_os("GRPCURL").map_or_else(|| tool("grpcurl"), PathBuf::from);
    run(Command::new(path).args(args))
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_lists_describes_health_checks_and_checks() {
    let validator = FakeValidator::one_user("user1-token", "user1").await;
    let running = start_service(&[("aimenu_url", &validator.url())]).await;
    let addr = running.grpc_addr().to_string();

    let list = grpcurl(&["-plaintext", &addr, "list"]);
    for service in [
        "envoy.service.auth.v3.Authorization",
        "grpc.health.v1.Health",
    ] {
        assert!(list.contains(service), "{list}");
    }

    let describe = grpcurl(&[
        "-plaintext",
        &addr,
        "describe",
        "envoy.service.auth.v3.Authorization",
    ]);
    assert!(describe.contains("rpc Check"), "{describe}");
    let message = grpcurl(&[
        "-plaintext",
        &addr,
        "describe",
        "envoy.service.auth.v3.CheckRequest",
    ]);
    assert!(message.contains("attributes"), "{message}");

    let health = grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]);
    assert!(health.contains("SERVING"), "{health}");
    let named = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"service":"envoy.service.auth.v3.Authorization"}"#,
        &addr,
        "grpc.health.v1.Health/Check",
    ]);
    assert!(named.contains("SERVING"), "{named}");

    let allowed = grpcurl(&[
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

    let denied = grpcurl(&[
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
