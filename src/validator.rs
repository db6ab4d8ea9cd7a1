//! Asks the auth service `GET /session/validate` about a credential: the only outbound I/O.
//! What its answers mean is [`crate::contract`]'s business.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, COOKIE, SET_COOKIE};
use reqwest::{StatusCode, Url};

use crate::contract::{interpret, CacheDirective, Reply, ValidatorError, Verdict, MAX_BODY_BYTES};
use crate::credential::{Credential, Source};
use crate::throttle::Throttle;

/// How often a failing validator is logged at most: an outage fails every Check, and one line
/// per Check would drown the log.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(5);

/// Warns of a validator error with its cause, when [`ERROR_LOG_EVERY`] lets it.
fn report(throttle: &Throttle, err: &ValidatorError) {
    if let Some(suppressed) = throttle.due() {
        // The error's text never holds a token (see ValidatorError).
        tracing::warn!(
            kind = err.kind().as_str(),
            suppressed,
            "validator call failed: {err}"
        );
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
    waiting: Arc<AtomicUsize>,
    max_queue: usize,
    error_log: Arc<Throttle>,
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
            // No per-request `timeout` here: `ask` and `probe` bound each call (slot wait, send,
            // body) with one `validator_timeout` of their own, and a second timer per call
            // only costs a registration in tokio's timer wheel.
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
            waiting: Arc::new(AtomicUsize::new(0)),
            max_queue: settings.max_queue,
            error_log: Arc::new(Throttle::new(ERROR_LOG_EVERY)),
        })
    }

    /// Asks the validator about `credential`, passing along the given trace headers. Waiting
    /// for a free slot and the call itself share one `validator_timeout`.
    pub async fn ask<'a>(
        &self,
        credential: &Credential,
        trace: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Reply {
        let mut headers = HeaderMap::new();
        let (name, value) = match credential.source() {
            Source::Cookie => (
                COOKIE,
                HeaderValue::try_from(cookie_pair(&self.cookie_name, credential.token())),
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
            Ok(Ok(answer)) => Reply::from_answer(
                answer.status.as_u16(),
                &answer.body,
                answer.cache,
                answer.set_cookies.iter().map(HeaderValue::as_bytes),
            ),
            Ok(Err(err)) => Verdict::Error(err).into(),
            Err(_) => Verdict::Error(ValidatorError::Timeout).into(),
        };
        if let Verdict::Error(err) = &reply.verdict {
            report(&self.error_log, err);
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

    async fn fetch(&self, headers: HeaderMap) -> Result<Answer, ValidatorError> {
        let mut response = self
            .client
            .get(self.url.clone())
            .headers(headers)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let cache = CacheDirective::from_headers(response.headers());
        let set_cookies: Vec<HeaderValue> = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .cloned()
            .collect();
        if status != StatusCode::OK {
            // Only a 200's body matters; the others are decided by status alone.
            return Ok(Answer {
                status,
                cache,
                body: Vec::new(),
                set_cookies,
            });
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
        Ok(Answer {
            status,
            cache,
            body,
            set_cookies,
        })
    }
}

impl Validator {
    /// Asks with no credential and no client header, only to learn whether the validator answers
    /// (any answer that follows the contract, `{"valid": false}` included, is one). Outside the
    /// concurrency cap: one probe at a time must not wait behind, or take a slot from, Checks.
    pub async fn probe(&self) -> Verdict {
        let verdict = match tokio::time::timeout(self.timeout, self.fetch(HeaderMap::new())).await {
            Ok(Ok(answer)) => interpret(answer.status.as_u16(), &answer.body),
            Ok(Err(err)) => Verdict::Error(err),
            Err(_) => Verdict::Error(ValidatorError::Timeout),
        };
        if let Verdict::Error(err) = &verdict {
            report(&self.error_log, err);
        }
        verdict
    }
}

/// What [`Validator::fetch`] read of an answer.
struct Answer {
    status: StatusCode,
    cache: CacheDirective,
    body: Vec<u8>,
    /// Every `Set-Cookie` header, in order; screened by the contract.
    set_cookies: Vec<HeaderValue>,
}

/// Counts a caller out of the queue however its wait ends (granted, timed out, cancelled).
struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `name=token`, built without the formatting machinery (this runs once per validator call).
fn cookie_pair(name: &str, token: &str) -> String {
    let mut pair = String::with_capacity(name.len() + 1 + token.len());
    pair.push_str(name);
    pair.push('=');
    pair.push_str(token);
    pair
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
