//! The forward-auth door: plain HTTP, as nginx `auth_request`, Caddy `forward_auth`, Traefik
//! `forwardAuth`, Envoy's `http_service` and Istio's `envoyExtAuthzHttp` ask. Every request on
//! its listener is one check: it finds the original request's method, URI and host
//! ([`original`]), asks the core, and answers 200 (allow, with the identity headers) or the
//! denial every door sends ([`super::denial`]) — nothing else.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::SET_COOKIE;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};

use super::{denial, sign_in_headers, IdentityHeaders};
use crate::authorize::{Authorizer, CachedValidator, Checked, Live, Verdicts};
use crate::decision::{Decision, DenyStatus};
use crate::listener::Limits;
use crate::request::{Headers, RequestView};

/// The forward-auth listener's limits: a proxy holds one connection per check in flight, so
/// far more than the ops port's; headers within 5 s, and an idle kept-alive connection is
/// closed after 5 s too (a proxy's pool should let idle connections go sooner).
pub const LIMITS: Limits = Limits {
    name: "forward_auth",
    max_connections: 1024,
    header_read_timeout: std::time::Duration::from_secs(5),
};

/// Every answer's body: empty on an allow and a sign-in, the JSON error on a denial.
pub type Body = Full<Bytes>;

/// Answers forward-auth checks on the core.
#[derive(Debug)]
pub struct ForwardAuth<V = CachedValidator> {
    core: Arc<Authorizer<V>>,
    /// What the proxy puts before the original path when it sends that as the request's own
    /// (Envoy's `path_prefix`); `None`: the whole path is the original one.
    prefix: Option<String>,
    /// The identity header names of the configuration in force, as this door sends them;
    /// made again when a reload brings another configuration.
    named: ArcSwap<NamedFor>,
}

/// [`Named`] and the configuration it was made from.
#[derive(Debug)]
struct NamedFor {
    live: Arc<Live>,
    named: Named,
}

impl NamedFor {
    fn new(live: Arc<Live>) -> Self {
        let named = Named::new(live.identity_headers());
        Self { live, named }
    }
}

impl<V: Verdicts + 'static> ForwardAuth<V> {
    pub fn new(core: Arc<Authorizer<V>>, prefix: Option<String>) -> Self {
        let named = ArcSwap::from_pointee(NamedFor::new(core.live()));
        Self {
            core,
            prefix,
            named,
        }
    }

    /// The door as a hyper service: every path and method is a check.
    pub fn service(self) -> Door<V> {
        Door(Arc::new(self))
    }

    /// The answer to one forward-auth request (its body is never read).
    pub async fn answer(&self, request: &Parts) -> Response<Body> {
        let (headers, forwarding) = read_headers(&request.headers);
        let headers = Headers::new(&headers);
        // One configuration decides and names the headers, even across a reload.
        let live = self.core.live();
        let original = forwarding.and_then(|forwarding| {
            original(&Own::of(request), &forwarding, self.prefix.as_deref())
        });
        let (checked, sign_in) = match original {
            Ok(original) => {
                let view = RequestView {
                    method: original.method,
                    path: original.path,
                    host: original.host,
                    headers,
                    // Per-route rules come from the `[[routes]]` table only.
                    extensions: None,
                };
                let checked = self.core.authorize_by(&live, &view).await;
                (checked, original.sign_in)
            }
            Err(why) => {
                // A proxy that sends these wrongly is misconfigured, or a client forged them
                // where the proxy lets them through: either way, no guess.
                tracing::debug!(why = why.as_str(), "forward-auth request unreadable");
                (self.core.unreadable(), SignInAs::Found)
            }
        };
        let current = self.named.load();
        if Arc::ptr_eq(&current.live, &live) {
            return response(&checked, &current.named, sign_in);
        }
        // A reload since the names were made: make them for this Check's configuration.
        let fresh = Arc::new(NamedFor::new(live));
        let answer = response(&checked, &fresh.named, sign_in);
        self.named.store(fresh);
        answer
    }
}

/// [`ForwardAuth`] as hyper serves it: no router in between, since every request is the one
/// check.
#[derive(Debug)]
pub struct Door<V = CachedValidator>(Arc<ForwardAuth<V>>);

impl<V> Clone for Door<V> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<V: Verdicts + 'static> Door<V> {
    /// The door this serves.
    pub fn forward_auth(&self) -> &ForwardAuth<V> {
        &self.0
    }
}

