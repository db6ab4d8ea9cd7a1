//! Test harness: a scriptable fake validator on loopback, the service in-process on port 0,
//! and CheckRequest builders.
#![allow(dead_code, unreachable_pub)]

pub mod envoy_config;
pub mod procfs;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, Response, StatusCode};
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::config::core::v3::{HeaderMap as EnvoyHeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use session_authz::app::{self, Running};
use session_authz::config::{flags_from_pairs, Config};
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// One answer of the fake validator.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Answer {
    pub fn json(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".to_owned())],
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
        }
    }

    pub fn raw(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("content-type", content_type.to_owned())],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
}

/// What the fake validator received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
}

/// A fake auth service: answers by token (read from the `session` cookie or `x-session-token`),
/// records every request, and answers 401 for unknown tokens.
pub struct FakeValidator {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<Script>>,
    stop: Option<oneshot::Sender<()>>,
}

/// The fake's answers: per token, and a default for the rest; plus concurrency bookkeeping.
struct Script {
    answers: HashMap<String, Answer>,
    default: Answer,
    in_flight: usize,
    max_in_flight: usize,
}

impl FakeValidator {
    pub async fn start(answers: Vec<(&str, Answer)>) -> Self {
        let script = Arc::new(Mutex::new(Script {
            answers: answers
                .into_iter()
                .map(|(token, answer)| (token.to_owned(), answer))
                .collect(),
            default: Answer::json(401, r#"{"valid":false}"#),
            in_flight: 0,
            max_in_flight: 0,
        }));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new().fallback({
            let seen = seen.clone();
            let script = script.clone();
            move |request: Request<Body>| {
                let seen = seen.clone();
                let script = script.clone();
                async move { answer(request, &script, &seen).await }
            }
        });
        let (addr, stop) = serve(app).await;
        Self {
            addr,
            seen,
            script,
            stop: Some(stop),
        }
    }

    /// Changes the answer for `token` from now on.
    pub fn set_answer(&self, token: &str, answer: Answer) {
        self.script
            .lock()
            .unwrap()
            .answers
            .insert(token.to_owned(), answer);
    }

    /// The answer for tokens without one of their own (initially 401 `{"valid":false}`).
    pub fn set_default(&self, answer: Answer) {
        self.script.lock().unwrap().default = answer;
    }

    /// The most requests it was ever answering at once.
    pub fn max_in_flight(&self) -> usize {
        self.script.lock().unwrap().max_in_flight
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for FakeValidator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn token_of(headers: &HeaderMap) -> String {
    for value in headers.get_all("cookie") {
        if let Ok(text) = value.to_str() {
            for pair in text.split(';') {
                if let Some(token) = pair.trim().strip_prefix("session=") {
                    return token.to_owned();
                }
            }
        }
    }
    headers
        .get("x-session-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Keeps the in-flight count right even when the caller hangs up mid-answer.
struct Answering<'a>(&'a Mutex<Script>);

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap().in_flight -= 1;
    }
}

async fn answer(
    request: Request<Body>,
    script: &Mutex<Script>,
    seen: &Mutex<Vec<Seen>>,
) -> Response<Body> {
    seen.lock().unwrap().push(Seen {
        path: request.uri().path().to_owned(),
        headers: request.headers().clone(),
    });
    let answer = {
        let mut script = script.lock().unwrap();
        script.in_flight += 1;
        script.max_in_flight = script.max_in_flight.max(script.in_flight);
        let token = token_of(request.headers());
        script
            .answers
            .get(&token)
            .cloned()
            .unwrap_or_else(|| script.default.clone())
    };
    let _answering = Answering(script);
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let mut response = Response::builder().status(StatusCode::from_u16(answer.status).unwrap());
    for (name, value) in &answer.headers {
        response = response.header(*name, value);
    }
    response.body(Body::from(answer.body)).unwrap()
}

/// Serves `app` on a loopback port until the returned sender is used or dropped.
async fn serve(app: axum::Router) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (addr, stop)
}

/// The service in-process on loopback port 0 with the given config keys.
pub async fn start_service(pairs: &[(&str, &str)]) -> Running {
    // No drain delay unless a test asks for one: most tests stop the service many times.
    let mut all = vec![
        ("grpc_addr", "127.0.0.1:0"),
        ("http_addr", "127.0.0.1:0"),
        ("drain_delay", "0"),
    ];
    all.extend_from_slice(pairs);
    let figment = figment::Figment::new().merge(flags_from_pairs(&all));
    let config = Config::from_figment(&figment).unwrap();
    app::start(&config).await.unwrap()
}

pub async fn client(running: &Running) -> AuthorizationClient<Channel> {
    AuthorizationClient::connect(format!("http://{}", running.grpc_addr()))
        .await
        .unwrap()
}

/// A CheckRequest whose HTTP request carries these headers in the `headers` map.
pub fn check_request(headers: &[(&str, &str)]) -> CheckRequest {
    let http = HttpRequest {
        method: "GET".to_owned(),
        path: "/admin".to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    };
    wrap(http)
}

/// A CheckRequest as Envoy sends it with `encode_raw_headers: true`.
pub fn raw_check_request(headers: &[(&str, &[u8])]) -> CheckRequest {
    let http = HttpRequest {
        method: "GET".to_owned(),
        path: "/admin".to_owned(),
        header_map: Some(EnvoyHeaderMap {
            headers: headers
                .iter()
                .map(|(k, v)| HeaderValue {
                    key: (*k).to_owned(),
                    value: String::new(),
                    raw_value: v.to_vec(),
                })
                .collect(),
        }),
        ..Default::default()
    };
    wrap(http)
}

fn wrap(http: HttpRequest) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// What a CheckResponse means for the client, in plain terms.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed; the identity header set (if any) and the headers removed.
    Allow {
        set: Vec<(String, String)>,
        removed: Vec<String>,
    },
    /// Denied with this gRPC code and HTTP status.
    Deny { grpc: i32, http: i32, body: String },
}

