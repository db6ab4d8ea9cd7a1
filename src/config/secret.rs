//! Secrets in the configuration: a field that holds one is a [`Secret`], whose `Debug` and
//! `Display` show only its redacted form, so the whole `Config` can derive `Debug` and a log
//! line or `--check-config` cannot print a credential by accident.

use std::fmt;

use reqwest::Url;

/// A value that is shown only redacted; [`Secret::expose`] hands out the value itself to the
/// code that must use it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself: for using it, never for showing it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

/// How a secret is shown.
pub trait Redact {
    fn redacted(&self) -> String;
}

impl Redact for Url {
    /// User name, password, query and fragment replaced, since API keys hide in any of them.
    fn redacted(&self) -> String {
        redact_url(self)
    }
}

impl<T: Redact> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0.redacted(), f)
    }
}

impl<T: Redact> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.redacted())
    }
}

/// A URL fit for logs and messages: user name, password, query and fragment replaced, since
/// API keys hide in any of them.
pub fn redact_url(url: &Url) -> String {
    const HIDDEN: &str = "REDACTED";
    let mut shown = url.clone();
    if !shown.username().is_empty() {
        let _ = shown.set_username(HIDDEN);
    }
    if shown.password().is_some() {
        let _ = shown.set_password(Some(HIDDEN));
    }
    if shown.query().is_some() {
        shown.set_query(Some(HIDDEN));
    }
    if shown.fragment().is_some() {
        shown.set_fragment(Some(HIDDEN));
    }
    shown.to_string()
}

/// Text that was meant as a secret URL, fit for an error message even when it is not a URL.
pub(super) fn redact_text(text: &str) -> String {
    match Url::parse(text) {
        Ok(url) => redact_url(&url),
        Err(_) if text.contains(['@', '?', '#']) => "(not shown: may hold credentials)".to_owned(),
        Err(_) => text.to_owned(),
    }
}