impl<V: Verdicts + 'static> hyper::service::Service<Request<Incoming>> for Door<V> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let door = self.0.clone();
        // Split here, so that the boxed future holds the parts only (the body is never read).
        let (parts, _) = request.into_parts();
        Box::pin(async move { Ok(door.answer(&parts).await) })
    }
}

/// One configuration's identity header names as `http`'s own, and every
/// `x-envoy-auth-headers-to-remove` value an allow can need (one per set of fields the
/// validator left empty), made once per configuration rather than parsed on every allow.
#[derive(Debug)]
pub struct Named {
    /// In [`IdentityHeaders::names`]' order; `None` when one is no header name (the
    /// configuration check refuses that), and then no allow can be sent.
    fields: Option<[HeaderName; 4]>,
    /// Indexed by the set of absent fields, bit `i` for field `i`.
    removals: Vec<Option<HeaderValue>>,
}

const REMOVE: HeaderName = HeaderName::from_static("x-envoy-auth-headers-to-remove");

impl Named {
    pub fn new(names: &IdentityHeaders) -> Self {
        let list = names.names();
        let fields = match list.map(|name| HeaderName::from_bytes(name.as_bytes()).ok()) {
            [Some(user), Some(roles), Some(email), Some(assertion)] => {
                Some([user, roles, email, assertion])
            }
            _ => None,
        };
        let removals = (0..1usize << list.len())
            .map(|absent| {
                let named: Vec<&str> = (0..list.len())
                    .filter(|field| absent & 1 << field != 0)
                    .map(|field| list[field])
                    .collect();
                HeaderValue::from_str(&named.join(",")).ok()
            })
            .collect();
        Self { fields, removals }
    }
}

/// The forward-auth request's own line and authority.
#[derive(Clone, Copy, Debug)]
pub struct Own<'a> {
    pub method: &'a str,
    /// Path and query as received.
    pub target: &'a str,
    /// From an absolute-form target, if the request had one.
    pub authority: Option<&'a str>,
}

impl<'a> Own<'a> {
    /// The line and authority of the request hyper read.
    pub fn of(request: &'a Parts) -> Self {
        Self {
            method: request.method.as_str(),
            target: request
                .uri
                .path_and_query()
                .map_or_else(|| request.uri.path(), |target| target.as_str()),
            authority: request.uri.authority().map(|a| a.as_str()),
        }
    }
}

/// The request the proxy asks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Original<'a> {
    pub method: &'a str,
    /// Path and query, starting with `/`.
    pub path: &'a str,
    pub host: &'a str,
    /// How the proxy that asked can pass a sign-in redirect on.
    pub sign_in: SignInAs,
}

/// The answer that sends a browser to sign in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignInAs {
    /// The 302 with its `Location`, passed to the client as it is (Traefik, Caddy, Envoy).
    Found,
    /// The 401 with the sign-in target in `Location`: nginx's `auth_request` (the
    /// `X-Original-*` convention) knows only 2xx, 401 and 403 and makes any other answer its
    /// own 500, so its `error_page 401` redirects with `$upstream_http_location`.
    Unauthorized,
}

/// Why the original request cannot be read from a forward-auth request: a 400, never a guess.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreadable {
    /// One of the headers below came more than once.
    Repeated(&'static str),
    /// A method header without its URI header, or the other way round.
    Incomplete(&'static str),
    /// Both conventions, naming different requests.
    Conflicting,
    /// A method that is not an HTTP token.
    BadMethod,
    /// A URI that is not a path (and query) starting with `/`, in visible ASCII.
    BadUri,
    /// A host that is not visible ASCII.
    BadHost,
    /// The request's own path is not under `forward_auth_path_prefix`.
    OutsidePrefix,
}

impl Unreadable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unreadable::Repeated(_) => "repeated",
            Unreadable::Incomplete(_) => "incomplete",
            Unreadable::Conflicting => "conflicting",
            Unreadable::BadMethod => "bad_method",
            Unreadable::BadUri => "bad_uri",
            Unreadable::BadHost => "bad_host",
            Unreadable::OutsidePrefix => "outside_prefix",
        }
    }
}

const FORWARDED_METHOD: &str = "x-forwarded-method";
const FORWARDED_URI: &str = "x-forwarded-uri";
const FORWARDED_HOST: &str = "x-forwarded-host";
const ORIGINAL_METHOD: &str = "x-original-method";
const ORIGINAL_URI: &str = "x-original-uri";

