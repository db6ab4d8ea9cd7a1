//! Browser sign-in (docs/architecture.md, "Sign-in redirects"): when a 401 becomes a 302 to the
//! login page, and the `Location` it names. Pure.
//!
//! Only a browser navigating with GET or HEAD is sent, never an API client, never a request the
//! route keeps from it, and never on a 403 or 503 (the caller asks only about a 401). The page
//! to return to is the request's own path and query, and only when it is plainly local.

use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use url::Url;

use crate::request::{Headers, RequestView};

/// What the configuration says about sign-in (`login_url`, `login_return_param`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `None`: every 401 stays a 401.
    pub login_url: Option<LoginUrl>,
    /// The query parameter that carries the page to return to.
    pub return_param: ReturnParam,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            login_url: None,
            return_param: ReturnParam(DEFAULT_RETURN_PARAM.to_owned()),
        }
    }
}

/// The `login_return_param` default.
pub const DEFAULT_RETURN_PARAM: &str = "return_to";

/// Longest path and query sent back as the page to return to; a longer one is left out (the
/// login page then returns to its default) rather than cut.
pub const MAX_RETURN_LEN: usize = 2048;

/// The sign-in page: an absolute `http(s)://` URL, or a path on the host the request addressed.
/// Built only by [`LoginUrl::parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginUrl {
    text: String,
    /// Its path without the query: a request for it is never sent to it again (no loop).
    path: String,
}

/// What [`LoginUrl::parse`] accepts, for the configuration's error message.
pub const LOGIN_URL_EXPECTED: &str = "expected an http:// or https:// URL or a local path \
     starting with one /, without fragment or user-info, like /login or https://auth.example/login";

