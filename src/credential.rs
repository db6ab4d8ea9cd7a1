//! Finds the caller's session credential in the request headers (pure).
//!
//! The `session` cookie is looked up first, then the `x-session-token` header. Any ambiguity is
//! reported as such so that the caller denies instead of guessing.

use std::fmt;

use std::sync::OnceLock;

use cookie::Cookie;
use ring::hmac;

use crate::request::Headers;

/// Where a credential came from; the validator is called the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Cookie,
    Header,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cookie => "cookie",
            Source::Header => "header",
        }
    }
}

/// A session token and where it was found. `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credential {
    source: Source,
    token: String,
}

impl Credential {
    pub fn new(source: Source, token: impl Into<String>) -> Self {
        Self {
            source,
            token: token.into(),
        }
    }

    pub fn source(&self) -> Source {
        self.source
    }

    /// The raw token: for the validator request only, never for logs.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A short tag for correlating log lines: a keyed hash under a random key that lives only
    /// in this process, so that whoever reads the logs cannot confirm a guessed token.
    pub fn fingerprint(&self) -> String {
        static KEY: OnceLock<Option<hmac::Key>> = OnceLock::new();
        let key = KEY.get_or_init(|| {
            hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new()).ok()
        });
        match key {
            Some(key) => hmac::sign(key, self.token.as_bytes()).as_ref()[..4]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            // No randomness, no tag: an unkeyed hash would be the guessable kind.
            None => "--------".to_owned(),
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("source", &self.source)
            .field("token", &format_args!("#{}", self.fingerprint()))
            .finish()
    }
}

/// Why a request's credentials could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ambiguity {
    /// Two `session` cookies with different values.
    ConflictingCookies,
    /// The session header repeated or comma-joined.
    RepeatedHeader,
    /// Cookie and header both present and different.
    CookieHeaderMismatch,
    /// The token holds bytes that cannot be forwarded faithfully (control characters,
    /// invalid UTF-8).
    UnforwardableToken,
}

impl Ambiguity {
    pub fn as_str(self) -> &'static str {
        match self {
            Ambiguity::ConflictingCookies => "conflicting_cookies",
            Ambiguity::RepeatedHeader => "repeated_header",
            Ambiguity::CookieHeaderMismatch => "cookie_header_mismatch",
            Ambiguity::UnforwardableToken => "unforwardable_token",
        }
    }
}

/// The outcome of looking for a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(Credential),
    Absent,
    Ambiguous(Ambiguity),
}

/// The configured names to look for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// Cookie name, matched exactly (case-sensitive), as browsers do.
    pub cookie: String,
    /// Header name, matched case-insensitively, as HTTP does.
    pub header: String,
}

impl Default for Names {
    fn default() -> Self {
        Self {
            cookie: "session".to_owned(),
            header: "x-session-token".to_owned(),
        }
    }
}

/// Looks for the credential among the request's headers.
///
/// Runs in time linear in the size of the headers.
pub fn find(headers: Headers<'_>, names: &Names) -> Lookup {
    let mut cookie = Single::default();
    let mut header = Single::default();

    let mut values = headers.all(&names.header);
    if let Some(value) = values.next() {
        if values.next().is_some() || value.contains(&b',') {
            return Lookup::Ambiguous(Ambiguity::RepeatedHeader);
        }
        match std::str::from_utf8(value) {
            Ok(text) => header.offer(text.trim()),
            Err(_) => header.unforwardable = true,
        }
    }
    for value in headers.all("cookie") {
        scan_cookie_header(value, &names.cookie, &mut cookie);
    }

    if cookie.conflict {
        return Lookup::Ambiguous(Ambiguity::ConflictingCookies);
    }
    let cookie = match cookie.finish() {
        Ok(token) => token,
        Err(ambiguity) => return Lookup::Ambiguous(ambiguity),
    };
    let header = match header.finish() {
        Ok(token) => token,
        Err(ambiguity) => return Lookup::Ambiguous(ambiguity),
    };

    match (cookie, header) {
        (Some(c), Some(h)) if c != h => Lookup::Ambiguous(Ambiguity::CookieHeaderMismatch),
        (Some(c), _) => Lookup::Found(Credential::new(Source::Cookie, c)),
        (None, Some(h)) => Lookup::Found(Credential::new(Source::Header, h)),
        (None, None) => Lookup::Absent,
    }
}

/// Collects the values seen for one credential; empty values count as absent.
#[derive(Default)]
struct Single {
    value: Option<String>,
    conflict: bool,
    unforwardable: bool,
}

impl Single {
    fn offer(&mut self, token: &str) {
        if token.is_empty() {
            return;
        }
        match &self.value {
            Some(existing) if existing != token => self.conflict = true,
            Some(_) => {}
            None => self.value = Some(token.to_owned()),
        }
    }