/// The headers [`original`] reads, each sent at most once: in this order, `None` when absent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Forwarding<'a> {
    pub forwarded_method: Option<&'a HeaderValue>,
    pub forwarded_uri: Option<&'a HeaderValue>,
    pub original_method: Option<&'a HeaderValue>,
    pub original_uri: Option<&'a HeaderValue>,
    pub forwarded_host: Option<&'a HeaderValue>,
    pub host: Option<&'a HeaderValue>,
}

/// The pairs a [`Headers`] view is made of.
pub type Pairs<'a> = Vec<(&'a str, &'a [u8])>;

/// Every header as the core reads them (`(name, value)` in the order hyper keeps them, with a
/// power-of-two capacity: mimalloc serves those sizes from its free lists, where the aligned
/// allocation Rust asks for takes a slow path for other sizes above 128 bytes), and
/// [`Forwarding`]'s picked out in the same pass; one of those sent twice is the error, never a
/// pick. hyper's names are lower case, so each is matched exactly.
pub fn read_headers(map: &HeaderMap) -> (Pairs<'_>, Result<Forwarding<'_>, Unreadable>) {
    let mut headers = Vec::with_capacity(map.len().next_power_of_two());
    let mut forwarding = Forwarding::default();
    let mut repeated = None;
    for (name, value) in map {
        headers.push((name.as_str(), value.as_bytes()));
        let (slot, name) = match name.as_str() {
            FORWARDED_METHOD => (&mut forwarding.forwarded_method, FORWARDED_METHOD),
            FORWARDED_URI => (&mut forwarding.forwarded_uri, FORWARDED_URI),
            ORIGINAL_METHOD => (&mut forwarding.original_method, ORIGINAL_METHOD),
            ORIGINAL_URI => (&mut forwarding.original_uri, ORIGINAL_URI),
            FORWARDED_HOST => (&mut forwarding.forwarded_host, FORWARDED_HOST),
            "host" => (&mut forwarding.host, "host"),
            _ => continue,
        };
        if slot.replace(value).is_some() && repeated.is_none() {
            repeated = Some(Unreadable::Repeated(name));
        }
    }
    (headers, repeated.map_or(Ok(forwarding), Err))
}

/// The original method, URI and host: from `X-Forwarded-Method` + `X-Forwarded-Uri` (Traefik,
/// Caddy), or `X-Original-Method` + `X-Original-URI` (nginx), or else the request's own method
/// and target with `prefix` taken off (Envoy's `http_service`, Istio). The host is
/// `X-Forwarded-Host` when sent, else the request's own `Host`. Both conventions at once are
/// accepted only when they agree; half a pair, a value that is not visible ASCII, a method that
/// is not a token or a URI not starting with `/` is [`Unreadable`] (a repeated header already
/// is, by [`read_headers`]).
pub fn original<'a>(
    own: &Own<'a>,
    forwarding: &Forwarding<'a>,
    prefix: Option<&str>,
) -> Result<Original<'a>, Unreadable> {
    let Forwarding {
        forwarded_method,
        forwarded_uri,
        original_method,
        original_uri,
        forwarded_host,
        host: own_host,
    } = *forwarding;
    let forwarded = pair(
        forwarded_method,
        forwarded_uri,
        FORWARDED_METHOD,
        FORWARDED_URI,
    )?;
    let nginx = pair(original_method, original_uri, ORIGINAL_METHOD, ORIGINAL_URI)?;
    let sign_in = if nginx.is_some() {
        SignInAs::Unauthorized
    } else {
        SignInAs::Found
    };
    let (method, path) = match (forwarded, nginx) {
        (Some(forwarded), Some(nginx)) if forwarded != nginx => {
            return Err(Unreadable::Conflicting)
        }
        (Some(given), _) | (None, Some(given)) => given,
        (None, None) => {
            let path = match prefix {
                None => own.target,
                Some(prefix) => own
                    .target
                    .strip_prefix(prefix)
                    .ok_or(Unreadable::OutsidePrefix)?,
            };
            (own.method, path)
        }
    };
    if !is_token(method) {
        return Err(Unreadable::BadMethod);
    }
    if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Unreadable::BadUri);
    }
    let own_host = text(own_host, Unreadable::BadHost)?.or(own.authority);
    let host = text(forwarded_host, Unreadable::BadHost)?
        .or(own_host)
        .unwrap_or_default();
    if !host.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Unreadable::BadHost);
    }
    Ok(Original {
        method,
        path,
        host,
        sign_in,
    })
}