pub fn outcome(response: &CheckResponse) -> Outcome {
    let code = response.status.as_ref().map(|s| s.code).unwrap_or(0);
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) if code == 0 => Outcome::Allow {
            set: ok
                .headers
                .iter()
                .filter_map(|o| o.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
            removed: ok.headers_to_remove.clone(),
        },
        Some(HttpResponse::DeniedResponse(denied)) if code != 0 => Outcome::Deny {
            grpc: code,
            http: denied.status.as_ref().map(|s| s.code).unwrap_or(0),
            body: denied.body.clone(),
        },
        other => panic!("inconsistent CheckResponse: code {code}, {other:?}"),
    }
}

/// Sends a CheckRequest and reads the answer as an [`Outcome`].
pub async fn outcome_of(
    client: &mut AuthorizationClient<Channel>,
    request: CheckRequest,
) -> Outcome {
    outcome(&client.check(request).await.unwrap().into_inner())
}

/// A gRPC channel to the service, for clients other than Authorization.
pub async fn channel(running: &Running) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", running.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub fn allow_as(user: &str) -> Outcome {
    Outcome::Allow {
        set: vec![("x-auth-user".to_owned(), user.to_owned())],
        removed: vec![],
    }
}

pub fn allow_anonymous() -> Outcome {
    Outcome::Allow {
        set: vec![],
        removed: vec!["x-auth-user".to_owned()],
    }
}

pub fn deny_401() -> Outcome {
    Outcome::Deny {
        grpc: tonic::Code::Unauthenticated as i32,
        http: 401,
        body: r#"{"error":"unauthenticated"}"#.to_owned(),
    }
}

pub fn deny_503() -> Outcome {
    Outcome::Deny {
        grpc: tonic::Code::Unavailable as i32,
        http: 503,
        body: r#"{"error":"auth_unavailable"}"#.to_owned(),
    }
}

