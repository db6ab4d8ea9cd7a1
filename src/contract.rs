//! The validator contract, pure: an answer of `GET /session/validate` (status and body) in, a
//! [`Verdict`] out. What counts as valid, invalid or an error is written down in
//! `docs/architecture.md` ("The validator contract").

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use serde::Deserialize;

/// The most bytes of an answer read before it counts as an error.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest `user` accepted as a header value.
pub const MAX_USER_BYTES: usize = 256;
/// The longest `email` accepted (RFC 5321's limit on a forward path, less its angle brackets).
pub const MAX_EMAIL_BYTES: usize = 254;
/// The most roles one answer may name.
pub const MAX_ROLES: usize = 64;
/// The longest role name.
pub const MAX_ROLE_BYTES: usize = 64;
/// The most `Set-Cookie` headers one answer may pass on to the client.
pub const MAX_SET_COOKIES: usize = 8;
/// The longest `Set-Cookie` value passed on (browsers keep no more than 4096 bytes per cookie).
pub const MAX_SET_COOKIE_BYTES: usize = 4096;

/// Whose session it is, as a valid answer says. Only [`Verdict::Valid`] carries one.
///
/// Its three fields live in one shared allocation (`user`, the comma-joined roles and `email`,
/// separated by a control character none of them may hold): a cache hit clones a pointer, and a
/// cached session costs one small allocation. An absent field and an empty one are the same.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Identity {
    /// `user␟roles␟email`; `None` when all three are absent.
    text: Option<Arc<str>>,
    /// Where the roles and the email start in `text`: each accessor is a slice, not a search
    /// (an allow reads every field twice).
    roles_at: usize,
    email_at: usize,
}

/// Between the fields: a control character, which no user, role or email may contain.
const SEPARATOR: char = '\u{1f}';

impl Identity {
    /// An identity from its fields, which the caller has screened (no field holds a control
    /// character; no role is empty or holds a comma).
    pub fn new(user: Option<&str>, roles: &[impl AsRef<str>], email: Option<&str>) -> Self {
        let user = user.unwrap_or_default();
        let email = email.unwrap_or_default();
        if user.is_empty() && roles.is_empty() && email.is_empty() {
            return Self::default();
        }
        let mut text = String::with_capacity(
            user.len()
                + email.len()
                + 2
                + roles.iter().map(|r| r.as_ref().len() + 1).sum::<usize>(),
        );
        text.push_str(user);
        text.push(SEPARATOR);
        let roles_at = text.len();
        for (i, role) in roles.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(role.as_ref());
        }
        text.push(SEPARATOR);
        let email_at = text.len();
        text.push_str(email);
        Self {
            text: Some(text.into()),
            roles_at,
            email_at,
        }
    }

    /// A user with no roles and no email.
    pub fn named(user: &str) -> Self {
        Self::new(Some(user), &[] as &[&str], None)
    }

    /// This identity with these roles instead of its own.
    pub fn with_roles<R: AsRef<str>>(self, roles: impl IntoIterator<Item = R>) -> Self {
        let roles: Vec<R> = roles.into_iter().collect();
        Self::new(self.user(), &roles, self.email())
    }

    /// This identity with this email instead of its own.
    pub fn with_email(self, email: &str) -> Self {
        let roles: Vec<&str> = self.roles().collect();
        Self::new(self.user(), &roles, Some(email))
    }

    fn field(&self, index: usize) -> Option<&str> {
        let text = self.text.as_deref()?;
        // Each field ends one byte (the separator) before the next starts.
        let range = match index {
            0 => 0..self.roles_at.checked_sub(1)?,
            1 => self.roles_at..self.email_at.checked_sub(1)?,
            _ => self.email_at..text.len(),
        };
        text.get(range).filter(|field| !field.is_empty())
    }

    /// The user name (or decimal id) for the user header; `None` when the answer named none.
    pub fn user(&self) -> Option<&str> {
        self.field(0)
    }

    /// The roles as one header value: comma-joined (`admin,viewer`), in the validator's order;
    /// `None` when there are none.
    pub fn roles_value(&self) -> Option<&str> {
        self.field(1)
    }

    /// The roles one by one.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.roles_value()
            .into_iter()
            .flat_map(|roles| roles.split(','))
    }

    /// The address for the email header; `None` when the answer named none.
    pub fn email(&self) -> Option<&str> {
        self.field(2)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("user", &self.user())
            .field("roles", &self.roles_value())
            .field("email", &self.email())
            .finish()
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
    #[error("validator named unsafe roles ({0})")]
    UnsafeRoles(&'static str),
    #[error("validator named an unsafe email ({0})")]
    UnsafeEmail(&'static str),
    #[error("validator sent unusable set-cookie headers ({0})")]
    SetCookie(&'static str),
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
    UnsafeRoles,
    UnsafeEmail,
    SetCookie,
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
            ErrorKind::UnsafeRoles => "unsafe_roles",
            ErrorKind::UnsafeEmail => "unsafe_email",
            ErrorKind::SetCookie => "set_cookie",
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
            ValidatorError::UnsafeRoles(_) => ErrorKind::UnsafeRoles,
            ValidatorError::UnsafeEmail(_) => ErrorKind::UnsafeEmail,
            ValidatorError::SetCookie(_) => ErrorKind::SetCookie,
            ValidatorError::BodyTooLarge => ErrorKind::BodyTooLarge,
            ValidatorError::Timeout => ErrorKind::Timeout,
            ValidatorError::Transport(_) => ErrorKind::Transport,
            ValidatorError::Shed => ErrorKind::Shed,
        }
    }
}

/// The fields of an answer the contract reads; any others are ignored.
#[derive(Deserialize)]
struct Answer {
    valid: bool,
    #[serde(default, deserialize_with = "present_user")]
    user: Option<String>,
    /// A missing list is no roles; `null`, a string or a list holding a non-string is malformed.
    #[serde(default)]
    roles: Vec<String>,
    /// May be missing, but when present it is a string (`null` is malformed, as for `user`).
    #[serde(default, deserialize_with = "present_string")]
    email: Option<String>,
}

/// `user` as the contract allows it: a string, or an integer id (the seed's database-backed
/// validator answers with its `user_id` column) rendered in decimal.
/// `user` may be missing, but when present it must be a string or an integer (`null`, a float
/// or a list are neither). A visitor rather than an untagged enum: serde buffers an untagged
/// value before trying each variant, which cost more than the rest of the answer's parse.
fn present_user<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct UserField;
    impl serde::de::Visitor<'_> for UserField {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or an integer")
        }
        fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<String, E> {
            Ok(name.to_owned())
        }
        fn visit_string<E: serde::de::Error>(self, name: String) -> Result<String, E> {
            Ok(name)
        }
        fn visit_i64<E: serde::de::Error>(self, id: i64) -> Result<String, E> {
            Ok(id.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, id: u64) -> Result<String, E> {
            Ok(id.to_string())
        }
    }
    d.deserialize_any(UserField).map(Some)
}

