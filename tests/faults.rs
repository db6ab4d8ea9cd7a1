//! A sick validator, faked at the TCP level on loopback: every fault ends in a fast 503 within
//! the timeout, nothing is cached, and the service recovers without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use session_authz_testkit::check::*;
use session_authz_testkit::procfs::{open_fds, rss_kib};
use session_authz_testkit::service::*;
use session_authz_testkit::validator::*;
use session_authz_testkit::wait::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the raw validator treats the next connections.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// A correct 200 `{"valid":true,"user":"alice"}`.
    Healthy,
    /// Reads the request, then closes without a word (killed mid-request).
    CloseAfterRequest,
    /// Sends headers and part of the body, then resets the connection.
    ResetMidBody,
    /// Sends the answer only after `delay`.
    LateHeaders(Duration),
    /// Sends headers, then the body one byte a second.
    Trickle,
    /// Announces and streams a 100 MB body.
    HugeBody { chunked: bool },
    /// A 200 whose JSON nests 10 000 levels deep.
    DeepJson,
}

struct RawValidator {
    addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    open: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl RawValidator {
    async fn start(fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fault = Arc::new(Mutex::new(fault));
        let open = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn({
            let fault = fault.clone();
            let open = open.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let fault = fault.clone();
                    let open = open.clone();
                    tokio::spawn(async move {
                        open.fetch_add(1, Ordering::SeqCst);
                        serve(stream, &fault).await;
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            }
        });
        Self {
            addr,
            fault,
            open,
            accept,
        }
    }

    fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RawValidator {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn read_request(stream: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

async fn serve(mut stream: TcpStream, fault: &Mutex<Fault>) {
    // Keep-alive: answer requests on this connection until it closes.
    while read_request(&mut stream).await {
        let fault = *fault.lock().unwrap();
        let ok_body = br#"{"valid":true,"user":"alice"}"#;
        let head = |len: usize| {
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n")
        };
        let result: std::io::Result<()> = async {
            match fault {
                Fault::Healthy => {
                    stream.write_all(head(ok_body.len()).as_bytes()).await?;
                    stream.write_all(ok_body).await?;
                }
                Fault::CloseAfterRequest => return Err(std::io::ErrorKind::Other.into()),
                Fault::ResetMidBody => {
                    stream.write_all(head(100).as_bytes()).await?;
                    stream.write_all(&ok_body[..10]).await?;
                    stream.set_zero_linger()?;
                    return Err(std::io::ErrorKind::Other.into());
                }
                Fault::LateHeaders(delay) => {
                    // Notice a caller that hangs up while we make it wait.
                    let mut probe = [0u8; 1];
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = stream.read(&mut probe) => return Err(std::io::ErrorKind::Other.into()),
                    }
                    stream.write_all(head(ok_body.len()).as_bytes()).await?;
                    stream.write_all(ok_body).await?;
                }
                Fault::Trickle => {
                    stream.write_all(head(ok_body.len()).as_bytes()).await?;
                    for byte in ok_body {
                        stream.write_all(&[*byte]).await?;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                Fault::HugeBody { chunked } => {
                    let total = 100 * 1024 * 1024;
                    if chunked {
                        stream
                            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                            .await?;
                    } else {
                        stream.write_all(head(total).as_bytes()).await?;
                    }
                    let block = vec![b' '; 64 * 1024];
                    for _ in 0..(total / block.len()) {
                        if chunked {
                            stream
                                .write_all(format!("{:x}\r\n", block.len()).as_bytes())
                                .await?;
                            stream.write_all(&block).await?;
                            stream.write_all(b"\r\n").await?;
                        } else {
                            stream.write_all(&block).await?;
                        }
                    }
                }
                Fault::DeepJson => {
                    let body = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
                    stream.write_all(head(body.len()).as_bytes()).await?;
                    stream.write_all(body.as_bytes()).await?;
                }
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            return;
        }
    }
}

const TIMEOUT: Duration = Duration::from_millis(800);

async fn service_for(validator: &RawValidator) -> session_authz::app::Running {
    start_service(&[
        ("aimenu_url", &validator.url()),
        ("validator_timeout", "800ms"),
        ("cache_negative_ttl", "10s"),
    ])
    .await
}

async fn check(running: &session_authz::app::Running, token: &str) -> (Outcome, Duration) {
    let mut client = client(running).await;
    let cookie = format!("session={token}");
    let started = Instant::now();
    let outcome = outcome_of(&mut client, check_request(&[("cookie", &cookie)])).await;
    (outcome, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_is_a_fast_503_then_recovers_uncached() {
    let validator = RawValidator::start(Fault::Healthy).await;
    let running = service_for(&validator).await;
    let faults = [
        Fault::CloseAfterRequest,
        Fault::ResetMidBody,
        Fault::LateHeaders(Duration::from_secs(3)),
        Fault::Trickle,
        Fault::HugeBody { chunked: false },
        Fault::HugeBody { chunked: true },
        Fault::DeepJson,
    ];
    for (i, fault) in faults.into_iter().enumerate() {
        let token = format!("token-{i}");
        validator.set(fault);
        let (outcome, took) = check(&running, &token).await;
        assert_eq!(outcome, deny_503(), "{fault:?}");
        assert!(
            took < TIMEOUT + Duration::from_millis(500),
            "{fault:?} took {took:?}"
        );

        // Nothing was cached: the same token is allowed as soon as the validator is well.
        validator.set(Fault::Healthy);
        let (outcome, _) = check(&running, &token).await;
        assert_eq!(outcome, allow_as("alice"), "after {fault:?}");
    }
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_validator_never_leaks_an_allow_and_recovers() {
    let validator = RawValidator::start(Fault::Healthy).await;
    let running = start_service(&[
        ("aimenu_url", &validator.url()),
        ("validator_timeout", "800ms"),
        ("cache_ttl", "0"),
    ])
    .await;
    for round in 0..10 {
        let down = round % 2 == 1;
        validator.set(if down {
            Fault::CloseAfterRequest
        } else {
            Fault::Healthy
        });
        let (outcome, _) = check(&running, "flapping").await;
        let expected = if down { deny_503() } else { allow_as("alice") };
        assert_eq!(outcome, expected, "round {round}");
    }
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_check_drops_its_validator_call() {
    let validator = RawValidator::start(Fault::LateHeaders(Duration::from_secs(30))).await;
    let running = start_service(&[
        ("aimenu_url", &validator.url()),
        ("validator_timeout", "20s"),
    ])
    .await;
    let mut client = client(&running).await;
    let call = tokio::spawn(async move {
        client
            .check(check_request(&[("cookie", "session=abandoned")]))
            .await
    });
    let opened = eventually(Duration::from_secs(5), || async {
        (validator.open.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    assert!(opened.is_some(), "the validator call never started");

    call.abort(); // Envoy gives up: the RPC is reset.
    let closed = eventually(Duration::from_secs(5), || async {
        (validator.open.load(Ordering::SeqCst) == 0).then_some(())
    })
    .await;
    assert!(closed.is_some(), "the validator call outlived its Check");
    let text = reqwest::get(format!("http://{}/metrics", running.http_addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("session_authz_validator_in_flight 0"),
        "{text}"
    );
    assert!(text.contains("session_authz_checks_in_flight 0"), "{text}");
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_validator_at_twice_capacity_is_shed_with_flat_resources() {
    let validator = FakeValidator::start(vec![]).await;
    validator.set_default(
        Answer::json(200, r#"{"valid":true,"user":"alice"}"#).delayed(Duration::from_millis(300)),
    );
    let url = validator.url();
    let service = ServiceProcess::spawn(&[
        ("AIMENU_URL", url.as_str()),
        ("SESSION_AUTHZ_VALIDATOR_MAX_CONCURRENCY", "8"),
        ("SESSION_AUTHZ_VALIDATOR_MAX_QUEUE", "8"),
        ("SESSION_AUTHZ_CACHE_TTL", "0"),
        ("SESSION_AUTHZ_CACHE_NEGATIVE_TTL", "0"),
    ]);
    let pid = service.child.id();
    let client = client_at(service.grpc_addr).await;

    // Capacity is 16 (8 in flight + 8 waiting); each wave sends 32 distinct sessions at once.
    let mut samples = Vec::new();
    for wave in 0..6 {
        let started = Instant::now();
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let mut client = client.clone();
                tokio::spawn(async move {
                    let cookie = format!("session=wave{wave}-{i}");
                    let t = Instant::now();
                    let response = client
                        .check(check_request(&[("cookie", &cookie)]))
                        .await
                        .unwrap()
                        .into_inner();
                    (outcome(&response), t.elapsed())
                })
            })
            .collect();
        let mut shed = 0;
        for task in tasks {
            let (outcome, took) = task.await.unwrap();
            if outcome == deny_503() {
                shed += 1;
                assert!(took < Duration::from_millis(250), "shed slowly: {took:?}");
            } else {
                assert_eq!(outcome, allow_as("alice"));
            }
        }
        assert_eq!(shed, 16, "wave {wave}: exactly the excess is shed");
        assert!(started.elapsed() < Duration::from_secs(2));
        samples.push((open_fds(pid), rss_kib(pid)));
    }
    assert!(
        validator.max_in_flight() <= 8,
        "{}",
        validator.max_in_flight()
    );
    // After the first waves warmed up pools and buffers, nothing grows.
    let (fds_warm, rss_warm) = samples[1];
    let (fds_end, rss_end) = samples[samples.len() - 1];
    assert!(fds_end <= fds_warm + 2, "fds grew: {samples:?}");
    assert!(
        rss_end <= rss_warm + 2048,
        "RSS grew by more than 2 MiB: {samples:?}"
    );
}