/// The `session-authz` binary started as a child process on loopback port 0.
pub struct ServiceProcess {
    pub child: std::process::Child,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl ServiceProcess {
    /// Starts the binary with JSON logs and waits for its "ready" line.
    pub fn spawn(env: &[(&str, &str)]) -> Self {
        Self::start(
            std::process::Command::new(env!("CARGO_BIN_EXE_session-authz")),
            env,
        )
    }

    /// Like [`spawn`](Self::spawn), with these soft and hard limits on open files (set by the
    /// shell, which then becomes the binary: the pid is the service's).
    pub fn spawn_with_fd_limits(soft: u64, hard: u64, env: &[(&str, &str)]) -> Self {
        let mut command = std::process::Command::new("/bin/sh");
        command.args([
            "-c",
            &format!("ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\""),
            env!("CARGO_BIN_EXE_session-authz"),
        ]);
        Self::start(command, env)
    }

    fn start(mut command: std::process::Command, env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        use std::process::Stdio;

        command
            .env_clear()
            .env("SESSION_AUTHZ_GRPC_ADDR", "127.0.0.1:0")
            .env("SESSION_AUTHZ_HTTP_ADDR", "127.0.0.1:0")
            .env("SESSION_AUTHZ_LOG_FORMAT", "json")
            .env("SESSION_AUTHZ_DRAIN_DELAY", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start session-authz");
        let stderr = child.stderr.take().expect("stderr piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn({
            let lines = lines.clone();
            move || {
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    if line.contains("session-authz ready") {
                        let _ = ready_tx.send(line.clone());
                    }
                    lines.lock().unwrap().push(line);
                }
            }
        });
        let ready = match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("session-authz never got ready: {:?}", lines.lock().unwrap());
            }
        };
        // JSON lines by default; `key=value` pairs when a test asks for text logs.
        let addr = |key: &str| -> SocketAddr {
            if let Ok(fields) = serde_json::from_str::<serde_json::Value>(&ready) {
                return fields[key].as_str().unwrap().parse().unwrap();
            }
            let prefix = format!("{key}=");
            ready
                .split_whitespace()
                .find_map(|word| word.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no {key} in {ready:?}"))
                .parse()
                .unwrap()
        };
        Self {
            grpc_addr: addr("grpc_addr"),
            http_addr: addr("http_addr"),
            child,
            lines,
        }
    }

    pub fn logs(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    /// Waits up to `limit` for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A fake app behind Envoy: answers 200 with the path and every header it received, as JSON.
pub struct FakeDashboard {
    pub addr: SocketAddr,
    hits: Arc<Mutex<Vec<String>>>,
    stop: Option<oneshot::Sender<()>>,
}

impl FakeDashboard {
    pub async fn start() -> Self {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new().fallback({
            let hits = hits.clone();
            move |request: Request<Body>| {
                let hits = hits.clone();
                async move {
                    let path = request.uri().to_string();
                    hits.lock().unwrap().push(path.clone());
                    let headers: Vec<(String, String)> = request
                        .headers()
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.to_string(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect();
                    axum::Json(serde_json::json!({ "path": path, "headers": headers }))
                }
            }
        });
        let (addr, stop) = serve(app).await;
        Self {
            addr,
            hits,
            stop: Some(stop),
        }
    }

    pub fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

impl Drop for FakeDashboard {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A response read off a raw HTTP/1.1 connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The values of `name` the dashboard received (its JSON echo).
    pub fn upstream_saw(&self, name: &str) -> Vec<String> {
        let echo: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("not a dashboard echo: {}", self.body));
        echo["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|pair| pair[0].as_str().unwrap().eq_ignore_ascii_case(name))
            .map(|pair| pair[1].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Sends `GET {target}` with exactly these header lines (no normalisation of the target) and
/// reads the whole response.
pub async fn raw_get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut request = format!("GET {target} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str("Host: dashboard.local\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        request.push_str("Connection: close\r\n");
    }
    request.push_str("\r\n");

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut bytes))
        .await
        .expect("response within 15 s")
        .unwrap();

    let mut parsed_headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut parsed_headers);
    let head_len = match response.parse(&bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        other => panic!(
            "bad response to {target}: {other:?}: {}",
            String::from_utf8_lossy(&bytes)
        ),
    };
    RawResponse {
        status: response.code.unwrap(),
        headers: response
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&bytes[head_len..]).into_owned(),
    }
}

/// Path of a pinned tool installed by scripts/install-tools.sh; missing is a failure, not a skip.
pub fn tool(name: &str) -> std::path::PathBuf {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".tools/bin")
        .join(name);
    assert!(
        path.exists(),
        "{name} not found at {}: run scripts/install-tools.sh (make test does)",
        path.display()
    );
    path
}

