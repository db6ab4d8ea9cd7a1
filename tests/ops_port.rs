//! The ops port under hostile clients: idle and half-sent connections are closed, they cannot
//! take the descriptors that Checks need, and the open-file limit is raised at start-up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use session_authz::ops::{OPS_HEADER_READ_TIMEOUT, OPS_MAX_CONNECTIONS};
use session_authz_testkit::check::*;
use session_authz_testkit::procfs::{nofile_limits, open_fds};
use session_authz_testkit::service::*;
use session_authz_testkit::validator::*;
use session_authz_testkit::wait::eventually;

/// Waits until the server closes `stream` (a read returns end of file or an error).
fn closed_by_server(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(err) if err.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn soft_open_file_limit_is_raised_to_the_hard_limit() {
    let validator_addr = "127.0.0.1:9"; // never called
    let service = ServiceProcess::spawn_with_fd_limits(
        64,
        512,
        &[("AIMENU_URL", &format!("http://{validator_addr}"))],
    );
    assert_eq!(nofile_limits(service.child.id()), (512, 512));
}

#[test]
fn idle_and_half_sent_connections_are_closed() {
    let service = ServiceProcess::spawn(&[("AIMENU_URL", "http://127.0.0.1:9")]);
    let limit = OPS_HEADER_READ_TIMEOUT * 4;
    let mut idle = TcpStream::connect(service.http_addr).unwrap();
    let mut half = TcpStream::connect(service.http_addr).unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut kept_alive = TcpStream::connect(service.http_addr).unwrap();
    kept_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(closed_by_server(&mut idle, limit), "idle socket kept open");
    assert!(
        closed_by_server(&mut half, limit),
        "half-sent request kept open"
    );
    assert!(
        closed_by_server(&mut kept_alive, limit),
        "idle kept-alive connection kept open"
    );
}

#[tokio::test]
async fn idle_ops_connections_cannot_starve_checks_or_probes() {
    let validator = FakeValidator::start(vec![]).await;
    validator.set_default(Answer::json(200, r#"{"valid":true,"user":"alice"}"#));
    // The review's reproduction: 256 descriptors in all, 300 idle sockets on the ops port.
    let service = ServiceProcess::spawn_with_fd_limits(
        256,
        256,
        &[
            ("AIMENU_URL", &validator.url()),
            ("SESSION_AUTHZ_CACHE_TTL", "0"),
        ],
    );
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(service.http_addr).unwrap())
        .collect();
    // Let the server take in as many as it will.
    let held = eventually(Duration::from_secs(10), || async {
        let fds = open_fds(service.child.id());
        (fds >= OPS_MAX_CONNECTIONS).then_some(fds)
    })
    .await
    .expect("the server accepts idle connections up to its cap");
    assert!(held < 256 - 64, "{held} descriptors in use");

    let mut client = client_at(service.grpc_addr).await;
    for i in 0..20 {
        let cookie = format!("session=fresh-token-{i}");
        let response = client
            .check(check_request(&[("cookie", &cookie)]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(outcome(&response), allow_as("alice"), "Check {i}");
    }
    // The idle ones time out in waves of OPS_MAX_CONNECTIONS; then a probe gets through.
    let url = format!("http://{}/readyz", service.http_addr);
    let ready = eventually(OPS_HEADER_READ_TIMEOUT * 20, || async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        let status = client.get(&url).send().await.ok()?.status();
        (status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "/readyz never answered");
    drop(idle);
}
