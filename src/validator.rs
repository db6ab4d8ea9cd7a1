//! Asks the auth service `GET /session/validate` about a credential: the only outbound I/O.
//!
//! `interpret` maps an answer to a [`Verdict`] and is pure; [`Validator`] does the HTTP call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, COOKIE};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use crate::credential::{Credential, Source};

/// The most bytes of an answer read before it counts as an error.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest `user` accepted as a header value.
pub const MAX_USER_BYTES: usize = 256;

/// What the validator said about a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Valid { user: Option<String> },
    Invalid,
    Error(ValidatorError),
}

/// Why an answer could not be trusted. Messages never carry a token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidatorError {
    #[error("validator answered with a redirect ({0})")]
    Redirect(u16),
    #[error("validator answered with unexpected status {0}")]
    UnexpectedStatus(u16),
    #[error("validator answer is not the expected JSON: {0}")]
    Malformed(String),
    #[error("validator named an unsafe user ({0})")]
    UnsafeUser(&'static str),
    #[error("validator answer is larger than {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    #[error("validator did not answer in time")]
    Timeout,
    #[error("validator unreachable: {0}")]
    Transport(String),
    #[error("too many validator calls waiting; shed")]
    Shed,
}

impl ValidatorError {
    /// A short, stable label for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ValidatorError::Redirect(_) => "redirect",
            ValidatorError::UnexpectedStatus(_) => "status",
            ValidatorError::Malformed(_) => "malformed",
            ValidatorError::UnsafeUser(_) => "unsafe_user",
            ValidatorError::BodyTooLarge => "body_too_large",
            ValidatorError::Timeout => "timeout",
            ValidatorError::Transport(_) => "transport",
            ValidatorError::Shed => "shed",
        }
    }
}

#[derive(Deserialize)]
struct Answer {
    valid: bool,
    #[serde(default, deserialize_with = "present_user")]
    user: Option<String>,
}

/// `user` as the contract allows it: a string, or an integer id (the seed's database-backed
/// validator answers with its `user_id` column) rendered in decimal.
#[derive(Deserialize)]
#[serde(untagged)]
enum UserField {
    Name(String),
    Id(i64),
    LargeId(u64),
}

/// `user` may be missing, but when present it must be a string or an integer (`null`, a float
/// or a list are neither).
fn present_user<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Some(match UserField::deserialize(d)? {
        UserField::Name(name) => name,
        UserField::Id(id) => id.to_string(),
        UserField::LargeId(id) => id.to_string(),
    }))
}

/// Maps a status code and body to a verdict, strictly (design.md's validator contract).
pub fn interpret(status: u16, body: &[u8]) -> Verdict {
    match status {
        200 => {}
        401 | 403 => return Verdict::Invalid,
        300..=399 => return Verdict::Error(ValidatorError::Redirect(status)),
        other => return Verdict::Error(ValidatorError::UnexpectedStatus(other)),
    }
    // serde would also read a struct from a JSON array; the contract says object.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Verdict::Error(ValidatorError::Malformed("not a JSON object".to_owned()));
    }
    let answer: Answer = match serde_json::from_slice(body) {
        Ok(answer) => answer,
        // serde_json's own message may quote the answer's values; keep only where it went wrong.
        Err(err) => {
            return Verdict::Error(ValidatorError::Malformed(format!(
                "{:?} error at line {} column {}",
                err.classify(),
                err.line(),
                err.column()
            )))
        }
    };
    if !answer.valid {
        return Verdict::Invalid;
    }
    match answer.user {
        None => Verdict::Valid { user: None },
        Some(user) if user.is_empty() => Verdict::Valid { user: None },
        Some(user) => match check_user(&user) {
            Ok(()) => Verdict::Valid { user: Some(user) },
            Err(why) => Verdict::Error(ValidatorError::UnsafeUser(why)),
        },
    }
}

/// A user name becomes a header value upstream: it must be short and plain.
fn check_user(user: &str) -> Result<(), &'static str> {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    if user.len() > MAX_USER_BYTES {
        return Err("too long");
    }
    if user.chars().any(char::is_control) {
        return Err("control characters");
    }
    // Zero-width and bidi marks make two names look alike; line and paragraph separators end
    // a line for some log readers.
    if user.chars().any(|c| {
        matches!(
            c.general_category(),
            GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        )
    }) {
        return Err("format or separator characters");
    }
    if user.contains(',') {
        // Many frameworks split a header on commas: `a, admin` would read as two values.
        return Err("a comma");
    }
    if user.trim() != user {
        // Envoy trims header values, so a padded name would not arrive as sent.
        return Err("surrounding whitespace");
    }
    Ok(())
}

