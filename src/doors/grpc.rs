//! The gRPC door: Envoy's `envoy.service.auth.v3.Authorization/Check`. It turns a
//! `CheckRequest` into a [`RequestView`], asks the core, and turns the [`Decision`] into a
//! `CheckResponse` — nothing else.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    CheckRequest, CheckResponse, HeaderAppendAction, HttpStatusCode,
};
use envoy_types::ext_authz::v3::{CheckResponseExt, DeniedHttpResponseBuilder};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_server;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use tonic::codegen::{http, BoxFuture, Service};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use super::answer::{metadata_fields, Allowed, Answer};
use super::{denial, sign_in_headers, IdentityHeaders};
use crate::authorize::{Authorizer, CachedValidator, Checked, Verdicts};
use crate::cache::Origin;
use crate::decision::{Decision, DenyStatus, Reason};
use crate::request::{Headers, RequestView};

/// The gRPC name of the Authorization service, as health checks name it.
pub const SERVICE_NAME: &str = authorization_server::SERVICE_NAME;

/// What the gRPC door answers when the validator cannot give a trustworthy answer
/// (`on_validator_error`); the forward-auth door has no RPC to fail and always sends the 503.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnValidatorError {
    /// Deny with 503 (fail closed).
    #[default]
    Deny,
    /// Answer the Check with gRPC UNAVAILABLE so Envoy's `failure_mode_allow` and
    /// `status_on_error` decide.
    GrpcError,
}

/// The Check RPC's full path.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// Answers Envoy's Check calls. Generic over the verdicts only so that fuzzing can drive the
/// whole door without a validator.
#[derive(Debug)]
pub struct CheckService<V = CachedValidator> {
    core: Arc<Authorizer<V>>,
    on_error: OnValidatorError,
}

impl<V> CheckService<V> {
    pub fn new(core: Arc<Authorizer<V>>, on_error: OnValidatorError) -> Self {
        Self { core, on_error }
    }
}

impl<V: Verdicts> CheckService<V> {
    /// One Check: the core's decision as the RPC's answer.
    pub async fn check(&self, request: &CheckRequest) -> Result<Answer, Status> {
        // One configuration decides and names the headers, even across a reload.
        let live = self.core.live();
        let checked = match http_request(request) {
            Some(http) => {
                let headers = request_headers(http);
                let extensions = context_extensions(request);
                let view = request_view(http, &headers, extensions);
                self.core.authorize_by(&live, &view).await
            }
            None => self.core.unreadable(),
        };
        answer(&checked, live.identity_headers(), self.on_error)
    }
}

/// The Authorization service for tonic's router. envoy-types' generated server would do, but
/// it answers only with the owned `CheckResponse`; this one sends an [`Answer`] with the same
/// codec settings (prost, no compression, tonic's default message size limits).
#[derive(Debug)]
pub struct CheckServer<V = CachedValidator>(Arc<CheckService<V>>);

impl<V> CheckServer<V> {
    pub fn new(service: CheckService<V>) -> Self {
        Self(Arc::new(service))
    }
}

impl<V> Clone for CheckServer<V> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<V> tonic::server::NamedService for CheckServer<V> {
    const NAME: &'static str = SERVICE_NAME;
}

impl<V, B> Service<http::Request<B>> for CheckServer<V>
where
    V: Verdicts + Send + Sync + 'static,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let unary = Unary(self.0.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Answer, CheckRequest>::default());
            Ok(grpc.unary(unary, request).await)
        })
    }
}

struct Unary<V>(Arc<CheckService<V>>);

impl<V: Verdicts + Send + Sync + 'static> tonic::server::UnaryService<CheckRequest> for Unary<V> {
    type Response = Answer;
    type Future = BoxFuture<Response<Answer>, Status>;

    fn call(&mut self, request: Request<CheckRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.check(request.get_ref()).await.map(Response::new) })
    }
}

/// The HTTP request a Check is about, if the CheckRequest carries one.
pub fn http_request(request: &CheckRequest) -> Option<&HttpRequest> {
    request.attributes.as_ref()?.request.as_ref()?.http.as_ref()
}

/// The route's `context_extensions` (Envoy's `ExtAuthzPerRoute.check_settings`), if any.
pub fn context_extensions(request: &CheckRequest) -> Option<&HashMap<String, String>> {
    request
        .attributes
        .as_ref()
        .map(|attributes| &attributes.context_extensions)
        .filter(|map| !map.is_empty())
}

