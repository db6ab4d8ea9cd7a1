//! The gRPC door: Envoy's `envoy.service.auth.v3.Authorization/Check`. It turns a
//! `CheckRequest` into a [`RequestView`], asks the core, and turns the [`Decision`] into a
//! `CheckResponse` — nothing else.

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HeaderAppendAction,
    HttpStatusCode,
};
use envoy_types::ext_authz::v3::{
    CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use envoy_types::pb::google::protobuf::BoolValue;
use tonic::{Request, Response, Status};

use crate::authorize::{Authorizer, CachedValidator, RequestView, Verdicts};
use crate::contract::Identity;
use crate::decision::{Decision, DenyStatus, Reason};

/// The gRPC name of the Authorization service, as health checks name it.
pub const SERVICE_NAME: &str =
    <AuthorizationServer<CheckService> as tonic::server::NamedService>::NAME;

/// Answers Envoy's Check calls. Generic over the verdicts only so that fuzzing can drive the
/// whole door without a validator.
#[derive(Debug)]
pub struct CheckService<V = CachedValidator> {
    core: Arc<Authorizer<V>>,
    user_header: String,
}

impl<V> CheckService<V> {
    pub fn new(core: Arc<Authorizer<V>>, user_header: String) -> Self {
        Self { core, user_header }
    }
}

#[tonic::async_trait]
impl<V: Verdicts + 'static> Authorization for CheckService<V> {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let decision = match http_request(request.get_ref()) {
            Some(http) => {
                let headers = request_headers(http);
                self.core.authorize(&request_view(http, &headers)).await
            }
            None => self.core.unreadable(),
        };
        check_response(&decision, &self.user_header).map(Response::new)
    }
}

/// The HTTP request a Check is about, if the CheckRequest carries one.
pub fn http_request(request: &CheckRequest) -> Option<&HttpRequest> {
    request.attributes.as_ref()?.request.as_ref()?.http.as_ref()
}