    fn finish(self) -> Result<Option<String>, Ambiguity> {
        if self.unforwardable {
            return Err(Ambiguity::UnforwardableToken);
        }
        match self.value {
            Some(token) if !is_forwardable(&token) => Err(Ambiguity::UnforwardableToken),
            other => Ok(other),
        }
    }
}

fn scan_cookie_header(value: &[u8], cookie_name: &str, found: &mut Single) {
    // Other cookies may hold any bytes; only the session cookie's own value must be clean.
    // `from_utf8` first: its check of valid text is the quicker one.
    let text = match std::str::from_utf8(value) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(value),
    };
    // Only a value that was not UTF-8 can hold a character the conversion made up.
    let converted = matches!(text, std::borrow::Cow::Owned(_));
    // Only the pairs named `cookie_name` are parsed: a browser sends every cookie of the
    // site, and the crate builds a whole `Cookie` of each. The name is the one the crate would
    // read (up to the first `=`, trimmed), so no pair it would match is passed over.
    let named = text.split(';').filter(|pair| {
        pair.split_once('=')
            .is_some_and(|(name, _)| name.trim() == cookie_name)
    });
    for parsed in named.filter_map(|pair| Cookie::parse(pair.trim()).ok()) {
        let token = parsed.value_trimmed();
        if converted && token.contains(char::REPLACEMENT_CHARACTER) {
            found.unforwardable = true;
        } else {
            found.offer(token);
        }
    }
}