fn present_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
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
    match identity(answer) {
        Ok(identity) => Verdict::Valid(identity),
        Err(err) => Verdict::Error(err),
    }
}

/// The identity of a valid answer: every field safe as a header value, or an error (never a
/// partial identity). An empty `user` or `email` counts as none.
fn identity(answer: Answer) -> Result<Identity, ValidatorError> {
    let user = answer.user.filter(|user| !user.is_empty());
    if let Some(user) = &user {
        screen_text(user, MAX_USER_BYTES).map_err(ValidatorError::UnsafeUser)?;
    }
    screen_roles(&answer.roles).map_err(ValidatorError::UnsafeRoles)?;
    let email = answer.email.filter(|email| !email.is_empty());
    if let Some(email) = &email {
        screen_text(email, MAX_EMAIL_BYTES).map_err(ValidatorError::UnsafeEmail)?;
    }
    Ok(Identity::new(
        user.as_deref(),
        &answer.roles,
        email.as_deref(),
    ))
}

/// Roles are joined with commas into one header value and matched by route rules: each must be
/// a short plain word that no reader could split or read two ways.
pub(crate) fn screen_roles(roles: &[String]) -> Result<(), &'static str> {
    if roles.len() > MAX_ROLES {
        return Err("more than 64 roles");
    }
    for role in roles {
        if role.is_empty() {
            return Err("an empty role");
        }
        if role.len() > MAX_ROLE_BYTES {
            return Err("a role over 64 bytes");
        }
        if !role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'-'))
        {
            return Err("a role outside [A-Za-z0-9._:/-]");
        }
    }
    Ok(())
}

/// A user name as [`interpret`] accepts one (route rules accept no other).
pub(crate) fn screen_user(user: &str) -> Result<(), &'static str> {
    screen_text(user, MAX_USER_BYTES)
}