/// Real Envoy running the shipped `envoy/envoy.yaml`, with only its ports substituted.
pub struct EnvoyProcess {
    child: std::process::Child,
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    dir: tempfile::TempDir,
}

impl EnvoyProcess {
    /// `authz` and `app` replace the sample's 9001 and 8000; listener and admin get port 0.
    pub async fn start(authz: SocketAddr, app: SocketAddr) -> Self {
        Self::start_with_replicas(&[authz], app).await
    }

    /// Like [`EnvoyProcess::start`], with every address in `authz` an endpoint of the
    /// session_authz cluster.
    pub async fn start_with_replicas(authz: &[SocketAddr], app: SocketAddr) -> Self {
        let yaml = envoy_config::sample_with_authz_endpoints(authz, app);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("envoy.yaml");
        let admin_file = dir.path().join("admin-address");
        std::fs::write(&config, yaml).unwrap();
        let log = std::fs::File::create(dir.path().join("envoy.log")).unwrap();

        let child = std::process::Command::new(tool("envoy"))
            .arg("-c")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(&admin_file)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "-l",
                "warning",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut envoy = Self {
            child,
            listener: "127.0.0.1:1".parse().unwrap(),
            admin: "127.0.0.1:1".parse().unwrap(),
            dir,
        };
        envoy.admin = eventually(Duration::from_secs(30), || async {
            std::fs::read_to_string(&admin_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        })
        .await
        .expect("Envoy wrote its admin address");
        let admin = envoy.admin;
        eventually(Duration::from_secs(30), || async move {
            let ready = reqwest::get(format!("http://{admin}/ready")).await.ok()?;
            (ready.status() == 200).then_some(())
        })
        .await
        .expect("Envoy ready");
        envoy.listener = envoy_config::listener_addr(admin).await;
        envoy
    }

    /// The health flags Envoy's admin `/clusters` shows for the (first) session_authz host.
    pub async fn authz_health(&self) -> String {
        self.authz_hosts("health_flags")
            .await
            .into_iter()
            .next()
            .map(|(_, flags)| flags)
            .unwrap_or_default()
    }

    /// One per-host value of the session_authz cluster from admin `/clusters`, for every host
    /// (e.g. `health_flags` → `healthy` or `/failed_active_hc`, `rq_success` → a count).
    pub async fn authz_hosts(&self, stat: &str) -> Vec<(SocketAddr, String)> {
        let clusters = reqwest::get(format!("http://{}/clusters", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // Lines read `session_authz::127.0.0.1:9001::health_flags::healthy`.
        clusters
            .lines()
            .filter_map(|line| {
                let mut parts = line.split("::");
                let (cluster, host, name, value) =
                    (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
                if cluster != "session_authz" || name != stat {
                    return None;
                }
                Some((host.parse().ok()?, value.to_owned()))
            })
            .collect()
    }

    /// What Envoy has logged so far (it runs with `-l warning`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap()
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `probe` until it yields a value or `limit` passes.
pub async fn eventually<T, F, Fut>(limit: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