/// The core's view of a Check's HTTP request; `headers` from [`request_headers`].
pub fn request_view<'a>(
    http: &'a HttpRequest,
    headers: &'a [(&'a str, &'a [u8])],
    extensions: Option<&'a HashMap<String, String>>,
) -> RequestView<'a> {
    RequestView {
        method: &http.method,
        path: &http.path,
        host: &http.host,
        headers: Headers::new(headers),
        extensions,
    }
}

/// Every request header as `(name, bytes)`: the `headers` map and, when Envoy sends
/// `encode_raw_headers: true`, the `header_map` list.
pub fn request_headers(http: &HttpRequest) -> Vec<(&str, &[u8])> {
    let plain = http
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()));
    let raw = http.header_map.iter().flat_map(|map| {
        map.headers.iter().map(|h| {
            let value = if h.raw_value.is_empty() {
                h.value.as_bytes()
            } else {
                h.raw_value.as_slice()
            };
            (h.key.as_str(), value)
        })
    });
    plain.chain(raw).collect()
}

pub use super::RETRY_AFTER_SECS;

/// Maps the core's answer to what the Check RPC returns, minding Envoy's two traps
/// (docs/architecture.md, "Two Envoy traps"), with the dynamic metadata on every response.
///
/// `Err` only for a validator error's 503 with `on_validator_error = "grpc-error"`: gRPC
/// UNAVAILABLE hands the outcome to Envoy's own `failure_mode_allow` / `status_on_error` (a
/// failed RPC carries no metadata).
pub fn answer(
    checked: &Checked,
    names: &IdentityHeaders,
    on_error: OnValidatorError,
) -> Result<Answer, Status> {
    let reason = checked.decision.reason().as_str();
    let cache = cache_field(checked.cache);
    let mut response = match &checked.decision {
        // Every identity header is either set from the validator's answer, replacing any
        // client copy, or removed: on admin routes nothing else strips a client's own
        // `x-auth-roles`. The cookies go to the client's response (session renewal).
        Decision::Allow { identity, .. } => {
            let allowed = Allowed {
                identity,
                assertion: checked.assertion.as_deref(),
                names,
                set_cookies: &checked.set_cookies,
                reason,
                cache,
            };
            return Ok(Answer::Allow(allowed.encode()));
        }
        Decision::Deny {
            status: DenyStatus::Unavailable,
            reason: Reason::ValidatorError(_),
        } if on_error == OnValidatorError::GrpcError => {
            return Err(Status::unavailable("session validator unavailable"))
        }
        Decision::Deny { status, reason } => deny(*status, *reason, &checked.set_cookies),
        Decision::SignIn { location, .. } => sign_in(location, &checked.set_cookies),
    };
    response.set_dynamic_metadata(Some(metadata(metadata_fields(reason, cache, None))));
    Ok(Answer::Built(Box::new(response)))
}

/// The metadata's fields as the protobuf `Struct` of string values Envoy reads.
fn metadata<'a>(fields: impl Iterator<Item = (&'static str, &'a str)>) -> Struct {
    let fields = fields
        .map(|(key, value)| {
            let value = Value {
                kind: Some(Kind::StringValue(value.to_owned())),
            };
            (key.to_owned(), value)
        })
        .collect();
    Struct { fields }
}

fn cache_field(origin: Option<Origin>) -> &'static str {
    origin.map_or("none", Origin::as_str)
}

/// Each `Set-Cookie` its own header: appended, so that several survive side by side (an
/// overwrite would keep only the last one).
const SET_COOKIE_ACTION: HeaderAppendAction = HeaderAppendAction::AppendIfExistsOrAdd;

/// A 302 to the sign-in page: Envoy sends the denied response's status and headers to the
/// browser as they are. `set_cookies` may clear a dead session cookie on the way.
fn sign_in(location: &str, set_cookies: &[String]) -> CheckResponse {
    let mut denied = DeniedHttpResponseBuilder::new();
    denied.set_http_status(HttpStatusCode::Found);
    let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
    for (name, value) in sign_in_headers(location) {
        denied.add_header(name, value, overwrite, false);
    }
    for cookie in set_cookies {
        denied.add_header("set-cookie", cookie, Some(SET_COOKIE_ACTION), false);
    }
    let mut response =
        CheckResponse::with_status(tonic::Status::unauthenticated("sign-in required"));
    response.set_http_response(denied);
    response
}