/// What the validator's `Cache-Control` allows for its answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheDirective {
    pub no_store: bool,
    pub max_age: Option<Duration>,
}

impl CacheDirective {
    fn from_headers(headers: &HeaderMap) -> Self {
        use headers::HeaderMapExt;
        match headers.typed_get::<headers::CacheControl>() {
            Some(cc) => Self {
                no_store: cc.no_store() || cc.no_cache(),
                max_age: cc.max_age(),
            },
            None => Self::default(),
        }
    }
}

/// A verdict with the validator's caching instructions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub verdict: Verdict,
    pub cache: CacheDirective,
}

impl From<Verdict> for Reply {
    fn from(verdict: Verdict) -> Self {
        Self {
            verdict,
            cache: CacheDirective::default(),
        }
    }
}

/// Warns of validator errors with their cause, at most once per [`ErrorLog::INTERVAL`]: an
/// outage fails every Check, and one line per Check would drown the log.
#[derive(Debug, Default)]
struct ErrorLog {
    /// When the last line was written; `None` before the first.
    last: std::sync::Mutex<Option<std::time::Instant>>,
    /// Errors since then that were not written.
    suppressed: AtomicUsize,
}

impl ErrorLog {
    const INTERVAL: Duration = Duration::from_secs(5);

    fn report(&self, err: &ValidatorError) {
        let now = std::time::Instant::now();
        let due = match self.last.lock() {
            Ok(mut last) => {
                let due = last.is_none_or(|at| now.duration_since(at) >= Self::INTERVAL);
                if due {
                    *last = Some(now);
                }
                due
            }
            Err(_) => false,
        };
        if due {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            // The error's text never holds a token (see ValidatorError).
            tracing::warn!(
                kind = err.kind(),
                suppressed,
                "validator call failed: {err}"
            );
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Request headers passed on to the validator so its logs join the trace.
pub const TRACE_HEADERS: [&str; 2] = ["x-request-id", "traceparent"];

/// Settings of the validator client.
#[derive(Clone, Debug)]
pub struct Settings {
    pub base_url: Url,
    pub timeout: Duration,
    pub cookie_name: String,
    pub header_name: String,
    /// Calls in flight at once; more wait in a queue.
    pub max_concurrency: usize,
    /// Calls allowed to wait; beyond that they are shed at once.
    pub max_queue: usize,
    /// Extra CA certificates (PEM) to trust for an `https://` validator.
    pub extra_ca_pem: Option<Vec<u8>>,
}

/// Errors building the client (start-up only).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid session header name {0:?}")]
    HeaderName(String),
    #[error("cannot build the validator URL from the base URL")]
    Url,
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("validator CA bundle holds no usable PEM certificate")]
    CaBundle,
}

/// A pooled HTTP client for the validator.
#[derive(Clone, Debug)]
pub struct Validator {
    client: reqwest::Client,
    url: Url,
    cookie_name: String,
    header_name: HeaderName,
    timeout: Duration,
    permits: Arc<Semaphore>,
    max_concurrency: usize,
    waiting: Arc<AtomicUsize>,
    max_queue: usize,
    error_log: Arc<ErrorLog>,
}

impl Validator {
    pub fn new(settings: &Settings) -> Result<Self, BuildError> {
        let header_name = HeaderName::from_bytes(settings.header_name.as_bytes())
            .map_err(|_| BuildError::HeaderName(settings.header_name.clone()))?;
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = &settings.extra_ca_pem {
            let certificates =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|_| BuildError::CaBundle)?;
            if certificates.is_empty() {
                return Err(BuildError::CaBundle);
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let client = builder
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            // The validator sits next to us; never route tokens through an ambient proxy.
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(settings.max_concurrency)
            .build()
            .map_err(|err| BuildError::Client(err.without_url().to_string()))?;
        Ok(Self {
            client,
            url: validate_url(&settings.base_url)?,
            cookie_name: settings.cookie_name.clone(),
            header_name,
            timeout: settings.timeout,
            permits: Arc::new(Semaphore::new(settings.max_concurrency)),
            max_concurrency: settings.max_concurrency,
            waiting: Arc::new(AtomicUsize::new(0)),
            max_queue: settings.max_queue,
            error_log: Arc::new(ErrorLog::default()),
        })
    }

    /// The full `/session/validate` URL this client calls.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Calls in flight right now.
    pub fn in_flight(&self) -> usize {
        self.max_concurrency
            .saturating_sub(self.permits.available_permits())
    }

    /// Asks the validator about `credential`, passing along the given trace headers. Waiting
    /// for a free slot and the call itself share one `validator_timeout`.
    pub async fn check<'a>(
        &self,
        credential: &Credential,
        trace: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Reply {
        let mut headers = HeaderMap::new();
        let (name, value) = match credential.source() {
            Source::Cookie => (
                COOKIE,
                HeaderValue::from_str(&format!("{}={}", self.cookie_name, credential.token())),
            ),
            Source::Header => (
                self.header_name.clone(),
                HeaderValue::from_str(credential.token()),
            ),
        };
        let Ok(mut value) = value else {
            return Verdict::Error(ValidatorError::Transport(
                "token is not a valid header value".to_owned(),
            ))
            .into();
        };
        value.set_sensitive(true);
        headers.insert(name, value);
        for (name, value) in trace {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                headers.insert(name, value);
            }
        }

        let call = async {
            let _permit = self.wait_for_slot().await?;
            self.fetch(headers).await
        };
        let reply = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok((status, cache, body))) => Reply {
                verdict: interpret(status.as_u16(), &body),
                cache,
            },
            Ok(Err(err)) => Verdict::Error(err).into(),
            Err(_) => Verdict::Error(ValidatorError::Timeout).into(),
        };
        if let Verdict::Error(err) = &reply.verdict {
            self.error_log.report(err);
        }
        reply
    }

    /// A slot among `max_concurrency`, or `Shed` at once when `max_queue` calls already wait.
    async fn wait_for_slot(&self) -> Result<OwnedSemaphorePermit, ValidatorError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(ValidatorError::Shed);
        }
        let _waiting = WaitingGuard(&self.waiting);
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ValidatorError::Shed)
    }

    async fn fetch(
        &self,
        headers: HeaderMap,
    ) -> Result<(StatusCode, CacheDirective, Vec<u8>), ValidatorError> {
        let mut response = self
            .client
            .get(self.url.clone())
            .headers(headers)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let cache = CacheDirective::from_headers(response.headers());
        if status != StatusCode::OK {
            // Only a 200's body matters; the others are decided by status alone.
            return Ok((status, cache, Vec::new()));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_BODY_BYTES as u64)
        {
            return Err(ValidatorError::BodyTooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(ValidatorError::BodyTooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, cache, body))
    }
}

