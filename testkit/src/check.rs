//! CheckRequest builders and what a CheckResponse means for the client ([`Outcome`]), so that an
//! assertion on a decision is one line.

use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::config::core::v3::{HeaderMap as EnvoyHeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use tonic::transport::Channel;

/// A CheckRequest for `GET /admin` whose HTTP request carries these headers in the `headers` map.
pub fn check_request(headers: &[(&str, &str)]) -> CheckRequest {
    check_request_to("GET", "", headers)
}

/// A CheckRequest for `{method} /admin` addressed to `host` (Envoy's `:authority`), with these
/// headers in the `headers` map.
pub fn check_request_to(method: &str, host: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let http = HttpRequest {
        method: method.to_owned(),
        host: host.to_owned(),
        path: "/admin".to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    };
    wrap(http)
}

/// A CheckRequest as Envoy sends it with `encode_raw_headers: true`.
pub fn raw_check_request(headers: &[(&str, &[u8])]) -> CheckRequest {
    let http = HttpRequest {
        method: "GET".to_owned(),
        path: "/admin".to_owned(),
        header_map: Some(EnvoyHeaderMap {
            headers: headers
                .iter()
                .map(|(k, v)| HeaderValue {
                    key: (*k).to_owned(),
                    value: String::new(),
                    raw_value: v.to_vec(),
                })
                .collect(),
        }),
        ..Default::default()
    };
    wrap(http)
}

fn wrap(http: HttpRequest) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// What a CheckResponse means for the client, in plain terms.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed; the identity header set (if any) and the headers removed.
    Allow {
        set: Vec<(String, String)>,
        removed: Vec<String>,
    },
    /// Denied with this gRPC code and HTTP status.
    Deny { grpc: i32, http: i32, body: String },
}

pub fn outcome(response: &CheckResponse) -> Outcome {
    let code = response.status.as_ref().map(|s| s.code).unwrap_or(0);
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) if code == 0 => Outcome::Allow {
            set: ok
                .headers
                .iter()
                .filter_map(|o| o.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
            removed: ok.headers_to_remove.clone(),
        },
        Some(HttpResponse::DeniedResponse(denied)) if code != 0 => Outcome::Deny {
            grpc: code,
            http: denied.status.as_ref().map(|s| s.code).unwrap_or(0),
            body: denied.body.clone(),
        },
        other => panic!("inconsistent CheckResponse: code {code}, {other:?}"),
    }
}

/// The `set-cookie` values a CheckResponse sends the client: an allow's
/// `response_headers_to_add`, or the denied response's headers.
pub fn set_cookies(response: &CheckResponse) -> Vec<String> {
    let options = match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => &ok.response_headers_to_add,
        Some(HttpResponse::DeniedResponse(denied)) => &denied.headers,
        _ => return Vec::new(),
    };
    options
        .iter()
        .filter_map(|o| o.header.as_ref())
        .filter(|h| h.key.eq_ignore_ascii_case("set-cookie"))
        .map(|h| h.value.clone())
        .collect()
}

/// Sends a CheckRequest and reads the answer as an [`Outcome`].
pub async fn outcome_of(
    client: &mut AuthorizationClient<Channel>,
    request: CheckRequest,
) -> Outcome {
    outcome(&client.check(request).await.unwrap().into_inner())
}

/// The identity headers under their default names, in the order the service answers them.
pub const IDENTITY_HEADERS: [&str; 4] = [
    "x-auth-user",
    "x-auth-roles",
    "x-auth-email",
    "x-auth-assertion",
];

/// An allow setting these identity headers (user, roles, email; default names) and removing the
/// others, `x-auth-assertion` included (assertions off, as in every test config without
/// `assertion_key`).
pub fn allow_with(user: Option<&str>, roles: Option<&str>, email: Option<&str>) -> Outcome {
    let mut set = Vec::new();
    let mut removed = Vec::new();
    for (name, value) in IDENTITY_HEADERS.into_iter().zip([user, roles, email, None]) {
        match value {
            Some(value) => set.push((name.to_owned(), value.to_owned())),
            None => removed.push(name.to_owned()),
        }
    }
    Outcome::Allow { set, removed }
}

/// An allow for `user`, with no roles and no email.
pub fn allow_as(user: &str) -> Outcome {
    allow_with(Some(user), None, None)
}

/// An allow with every identity header removed.
pub fn allow_anonymous() -> Outcome {
    allow_with(None, None, None)
}

/// A CheckResponse's `dynamic_metadata` as `key=value` text, sorted (`[]` when it has none).
pub fn metadata(response: &CheckResponse) -> Vec<String> {
    use envoy_types::pb::google::protobuf::value::Kind;
    let mut fields: Vec<String> = response
        .dynamic_metadata
        .iter()
        .flat_map(|metadata| &metadata.fields)
        .map(|(key, value)| match &value.kind {
            Some(Kind::StringValue(text)) => format!("{key}={text}"),
            other => panic!("metadata {key} is not a string: {other:?}"),
        })
        .collect();
    fields.sort();
    fields
}

/// A denial with this gRPC code, HTTP status and `{"error": …}` body.
fn denial(grpc: tonic::Code, http: i32, error: &str) -> Outcome {
    Outcome::Deny {
        grpc: grpc as i32,
        http,
        body: format!(r#"{{"error":"{error}"}}"#),
    }
}

pub fn deny_401() -> Outcome {
    denial(tonic::Code::Unauthenticated, 401, "unauthenticated")
}

pub fn deny_cross_site() -> Outcome {
    denial(tonic::Code::PermissionDenied, 403, "cross-site request")
}

pub fn deny_503() -> Outcome {
    denial(tonic::Code::Unavailable, 503, "auth_unavailable")
}

/// `request` with the route's `context_extensions` (Envoy's per-route `check_settings`).
pub fn with_extensions(mut request: CheckRequest, extensions: &[(&str, &str)]) -> CheckRequest {
    if let Some(attributes) = request.attributes.as_mut() {
        attributes.context_extensions = extensions
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
    }
    request
}

/// `request` for another path (`/admin` otherwise).
pub fn with_path(mut request: CheckRequest, path: &str) -> CheckRequest {
    if let Some(http) = request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        path.clone_into(&mut http.path);
    }
    request
}

/// A valid session refused by a route's `require_roles` / `allow_users`.
pub fn deny_forbidden() -> Outcome {
    denial(tonic::Code::PermissionDenied, 403, "forbidden")
}

/// A route whose settings cannot be read.
pub fn deny_misconfigured() -> Outcome {
    denial(tonic::Code::Internal, 500, "misconfigured route")
}

/// A browser sent to sign in: a 302 (whose `location` [`location`] reads).
pub fn deny_sign_in() -> Outcome {
    Outcome::Deny {
        grpc: tonic::Code::Unauthenticated as i32,
        http: 302,
        body: String::new(),
    }
}

/// The `location` header of a denied response.
pub fn location(response: &CheckResponse) -> Option<String> {
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => denied
            .headers
            .iter()
            .filter_map(|o| o.header.as_ref())
            .find(|h| h.key.eq_ignore_ascii_case("location"))
            .map(|h| h.value.clone()),
        _ => None,
    }
}