/// The client's answer comes from [`denial`], as every door's; the gRPC status is this
/// door's own. `set_cookies` (e.g. clearing a dead session cookie) go to the client with it.
fn deny(status: DenyStatus, reason: Reason, set_cookies: &[String]) -> CheckResponse {
    let grpc = match status {
        DenyStatus::BadRequest => tonic::Status::invalid_argument("malformed check request"),
        DenyStatus::Unauthenticated => tonic::Status::unauthenticated("no valid session"),
        DenyStatus::Forbidden => tonic::Status::permission_denied("forbidden"),
        DenyStatus::Unavailable => tonic::Status::unavailable("session validator unavailable"),
        // With the denied_response this is still a deny in Envoy, never its error path.
        DenyStatus::Misconfigured => tonic::Status::internal("misconfigured route"),
    };
    let answer = denial(status, reason);
    let mut denied = DeniedHttpResponseBuilder::new();
    // Every code `denial` names is one of Envoy's; 403 is the safe fallback for a deny.
    let http =
        HttpStatusCode::try_from(i32::from(answer.code)).unwrap_or(HttpStatusCode::Forbidden);
    denied.set_http_status(http).set_body(answer.body);
    let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
    for (name, value) in answer.headers {
        denied.add_header(name, value, overwrite, false);
    }
    for cookie in set_cookies {
        denied.add_header("set-cookie", cookie, Some(SET_COOKIE_ACTION), false);
    }
    let mut response = CheckResponse::with_status(grpc);
    response.set_http_response(denied);
    response
}

#[cfg(test)]
mod tests {
    use envoy_types::ext_authz::v3::pb::{HeaderValueOption, HttpResponse};
    use envoy_types::ext_authz::v3::OkHttpResponseBuilder;
    use envoy_types::pb::google::protobuf::BoolValue;

    use crate::contract::Identity;
    use prost::Message;

    use super::*;
    use crate::contract::ErrorKind;
    use crate::credential::Ambiguity;

    fn names() -> IdentityHeaders {
        IdentityHeaders::default()
    }

    /// The answer as Envoy reads it: encoded, then decoded with envoy-types' own message.
    fn check_response(checked: &Checked, names: &IdentityHeaders) -> Result<CheckResponse, Status> {
        answer(checked, names, OnValidatorError::Deny)
            .map(|answer| answer.to_check_response().expect("the answer decodes"))
    }

    /// What an allow must decode to, made the long way with envoy-types' builders.
    fn built_allow(
        identity: &Identity,
        names: &IdentityHeaders,
        assertion: Option<&str>,
        cookies: &[String],
        cache: Option<Origin>,
    ) -> CheckResponse {
        let mut ok = OkHttpResponseBuilder::new();
        for cookie in cookies {
            ok.add_response_header("set-cookie", cookie, Some(SET_COOKIE_ACTION), false);
        }
        for (name, value) in names.fields(identity, assertion) {
            match value {
                Some(value) => {
                    let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
                    ok.add_header(name, value, overwrite, false);
                }
                None => {
                    ok.remove_header(name);
                }
            }
        }
        let mut ok = ok.build();
        #[allow(deprecated)]
        for option in &mut ok.headers {
            option.append = Some(BoolValue { value: false });
        }
        let mut response = CheckResponse::with_status(Status::ok(""));
        response.set_http_response(ok);
        let reason = Reason::ValidSession.as_str();
        let fields = metadata_fields(reason, cache_field(cache), Some(identity));
        response.set_dynamic_metadata(Some(metadata(fields)));
        response
    }

