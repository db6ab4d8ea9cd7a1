//! Cross-site request refusal (pure): a browser attaches the session cookie to every request
//! to the dashboard, a form posted from another site included, so a request that may change
//! state and carries the cookie must come from the dashboard's own pages.
//!
//! The rules are those of Go 1.25's `net/http.CrossOriginProtection` (docs/architecture.md,
//! "Cross-site requests"): GET, HEAD and OPTIONS always pass; otherwise `sec-fetch-site` decides
//! when the browser sends it (`same-origin` and `none` pass), and without it `origin` must be
//! absent or name the request's own host; an origin in `csrf_trusted_origins` passes either way.
//! A session sent in a header is exempt: browsers never add a header by themselves.

use url::Url;

use crate::credential::Source;
use crate::request::{Headers, RequestView};

/// What the core needs to know of the `csrf` keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Whether the check runs. It is the default for every request; the check itself takes no
    /// switch, so that a per-route setting can replace this one request by request.
    pub enabled: bool,
    pub trusted_origins: TrustedOrigins,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            enabled: true,
            trusted_origins: TrustedOrigins::default(),
        }
    }
}

/// Why a request was taken for a cross-site one: a fixed word for the debug log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrossSite {
    /// `sec-fetch-site` is neither `same-origin` nor `none` (`same-site` too: another
    /// subdomain may be another tenant).
    FetchSite,
    /// No `sec-fetch-site`, and `origin` names neither the request's host nor a trusted origin
    /// (or is `null`, repeated, or no URL).
    Origin,
}

impl CrossSite {
    pub fn as_str(self) -> &'static str {
        match self {
            CrossSite::FetchSite => "sec-fetch-site",
            CrossSite::Origin => "origin",
        }
    }
}

/// Whether `request`, whose credential came from `source`, is a cross-site request that may
/// change state, and why. `None`: let it go on to the validator.
pub fn cross_site(
    request: &RequestView<'_>,
    source: Source,
    trusted: &TrustedOrigins,
) -> Option<CrossSite> {
    // Methods are case-sensitive tokens: `post` or `get` is no safe method.
    if source == Source::Header || matches!(request.method, "GET" | "HEAD" | "OPTIONS") {
        return None;
    }
    let origin = field(request.headers, "origin");
    let trusted_origin = matches!(origin, Field::One(value) if trusted.contains(value));
    match field(request.headers, "sec-fetch-site") {
        Field::Absent => {}
        Field::One(b"same-origin" | b"none") => return None,
        _ if trusted_origin => return None,
        _ => return Some(CrossSite::FetchSite),
    }
    match origin {
        // No browser leaves out both headers on a cross-origin request that may change state.
        Field::Absent => None,
        Field::One(value) if trusted_origin || names_host(value, request.host) => None,
        Field::One(_) | Field::Repeated => Some(CrossSite::Origin),
    }
}

/// A request header that must hold one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field<'a> {
    /// Not sent, or sent empty (as Go reads it).
    Absent,
    /// The one value, surrounding blanks trimmed.
    One(&'a [u8]),
    /// Sent more than once, or comma-joined (as Envoy joins repeats): not one value to trust.
    Repeated,
}

fn field<'a>(headers: Headers<'a>, name: &str) -> Field<'a> {
    let mut found = Field::Absent;
    for value in headers.all(name) {
        let value = value.trim_ascii();
        if value.is_empty() {
            continue;
        }
        if found != Field::Absent || value.contains(&b',') {
            return Field::Repeated;
        }
        found = Field::One(value);
    }
    found
}

/// Whether an `origin` value's host and port are the request's host (`:authority`), letter case
/// aside. The scheme is not compared: the host carries none, as in Go; `sec-fetch-site`, sent by
/// every current browser, tells an `http://` page from an `https://` one.
fn names_host(origin: &[u8], host: &str) -> bool {
    let Some(url) = std::str::from_utf8(origin)
        .ok()
        .and_then(|text| Url::parse(text).ok())
    else {
        return false; // `null` included
    };
    let Some(origin_host) = url.host_str() else {
        return false;
    };
    if !matches!(url.scheme(), "http" | "https") || host.is_empty() {
        return false;
    }
    // The URL parser dropped a default port; a host that names one is compared as written.
    match url.port() {
        None => origin_host.eq_ignore_ascii_case(host),
        Some(port) => host.rsplit_once(':').is_some_and(|(name, p)| {
            name.eq_ignore_ascii_case(origin_host) && p == port.to_string()
        }),
    }
}