/// A token must travel to the validator byte for byte in a header value.
fn is_forwardable(token: &str) -> bool {
    token
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(headers: &[(&str, &str)]) -> Lookup {
        let pairs: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        find(Headers::new(&pairs), &Names::default())
    }

    fn cookie(token: &str) -> Lookup {
        Lookup::Found(Credential::new(Source::Cookie, token))
    }

    fn header(token: &str) -> Lookup {
        Lookup::Found(Credential::new(Source::Header, token))
    }

    #[test]
    fn cookie_table() {
        let cases: &[(&str, Lookup)] = &[
            ("session=T", cookie("T")),
            ("a=1; session=T", cookie("T")),
            ("session=T; a=1", cookie("T")),
            ("a=1;session=T;b=2", cookie("T")),
            ("session=YWJjZA==", cookie("YWJjZA==")),
            ("session=a=b=c", cookie("a=b=c")),
            ("Session=T", Lookup::Absent),
            ("SESSION=T", Lookup::Absent),
            ("xsession=T", Lookup::Absent),
            ("session_old=T", Lookup::Absent),
            ("session=", Lookup::Absent),
            ("session=\"\"", Lookup::Absent),
            ("session=\"T\"", cookie("T")),
            ("   session =  T  ;  a=1 ", cookie("T")),
            ("session", Lookup::Absent),
            ("session; session=T", cookie("T")),
            ("a=session=T", Lookup::Absent),
            ("a=1; session=T=U; b=session=V", cookie("T=U")),
            ("\u{a0}session\u{a0}=T", cookie("T")),
            ("=T; session=U", cookie("U")),
            ("session=T; session=T", cookie("T")),
            (
                "session=T; session=U",
                Lookup::Ambiguous(Ambiguity::ConflictingCookies),
            ),
            ("session=; session=U", cookie("U")),
            ("", Lookup::Absent),
            (";;;", Lookup::Absent),
        ];
        for (value, expected) in cases {
            assert_eq!(&lookup(&[("cookie", value)]), expected, "cookie: {value:?}");
        }
    }

    #[test]
    fn header_table() {
        assert_eq!(lookup(&[("x-session-token", "T")]), header("T"));
        assert_eq!(lookup(&[("X-Session-Token", " T ")]), header("T"));
        assert_eq!(lookup(&[("x-session-token", "")]), Lookup::Absent);
        assert_eq!(
            lookup(&[("x-session-token", "a,b")]),
            Lookup::Ambiguous(Ambiguity::RepeatedHeader)
        );
        assert_eq!(
            lookup(&[("x-session-token", "a"), ("x-session-token", "a")]),
            Lookup::Ambiguous(Ambiguity::RepeatedHeader)
        );
        assert_eq!(lookup(&[("x-session-tokens", "T")]), Lookup::Absent);
    }

    #[test]
    fn cookie_comes_first_and_must_agree_with_header() {
        assert_eq!(
            lookup(&[("cookie", "session=T"), ("x-session-token", "T")]),
            cookie("T")
        );
        assert_eq!(
            lookup(&[("cookie", "session=T"), ("x-session-token", "U")]),
            Lookup::Ambiguous(Ambiguity::CookieHeaderMismatch)
        );
        assert_eq!(
            lookup(&[("cookie", "other=1"), ("x-session-token", "U")]),
            header("U")
        );
        assert_eq!(
            lookup(&[("cookie", "session="), ("x-session-token", "U")]),
            header("U")
        );
    }

    #[test]
    fn repeated_cookie_headers_are_all_read() {
        assert_eq!(
            lookup(&[("cookie", "a=1"), ("cookie", "session=T")]),
            cookie("T")
        );
        assert_eq!(
            lookup(&[("cookie", "session=T"), ("cookie", "session=U")]),
            Lookup::Ambiguous(Ambiguity::ConflictingCookies)
        );
    }

    #[test]
    fn non_utf8_bytes() {
        let names = Names::default();
        let other_cookie_garbage: &[(&str, &[u8])] = &[("cookie", b"a=\xff\xfe; session=T")];
        assert_eq!(
            find(Headers::new(other_cookie_garbage), &names),
            cookie("T")
        );

        let token_garbage: &[(&str, &[u8])] = &[("cookie", b"session=T\xff")];
        assert_eq!(
            find(Headers::new(token_garbage), &names),
            Lookup::Ambiguous(Ambiguity::UnforwardableToken)
        );
        let header_garbage: &[(&str, &[u8])] = &[("x-session-token", b"T\xff")];
        assert_eq!(
            find(Headers::new(header_garbage), &names),
            Lookup::Ambiguous(Ambiguity::UnforwardableToken)
        );
        // A real U+FFFD sent as UTF-8 travels byte for byte, like any other non-ASCII token;
        // only one the conversion made up stands for bytes we could not forward.
        let real = "session=T\u{fffd}".as_bytes();
        assert_eq!(
            find(Headers::new(&[("cookie", real)]), &names),
            cookie("T\u{fffd}")
        );
        let beside_garbage: &[(&str, &[u8])] = &[("cookie", b"a=\xff; session=T\xef\xbf\xbd")];
        assert_eq!(
            find(Headers::new(beside_garbage), &names),
            Lookup::Ambiguous(Ambiguity::UnforwardableToken)
        );
    }

    #[test]
    fn control_characters_in_token_are_refused() {
        assert_eq!(
            lookup(&[("x-session-token", "a\u{1}b")]),
            Lookup::Ambiguous(Ambiguity::UnforwardableToken)
        );
        assert_eq!(
            lookup(&[("cookie", "session=a\u{7f}b")]),
            Lookup::Ambiguous(Ambiguity::UnforwardableToken)
        );
    }

    #[test]
    fn large_cookie_headers() {
        let big = "x".repeat(8 * 1024);
        assert_eq!(
            lookup(&[("cookie", &format!("session={big}"))]),
            cookie(&big)
        );

        // 10 000 pairs with the session last: linear work, so this is instant.
        let mut many: String = (0..10_000).map(|i| format!("c{i}=v{i}; ")).collect();
        many.push_str("session=T");
        assert_eq!(lookup(&[("cookie", &many)]), cookie("T"));

        let mut sessions: String = (0..10_000).map(|_| "session=T; ").collect();
        sessions.push_str("session=U");
        assert_eq!(
            lookup(&[("cookie", &sessions)]),
            Lookup::Ambiguous(Ambiguity::ConflictingCookies)
        );
    }

    #[test]
    fn configured_names() {
        let names = Names {
            cookie: "sid".to_owned(),
            header: "x-auth-token".to_owned(),
        };
        let headers: &[(&str, &[u8])] = &[("cookie", b"session=A; sid=B")];
        assert_eq!(find(Headers::new(headers), &names), cookie("B"));
        let headers: &[(&str, &[u8])] = &[("x-auth-token", b"C"), ("x-session-token", b"D")];
        assert_eq!(find(Headers::new(headers), &names), header("C"));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let credential = Credential::new(Source::Cookie, "super-secret-token");
        let shown = format!("{credential:?}");
        assert!(!shown.contains("super-secret-token"), "{shown}");
        assert_eq!(credential.fingerprint().len(), 8);
        assert!(shown.contains(&credential.fingerprint()));
    }

    #[test]
    fn fingerprints_are_keyed() {
        let credential = Credential::new(Source::Cookie, "password1");
        let unkeyed: String = ring::digest::digest(&ring::digest::SHA256, b"password1").as_ref()
            [..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // A reader of the logs could confirm a guess against a plain hash.
        assert_ne!(credential.fingerprint(), unkeyed);
        assert_ne!(credential.fingerprint(), "--------");
        // Stable within the process, so log lines still correlate.
        assert_eq!(
            credential.fingerprint(),
            Credential::new(Source::Header, "password1").fingerprint()
        );
        assert_ne!(
            credential.fingerprint(),
            Credential::new(Source::Cookie, "password2").fingerprint()
        );
    }
}
