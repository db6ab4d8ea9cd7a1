//! TLS and mTLS on the gRPC listener, and an `https://` validator with an extra CA, all with
//! certificates generated here (rcgen).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use session_authz_testkit::check::*;
use session_authz_testkit::service::*;
use session_authz_testkit::validator::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// A leaf for `localhost` and 127.0.0.1, for a server or a client.
    fn issue(&self, name: &str, purpose: ExtendedKeyUsagePurpose) -> (Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert, key)
    }
}

struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            ca: Ca::new("session-authz test CA"),
        }
    }

    /// A new CA, and the service's certificate from it in `server.crt` and `server.key`.
    fn with_server_files() -> Self {
        let pki = Self::new();
        let (cert, key) = pki
            .ca
            .issue("session-authz", ExtendedKeyUsagePurpose::ServerAuth);
        pki.write("server.crt", &cert.pem());
        pki.write("server.key", &key.serialize_pem());
        pki
    }

    fn write(&self, name: &str, pem: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

async fn tls_channel(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

async fn check_user1(channel: Channel) -> Result<Outcome, tonic::Status> {
    let response = AuthorizationClient::new(channel)
        .check(check_request(&[("cookie", "session=user1-token")]))
        .await?;
    Ok(outcome(&response.into_inner()))
}

fn user1_validator() -> Vec<(&'static str, Answer)> {
    vec![(
        "user1-token",
        Answer::json(200, r#"{"valid":true,"user":"user1"}"#),
    )]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_refuses_plaintext_and_serves_tls() {
    let pki = Pki::with_server_files();
    let validator = FakeValidator::start(user1_validator()).await;
    let running = start_service(&[
        ("aimenu_url", &validator.url()),
        ("tls_cert", &pki.path("server.crt")),
        ("tls_key", &pki.path("server.key")),
    ])
    .await;

    // Plaintext gRPC to a TLS listener gets nowhere.
    let plaintext = async {
        let channel = Endpoint::from_shared(format!("http://{}", running.grpc_addr()))
            .unwrap()
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        check_user1(channel).await
    };
    assert!(plaintext.await.is_err(), "plaintext was served");

    let channel = tls_channel(running.grpc_addr(), &pki.ca.cert.pem(), None)
        .await
        .unwrap();
    assert_eq!(check_user1(channel).await.unwrap(), allow_as("user1"));

    // A client that trusts another CA refuses us.
    let stranger = Ca::new("stranger CA");
    let refused = match tls_channel(running.grpc_addr(), &stranger.cert.pem(), None).await {
        Ok(channel) => check_user1(channel).await.is_err(),
        Err(_) => true,
    };
    assert!(refused);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_requires_a_client_certificate_from_the_ca() {
    let pki = Pki::with_server_files();
    let ca_path = pki.write("ca.crt", &pki.ca.cert.pem());
    let validator = FakeValidator::start(user1_validator()).await;
    let running = start_service(&[
        ("aimenu_url", &validator.url()),
        ("tls_cert", &pki.path("server.crt")),
        ("tls_key", &pki.path("server.key")),
        ("tls_client_ca", &pki.path("ca.crt")),
    ])
    .await;
    let ca_pem = read(&ca_path);

    let without = match tls_channel(running.grpc_addr(), &ca_pem, None).await {
        Ok(channel) => check_user1(channel).await.is_err(),
        Err(_) => true,
    };
    assert!(without, "a client without a certificate was served");

    let rogue_ca = Ca::new("rogue CA");
    let (rogue_cert, rogue_key) = rogue_ca.issue("envoy", ExtendedKeyUsagePurpose::ClientAuth);
    let (rogue_cert, rogue_key) = (rogue_cert.pem(), rogue_key.serialize_pem());
    let rogue = match tls_channel(
        running.grpc_addr(),
        &ca_pem,
        Some((&rogue_cert, &rogue_key)),
    )
    .await
    {
        Ok(channel) => check_user1(channel).await.is_err(),
        Err(_) => true,
    };
    assert!(rogue, "a client certificate from another CA was accepted");

    let (client_cert, client_key) = pki.ca.issue("envoy", ExtendedKeyUsagePurpose::ClientAuth);
    let (client_cert, client_key) = (client_cert.pem(), client_key.serialize_pem());
    let channel = tls_channel(
        running.grpc_addr(),
        &ca_pem,
        Some((&client_cert, &client_key)),
    )
    .await
    .unwrap();
    assert_eq!(check_user1(channel).await.unwrap(), allow_as("user1"));
    running.shutdown().await.unwrap();
}

/// A one-answer HTTPS validator: every request gets `{"valid":true,"user":"user1"}`.
async fn https_validator(cert: &Certificate, key: &KeyPair) -> std::net::SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let body = r#"{"valid":true,"user":"user1"}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_validator_needs_a_trusted_certificate() {
    let pki = Pki::new();
    let (cert, key) = pki
        .ca
        .issue("auth service", ExtendedKeyUsagePurpose::ServerAuth);
    let addr = https_validator(&cert, &key).await;
    let url = format!("https://localhost:{}", addr.port());

    // Not trusted: a validator error, so 503.
    let untrusting = start_service(&[("aimenu_url", &url)]).await;
    assert_eq!(
        check_user1(channel(&untrusting).await).await.unwrap(),
        deny_503()
    );
    untrusting.shutdown().await.unwrap();

    // Trusted through validator_ca.
    pki.write("auth-ca.crt", &pki.ca.cert.pem());
    let trusting = start_service(&[
        ("aimenu_url", &url),
        ("validator_ca", &pki.path("auth-ca.crt")),
    ])
    .await;
    assert_eq!(
        check_user1(channel(&trusting).await).await.unwrap(),
        allow_as("user1")
    );
    trusting.shutdown().await.unwrap();
}

#[tokio::test]
async fn unreadable_tls_files_stop_start_up_naming_the_file() {
    let figment = figment::Figment::new().merge(session_authz::config::flags_from_pairs(&[
        ("grpc_addr", "127.0.0.1:0"),
        ("http_addr", "127.0.0.1:0"),
        ("tls_cert", "/nonexistent/server.crt"),
        ("tls_key", "/nonexistent/server.key"),
    ]));
    let config = session_authz::config::Config::from_figment(&figment).unwrap();
    let err = session_authz::app::start(&config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/server.crt"), "{err}");
}