impl LoginUrl {
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let text = text.trim();
        if !text.bytes().all(|b| b.is_ascii_graphic()) || text.contains('#') {
            return Err(LOGIN_URL_EXPECTED);
        }
        if text.starts_with('/') {
            if !is_local(text.as_bytes()) || text.contains('\\') {
                return Err(LOGIN_URL_EXPECTED);
            }
            let path = text.split('?').next().unwrap_or_default().to_owned();
            return Ok(Self {
                text: text.to_owned(),
                path,
            });
        }
        // The URL parser forgives `https:///login` (host `login`); an operator meant no such thing.
        match text.split_once("://") {
            Some((_, rest)) if !rest.starts_with('/') => {}
            _ => return Err(LOGIN_URL_EXPECTED),
        }
        let url = Url::parse(text).map_err(|_| LOGIN_URL_EXPECTED)?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none()
            || !url.username().is_empty()
            || url.password().is_some()
            || url.fragment().is_some()
        {
            return Err(LOGIN_URL_EXPECTED);
        }
        Ok(Self {
            // As written (trimmed): the URL parser would add a `/` to a bare host.
            text: text.to_owned(),
            path: url.path().to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A `login_return_param`: 1 to 64 of `A-Z a-z 0-9 - . _ ~`, so it needs no encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReturnParam(String);

pub const RETURN_PARAM_EXPECTED: &str =
    "expected a query parameter name: 1 to 64 letters, digits or -._~, like return_to";

impl ReturnParam {
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let text = text.trim();
        let fits = (1..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
        fits.then(|| Self(text.to_owned()))
            .ok_or(RETURN_PARAM_EXPECTED)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The `Location` for a request that would get a 401, when it should be sent to sign in instead:
/// `login_url` is set, the route allows it (`login_redirect`, `None` = yes), the method is GET
/// or HEAD, the request is a navigation and carries no `session_header` (an API client's
/// credential, wanted or not: it gets the 401). `None`: the 401 stands.
pub fn redirect(
    settings: &Settings,
    request: &RequestView<'_>,
    session_header: &str,
    route_allows: Option<bool>,
) -> Option<String> {
    let login = settings.login_url.as_ref()?;
    // Methods are case-sensitive tokens, as in the CSRF check.
    if !route_allows.unwrap_or(true)
        || !matches!(request.method, "GET" | "HEAD")
        || request.headers.all(session_header).next().is_some()
        || !is_navigation(request.headers)
    {
        return None;
    }
    let path = request.path.split('?').next().unwrap_or_default();
    if path == login.path {
        return None; // the login page itself: a 302 to it would loop
    }
    if !is_safe_return(request.path) {
        return Some(login.text.clone());
    }
    let separator = if login.text.contains('?') { '&' } else { '?' };
    Some(format!(
        "{}{separator}{}={}",
        login.text,
        settings.return_param.as_str(),
        utf8_percent_encode(request.path, QUERY_VALUE)
    ))
}

/// Everything but RFC 3986's unreserved characters is encoded in the return value.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A browser's page load: `sec-fetch-mode: navigate`, or (from a browser too old to send it)
/// an `accept` that names `text/html`. `fetch()` and XHR send `cors`/`same-origin` and `*/*`.
fn is_navigation(headers: Headers<'_>) -> bool {
    let mut modes = headers.all("sec-fetch-mode").peekable();
    if modes.peek().is_some() {
        // A browser that says what it is doing is taken at its word.
        return modes.all(|mode| mode.trim_ascii() == b"navigate");
    }
    headers.all("accept").any(|accept| {
        accept.split(|b| *b == b',').any(|range| {
            let media = range.split(|b| *b == b';').next().unwrap_or_default();
            media.trim_ascii().eq_ignore_ascii_case(b"text/html")
        })
    })
}

/// A path and query that can only lead back to this site: bounded, and visible ASCII with one
/// leading `/` and no `//` or `/\` at its start after every round of percent-decoding. A login
/// page that decodes once more than it should must not turn `/%2F%2Fevil.example` into
/// `//evil.example`, nor `/%2509/evil.example` into `/<TAB>/evil.example` (a browser drops the
/// tab and reads `//evil.example`).
pub fn is_safe_return(path_and_query: &str) -> bool {
    let mut bytes = path_and_query.as_bytes().to_vec();
    if bytes.len() > MAX_RETURN_LEN {
        return false;
    }
    // Each round that changes anything shortens the text: this ends.
    loop {
        if !bytes.iter().all(u8::is_ascii_graphic) || !is_local(&bytes) {
            return false;
        }
        let decoded: Vec<u8> = percent_decode(&bytes).collect();
        if decoded == bytes {
            return true;
        }
        bytes = decoded;
    }
}

/// One leading `/`, not followed by `/` or `\` (which browsers read as `//`).
fn is_local(path: &[u8]) -> bool {
    path.first() == Some(&b'/') && !matches!(path.get(1), Some(b'/' | b'\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(login: &str) -> Settings {
        Settings {
            login_url: Some(LoginUrl::parse(login).unwrap()),
            return_param: ReturnParam::parse("return_to").unwrap(),
        }
    }

    const HEADER: &str = "x-session-token";

    const BROWSER: &[(&str, &[u8])] = &[
        ("accept", b"text/html,application/xhtml+xml,*/*;q=0.8"),
        ("sec-fetch-mode", b"navigate"),
    ];

    fn view<'a>(
        method: &'a str,
        path: &'a str,
        headers: &'a [(&'a str, &'a [u8])],
    ) -> RequestView<'a> {
        RequestView {
            method,
            path,
            host: "dash.example",
            headers: Headers::new(headers),
            extensions: None,
        }
    }

    fn location(path: &str) -> Option<String> {
        redirect(
            &settings("/login"),
            &view("GET", path, BROWSER),
            HEADER,
            None,
        )
    }

    #[test]
    fn a_browser_is_sent_to_sign_in_with_the_page_it_asked_for() {
        // A raw space is no request path: sent to sign in, but not back there.
        assert_eq!(
            location("/admin/reports?month=11&x=a b").as_deref(),
            Some("/login")
        );
        assert_eq!(
            location("/admin/reports?month=11&sort=-date").as_deref(),
            Some("/login?return_to=%2Fadmin%2Freports%3Fmonth%3D11%26sort%3D-date")
        );
        assert_eq!(location("/").as_deref(), Some("/login?return_to=%2F"));
    }

    /// The open-redirect table: whatever the request path, the `Location` points at the login
    /// page and the return value, decoded, is a local path or absent.
    #[test]
    fn the_return_value_is_only_ever_a_local_path() {
        let long = format!("/admin/{}", "a".repeat(MAX_RETURN_LEN));
        let cases: &[(&str, &str)] = &[
            ("//evil.example", "/login"),
            ("//evil.example/admin", "/login"),
            ("/\\evil.example", "/login"),
            ("/%2F%2Fevil.example", "/login"),
            ("/%2f/evil.example", "/login"),
            ("/%5Cevil.example", "/login"),
            ("/%5cevil.example", "/login"),
            ("https://evil.example/admin", "/login"),
            ("http:evil.example", "/login"),
            ("evil.example/admin", "/login"),
            ("", "/login"),
            ("/admin\r\nLocation: https://evil.example", "/login"),
            ("/admin\nx", "/login"),
            ("/admin\u{0}", "/login"),
            ("/admin/\u{e9}", "/login"),
            (&long, "/login"),
            (
                "/admin/%2e%2e/x",
                "/login?return_to=%2Fadmin%2F%252e%252e%2Fx",
            ),
            (
                "/admin?next=//evil.example",
                "/login?return_to=%2Fadmin%3Fnext%3D%2F%2Fevil.example",
            ),
        ];
        for (path, expected) in cases {
            assert_eq!(location(path).as_deref(), Some(*expected), "{path:?}");
        }
        // A control character once decoded (`/<TAB>/evil.example` is `//evil.example` to a
        // browser), encoded once or twice: every C0 control and DEL, anywhere in the path.
        for byte in (0x00..=0x1f).chain([0x7f]) {
            for path in [
                format!("/%{byte:02X}/evil.example"),
                format!("/%{byte:02x}/evil.example"),
                format!("/%25{byte:02X}/evil.example"),
                format!("/admin/x%{byte:02X}"),
                format!("/admin?next=%2525{byte:02x}"),
            ] {
                assert_eq!(location(&path).as_deref(), Some("/login"), "{path:?}");
                assert!(!is_safe_return(&path), "{path:?}");
            }
        }
        // Twice-encoded `//` and `/\` too.
        for path in ["/%252F/evil.example", "/%255Cevil.example"] {
            assert_eq!(location(path).as_deref(), Some("/login"), "{path:?}");
        }
        // Exactly at the limit it is still sent back.
        let at_limit = format!("/{}", "a".repeat(MAX_RETURN_LEN - 1));
        assert!(location(&at_limit).is_some_and(|l| l.len() > MAX_RETURN_LEN));
    }

    #[test]
    fn the_login_page_itself_is_never_redirected() {
        assert_eq!(location("/login"), None);
        assert_eq!(location("/login?return_to=%2Fadmin"), None);
        let absolute = settings("https://auth.example/signin?app=dash");
        let request = view("GET", "/signin", BROWSER);
        assert_eq!(redirect(&absolute, &request, HEADER, None), None);
        // Its neighbours are pages like any other.
        assert!(location("/login/help").is_some());
        assert!(location("/logins").is_some());
    }

    #[test]
    fn an_absolute_login_url_and_one_with_a_query() {
        let absolute = settings("https://auth.example/signin?app=dash");
        let request = view("GET", "/admin", BROWSER);
        assert_eq!(
            redirect(&absolute, &request, HEADER, None).as_deref(),
            Some("https://auth.example/signin?app=dash&return_to=%2Fadmin")
        );
        let custom = Settings {
            return_param: ReturnParam::parse("rd").unwrap(),
            ..settings("https://auth.example")
        };
        assert_eq!(
            redirect(&custom, &request, HEADER, None).as_deref(),
            Some("https://auth.example?rd=%2Fadmin")
        );
    }

    /// Who is sent: method × navigation signal × credential × route setting.
    #[test]
    fn only_browser_navigations_with_get_or_head_are_sent() {
        let login = settings("/login");
        let navigate: &[(&str, &[u8])] = &[("sec-fetch-mode", b"navigate")];
        let html: &[(&str, &[u8])] = &[("Accept", b"text/html")];
        let html_with_q: &[(&str, &[u8])] = &[("accept", b"application/json, TEXT/HTML;q=0.9")];
        let cookie: &[(&str, &[u8])] = &[("accept", b"text/html"), ("cookie", b"session=dead")];
        let fetch: &[(&str, &[u8])] = &[("sec-fetch-mode", b"cors"), ("accept", b"text/html")];
        let api: &[(&str, &[u8])] = &[("accept", b"application/json")];
        let any: &[(&str, &[u8])] = &[("accept", b"*/*")];
        let html_ish: &[(&str, &[u8])] = &[("accept", b"text/htmlx")];
        let none: &[(&str, &[u8])] = &[];
        let sent = |method, headers: &[(&str, &[u8])], route| {
            redirect(&login, &view(method, "/admin", headers), HEADER, route).is_some()
        };
        for headers in [navigate, html, html_with_q, cookie, BROWSER] {
            assert!(sent("GET", headers, None), "{headers:?}");
            assert!(sent("HEAD", headers, None), "{headers:?}");
            assert!(sent("GET", headers, Some(true)));
            assert!(!sent("GET", headers, Some(false)), "route");
            // An API client's credential, in any letter case, valid or not.
            let mut with_token = headers.to_vec();
            with_token.push(("X-Session-Token", b"dead"));
            assert!(!sent("GET", &with_token, None), "API client");
            for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "get", "head"] {
                assert!(!sent(method, headers, None), "{method}");
            }
        }
        for headers in [fetch, api, any, html_ish, none] {
            assert!(!sent("GET", headers, None), "{headers:?}");
        }
        let unset = Settings::default();
        let request = view("GET", "/admin", BROWSER);
        assert_eq!(redirect(&unset, &request, HEADER, None), None);
    }

    #[test]
    fn login_url_and_return_param_values() {
        for good in [
            "/login",
            "/auth/sign-in?app=dash",
            "https://auth.example/login",
            "http://localhost:8080/login",
            " /login ",
        ] {
            assert!(LoginUrl::parse(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "login",
            "//evil.example/login",
            "/\\evil.example",
            "/log in",
            "/login#top",
            "/log\nin",
            "ftp://auth.example/login",
            "https://user:pw@auth.example/login",
            "https://user@auth.example/login",
            "https:///login",
            "javascript:alert(1)",
            "/logín",
        ] {
            assert_eq!(LoginUrl::parse(bad), Err(LOGIN_URL_EXPECTED), "{bad:?}");
        }
        for good in ["return_to", "rd", "next", "a.b-c~d_e", &"r".repeat(64)] {
            assert!(ReturnParam::parse(good).is_ok(), "{good:?}");
        }
        for bad in ["", "return to", "a=b", "a&b", "ré", &"r".repeat(65)] {
            assert_eq!(
                ReturnParam::parse(bad),
                Err(RETURN_PARAM_EXPECTED),
                "{bad:?}"
            );
        }
    }
}
