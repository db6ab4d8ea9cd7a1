//! Test harness: a scriptable fake validator on loopback, the service in-process on port 0,
//! and CheckRequest builders.
#![allow(dead_code)]

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
    stop: Option<oneshot::Sender<()>>,
}

impl FakeValidator {
    pub async fn start(answers: Vec<(&str, Answer)>) -> Self {
        let answers: Arc<HashMap<String, Answer>> = Arc::new(
            answers
                .into_iter()
                .map(|(token, answer)| (token.to_owned(), answer))
                .collect(),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let app = axum::Router::new().fallback({
            let seen = seen.clone();
            move |request: Request<Body>| {
                let seen = seen.clone();
                let answers = answers.clone();
                async move { answer(request, &answers, &seen).await }
            }
        });
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            seen,
            stop: Some(stop),
        }
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

async fn answer(
    request: Request<Body>,
    answers: &HashMap<String, Answer>,
    seen: &Mutex<Vec<Seen>>,
) -> Response<Body> {
    seen.lock().unwrap().push(Seen {
        path: request.uri().path().to_owned(),
        headers: request.headers().clone(),
    });
    let answer = answers
        .get(&token_of(request.headers()))
        .cloned()
        .unwrap_or_else(|| Answer::json(401, r#"{"valid":false}"#));
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let mut response = Response::builder().status(StatusCode::from_u16(answer.status).unwrap());
    for (name, value) in &answer.headers {
        response = response.header(*name, value);
    }
    response.body(Body::from(answer.body)).unwrap()
}

/// The service in-process on loopback port 0 with the given config keys.
pub async fn start_service(pairs: &[(&str, &str)]) -> Running {
    let mut all = vec![("grpc_addr", "127.0.0.1:0"), ("http_addr", "127.0.0.1:0")];
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