impl Validator {
    /// Asks with no credential and no client header, only to learn whether the validator answers
    /// (any answer that follows the contract, `{"valid": false}` included, is one). Outside the
    /// concurrency cap: one probe at a time must not wait behind, or take a slot from, Checks.
    pub async fn probe(&self) -> Verdict {
        let verdict = match tokio::time::timeout(self.timeout, self.fetch(HeaderMap::new())).await {
            Ok(Ok((status, _, body))) => interpret(status.as_u16(), &body),
            Ok(Err(err)) => Verdict::Error(err),
            Err(_) => Verdict::Error(ValidatorError::Timeout),
        };
        if let Verdict::Error(err) = &verdict {
            self.error_log.report(err);
        }
        verdict
    }
}

/// Counts a caller out of the queue however its wait ends (granted, timed out, cancelled).
struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Joins `/session/validate` onto the base URL, keeping any path prefix and never doubling `/`.
pub fn validate_url(base: &Url) -> Result<Url, BuildError> {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}/session/validate"));
    url.set_query(None);
    url.set_fragment(None);
    if url.cannot_be_a_base() {
        return Err(BuildError::Url);
    }
    Ok(url)
}

fn transport_error(err: reqwest::Error) -> ValidatorError {
    if err.is_timeout() {
        return ValidatorError::Timeout;
    }
    // Drop the URL (it may carry credentials of the auth service) and keep the cause chain.
    let err = err.without_url();
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    ValidatorError::Transport(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(user: Option<&str>) -> Verdict {
        Verdict::Valid {
            user: user.map(str::to_owned),
        }
    }

    fn is_error(verdict: &Verdict) -> bool {
        matches!(verdict, Verdict::Error(_))
    }

    #[test]
    fn contract_table() {
        assert_eq!(
            interpret(200, br#"{"valid":true,"user":"alice"}"#),
            valid(Some("alice"))
        );
        assert_eq!(interpret(200, br#"{"valid":true}"#), valid(None));
        assert_eq!(interpret(200, br#"{"valid":true,"user":""}"#), valid(None));
        assert_eq!(
            interpret(200, br#"{"valid":true,"user":"alice","extra":[1,2]}"#),
            valid(Some("alice"))
        );
        assert_eq!(interpret(200, br#"{"valid":false}"#), Verdict::Invalid);
        assert_eq!(
            interpret(200, br#"{"valid":false,"user":"alice"}"#),
            Verdict::Invalid
        );
        assert_eq!(
            interpret(401, br#"{"valid":true,"user":"alice"}"#),
            Verdict::Invalid
        );
        assert_eq!(interpret(403, b"<html>"), Verdict::Invalid);
        for status in [201, 204, 302, 304, 404, 429, 500, 502, 503] {
            assert!(
                is_error(&interpret(status, br#"{"valid":true}"#)),
                "{status}"
            );
        }
        assert_eq!(
            interpret(307, b""),
            Verdict::Error(ValidatorError::Redirect(307))
        );
    }

    #[test]
    fn strict_json() {
        for body in [
            &b"<html>ok</html>"[..],
            b"",
            br#"{"valid":"true"}"#,
            br#"{"valid":1}"#,
            br#"{"valid":null}"#,
            br#"{}"#,
            br#"{"user":"alice"}"#,
            br#"{"valid":true,"user":null}"#,
            br#"{"valid":true,"user":4.2}"#,
            br#"{"valid":true,"user":1e3}"#,
            br#"{"valid":true,"user":true}"#,
            br#"{"valid":true,"user":{"id":1}}"#,
            br#"{"valid":true,"user":["alice"]}"#,
            br#"{"valid":true,"valid":false}"#,
            br#"[true]"#,
            br#"{"valid":true} trailing"#,
        ] {
            let verdict = interpret(200, body);
            assert!(
                is_error(&verdict),
                "{}: {verdict:?}",
                String::from_utf8_lossy(body)
            );
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(is_error(&interpret(200, deep.as_bytes())));
    }

    #[test]
    fn unsafe_users() {
        for user in [
            "ali\r\nce",
            "alice\n",
            "al\u{0}ice",
            "al\u{7f}ice",
            " alice",
            "alice\t",
            "user1, admin",
            "user1,admin",
            "ad\u{200b}min",
            "admin\u{200d}",
            "\u{feff}admin",
            "\u{202e}nimda",
            "ad\u{2066}min",
            "admin\u{2028}x",
            "admin\u{2029}x",
            "admin\u{85}x",
        ] {
            let body = serde_json::json!({"valid": true, "user": user}).to_string();
            assert!(
                matches!(
                    interpret(200, body.as_bytes()),
                    Verdict::Error(ValidatorError::UnsafeUser(_))
                ),
                "{user:?}"
            );
        }
        let long = "a".repeat(MAX_USER_BYTES + 1);
        let body = serde_json::json!({"valid": true, "user": long}).to_string();
        assert!(is_error(&interpret(200, body.as_bytes())));
        let edge = "a".repeat(MAX_USER_BYTES);
        let body = serde_json::json!({"valid": true, "user": edge}).to_string();
        assert_eq!(interpret(200, body.as_bytes()), valid(Some(&edge)));
        let body = serde_json::json!({"valid": true, "user": "José Ñ"}).to_string();
        assert_eq!(interpret(200, body.as_bytes()), valid(Some("José Ñ")));
    }

    #[test]
    fn integer_users_render_in_decimal() {
        for (body, user) in [
            (&br#"{"valid":true,"user":42}"#[..], "42"),
            (br#"{"valid":true,"user":0}"#, "0"),
            (br#"{"valid":true,"user":-7}"#, "-7"),
            (
                br#"{"valid":true,"user":18446744073709551615}"#,
                "18446744073709551615",
            ),
        ] {
            assert_eq!(interpret(200, body), valid(Some(user)));
        }
        assert!(is_error(&interpret(
            200,
            br#"{"valid":true,"user":18446744073709551616}"#
        )));
    }

    #[test]
    fn url_joining_keeps_prefix_without_double_slash() {
        let join = |base: &str| {
            validate_url(&Url::parse(base).unwrap())
                .unwrap()
                .to_string()
        };
        assert_eq!(
            join("http://auth:5000"),
            "http://auth:5000/session/validate"
        );
        assert_eq!(
            join("http://auth:5000/"),
            "http://auth:5000/session/validate"
        );
        assert_eq!(
            join("http://auth:5000/internal"),
            "http://auth:5000/internal/session/validate"
        );
        assert_eq!(
            join("http://auth:5000/internal//"),
            "http://auth:5000/internal/session/validate"
        );
        assert_eq!(
            join("https://auth.example/a/b/?q=1#f"),
            "https://auth.example/a/b/session/validate"
        );
    }
}
