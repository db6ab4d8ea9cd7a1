//! A scriptable fake auth service on loopback: answers by token, records what it was sent, and
//! counts how many requests it answers at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, Response, StatusCode};
use tokio::sync::oneshot;

use crate::http::serve;

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
        Self::raw(status, "application/json", body)
    }

    pub fn raw(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("content-type", content_type.to_owned())],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    /// The same answer, sent only after `delay` (a slow auth service).
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
    /// Whether requests are kept for [`FakeValidator::seen`] (not under a load's millions).
    record: bool,
    in_flight: usize,
    max_in_flight: usize,
}

impl FakeValidator {
    /// A validator that knows one session: `token`, valid for `user`.
    pub async fn one_user(token: &str, user: &str) -> Self {
        let body = format!(r#"{{"valid":true,"user":"{user}"}}"#);
        Self::start(vec![(token, Answer::json(200, &body))]).await
    }

    pub async fn start(answers: Vec<(&str, Answer)>) -> Self {
        let answers = answers
            .into_iter()
            .map(|(token, answer)| (token.to_owned(), answer))
            .collect();
        Self::with_script(Script {
            answers,
            default: Answer::json(401, r#"{"valid":false}"#),
            record: true,
            in_flight: 0,
            max_in_flight: 0,
        })
        .await
    }

    /// A validator for load (the benchmark): every token gets `answer`, and no request is
    /// kept ([`seen`](Self::seen) and [`calls`](Self::calls) stay empty).
    pub async fn for_load(answer: Answer) -> Self {
        Self::with_script(Script {
            answers: HashMap::new(),
            default: answer,
            record: false,
            in_flight: 0,
            max_in_flight: 0,
        })
        .await
    }

    async fn with_script(script: Script) -> Self {
        let script = Arc::new(Mutex::new(script));
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
    let answer = {
        let mut script = script.lock().unwrap();
        if script.record {
            seen.lock().unwrap().push(Seen {
                path: request.uri().path().to_owned(),
                headers: request.headers().clone(),
            });
        }
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
        // The slowness being simulated, not a wait for something.
        tokio::time::sleep(answer.delay).await;
    }
    let mut response = Response::builder().status(StatusCode::from_u16(answer.status).unwrap());
    for (name, value) in &answer.headers {
        response = response.header(*name, value);
    }
    response.body(Body::from(answer.body)).unwrap()
}

/// The sample's two demo sessions as the proxy tests use them: `user1-token` (user1, admin, an
/// email, a renewal cookie on every answer, never cached) and `user2-token` (user2, viewer),
/// plus `broken-token`, whose answer is a 500.
pub fn demo_answers() -> Vec<(&'static str, Answer)> {
    vec![
        (
            "user1-token",
            Answer::json(
                200,
                r#"{"valid":true,"user":"user1","roles":["admin"],"email":"user1@example.com"}"#,
            )
            .header("set-cookie", "session=user1-token; Max-Age=3600; HttpOnly")
            // Each request's own call, so that every one renews.
            .header("cache-control", "no-store"),
        ),
        (
            "user2-token",
            Answer::json(200, r#"{"valid":true,"user":"user2","roles":["viewer"]}"#),
        ),
        ("broken-token", Answer::json(500, "{}")),
    ]
}

/// The shipped sample auth service (`examples/sample_validator.rs`) as a process: its demo
/// sessions and its sign-in page (`/login`), stopped on drop.
pub struct SampleValidator {
    _child: crate::process::Proc,
    pub addr: SocketAddr,
}

impl SampleValidator {
    pub async fn spawn() -> Self {
        let addr = crate::process::free_addr();
        let child = crate::process::Proc::spawn(
            std::process::Command::new(crate::process::example("sample_validator"))
                .arg(addr.to_string())
                .stderr(std::process::Stdio::null()),
        );
        crate::wait::listening(addr).await;
        Self {
            _child: child,
            addr,
        }
    }
}