/// A method header and its URI header (named `method` and `uri`): both or neither, as text.
fn pair<'a>(
    method_value: Option<&'a HeaderValue>,
    uri_value: Option<&'a HeaderValue>,
    method: &'static str,
    uri: &'static str,
) -> Result<Option<(&'a str, &'a str)>, Unreadable> {
    let method_value = text(method_value, Unreadable::BadMethod)?;
    let uri_value = text(uri_value, Unreadable::BadUri)?;
    match (method_value, uri_value) {
        (Some(method), Some(uri)) => Ok(Some((method, uri))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(Unreadable::Incomplete(uri)),
        (None, Some(_)) => Err(Unreadable::Incomplete(method)),
    }
}

/// A header's value as text: visible ASCII (what each use, a method, a URI, a host, accepts
/// at most; `to_str` checks that without a UTF-8 pass); one that is not is `why`.
fn text(value: Option<&HeaderValue>, why: Unreadable) -> Result<Option<&str>, Unreadable> {
    value
        .map(|value| value.to_str().map_err(|_| why))
        .transpose()
}

/// An HTTP method is a token (RFC 9110 `tchar`s), at least one.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The core's answer as this door's: exactly 200 with the identity headers on an allow; the
/// shared denial otherwise; a 302 to sign in, or for nginx the 401 naming it ([`SignInAs`]).
/// The validator's `Set-Cookie`s go with each, one header apiece.
pub fn response(checked: &Checked, named: &Named, sign_in: SignInAs) -> Response<Body> {
    let built = match &checked.decision {
        Decision::Allow { identity, .. } => allowed(
            named,
            identity,
            checked.assertion.as_deref(),
            &checked.set_cookies,
        ),
        Decision::Deny { status, reason } => denied(*status, *reason, None, &checked.set_cookies),
        Decision::SignIn { location, reason } => match sign_in {
            SignInAs::Found => build(
                StatusCode::FOUND,
                sign_in_headers(location).to_vec(),
                &checked.set_cookies,
                String::new(),
            ),
            SignInAs::Unauthorized => denied(
                DenyStatus::Unauthenticated,
                *reason,
                Some(("location", location.clone())),
                &checked.set_cookies,
            ),
        },
    };
    // A value the contract let through is always a valid header; failing that, no allow.
    built.unwrap_or_else(|| {
        let fallback = denial(DenyStatus::Unavailable, checked.decision.reason());
        tracing::warn!("forward-auth answer has an unsendable header value; answering 503");
        build_lossy(fallback.code, fallback.headers, fallback.body)
    })
}

/// The 200: each identity field the validator filled in its header; the others named in
/// `x-envoy-auth-headers-to-remove`, for Envoy's `http_service` removes these from the upstream
/// request (a client's own copy of a field the validator did not fill must not reach the app).
fn allowed(
    named: &Named,
    identity: &crate::contract::Identity,
    assertion: Option<&str>,
    set_cookies: &[String],
) -> Option<Response<Body>> {
    let fields = named.fields.as_ref()?;
    let mut response = Response::new(Body::default());
    let headers = response.headers_mut();
    let mut absent = 0;
    let values = IdentityHeaders::values(identity, assertion);
    for (field, (name, value)) in fields.iter().zip(values).enumerate() {
        match value {
            Some(value) => {
                headers.insert(name, HeaderValue::from_bytes(value.as_bytes()).ok()?);
            }
            None => absent |= 1 << field,
        }
    }
    if absent != 0 {
        headers.insert(REMOVE, named.removals.get(absent)?.clone()?);
    }
    for cookie in set_cookies {
        headers.append(SET_COOKIE, HeaderValue::from_bytes(cookie.as_bytes()).ok()?);
    }
    Some(response)
}

/// The shared denial, with one more header when given.
fn denied(
    status: DenyStatus,
    reason: crate::decision::Reason,
    extra: Option<(&'static str, String)>,
    set_cookies: &[String],
) -> Option<Response<Body>> {
    let mut answer = denial(status, reason);
    answer.headers.extend(extra);
    let code = StatusCode::from_u16(answer.code).ok()?;
    build(code, answer.headers, set_cookies, answer.body)
}

fn build(
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    set_cookies: &[String],
    body: String,
) -> Option<Response<Body>> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let map = response.headers_mut();
    for (name, value) in headers {
        map.insert(
            HeaderName::from_static(name),
            HeaderValue::from_bytes(value.as_bytes()).ok()?,
        );
    }
    for cookie in set_cookies {
        map.append(SET_COOKIE, HeaderValue::from_bytes(cookie.as_bytes()).ok()?);
    }
    Some(response)
}

/// The fixed 503, whose headers are all constants.
fn build_lossy(code: u16, headers: Vec<(&'static str, String)>, body: String) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Identity;
    use crate::decision::Reason;

    fn own(method: &'static str, target: &'static str) -> Own<'static> {
        Own {
            method,
            target,
            authority: None,
        }
    }

    /// `headers` as hyper would hand them to the door (names lower-cased), read by
    /// [`read_headers`] and [`original`].
    fn read_bytes(
        own: Own<'static>,
        headers: &[(&str, &[u8])],
        prefix: Option<&str>,
    ) -> Result<Original<'static>, Unreadable> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        // Leaked, so that the `Original` read from it can outlive this call (tests only).
        let map: &'static HeaderMap = Box::leak(Box::new(map));
        let (_, forwarding) = read_headers(map);
        original(&own, &forwarding?, prefix)
    }

    fn read(
        own: Own<'static>,
        headers: &[(&'static str, &'static str)],
        prefix: Option<&str>,
    ) -> Result<Original<'static>, Unreadable> {
        let headers: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(name, value)| (*name, value.as_bytes()))
            .collect();
        read_bytes(own, &headers, prefix)
    }

    fn ok(method: &'static str, path: &'static str, host: &'static str) -> Original<'static> {
        Original {
            method,
            path,
            host,
            sign_in: SignInAs::Found,
        }
    }

    /// [`ok`], as read from nginx's `X-Original-*` headers.
    fn from_nginx(
        method: &'static str,
        path: &'static str,
        host: &'static str,
    ) -> Original<'static> {
        Original {
            sign_in: SignInAs::Unauthorized,
            ..ok(method, path, host)
        }
    }

    #[test]
    fn traefik_and_caddy_send_x_forwarded() {
        let got = read(
            own("GET", "/"),
            &[
                ("host", "authz:9003"),
                ("X-Forwarded-Method", "POST"),
                ("X-Forwarded-Uri", "/admin/settings?tab=1"),
                ("X-Forwarded-Host", "dash.example"),
            ],
            Some("/ignored"),
        );
        assert_eq!(got, Ok(ok("POST", "/admin/settings?tab=1", "dash.example")));
    }

    #[test]
    fn nginx_sends_x_original() {
        let got = read(
            own("GET", "/_auth"),
            &[
                ("host", "dash.example:8080"),
                ("x-original-method", "DELETE"),
                ("x-original-uri", "/admin"),
            ],
            None,
        );
        assert_eq!(got, Ok(from_nginx("DELETE", "/admin", "dash.example:8080")));
    }

    #[test]
    fn envoy_appends_the_path_to_the_prefix() {
        let headers = [("host", "dash.example")];
        assert_eq!(
            read(own("PUT", "/authz/admin?x=1"), &headers, Some("/authz")),
            Ok(ok("PUT", "/admin?x=1", "dash.example"))
        );
        assert_eq!(
            read(own("GET", "/admin"), &headers, None),
            Ok(ok("GET", "/admin", "dash.example"))
        );
        // Nothing, or something that is not a path, after the prefix.
        for target in ["/authz", "/authzadmin", "/other/admin", "/authz?x=1"] {
            let expected = if target.starts_with("/authz") {
                Unreadable::BadUri
            } else {
                Unreadable::OutsidePrefix
            };
            assert_eq!(
                read(own("GET", target), &headers, Some("/authz")),
                Err(expected),
                "{target}"
            );
        }
    }

    #[test]
    fn the_host_falls_back_to_the_absolute_target() {
        let own = Own {
            authority: Some("dash.example"),
            ..own("GET", "/admin")
        };
        assert_eq!(
            read(own, &[], None),
            Ok(ok("GET", "/admin", "dash.example"))
        );
        assert_eq!(
            read(super::tests::own("GET", "/admin"), &[], None),
            Ok(ok("GET", "/admin", ""))
        );
    }

    #[test]
    fn both_conventions_must_agree() {
        let agree = [
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/admin"),
            ("x-original-method", "GET"),
            ("x-original-uri", "/admin"),
        ];
        assert_eq!(
            read(own("GET", "/"), &agree, None),
            Ok(from_nginx("GET", "/admin", ""))
        );
        for (index, other) in [(1, "/public"), (3, "/public"), (0, "POST"), (2, "POST")] {
            let mut headers = agree;
            headers[index].1 = other;
            assert_eq!(
                read(own("GET", "/"), &headers, None),
                Err(Unreadable::Conflicting),
                "{headers:?}"
            );
        }
    }

    #[test]
    fn a_repeat_is_never_picked_from() {
        for name in [
            "x-forwarded-method",
            "x-forwarded-uri",
            "x-forwarded-host",
            "x-original-method",
            "x-original-uri",
            "host",
        ] {
            let mut headers = vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/admin"),
                ("x-forwarded-host", "dash.example"),
                ("x-original-method", "GET"),
                ("x-original-uri", "/admin"),
                ("host", "authz"),
            ];
            // Same value twice, in another letter case: still a repeat.
            let value = headers.iter().find(|(n, _)| *n == name).unwrap().1;
            let upper: &'static str = Box::leak(name.to_ascii_uppercase().into_boxed_str());
            headers.push((upper, value));
            assert_eq!(
                read(own("GET", "/"), &headers, None),
                Err(Unreadable::Repeated(name)),
                "{name}"
            );
        }
    }

    #[test]
    fn half_a_pair_is_incomplete() {
        let cases = [
            ("x-forwarded-method", "GET", "x-forwarded-uri"),
            ("x-forwarded-uri", "/admin", "x-forwarded-method"),
            ("x-original-method", "GET", "x-original-uri"),
            ("x-original-uri", "/admin", "x-original-method"),
        ];
        for (name, value, missing) in cases {
            assert_eq!(
                read(own("GET", "/admin"), &[(name, value)], None),
                Err(Unreadable::Incomplete(missing)),
                "{name}"
            );
        }
    }

    #[test]
    fn methods_must_be_tokens_and_uris_paths() {
        let bad_methods = ["", "GET POST", "GET,POST", "G\u{e9}T", "GET\t", "(GET)"];
        for method in bad_methods {
            let method: &'static str = Box::leak(method.to_owned().into_boxed_str());
            assert_eq!(
                read(
                    own("GET", "/"),
                    &[("x-forwarded-method", method), ("x-forwarded-uri", "/")],
                    None
                ),
                Err(Unreadable::BadMethod),
                "{method:?}"
            );
        }
        // Methods are kept as sent: the core compares them case-sensitively.
        assert_eq!(
            read(
                own("GET", "/"),
                &[("x-original-method", "post"), ("x-original-uri", "/")],
                None
            ),
            Ok(from_nginx("post", "/", ""))
        );
        let bad_uris = [
            "",
            "admin",
            "*",
            "http://dash.example/admin",
            "/ad min",
            "/caf\u{e9}",
            "/a\tb",
        ];
        for uri in bad_uris {
            let uri: &'static str = Box::leak(uri.to_owned().into_boxed_str());
            assert_eq!(
                read(
                    own("GET", "/"),
                    &[("x-original-method", "GET"), ("x-original-uri", uri)],
                    None
                ),
                Err(Unreadable::BadUri),
                "{uri:?}"
            );
        }
        assert_eq!(read(own("GET", "*"), &[], None), Err(Unreadable::BadUri));
        assert_eq!(
            read(own("GET", "/"), &[("x-forwarded-host", "a b")], None),
            Err(Unreadable::BadHost)
        );
    }

    #[test]
    fn the_core_sees_every_header_the_door_picks_from() {
        let mut map = HeaderMap::new();
        for (name, value) in [
            ("host", "authz"),
            ("cookie", "session=a"),
            ("x-forwarded-uri", "/admin"),
            ("cookie", "theme=dark"),
            ("x-forwarded-method", "GET"),
        ] {
            map.append(name, HeaderValue::from_static(value));
        }
        let (view, forwarding) = read_headers(&map);
        let view: Vec<(&str, &str)> = view
            .iter()
            .map(|(name, value)| (*name, std::str::from_utf8(value).unwrap()))
            .collect();
        // hyper's map keeps a name's values together, in the order received.
        assert_eq!(
            view,
            [
                ("host", "authz"),
                ("cookie", "session=a"),
                ("cookie", "theme=dark"),
                ("x-forwarded-uri", "/admin"),
                ("x-forwarded-method", "GET"),
            ]
        );
        let forwarding = forwarding.unwrap();
        assert_eq!(forwarding.host.unwrap(), "authz");
        assert_eq!(forwarding.forwarded_method.unwrap(), "GET");
        assert!(forwarding.original_uri.is_none());
    }

    /// Every value read must be visible ASCII, the request's own `Host` too when
    /// `X-Forwarded-Host` stands in for it; half a pair that is not text is refused as such.
    #[test]
    fn values_must_be_visible_ascii_even_where_unused() {
        type Case<'a> = (&'a [(&'a str, &'a [u8])], Unreadable);
        let cases: [Case; 3] = [
            (
                &[
                    ("x-forwarded-host", b"dash.example"),
                    ("host", "caf\u{e9}".as_bytes()),
                ],
                Unreadable::BadHost,
            ),
            (
                &[("x-forwarded-method", "G\u{c9}T".as_bytes())],
                Unreadable::BadMethod,
            ),
            (&[("x-original-uri", b"/caf\xe9")], Unreadable::BadUri),
        ];
        for (headers, expected) in cases {
            assert_eq!(
                read_bytes(own("GET", "/"), headers, None),
                Err(expected),
                "{headers:?}"
            );
        }
    }

    #[test]
    fn non_text_values_are_unreadable() {
        let headers: [(&str, &[u8]); 2] = [
            ("x-forwarded-method", b"GET"),
            ("x-forwarded-uri", b"/caf\xe9"),
        ];
        assert_eq!(
            read_bytes(own("GET", "/"), &headers, None),
            Err(Unreadable::BadUri)
        );
    }

    fn header_values(response: &Response<Body>, name: &str) -> Vec<String> {
        response
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    fn checked(decision: Decision, set_cookies: &[&str]) -> Checked {
        Checked {
            decision,
            cache: None,
            set_cookies: set_cookies.iter().map(|c| (*c).to_owned()).collect(),
            assertion: None,
        }
    }

    #[test]
    fn an_allow_is_exactly_200_with_the_identity_and_cookies() {
        let identity = Identity::named("alice")
            .with_roles(["admin", "ops"])
            .with_email("alice@example.com");
        let decision = Decision::Allow {
            identity,
            reason: Reason::ValidSession,
        };
        let signed = Checked {
            assertion: Some("h.c.s".into()),
            ..checked(decision, &["session=a; Max-Age=60", "theme=dark"])
        };
        let response = response(
            &signed,
            &Named::new(&IdentityHeaders::default()),
            SignInAs::Found,
        );
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header_values(&response, "x-auth-assertion"), ["h.c.s"]);
        assert_eq!(header_values(&response, "x-auth-user"), ["alice"]);
        assert_eq!(header_values(&response, "x-auth-roles"), ["admin,ops"]);
        assert_eq!(
            header_values(&response, "x-auth-email"),
            ["alice@example.com"]
        );
        assert_eq!(
            header_values(&response, "set-cookie"),
            ["session=a; Max-Age=60", "theme=dark"]
        );
        assert!(response
            .headers()
            .get("x-envoy-auth-headers-to-remove")
            .is_none());
    }

    #[test]
    fn an_allow_names_the_fields_it_does_not_fill_for_removal() {
        let names = IdentityHeaders {
            user: "x-user".to_owned(),
            roles: "x-roles".to_owned(),
            email: "x-email".to_owned(),
            assertion: "x-jwt".to_owned(),
        };
        let decision = Decision::Allow {
            identity: Identity::named("bob"),
            reason: Reason::ValidSession,
        };
        let unsigned = checked(decision, &[]);
        let response = response(&unsigned, &Named::new(&names), SignInAs::Found);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header_values(&response, "x-user"), ["bob"]);
        assert!(response.headers().get("x-roles").is_none());
        assert_eq!(
            header_values(&response, "x-envoy-auth-headers-to-remove"),
            ["x-roles,x-email,x-jwt"]
        );
        assert!(response.headers().get("set-cookie").is_none());
        let signed = Checked {
            assertion: Some("a.b.c".into()),
            ..unsigned
        };
        let response = super::response(&signed, &Named::new(&names), SignInAs::Found);
        assert_eq!(header_values(&response, "x-jwt"), ["a.b.c"]);
        assert_eq!(
            header_values(&response, "x-envoy-auth-headers-to-remove"),
            ["x-roles,x-email"]
        );
    }

    #[test]
    fn denials_are_the_shared_ones() {
        let cases = [
            (DenyStatus::BadRequest, Reason::Malformed),
            (DenyStatus::Unauthenticated, Reason::InvalidSession),
            (DenyStatus::Forbidden, Reason::CrossSite),
            (DenyStatus::Forbidden, Reason::Forbidden),
            (DenyStatus::Unavailable, Reason::NoCredential),
            (DenyStatus::Misconfigured, Reason::MisconfiguredRoute),
        ];
        for (status, reason) in cases {
            let expected = denial(status, reason);
            let response = response(
                &checked(Decision::Deny { status, reason }, &["session=; Max-Age=0"]),
                &Named::new(&IdentityHeaders::default()),
                SignInAs::Found,
            );
            assert_eq!(response.status().as_u16(), expected.code);
            for (name, value) in &expected.headers {
                assert_eq!(header_values(&response, name), [value.as_str()]);
            }
            assert_eq!(
                header_values(&response, "set-cookie"),
                ["session=; Max-Age=0"]
            );
            assert!(response.headers().get("x-auth-user").is_none());
        }
    }

    #[test]
    fn sign_in_is_a_302_not_stored() {
        let decision = Decision::SignIn {
            location: "/login?return_to=%2Fadmin".to_owned(),
            reason: Reason::NoCredential,
        };
        let response = response(
            &checked(decision, &["session=; Max-Age=0"]),
            &Named::new(&IdentityHeaders::default()),
            SignInAs::Found,
        );
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(
            header_values(&response, "location"),
            ["/login?return_to=%2Fadmin"]
        );
        assert_eq!(header_values(&response, "cache-control"), ["no-store"]);
        assert_eq!(
            header_values(&response, "set-cookie"),
            ["session=; Max-Age=0"]
        );
    }

    /// nginx's `auth_request` turns any answer but 2xx, 401 and 403 into its own 500: for it the
    /// sign-in target rides on the 401, for `error_page 401` to redirect with.
    #[test]
    fn sign_in_for_nginx_is_the_401_with_the_location() {
        let decision = Decision::SignIn {
            location: "/login?return_to=%2Fadmin".to_owned(),
            reason: Reason::NoCredential,
        };
        let answer = response(
            &checked(decision, &["session=; Max-Age=0"]),
            &Named::new(&IdentityHeaders::default()),
            SignInAs::Unauthorized,
        );
        let expected = denial(DenyStatus::Unauthenticated, Reason::NoCredential);
        assert_eq!(answer.status().as_u16(), expected.code);
        for (name, value) in &expected.headers {
            assert_eq!(header_values(&answer, name), [value.as_str()]);
        }
        assert_eq!(
            header_values(&answer, "location"),
            ["/login?return_to=%2Fadmin"]
        );
        assert_eq!(
            header_values(&answer, "set-cookie"),
            ["session=; Max-Age=0"]
        );
        // Every other answer is the same whichever way a sign-in goes.
        for decision in [
            Decision::Deny {
                status: DenyStatus::Unauthenticated,
                reason: Reason::InvalidSession,
            },
            Decision::Allow {
                identity: Identity::named("bob"),
                reason: Reason::ValidSession,
            },
        ] {
            let as_found = response(
                &checked(decision.clone(), &[]),
                &Named::new(&IdentityHeaders::default()),
                SignInAs::Found,
            );
            let as_401 = response(
                &checked(decision, &[]),
                &Named::new(&IdentityHeaders::default()),
                SignInAs::Unauthorized,
            );
            assert_eq!(as_found.status(), as_401.status());
            assert_eq!(as_found.headers(), as_401.headers());
        }
    }

    #[test]
    fn only_the_nginx_convention_takes_sign_in_as_a_401() {
        let nginx = [("x-original-method", "GET"), ("x-original-uri", "/admin")];
        let forwarded = [("x-forwarded-method", "GET"), ("x-forwarded-uri", "/admin")];
        let both = [nginx, forwarded].concat();
        for (headers, expected) in [
            (&nginx[..], SignInAs::Unauthorized),
            (&both[..], SignInAs::Unauthorized),
            (&forwarded[..], SignInAs::Found),
            (&[][..], SignInAs::Found),
        ] {
            let got = read(own("GET", "/admin"), headers, None).unwrap();
            assert_eq!(got.sign_in, expected, "{headers:?}");
        }
    }
}