    #[test]
    fn the_encoded_allow_decodes_to_the_message_the_builders_make() {
        let long = "r".repeat(300);
        let identities = [
            Identity::named("alice")
                .with_roles(["admin", "viewer"])
                .with_email("alice@example.com"),
            Identity::named("bob"),
            Identity::named("carol").with_roles([long.as_str()]),
            Identity::named("dave").with_email("d@example.com"),
            Identity::default(),
        ];
        let renamed = IdentityHeaders {
            user: "x-user".to_owned(),
            roles: "x-groups".to_owned(),
            email: "x-mail".to_owned(),
            assertion: "x-jwt".to_owned(),
        };
        let assertion = format!("eyJhbGciOiJFZERTQSJ9.{long}.c2ln");
        let cookie_sets = [
            vec![],
            vec!["session=new; Path=/; HttpOnly".to_owned()],
            vec!["a=1".to_owned(), format!("b={long}")],
        ];
        for identity in &identities {
            for names in [names(), renamed.clone()] {
                for cookies in &cookie_sets {
                    for cache in [Some(Origin::Hit), Some(Origin::Miss), None] {
                        for signed in [None, Some(assertion.as_str())] {
                            let decision = Decision::Allow {
                                identity: identity.clone(),
                                reason: Reason::ValidSession,
                            };
                            let checked = Checked {
                                decision,
                                cache,
                                set_cookies: cookies.clone(),
                                assertion: signed.map(Into::into),
                            };
                            let answer = answer(&checked, &names, OnValidatorError::Deny).unwrap();
                            let bytes = answer.encode_to_vec();
                            assert_eq!(bytes.len(), answer.encoded_len());
                            assert_eq!(
                                CheckResponse::decode(bytes.as_slice()).unwrap(),
                                built_allow(identity, &names, signed, cookies, cache),
                                "{identity:?} {cookies:?} {cache:?} {signed:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    fn identity_header(option: &HeaderValueOption) -> Option<(&str, &str)> {
        option
            .header
            .as_ref()
            .map(|h| (h.key.as_str(), h.value.as_str()))
    }

    fn checked(decision: Decision, cache: Option<Origin>) -> Checked {
        Checked {
            decision,
            cache,
            set_cookies: Vec::new(),
            assertion: None,
        }
    }

    /// The metadata's fields as text, sorted by key.
    fn fields(response: &CheckResponse) -> Vec<(String, String)> {
        let metadata = response
            .dynamic_metadata
            .as_ref()
            .unwrap_or_else(|| panic!("no dynamic_metadata"));
        let mut fields: Vec<_> = metadata
            .fields
            .iter()
            .map(|(key, value)| match &value.kind {
                Some(Kind::StringValue(text)) => (key.clone(), text.clone()),
                other => panic!("{key} is not a string: {other:?}"),
            })
            .collect();
        fields.sort();
        fields
    }

    fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn every_denial() -> Vec<Decision> {
        let reasons = [
            Reason::Malformed,
            Reason::NoCredential,
            Reason::Ambiguous(Ambiguity::ConflictingCookies),
            Reason::CrossSite,
            Reason::Forbidden,
            Reason::MisconfiguredRoute,
            Reason::InvalidSession,
            Reason::ValidatorError(ErrorKind::Timeout),
            Reason::ValidatorError(ErrorKind::UnsafeRoles),
        ];
        let statuses = [
            DenyStatus::BadRequest,
            DenyStatus::Unauthenticated,
            DenyStatus::Forbidden,
            DenyStatus::Unavailable,
            DenyStatus::Misconfigured,
        ];
        reasons
            .iter()
            .flat_map(|&reason| {
                statuses
                    .iter()
                    .map(move |&status| Decision::Deny { status, reason })
            })
            .collect()
    }

    #[test]
    fn no_denial_leaves_status_ok_or_unset() {
        for decision in every_denial() {
            let response = check_response(&checked(decision.clone(), None), &names()).unwrap();
            let code = response.status.as_ref().map(|s| s.code).unwrap_or(0);
            assert_ne!(code, 0, "{decision:?} would be an allow in Envoy");
            let Some(HttpResponse::DeniedResponse(denied)) = &response.http_response else {
                panic!("{decision:?} has no denied_response");
            };
            let http = denied.status.as_ref().map(|s| s.code).unwrap_or(0);
            let expected = match decision {
                Decision::Deny { status, .. } => i32::from(status.http_code()),
                _ => unreachable!(),
            };
            assert_eq!(http, expected);
            assert!(denied.body.starts_with("{\"error\":"), "{}", denied.body);
            let headers: Vec<_> = denied.headers.iter().filter_map(identity_header).collect();
            assert!(headers.contains(&("content-type", "application/json")));
            assert_eq!(
                headers.iter().any(|(k, _)| *k == "retry-after"),
                expected == 503
            );
        }
    }

    #[test]
    fn every_denial_carries_its_reason_and_cache_in_metadata() {
        let origins = [
            None,
            Some(Origin::Hit),
            Some(Origin::Miss),
            Some(Origin::Coalesced),
        ];
        for decision in every_denial() {
            for cache in origins {
                let response = check_response(&checked(decision.clone(), cache), &names()).unwrap();
                let cache_word = cache.map_or("none", Origin::as_str);
                assert_eq!(
                    fields(&response),
                    pairs(&[
                        ("cache", cache_word),
                        ("reason", decision.reason().as_str())
                    ]),
                    "{decision:?}"
                );
            }
        }
    }

    #[test]
    fn cross_site_is_403_permission_denied() {
        let decision = Decision::Deny {
            status: DenyStatus::Forbidden,
            reason: Reason::CrossSite,
        };
        let response = check_response(&checked(decision, None), &names()).unwrap();
        assert_eq!(
            response.status.as_ref().map(|s| s.code),
            Some(tonic::Code::PermissionDenied as i32)
        );
        let Some(HttpResponse::DeniedResponse(denied)) = &response.http_response else {
            panic!("no denied_response");
        };
        assert_eq!(denied.status.as_ref().map(|s| s.code), Some(403));
        assert_eq!(denied.body, r#"{"error":"cross-site request"}"#);
        let headers: Vec<_> = denied.headers.iter().filter_map(identity_header).collect();
        assert_eq!(
            headers,
            [
                ("content-type", "application/json"),
                ("cache-control", "no-store")
            ]
        );
    }

    #[test]
    fn grpc_error_mode_fails_the_rpc_on_a_validator_error_only() {
        let failed = Decision::Deny {
            status: DenyStatus::Unavailable,
            reason: Reason::ValidatorError(ErrorKind::Timeout),
        };
        let grpc_error = |decision: Decision| {
            answer(
                &checked(decision, Some(Origin::Miss)),
                &names(),
                OnValidatorError::GrpcError,
            )
        };
        let status = grpc_error(failed.clone()).err().map(|status| status.code());
        assert_eq!(status, Some(tonic::Code::Unavailable));
        // The default mode denies with the 503; every other denial is the same in both.
        let denied = check_response(&checked(failed, Some(Origin::Miss)), &names()).unwrap();
        assert_eq!(
            denied.status.map(|s| s.code),
            Some(tonic::Code::Unavailable as i32)
        );
        for decision in [
            Decision::Deny {
                status: DenyStatus::Unauthenticated,
                reason: Reason::InvalidSession,
            },
            Decision::Deny {
                status: DenyStatus::Misconfigured,
                reason: Reason::MisconfiguredRoute,
            },
        ] {
            assert!(grpc_error(decision).is_ok());
        }
    }

    #[test]
    fn allow_sets_the_whole_identity_without_appending() {
        let identity = Identity::named("alice")
            .with_roles(["admin", "viewer"])
            .with_email("alice@example.com");
        let decision = Decision::Allow {
            identity,
            reason: Reason::ValidSession,
        };
        let signed = Checked {
            assertion: Some("h.c.s".into()),
            ..checked(decision, Some(Origin::Hit))
        };
        let response = check_response(&signed, &names()).unwrap();
        assert_eq!(response.status.as_ref().map(|s| s.code), Some(0));
        let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
            panic!("no ok_response");
        };
        let set: Vec<_> = ok.headers.iter().filter_map(identity_header).collect();
        assert_eq!(
            set,
            [
                ("x-auth-user", "alice"),
                ("x-auth-roles", "admin,viewer"),
                ("x-auth-email", "alice@example.com"),
                ("x-auth-assertion", "h.c.s"),
            ]
        );
        for option in &ok.headers {
            #[allow(deprecated)]
            let append = option.append;
            assert_eq!(append, Some(BoolValue { value: false }));
            assert_eq!(
                option.append_action,
                HeaderAppendAction::OverwriteIfExistsOrAdd as i32
            );
        }
        assert!(ok.headers_to_remove.is_empty());
        assert_eq!(
            fields(&response),
            pairs(&[
                ("cache", "hit"),
                ("reason", "valid_session"),
                ("roles", "admin,viewer"),
                ("user", "alice"),
            ])
        );
    }

    #[test]
    fn every_absent_identity_field_is_removed() {
        let renamed = IdentityHeaders {
            user: "x-user".to_owned(),
            roles: "x-roles".to_owned(),
            email: "x-email".to_owned(),
            assertion: "x-jwt".to_owned(),
        };
        // Without assertions (`checked` makes none), a client's own copy is removed too.
        let cases = [
            (
                Identity::default(),
                vec![],
                vec!["x-user", "x-roles", "x-email", "x-jwt"],
            ),
            (
                Identity::named("bob"),
                vec![("x-user", "bob")],
                vec!["x-roles", "x-email", "x-jwt"],
            ),
            (
                Identity::named("bob").with_roles(["viewer"]),
                vec![("x-user", "bob"), ("x-roles", "viewer")],
                vec!["x-email", "x-jwt"],
            ),
            (
                Identity::default().with_email("ops@example.com"),
                vec![("x-email", "ops@example.com")],
                vec!["x-user", "x-roles", "x-jwt"],
            ),
        ];
        for (identity, set, removed) in cases {
            let decision = Decision::Allow {
                identity: identity.clone(),
                reason: Reason::ValidSession,
            };
            let response =
                check_response(&checked(decision, Some(Origin::Miss)), &renamed).unwrap();
            let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
                panic!("no ok_response");
            };
            let actual: Vec<_> = ok.headers.iter().filter_map(identity_header).collect();
            assert_eq!(actual, set, "{identity:?}");
            assert_eq!(ok.headers_to_remove, removed, "{identity:?}");
        }
    }

    #[test]
    fn allow_without_identity_has_only_reason_and_cache() {
        for (reason, cache, word) in [
            (Reason::AuthDisabled, None, "none"),
            (Reason::ValidSession, Some(Origin::Coalesced), "coalesced"),
            (Reason::StaleSession, Some(Origin::Stale), "stale"),
        ] {
            let decision = Decision::Allow {
                identity: Identity::default(),
                reason,
            };
            let response = check_response(&checked(decision, cache), &names()).unwrap();
            let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
                panic!("no ok_response");
            };
            assert!(ok.headers.is_empty());
            assert_eq!(
                ok.headers_to_remove,
                [
                    "x-auth-user",
                    "x-auth-roles",
                    "x-auth-email",
                    "x-auth-assertion"
                ]
            );
            assert_eq!(
                fields(&response),
                pairs(&[("cache", word), ("reason", reason.as_str())])
            );
        }
    }

    fn renewing(decision: Decision, cookies: &[&str]) -> Checked {
        Checked {
            set_cookies: cookies.iter().map(|c| (*c).to_owned()).collect(),
            ..checked(decision, Some(Origin::Miss))
        }
    }

    #[test]
    fn allow_passes_every_set_cookie_to_the_client_side_by_side() {
        let cookies = ["session=t; Max-Age=60; HttpOnly", "theme=dark; Path=/"];
        let decision = Decision::Allow {
            identity: Identity::named("alice"),
            reason: Reason::ValidSession,
        };
        let response = check_response(&renewing(decision, &cookies), &names()).unwrap();
        let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
            panic!("no ok_response");
        };
        let to_client: Vec<_> = ok
            .response_headers_to_add
            .iter()
            .filter_map(identity_header)
            .collect();
        assert_eq!(
            to_client,
            [("set-cookie", cookies[0]), ("set-cookie", cookies[1])]
        );
        for option in &ok.response_headers_to_add {
            assert_eq!(
                option.append_action,
                HeaderAppendAction::AppendIfExistsOrAdd as i32
            );
        }
        // Never towards the app.
        let upstream: Vec<_> = ok.headers.iter().filter_map(identity_header).collect();
        assert_eq!(upstream, [("x-auth-user", "alice")]);
    }

    #[test]
    fn a_denial_passes_the_clearing_cookie_to_the_client() {
        let clear = "session=; Max-Age=0; Path=/";
        let decision = Decision::Deny {
            status: DenyStatus::Unauthenticated,
            reason: Reason::InvalidSession,
        };
        let response = check_response(&renewing(decision, &[clear]), &names()).unwrap();
        let Some(HttpResponse::DeniedResponse(denied)) = &response.http_response else {
            panic!("no denied_response");
        };
        let headers: Vec<_> = denied.headers.iter().filter_map(identity_header).collect();
        assert_eq!(
            headers,
            [
                ("content-type", "application/json"),
                ("cache-control", "no-store"),
                ("set-cookie", clear),
            ]
        );
        let cookie = denied.headers.last().unwrap();
        assert_eq!(
            cookie.append_action,
            HeaderAppendAction::AppendIfExistsOrAdd as i32
        );
    }

    #[test]
    fn no_set_cookie_without_one_from_the_core() {
        let decision = Decision::Allow {
            identity: Identity::named("alice"),
            reason: Reason::ValidSession,
        };
        let response = check_response(&checked(decision, Some(Origin::Hit)), &names()).unwrap();
        let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
            panic!("no ok_response");
        };
        assert!(ok.response_headers_to_add.is_empty());
    }
}