/// Origins allowed to send cookie requests that may change state (`csrf_trusted_origins`), each
/// exactly as a browser sends it in `origin`: `http(s)://host[:port]`, lowercase, no default
/// port. Built only by [`TrustedOrigins::parse`], so every entry can match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedOrigins(Vec<String>);

/// What [`TrustedOrigins::parse`] accepts, for the configuration's error message.
pub const TRUSTED_ORIGINS_EXPECTED: &str =
    "expected origins as browsers send them, comma-separated: \
     http:// or https://, a lowercase host (punycode), a port only if not the scheme's default, \
     no path, query, user-info or wildcard; like https://admin.example,http://localhost:3000";

impl TrustedOrigins {
    /// Checks each entry (surrounding blanks trimmed); an empty entry is an error, so that a
    /// stray comma is not taken for "no origin".
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, &'static str> {
        entries
            .into_iter()
            .map(|entry| trusted_origin(entry.trim()))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    fn contains(&self, origin: &[u8]) -> bool {
        self.0.iter().any(|trusted| trusted.as_bytes() == origin)
    }
}

/// An origin in exactly the form browsers send (the URL's own origin serialization), or why not:
/// any other spelling (`HTTPS://`, `:443`, a trailing `/`) would never match and silently trust
/// nothing.
fn trusted_origin(text: &str) -> Result<String, &'static str> {
    let url = Url::parse(text).map_err(|_| TRUSTED_ORIGINS_EXPECTED)?;
    // A URL host may hold `*`; no browser's origin does, and it would read as a wildcard.
    if !matches!(url.scheme(), "http" | "https") || text.contains('*') {
        return Err(TRUSTED_ORIGINS_EXPECTED);
    }
    let origin = url.origin().ascii_serialization();
    if origin != text {
        return Err(TRUSTED_ORIGINS_EXPECTED);
    }
    Ok(origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "dash.example";

    fn trusted(entries: &[&str]) -> TrustedOrigins {
        TrustedOrigins::parse(entries.iter().copied()).unwrap()
    }

    fn check(
        method: &str,
        host: &str,
        source: Source,
        headers: &[(&str, &str)],
        trusted: &TrustedOrigins,
    ) -> Option<CrossSite> {
        let headers: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(name, value)| (*name, value.as_bytes()))
            .collect();
        let request = RequestView {
            method,
            path: "/admin",
            host,
            headers: Headers::new(&headers),
            extensions: None,
        };
        cross_site(&request, source, trusted)
    }

    const PASS: Option<CrossSite> = None;
    const FETCH: Option<CrossSite> = Some(CrossSite::FetchSite);
    const ORIGIN: Option<CrossSite> = Some(CrossSite::Origin);

    /// `sec-fetch-site` × `origin` for a cookie on POST, the request's host `dash.example`.
    /// `None` in a column: the header is not sent.
    #[test]
    fn fetch_site_by_origin_for_a_cookie_post() {
        let same = Some("https://dash.example");
        let evil = Some("https://evil.example");
        let table: &[(Option<&str>, Option<&str>, Option<CrossSite>)] = &[
            // The browser says where the request comes from: that decides, origin or not.
            (Some("same-origin"), None, PASS),
            (Some("same-origin"), same, PASS),
            (Some("same-origin"), evil, PASS),
            (Some("none"), None, PASS),
            (Some("none"), evil, PASS),
            (Some("same-site"), None, FETCH),
            (Some("same-site"), same, FETCH),
            (Some("same-site"), evil, FETCH),
            (Some("cross-site"), None, FETCH),
            (Some("cross-site"), same, FETCH),
            (Some("cross-site"), evil, FETCH),
            // Exact words, as browsers send them.
            (Some("Same-Origin"), same, FETCH),
            (Some("SAME-ORIGIN"), None, FETCH),
            (Some("same-origin, cross-site"), same, FETCH),
            (Some("cross-site,same-origin"), same, FETCH),
            (Some("bogus"), same, FETCH),
            (Some(" same-origin "), None, PASS),
            // Sent empty: read as not sent, as Go does.
            (Some(""), same, PASS),
            (Some(""), evil, ORIGIN),
            // An older browser: origin decides.
            (None, None, PASS),
            (None, Some(""), PASS),
            (None, same, PASS),
            (None, Some("http://dash.example"), PASS),
            (None, Some("https://DASH.example"), PASS),
            (None, Some("https://dash.example/some/path"), PASS),
            (None, evil, ORIGIN),
            (None, Some("https://dash.example.evil.example"), ORIGIN),
            (
                None,
                Some("https://evil.example/https://dash.example"),
                ORIGIN,
            ),
            (None, Some("https://sub.dash.example"), ORIGIN),
            (None, Some("https://dash.example:8443"), ORIGIN),
            (None, Some("null"), ORIGIN),
            (None, Some("dash.example"), ORIGIN),
            (None, Some("ftp://dash.example"), ORIGIN),
            (None, Some("file:///etc/passwd"), ORIGIN),
            (
                None,
                Some("https://dash.example, https://dash.example"),
                ORIGIN,
            ),
            (
                None,
                Some("https://dash.example,https://evil.example"),
                ORIGIN,
            ),
        ];
        for (fetch_site, origin, expected) in table {
            let mut headers = vec![("cookie", "session=t")];
            headers.extend(fetch_site.map(|v| ("sec-fetch-site", v)));
            headers.extend(origin.map(|v| ("origin", v)));
            let got = check(
                "POST",
                HOST,
                Source::Cookie,
                &headers,
                &TrustedOrigins::default(),
            );
            assert_eq!(
                got, *expected,
                "sec-fetch-site {fetch_site:?}, origin {origin:?}"
            );
        }
    }

    /// Every method × credential source, for a request that is plainly cross-site.
    #[test]
    fn only_unsafe_methods_with_a_cookie_are_checked() {
        let cross = [
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
        ];
        let methods = [
            ("GET", PASS),
            ("HEAD", PASS),
            ("OPTIONS", PASS),
            ("POST", FETCH),
            ("PUT", FETCH),
            ("PATCH", FETCH),
            ("DELETE", FETCH),
            ("CONNECT", FETCH),
            ("TRACE", FETCH),
            ("PROPFIND", FETCH),
            // Method names are case-sensitive: these are not GET or HEAD.
            ("get", FETCH),
            ("Head", FETCH),
            ("options", FETCH),
            ("", FETCH),
        ];
        for (method, expected) in methods {
            let none = TrustedOrigins::default();
            assert_eq!(
                check(method, HOST, Source::Cookie, &cross, &none),
                expected,
                "cookie {method:?}"
            );
            assert_eq!(
                check(method, HOST, Source::Header, &cross, &none),
                PASS,
                "header {method:?}"
            );
        }
    }

    #[test]
    fn header_names_in_any_case_and_repeats() {
        let none = TrustedOrigins::default();
        let cookie_post =
            |headers: &[(&str, &str)]| check("POST", HOST, Source::Cookie, headers, &none);
        assert_eq!(cookie_post(&[("Sec-Fetch-Site", "cross-site")]), FETCH);
        assert_eq!(cookie_post(&[("ORIGIN", "https://evil.example")]), ORIGIN);
        assert_eq!(cookie_post(&[("Origin", "https://dash.example")]), PASS);
        // Two entries (Envoy's raw header_map keeps repeats apart): neither is believed.
        assert_eq!(
            cookie_post(&[
                ("origin", "https://dash.example"),
                ("origin", "https://dash.example"),
            ]),
            ORIGIN
        );
        assert_eq!(
            cookie_post(&[
                ("sec-fetch-site", "same-origin"),
                ("sec-fetch-site", "same-origin"),
            ]),
            FETCH
        );
        // An empty copy next to a real one is no repeat.
        assert_eq!(
            cookie_post(&[("origin", ""), ("origin", "https://dash.example")]),
            PASS
        );
        // Bytes that are no text are no origin.
        let headers: [(&str, &[u8]); 1] = [("origin", b"https://dash.example\xff")];
        let request = RequestView {
            method: "POST",
            path: "/",
            host: HOST,
            headers: Headers::new(&headers),
            extensions: None,
        };
        assert_eq!(cross_site(&request, Source::Cookie, &none), ORIGIN);
    }

    /// The origin's host and port against the request's host (`:authority`).
    #[test]
    fn origin_against_the_host_and_port() {
        let none = TrustedOrigins::default();
        let cases = [
            ("http://127.0.0.1:8080", "127.0.0.1:8080", PASS),
            ("http://127.0.0.1:8080", "127.0.0.1:8081", ORIGIN),
            ("http://127.0.0.1:8080", "127.0.0.1", ORIGIN),
            ("http://127.0.0.1", "127.0.0.1:8080", ORIGIN),
            ("http://[::1]:8080", "[::1]:8080", PASS),
            ("http://[::1]", "[::1]", PASS),
            ("https://dash.example", "DASH.EXAMPLE", PASS),
            ("https://dash.example:8443", "dash.example:8443", PASS),
            // A default port is dropped from the origin; a host that names it is another
            // spelling, refused like Go refuses it.
            ("https://dash.example:443", "dash.example", PASS),
            ("https://dash.example", "dash.example:443", ORIGIN),
            ("https://dash.example:443", "dash.example:443", ORIGIN),
            // A missing host is never a match, not even for an origin without one.
            ("https://dash.example", "", ORIGIN),
            ("null", "", ORIGIN),
            ("https://", "", ORIGIN),
        ];
        for (origin, host, expected) in cases {
            assert_eq!(
                check("POST", host, Source::Cookie, &[("origin", origin)], &none),
                expected,
                "origin {origin:?} host {host:?}"
            );
        }
    }

    #[test]
    fn trusted_origins_pass_whatever_sec_fetch_site_says() {
        let list = trusted(&["https://admin.example", "http://localhost:3000"]);
        let cookie_post =
            |headers: &[(&str, &str)]| check("POST", HOST, Source::Cookie, headers, &list);
        for fetch_site in ["cross-site", "same-site"] {
            let from = |origin| cookie_post(&[("sec-fetch-site", fetch_site), ("origin", origin)]);
            assert_eq!(from("https://admin.example"), PASS, "{fetch_site}");
            assert_eq!(from("http://localhost:3000"), PASS, "{fetch_site}");
            assert_eq!(from("https://evil.example"), FETCH, "{fetch_site}");
            // Exactly as listed: another scheme, port or spelling is another origin.
            assert_eq!(from("http://admin.example"), FETCH, "{fetch_site}");
            assert_eq!(from("https://admin.example:8443"), FETCH, "{fetch_site}");
            assert_eq!(from("https://ADMIN.example"), FETCH, "{fetch_site}");
            assert_eq!(from("https://admin.example/"), FETCH, "{fetch_site}");
            assert_eq!(from("http://localhost:3001"), FETCH, "{fetch_site}");
            assert_eq!(from("null"), FETCH, "{fetch_site}");
        }
        assert_eq!(cookie_post(&[("origin", "https://admin.example")]), PASS);
        assert_eq!(cookie_post(&[("origin", "https://evil.example")]), ORIGIN);
        // A repeated origin is not a trusted one.
        assert_eq!(
            cookie_post(&[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://admin.example"),
                ("origin", "https://admin.example"),
            ]),
            FETCH
        );
        // Trust is no reason to doubt a request: no origin still passes.
        assert_eq!(cookie_post(&[]), PASS);
    }

    #[test]
    fn trusted_origins_are_exactly_what_browsers_send() {
        let good = [
            "https://admin.example",
            "http://localhost:3000",
            "http://127.0.0.1:8080",
            "http://[::1]:8080",
            "https://xn--bcher-kva.example",
        ];
        let parsed = trusted(&good);
        assert_eq!(parsed.as_slice(), good);
        // Blanks around an entry are not part of it.
        assert_eq!(
            trusted(&[" https://a.example ", "\thttp://b.example"]).as_slice(),
            ["https://a.example", "http://b.example"]
        );
        assert_eq!(trusted(&[]), TrustedOrigins::default());
        for bad in [
            "",
            " ",
            "admin.example",
            "//admin.example",
            "https://",
            "https://admin.example/",
            "https://admin.example/path",
            "https://admin.example?x=1",
            "https://admin.example#x",
            "https://user@admin.example",
            "https://user:pw@admin.example",
            "HTTPS://admin.example",
            "https://Admin.example",
            "https://admin.example:443",
            "http://admin.example:80",
            "https://bücher.example",
            "ftp://admin.example",
            "chrome-extension://abcdef",
            "null",
            "*",
            "https://*.example",
            "https://a.example,https://b.example",
        ] {
            assert_eq!(
                TrustedOrigins::parse([bad]),
                Err(TRUSTED_ORIGINS_EXPECTED),
                "{bad:?}"
            );
        }
        // One bad entry spoils the list.
        assert!(TrustedOrigins::parse(["https://a.example", ""]).is_err());
    }
}
