//! Verdict sources for driving the core (`authorize::Authorizer`) without a validator: a table
//! of answers per token, and one that finds every session valid and counts the calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use session_authz::authorize::Verdicts;
use session_authz::cache::{Answered, Origin};
use session_authz::contract::{interpret, CacheDirective, Reply};
use session_authz::credential::Credential;
use session_authz::request::RequestView;

/// The cookie every answer of a [`Table`] sets.
pub const RENEWAL: &str = "session=renewed; Max-Age=60";

/// A validator that answers each token from a table (status and body, read by the real
/// contract), and anything else with `fallback`; every answer is a fresh call's.
pub struct Table {
    answers: HashMap<String, (u16, Vec<u8>)>,
    fallback: (u16, Vec<u8>),
}

impl Table {
    pub fn new(answers: HashMap<String, (u16, Vec<u8>)>, fallback: (u16, Vec<u8>)) -> Self {
        Self { answers, fallback }
    }

    /// What the table answers `token`.
    pub fn answer(&self, token: &str) -> &(u16, Vec<u8>) {
        self.answers.get(token).unwrap_or(&self.fallback)
    }
}

impl Verdicts for &Table {
    async fn verdict(&self, credential: &Credential, _: &RequestView<'_>) -> Answered {
        let (status, body) = self.answer(credential.token());
        let reply = Reply::from_answer(
            *status,
            body,
            CacheDirective::default(),
            [RENEWAL.as_bytes()],
        );
        Answered {
            verdict: reply.verdict,
            origin: Origin::Miss,
            set_cookies: reply.set_cookies,
        }
    }
}

/// A validator that finds every session valid (user `u`), and counts how often it is asked.
#[derive(Debug, Default)]
pub struct Counting(AtomicUsize);

impl Counting {
    pub fn calls(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Verdicts for &Counting {
    async fn verdict(&self, _: &Credential, _: &RequestView<'_>) -> Answered {
        self.0.fetch_add(1, Ordering::SeqCst);
        Answered {
            verdict: interpret(200, br#"{"valid":true,"user":"u"}"#),
            origin: Origin::Miss,
            set_cookies: Vec::new(),
        }
    }
}