/// A user name or email becomes a header value upstream: it must be short and plain.
fn screen_text(text: &str, max_bytes: usize) -> Result<(), &'static str> {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    if text.len() > max_bytes {
        return Err("too long");
    }
    if text.chars().any(char::is_control) {
        return Err("control characters");
    }
    // Zero-width and bidi marks make two names look alike; line and paragraph separators end
    // a line for some log readers. No ASCII character is either: only others need the table.
    if !text.is_ascii()
        && text.chars().any(|c| {
            matches!(
                c.general_category(),
                GeneralCategory::Format
                    | GeneralCategory::LineSeparator
                    | GeneralCategory::ParagraphSeparator
            )
        })
    {
        return Err("format or separator characters");
    }
    if text.contains(',') {
        // Many frameworks split a header on commas: `a, admin` would read as two values.
        return Err("a comma");
    }
    if text.trim() != text {
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

/// The `Set-Cookie` values of an answer, screened to be passed on to the client as they are:
/// each a valid header value (visible ASCII, spaces and tabs; no CR, LF or NUL) of at most
/// [`MAX_SET_COOKIE_BYTES`], at most [`MAX_SET_COOKIES`] of them. Anything else is an error,
/// never a partial set: a client left with half of a renewal is in a state nobody meant.
pub fn screen_set_cookies<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<String>, ValidatorError> {
    let mut cookies = Vec::new();
    for value in values {
        if cookies.len() == MAX_SET_COOKIES {
            return Err(ValidatorError::SetCookie("more than 8"));
        }
        if value.len() > MAX_SET_COOKIE_BYTES {
            return Err(ValidatorError::SetCookie("one over 4096 bytes"));
        }
        // `http::HeaderValue` would also take obs-text (bytes above 0x7f); a proxy may not.
        if !value
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return Err(ValidatorError::SetCookie("a byte outside visible ASCII"));
        }
        let text = String::from_utf8_lossy(value);
        if text.trim().is_empty() {
            return Err(ValidatorError::SetCookie("an empty one"));
        }
        cookies.push(text.into_owned());
    }
    Ok(cookies)
}

/// A verdict with the validator's caching instructions and the cookies it sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub verdict: Verdict,
    pub cache: CacheDirective,
    /// `Set-Cookie` values for the client; only on a valid or invalid verdict, never an error.
    pub set_cookies: Vec<String>,
}

impl From<Verdict> for Reply {
    fn from(verdict: Verdict) -> Self {
        Self {
            verdict,
            cache: CacheDirective::default(),
            set_cookies: Vec::new(),
        }
    }
}

