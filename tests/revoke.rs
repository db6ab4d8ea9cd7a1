//! Logout everywhere at once: three replicas of the real binary behind one real Envoy, sharing
//! revocations over a real redis-server (Debian's, started here on a loopback port); a session
//! cached on all three, one `POST /v1/revoke`, and the next Check on each replica is a 401. Then
//! the engine is killed (revocations stay local, readiness does not move, the metric says so)
//! and restarted (sharing resumes).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use session_authz_testkit::check::{check_request, deny_401, outcome_of, Outcome};
use session_authz_testkit::envoy::EnvoyProcess;
use session_authz_testkit::http::{raw_get, raw_request_with_body, RawResponse, Upstream};
use session_authz_testkit::process::{free_addr, Proc};
use session_authz_testkit::service::{client_at, ServiceProcess};
use session_authz_testkit::validator::{Answer, FakeValidator};
use session_authz_testkit::wait::{eventually, listening};

const SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a6978";

/// A redis-server of its own on `addr`: no persistence, stopped (by pid) when dropped.
fn redis(addr: SocketAddr, dir: &Path) -> Proc {
    Proc::spawn(
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

fn valid(user: &str) -> Answer {
    Answer::json(200, &format!(r#"{{"valid":true,"user":"{user}"}}"#))
}

fn revoked() -> Answer {
    Answer::json(401, r#"{"valid":false}"#)
}

async fn metric(replica: &ServiceProcess, series: &str) -> u64 {
    let metrics = raw_get(replica.http_addr, "/metrics", &[]).await.body;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in {metrics}"))
        .trim()
        .parse()
        .unwrap()
}

async fn wait_bus(replicas: &[ServiceProcess], up: u64) {
    for replica in replicas {
        eventually(Duration::from_secs(20), || async {
            (metric(replica, "session_authz_revocation_bus_up").await == up).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("revocation_bus_up never {up}: {:?}", replica.logs()));
    }
}

async fn check(replica: &ServiceProcess, token: &str) -> Outcome {
    let mut client = client_at(replica.grpc_addr).await;
    let cookie = format!("session={token}");
    outcome_of(&mut client, check_request(&[("cookie", &cookie)])).await
}

async fn revoke(replica: &ServiceProcess, bearer: &str, body: &str) -> RawResponse {
    let authorization = format!("Bearer {bearer}");
    raw_request_with_body(
        replica.http_addr,
        "POST",
        "/v1/revoke",
        &[
            ("Authorization", authorization.as_str()),
            ("Content-Type", "application/json"),
        ],
        body,
    )
    .await
}

/// Checks each replica until it denies `token`: how long after `since` each did.
async fn delays_until_denied(
    replicas: &[ServiceProcess],
    token: &str,
    since: Instant,
) -> Vec<Duration> {
    let mut delays = Vec::new();
    for replica in replicas {
        eventually(Duration::from_secs(10), || async {
            (check(replica, token).await == deny_401()).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("{token} still allowed: {:?}", replica.logs()));
        delays.push(since.elapsed());
    }
    delays
}

#[tokio::test(flavor = "multi_thread")]
async fn one_revoke_reaches_every_replica_and_survives_the_engine_restarting() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("revoke.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let redis_addr = free_addr();
    let mut engine = redis(redis_addr, dir.path());
    listening(redis_addr).await;

    let validator = FakeValidator::start(vec![
        ("alice-token", valid("alice")),
        ("bob-token", valid("bob")),
        ("carol-token", valid("carol")),
    ])
    .await;
    let url = validator.url();
    let secret_path = secret_file.display().to_string();
    let redis_url = format!("redis://{redis_addr}");
    let env = [
        ("AIMENU_URL", url.as_str()),
        ("SESSION_AUTHZ_CACHE_TTL", "300s"),
        ("SESSION_AUTHZ_REVOKE_SECRET_FILE", secret_path.as_str()),
        ("SESSION_AUTHZ_REVOCATION_REDIS_URL", redis_url.as_str()),
    ];
    let replicas: Vec<ServiceProcess> = (0..3).map(|_| ServiceProcess::spawn(&env)).collect();
    wait_bus(&replicas, 1).await;
    let app = Upstream::start().await;
    let grpc: Vec<_> = replicas.iter().map(|replica| replica.grpc_addr).collect();
    let envoy = EnvoyProcess::start_with_replicas(&grpc, app.addr).await;
    let through_envoy = |token: &'static str| {
        let cookie = format!("session={token}");
        async move { raw_get(envoy.listener, "/admin", &[("Cookie", cookie.as_str())]).await }
    };

    // The session is cached on every replica; the auth service then revokes it, which the
    // replicas would not see before their cache_ttl.
    for replica in &replicas {
        assert!(matches!(
            check(replica, "alice-token").await,
            Outcome::Allow { .. }
        ));
    }
    assert_eq!(through_envoy("alice-token").await.status, 200);
    validator.set_answer("alice-token", revoked());
    for replica in &replicas {
        assert!(matches!(
            check(replica, "alice-token").await,
            Outcome::Allow { .. }
        ));
    }

    // Refused without the secret, or with a body it cannot read.
    assert_eq!(
        revoke(
            &replicas[0],
            "not-the-secret",
            r#"{"session":"alice-token"}"#
        )
        .await
        .status,
        401
    );
    assert_eq!(
        revoke(&replicas[0], SECRET, r#"{"token":"alice-token"}"#)
            .await
            .status,
        400
    );
    assert!(matches!(
        check(&replicas[1], "alice-token").await,
        Outcome::Allow { .. }
    ));

    let sent = Instant::now();
    let answer = revoke(&replicas[0], SECRET, r#"{"session":"alice-token"}"#).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, r#"{"revoked":true,"shared":true}"#);
    let delays = delays_until_denied(&replicas, "alice-token", sent).await;
    eprintln!("revocation reached the three replicas after {delays:?} (from the revoke call)");
    for delay in &delays {
        // The bus takes a millisecond or two; the bound is for a slow, shared machine.
        assert!(*delay < Duration::from_secs(2), "{delays:?}");
    }
    for _ in 0..6 {
        assert_eq!(through_envoy("alice-token").await.status, 401);
    }
    assert_eq!(
        metric(
            &replicas[0],
            "session_authz_revocations_total{reach=\"shared\"}"
        )
        .await,
        1
    );

    // The engine dies: revocations are this replica's only, readiness does not move.
    engine.kill().unwrap();
    engine.wait().unwrap();
    wait_bus(&replicas, 0).await;
    for replica in &replicas {
        assert_eq!(raw_get(replica.http_addr, "/readyz", &[]).await.status, 200);
        assert!(replica
            .logs()
            .iter()
            .any(|line| line.contains("revocations are not being shared")));
    }
    for replica in &replicas {
        assert!(matches!(
            check(replica, "bob-token").await,
            Outcome::Allow { .. }
        ));
    }
    validator.set_answer("bob-token", revoked());
    let answer = revoke(&replicas[1], SECRET, r#"{"session":"bob-token"}"#).await;
    assert_eq!(answer.body, r#"{"revoked":true,"shared":false}"#);
    assert_eq!(check(&replicas[1], "bob-token").await, deny_401());
    assert!(matches!(
        check(&replicas[0], "bob-token").await,
        Outcome::Allow { .. }
    ));
    assert_eq!(
        metric(
            &replicas[1],
            "session_authz_revocations_total{reach=\"local\"}"
        )
        .await,
        1
    );

    // Back on the same address: the replicas subscribe again and sharing resumes. What they
    // cached while cut off may have been revoked unseen (bob, on replica 1 only): each forgets
    // its answers when it subscribes, and asks the auth service again.
    let _engine = redis(redis_addr, dir.path());
    wait_bus(&replicas, 1).await;
    for replica in &replicas {
        assert_eq!(check(replica, "bob-token").await, deny_401());
        assert!(replica
            .logs()
            .iter()
            .any(|line| line.contains("forgot the cached answers")));
    }
    for replica in &replicas {
        assert!(matches!(
            check(replica, "carol-token").await,
            Outcome::Allow { .. }
        ));
    }
    validator.set_answer("carol-token", revoked());
    let sent = Instant::now();
    let answer = revoke(&replicas[2], SECRET, r#"{"session":"carol-token"}"#).await;
    assert_eq!(answer.body, r#"{"revoked":true,"shared":true}"#);
    let delays = delays_until_denied(&replicas, "carol-token", sent).await;
    eprintln!("after the engine's restart: {delays:?}");
}