/// The core's view of a Check's HTTP request; `headers` from [`request_headers`].
pub fn request_view<'a>(
    http: &'a HttpRequest,
    headers: &'a [(&'a str, &'a [u8])],
) -> RequestView<'a> {
    RequestView {
        method: &http.method,
        path: &http.path,
        host: &http.host,
        headers,
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

/// Seconds a client is told to wait after a 503.
pub const RETRY_AFTER_SECS: u32 = 5;

/// Maps a decision to what the Check RPC returns, minding Envoy's two traps
/// (docs/architecture.md, "Two Envoy traps").
///
/// `Err` only for [`Decision::GrpcUnavailable`], which hands the outcome to Envoy's own
/// `failure_mode_allow` / `status_on_error`.
pub fn check_response(
    decision: &Decision,
    user_header: &str,
) -> Result<CheckResponse, tonic::Status> {
    match decision {
        Decision::Allow { identity, .. } => Ok(allow(identity, user_header)),
        Decision::Deny { status, reason } => Ok(deny(*status, *reason)),
        Decision::GrpcUnavailable { .. } => {
            Err(tonic::Status::unavailable("session validator unavailable"))
        }
    }
}

fn allow(identity: &Identity, user_header: &str) -> CheckResponse {
    let mut ok = OkHttpResponseBuilder::new();
    match &identity.user {
        Some(user) => {
            ok.add_header(
                user_header,
                user,
                Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                false,
            );
        }
        // No identity to assert: make sure a client-sent one never reaches upstream.
        None => {
            ok.remove_header(user_header);
        }
    }
    let mut ok = ok.build();
    // Older Envoys read the deprecated `append` and default it to true (append); setting it
    // to false as well keeps "set, never append" whichever field the proxy honours.
    #[allow(deprecated)]
    for option in &mut ok.headers {
        option.append = Some(BoolValue { value: false });
    }
    let mut response = CheckResponse::with_status(tonic::Status::ok(""));
    response.set_http_response(ok);
    response
}

fn deny(status: DenyStatus, reason: Reason) -> CheckResponse {
    let (grpc, http, error) = match status {
        DenyStatus::BadRequest => (
            tonic::Status::invalid_argument("malformed check request"),
            HttpStatusCode::BadRequest,
            "bad_request",
        ),
        DenyStatus::Unauthenticated => (
            tonic::Status::unauthenticated("no valid session"),
            HttpStatusCode::Unauthorized,
            "unauthenticated",
        ),
        // design.md's bodies: a refused rule says which, when it is the CSRF one.
        DenyStatus::Forbidden => (
            tonic::Status::permission_denied("forbidden"),
            HttpStatusCode::Forbidden,
            if reason == Reason::CrossSite {
                "cross-site request"
            } else {
                "forbidden"
            },
        ),
        DenyStatus::Unavailable => (
            tonic::Status::unavailable("session validator unavailable"),
            HttpStatusCode::ServiceUnavailable,
            "auth_unavailable",
        ),
    };
    let mut denied = DeniedHttpResponseBuilder::new();
    denied
        .set_http_status(http)
        .set_body(format!("{{\"error\":\"{error}\"}}"));
    let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
    denied.add_header("content-type", "application/json", overwrite, false);
    denied.add_header("cache-control", "no-store", overwrite, false);
    if status == DenyStatus::Unavailable {
        denied.add_header(
            "retry-after",
            RETRY_AFTER_SECS.to_string(),
            overwrite,
            false,
        );
    }
    let mut response = CheckResponse::with_status(grpc);
    response.set_http_response(denied);
    response
}

#[cfg(test)]
mod tests {
    use envoy_types::ext_authz::v3::pb::{HeaderValueOption, HttpResponse};

    use super::*;
    use crate::contract::ErrorKind;
    use crate::credential::Ambiguity;

    const USER_HEADER: &str = "x-auth-user";

    fn identity_header(option: &HeaderValueOption) -> Option<(&str, &str)> {
        option
            .header
            .as_ref()
            .map(|h| (h.key.as_str(), h.value.as_str()))
    }

    fn every_denial() -> Vec<Decision> {
        let reasons = [
            Reason::Malformed,
            Reason::NoCredential,
            Reason::Ambiguous(Ambiguity::ConflictingCookies),
            Reason::CrossSite,
            Reason::InvalidSession,
            Reason::ValidatorError(ErrorKind::Timeout),
        ];
        let statuses = [
            DenyStatus::BadRequest,
            DenyStatus::Unauthenticated,
            DenyStatus::Forbidden,
            DenyStatus::Unavailable,
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
            let response = check_response(&decision, USER_HEADER).unwrap();
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
    fn cross_site_is_403_permission_denied() {
        let decision = Decision::Deny {
            status: DenyStatus::Forbidden,
            reason: Reason::CrossSite,
        };
        let response = check_response(&decision, USER_HEADER).unwrap();
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
    fn grpc_error_mode_fails_the_rpc() {
        let status = check_response(
            &Decision::GrpcUnavailable {
                reason: Reason::ValidatorError(ErrorKind::Timeout),
            },
            USER_HEADER,
        )
        .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }

    #[test]
    fn allow_sets_identity_without_appending() {
        let decision = Decision::Allow {
            identity: Identity::user("alice"),
            reason: Reason::ValidSession,
        };
        let response = check_response(&decision, USER_HEADER).unwrap();
        assert_eq!(response.status.as_ref().map(|s| s.code), Some(0));
        let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
            panic!("no ok_response");
        };
        assert_eq!(ok.headers.len(), 1);
        let option = &ok.headers[0];
        assert_eq!(identity_header(option), Some((USER_HEADER, "alice")));
        #[allow(deprecated)]
        let append = option.append;
        assert_eq!(append, Some(BoolValue { value: false }));
        assert_eq!(
            option.append_action,
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32
        );
        assert!(ok.headers_to_remove.is_empty());
    }

    #[test]
    fn allow_without_user_removes_identity() {
        let decision = Decision::Allow {
            identity: Identity::default(),
            reason: Reason::AuthDisabled,
        };
        let response = check_response(&decision, USER_HEADER).unwrap();
        let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
            panic!("no ok_response");
        };
        assert!(ok.headers.is_empty());
        assert_eq!(ok.headers_to_remove, vec![USER_HEADER.to_owned()]);
    }
}