impl Reply {
    /// The answer of `status`, `body` and its `Set-Cookie` headers: the cookies are kept only
    /// when the verdict is valid or invalid, and unusable cookies turn it into an error.
    pub fn from_answer<'a>(
        status: u16,
        body: &[u8],
        cache: CacheDirective,
        set_cookies: impl IntoIterator<Item = &'a [u8]>,
    ) -> Self {
        let verdict = interpret(status, body);
        if matches!(verdict, Verdict::Error(_)) {
            return Self {
                verdict,
                cache,
                set_cookies: Vec::new(),
            };
        }
        match screen_set_cookies(set_cookies) {
            Ok(set_cookies) => Self {
                verdict,
                cache,
                set_cookies,
            },
            Err(err) => Self {
                verdict: Verdict::Error(err),
                cache,
                set_cookies: Vec::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(user: Option<&str>) -> Verdict {
        Verdict::Valid(Identity::new(user, &[] as &[&str], None))
    }

    fn answer(fields: serde_json::Value) -> Verdict {
        let mut body = serde_json::json!({"valid": true, "user": "alice"});
        for (key, value) in fields.as_object().unwrap() {
            body[key] = value.clone();
        }
        interpret(200, body.to_string().as_bytes())
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
    fn roles_and_email_become_the_identity() {
        assert_eq!(
            answer(serde_json::json!({"roles": ["admin", "viewer"], "email": "a@example.com"})),
            Verdict::Valid(
                Identity::named("alice")
                    .with_roles(["admin", "viewer"])
                    .with_email("a@example.com")
            )
        );
        // Absent, empty list and empty string are all "none".
        for fields in [
            serde_json::json!({}),
            serde_json::json!({"roles": []}),
            serde_json::json!({"email": ""}),
            serde_json::json!({"roles": [], "email": ""}),
        ] {
            assert_eq!(answer(fields.clone()), valid(Some("alice")), "{fields}");
        }
        // Roles and email without a user.
        assert_eq!(
            interpret(
                200,
                br#"{"valid":true,"roles":["ops"],"email":"ops@example.com"}"#
            ),
            Verdict::Valid(Identity::new(None, &["ops"], Some("ops@example.com")))
        );
        // Every allowed character, the longest role, the most roles, the longest email.
        let alphabet = "AZaz09._:/-";
        let longest = "r".repeat(MAX_ROLE_BYTES);
        let many: Vec<String> = (0..MAX_ROLES).map(|i| format!("role-{i}")).collect();
        let email = format!("{}@example.com", "e".repeat(MAX_EMAIL_BYTES - 12));
        assert_eq!(email.len(), MAX_EMAIL_BYTES);
        for roles in [vec![alphabet.to_owned()], vec![longest], many] {
            let verdict = answer(serde_json::json!({"roles": roles, "email": email}));
            assert_eq!(
                verdict,
                Verdict::Valid(
                    Identity::named("alice")
                        .with_roles(roles.clone())
                        .with_email(&email)
                )
            );
        }
        // Extra fields stay ignored, even ones that look like identity.
        assert_eq!(
            answer(serde_json::json!({"groups": ["root"], "role": 7, "emails": null})),
            valid(Some("alice"))
        );
        let both = Identity::named("a").with_roles(["admin", "viewer"]);
        assert_eq!(both.roles_value(), Some("admin,viewer"));
        assert_eq!(both.roles().collect::<Vec<_>>(), ["admin", "viewer"]);
        assert_eq!(Identity::named("a").roles_value(), None);
        // Fields in one allocation, read back apart; none at all is the default.
        let all = Identity::new(Some("u"), &["r"], Some("u@example.com"));
        assert_eq!(
            (all.user(), all.roles_value(), all.email()),
            (Some("u"), Some("r"), Some("u@example.com"))
        );
        let email_only = Identity::new(None, &[] as &[&str], Some("e@example.com"));
        assert_eq!(
            (
                email_only.user(),
                email_only.roles_value(),
                email_only.email()
            ),
            (None, None, Some("e@example.com"))
        );
        assert_eq!(
            Identity::new(Some(""), &[] as &[&str], Some("")),
            Identity::default()
        );
        assert_eq!(Identity::default().user(), None);
    }

    #[test]
    fn no_ascii_character_is_a_format_or_separator_character() {
        use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
        // screen_text skips the category table for ASCII text on this ground.
        for c in (0..=0x7f_u8).map(char::from) {
            assert!(
                !matches!(
                    c.general_category(),
                    GeneralCategory::Format
                        | GeneralCategory::LineSeparator
                        | GeneralCategory::ParagraphSeparator
                ),
                "{c:?}"
            );
        }
    }

    #[test]
    fn unsafe_roles_are_errors() {
        let too_many: Vec<String> = (0..=MAX_ROLES).map(|i| format!("role-{i}")).collect();
        for roles in [
            serde_json::json!(too_many),
            serde_json::json!(["r".repeat(MAX_ROLE_BYTES + 1)]),
            serde_json::json!([""]),
            serde_json::json!(["ad min"]),
            serde_json::json!(["admin,viewer"]),
            serde_json::json!(["admin", "viewer,root"]),
            serde_json::json!(["rôle"]),
            serde_json::json!(["admin\r\n"]),
            serde_json::json!(["ad\u{200b}min"]),
            serde_json::json!(["admin;x"]),
            serde_json::json!(["admin\"x"]),
            serde_json::json!([" admin"]),
            serde_json::json!(["viewer", "admin\t"]),
        ] {
            let body = format!(r#"{{"valid":true,"user":"alice","roles":{roles}}}"#);
            let verdict = interpret(200, body.as_bytes());
            assert!(
                matches!(verdict, Verdict::Error(ValidatorError::UnsafeRoles(_))),
                "{roles}: {verdict:?}"
            );
        }
        // The wrong shape is malformed, whatever the rest of the answer says.
        for roles in [
            r#""admin""#,
            "null",
            "7",
            r#"{"admin":true}"#,
            r#"["admin",7]"#,
            r#"["admin",null]"#,
            r#"[["admin"]]"#,
            "true",
        ] {
            let body = format!(r#"{{"valid":true,"user":"alice","roles":{roles}}}"#);
            let verdict = interpret(200, body.as_bytes());
            assert!(
                matches!(verdict, Verdict::Error(ValidatorError::Malformed(_))),
                "{roles}: {verdict:?}"
            );
        }
        // The shape is checked whatever `valid` says, as for `user`.
        assert!(matches!(
            interpret(200, br#"{"valid":false,"roles":"admin"}"#),
            Verdict::Error(ValidatorError::Malformed(_))
        ));
        // An invalid answer's roles are never screened: it is a 401 whatever they hold.
        assert_eq!(
            interpret(200, br#"{"valid":false,"roles":["bad role"]}"#),
            Verdict::Invalid
        );
    }

    #[test]
    fn unsafe_emails_are_errors() {
        for email in [
            "a@example.com, root@example.com",
            "a@example.com,b@example.com",
            "a@example.com\r\nx-admin: 1",
            "a@example.com\n",
            "a\u{0}@example.com",
            "ad\u{200b}min@example.com",
            "\u{202e}admin@example.com",
            "admin@example.com\u{2028}",
            " a@example.com",
            "a@example.com ",
        ] {
            let verdict = answer(serde_json::json!({ "email": email }));
            assert!(
                matches!(verdict, Verdict::Error(ValidatorError::UnsafeEmail(_))),
                "{email}: {verdict:?}"
            );
        }
        let long = format!("{}@example.com", "e".repeat(MAX_EMAIL_BYTES - 11));
        assert!(matches!(
            answer(serde_json::json!({ "email": long })),
            Verdict::Error(ValidatorError::UnsafeEmail(_))
        ));
        for email in ["null", "7", "true", r#"["a@example.com"]"#, r#"{"a":1}"#] {
            let body = format!(r#"{{"valid":true,"user":"alice","email":{email}}}"#);
            let verdict = interpret(200, body.as_bytes());
            assert!(
                matches!(verdict, Verdict::Error(ValidatorError::Malformed(_))),
                "{email}: {verdict:?}"
            );
        }
    }

    #[test]
    fn one_unsafe_field_spoils_the_whole_identity() {
        // Never a partial identity: a good user with a bad role or email is an error.
        for fields in [
            serde_json::json!({"roles": ["admin", "bad role"], "email": "a@example.com"}),
            serde_json::json!({"roles": ["admin"], "email": "a@example.com,b@example.com"}),
            serde_json::json!({"user": "al,ice", "roles": ["admin"], "email": "a@example.com"}),
        ] {
            assert!(is_error(&answer(fields.clone())), "{fields}");
        }
    }

    fn cookies(values: &[&str]) -> Result<Vec<String>, ValidatorError> {
        screen_set_cookies(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn set_cookies_pass_as_sent() {
        let renew = "session=abc; Max-Age=3600; HttpOnly; SameSite=Lax; Path=/";
        let other = "theme=dark; Path=/";
        assert_eq!(
            cookies(&[renew, other]),
            Ok(vec![renew.to_owned(), other.to_owned()])
        );
        assert_eq!(cookies(&[]), Ok(Vec::new()));
        let eight = ["a=1"; MAX_SET_COOKIES];
        assert_eq!(cookies(&eight).map(|c| c.len()), Ok(MAX_SET_COOKIES));
        let longest = format!("a={}", "x".repeat(MAX_SET_COOKIE_BYTES - 2));
        assert!(cookies(&[&longest]).is_ok());
    }

    #[test]
    fn set_cookies_over_a_cap_or_with_bad_bytes_are_an_error() {
        let kind = |r: Result<Vec<String>, ValidatorError>| r.map_err(|e| e.kind());
        let nine = ["a=1"; MAX_SET_COOKIES + 1];
        assert_eq!(kind(cookies(&nine)), Err(ErrorKind::SetCookie));
        let long = format!("a={}", "x".repeat(MAX_SET_COOKIE_BYTES - 1));
        assert_eq!(kind(cookies(&["b=2", &long])), Err(ErrorKind::SetCookie));
        for bad in [
            "a=1\r\nx-evil: 1",
            "a=1\n",
            "a=\u{0}",
            "a=\u{7f}",
            "a=caf\u{e9}",
            "",
            "  ",
        ] {
            assert_eq!(
                kind(cookies(&["ok=1", bad])),
                Err(ErrorKind::SetCookie),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn only_valid_and_invalid_answers_carry_set_cookies() {
        let clear = "session=; Max-Age=0; Path=/";
        let set = [clear.as_bytes()];
        let none = CacheDirective::default();
        let reply = Reply::from_answer(401, b"", none, set);
        assert_eq!(
            (reply.verdict, reply.set_cookies),
            (Verdict::Invalid, vec![clear.to_owned()])
        );
        let reply = Reply::from_answer(200, br#"{"valid":true,"user":"a"}"#, none, set);
        assert_eq!(reply.set_cookies, vec![clear.to_owned()]);
        for (status, body) in [(500, &b""[..]), (200, &b"[]"[..]), (302, &b""[..])] {
            let reply = Reply::from_answer(status, body, none, set);
            assert!(is_error(&reply.verdict), "{status}");
            assert!(reply.set_cookies.is_empty(), "{status}");
        }
        let bad = Reply::from_answer(200, br#"{"valid":true}"#, none, [&b"a=\n"[..]]);
        assert_eq!(
            bad.verdict,
            Verdict::Error(ValidatorError::SetCookie("a byte outside visible ASCII"))
        );
        assert!(bad.set_cookies.is_empty());
    }
}
