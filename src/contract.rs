//! The validator contract, pure: an answer of `GET /session/validate` (status and body) in, a
//! [`Verdict`] out. What counts as valid, invalid or an error is written down in
//! `docs/architecture.md` ("The validator contract").

use std::time::Duration;

use http::HeaderMap;
use serde::Deserialize;

/// The most bytes of an answer read before it counts as an error.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest `user` accepted as a header value.
pub const MAX_USER_BYTES: usize = 256;

/// Whose session it is, as a valid answer says. Only [`Verdict::Valid`] carries one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The user name (or decimal id) for the identity header; `None` when the answer named none.
    pub user: Option<String>,
}

impl Identity {
    pub fn user(user: impl Into<String>) -> Self {
        Self {
            user: Some(user.into()),
        }
    }
}

/// What the validator said about a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Valid(Identity),
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

/// The kind of a [`ValidatorError`], without its details: for logs, reasons and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Redirect,
    Status,
    Malformed,
    UnsafeUser,
    BodyTooLarge,
    Timeout,
    Transport,
    Shed,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Redirect => "redirect",
            ErrorKind::Status => "status",
            ErrorKind::Malformed => "malformed",
            ErrorKind::UnsafeUser => "unsafe_user",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Transport => "transport",
            ErrorKind::Shed => "shed",
        }
    }
}

impl ValidatorError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ValidatorError::Redirect(_) => ErrorKind::Redirect,
            ValidatorError::UnexpectedStatus(_) => ErrorKind::Status,
            ValidatorError::Malformed(_) => ErrorKind::Malformed,
            ValidatorError::UnsafeUser(_) => ErrorKind::UnsafeUser,
            ValidatorError::BodyTooLarge => ErrorKind::BodyTooLarge,
            ValidatorError::Timeout => ErrorKind::Timeout,
            ValidatorError::Transport(_) => ErrorKind::Transport,
            ValidatorError::Shed => ErrorKind::Shed,
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

/// Maps a status code and body to a verdict, strictly (docs/architecture.md, "The validator contract").
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
        None => Verdict::Valid(Identity::default()),
        Some(user) if user.is_empty() => Verdict::Valid(Identity::default()),
        Some(user) => match screen_user(&user) {
            Ok(()) => Verdict::Valid(Identity::user(user)),
            Err(why) => Verdict::Error(ValidatorError::UnsafeUser(why)),
        },
    }
}

/// A user name becomes a header value upstream: it must be short and plain.
fn screen_user(user: &str) -> Result<(), &'static str> {
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
    pub fn from_headers(headers: &HeaderMap) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(user: Option<&str>) -> Verdict {
        Verdict::Valid(Identity {
            user: user.map(str::to_owned),
        })
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
}
