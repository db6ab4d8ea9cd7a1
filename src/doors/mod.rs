//! The doors through which proxies ask: each converts its protocol to the core's
//! [`crate::request::RequestView`], calls the core, and converts the decision back.
//!
//! What a denial looks like to the client (status, JSON body, headers) is written here once, so
//! that every door answers alike.

pub mod answer;
pub mod grpc;
pub mod http;

use crate::decision::{DenyStatus, Reason};

/// The header names every door sets the identity in: the core's, so that a reload swaps them
/// with the rules they go with.
pub use crate::authorize::IdentityHeaders;

/// Seconds a client is told to wait after a 503.
pub const RETRY_AFTER_SECS: u32 = 5;

/// What the client gets for a denial, whichever door it came through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The HTTP status.
    pub code: u16,
    /// `{"error":"…"}`.
    pub body: String,
    /// `content-type`, `cache-control` and, on a 503, `retry-after` (each set, not appended).
    pub headers: Vec<(&'static str, String)>,
}

/// The one mapping of a denial to its status, body and headers.
pub fn denial(status: DenyStatus, reason: Reason) -> Denial {
    let error = match status {
        DenyStatus::BadRequest => "bad_request",
        DenyStatus::Unauthenticated => "unauthenticated",
        // A refused rule says which, when it is the CSRF one (docs/architecture.md).
        DenyStatus::Forbidden if reason == Reason::CrossSite => "cross-site request",
        DenyStatus::Forbidden => "forbidden",
        DenyStatus::Unavailable => "auth_unavailable",
        DenyStatus::Misconfigured => "misconfigured route",
    };
    let mut headers = vec![
        ("content-type", "application/json".to_owned()),
        ("cache-control", "no-store".to_owned()),
    ];
    if status == DenyStatus::Unavailable {
        headers.push(("retry-after", RETRY_AFTER_SECS.to_string()));
    }
    Denial {
        code: status.http_code(),
        body: format!("{{\"error\":\"{error}\"}}"),
        headers,
    }
}

/// The headers of the 302 to the sign-in page, besides any `Set-Cookie`: neither the browser
/// nor a cache in between may keep it, since after signing in the same URL must reach the page.
pub fn sign_in_headers(location: &str) -> [(&'static str, String); 2] {
    [
        ("location", location.to_owned()),
        ("cache-control", "no-store".to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_denial_has_its_status_and_a_json_error() {
        let cases = [
            (
                DenyStatus::BadRequest,
                Reason::Malformed,
                400,
                "bad_request",
            ),
            (
                DenyStatus::Unauthenticated,
                Reason::NoCredential,
                401,
                "unauthenticated",
            ),
            (
                DenyStatus::Forbidden,
                Reason::CrossSite,
                403,
                "cross-site request",
            ),
            (DenyStatus::Forbidden, Reason::Forbidden, 403, "forbidden"),
            (
                DenyStatus::Unavailable,
                Reason::NoCredential,
                503,
                "auth_unavailable",
            ),
            (
                DenyStatus::Misconfigured,
                Reason::MisconfiguredRoute,
                500,
                "misconfigured route",
            ),
        ];
        for (status, reason, code, error) in cases {
            let denial = denial(status, reason);
            assert_eq!(denial.code, code);
            assert_eq!(denial.body, format!("{{\"error\":\"{error}\"}}"));
            let names: Vec<_> = denial.headers.iter().map(|(name, _)| *name).collect();
            if code == 503 {
                assert_eq!(names, ["content-type", "cache-control", "retry-after"]);
            } else {
                assert_eq!(names, ["content-type", "cache-control"]);
            }
        }
    }

    /// The doors cannot drift apart: for every kind of denial and the sign-in, what the gRPC
    /// door's denied response shows the client (status, headers, body) is what the forward-auth
    /// door answers. Only the allow's shape differs by protocol (headers to the app there, a
    /// 200 here).
    #[tokio::test]
    async fn both_doors_answer_every_denial_alike() {
        use envoy_types::ext_authz::v3::pb::HttpResponse;

        use crate::authorize::Checked;
        use crate::cache::Origin;
        use crate::contract::ErrorKind;
        use crate::credential::Ambiguity;
        use crate::decision::Decision;

        let deny = |status, reason| Decision::Deny { status, reason };
        let decisions = [
            deny(DenyStatus::BadRequest, Reason::Malformed),
            deny(DenyStatus::Unauthenticated, Reason::NoCredential),
            deny(DenyStatus::Unauthenticated, Reason::InvalidSession),
            deny(
                DenyStatus::Unauthenticated,
                Reason::Ambiguous(Ambiguity::CookieHeaderMismatch),
            ),
            deny(DenyStatus::Forbidden, Reason::CrossSite),
            deny(DenyStatus::Forbidden, Reason::Forbidden),
            deny(
                DenyStatus::Unavailable,
                Reason::ValidatorError(ErrorKind::Timeout),
            ),
            deny(DenyStatus::Misconfigured, Reason::MisconfiguredRoute),
            Decision::SignIn {
                location: "/login?return_to=%2Fadmin".to_owned(),
                reason: Reason::NoCredential,
            },
        ];
        let names = IdentityHeaders::default();
        for decision in decisions {
            for set_cookies in [vec![], vec!["session=; Max-Age=0".to_owned()]] {
                let checked = Checked {
                    decision: decision.clone(),
                    cache: Some(Origin::Miss),
                    set_cookies,
                    assertion: None,
                };
                let answer = grpc::answer(&checked, &names, grpc::OnValidatorError::Deny)
                    .unwrap()
                    .to_check_response()
                    .unwrap();
                let Some(HttpResponse::DeniedResponse(denied)) = answer.http_response else {
                    panic!("{decision:?}: no denied response");
                };
                let mut grpc_headers: Vec<(String, String)> = denied
                    .headers
                    .iter()
                    .filter_map(|option| option.header.as_ref())
                    .map(|header| (header.key.clone(), header.value.clone()))
                    .collect();
                grpc_headers.sort();
                let grpc_status = denied.status.map(|status| status.code);

                let response =
                    http::response(&checked, &http::Named::new(&names), http::SignInAs::Found);
                let mut http_headers: Vec<(String, String)> = response
                    .headers()
                    .iter()
                    .map(|(name, value)| {
                        (name.as_str().to_owned(), value.to_str().unwrap().to_owned())
                    })
                    .collect();
                http_headers.sort();
                let http_status = i32::from(response.status().as_u16());
                let body = http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .unwrap()
                    .to_bytes();

                assert_eq!(grpc_status, Some(http_status), "{decision:?}");
                assert_eq!(grpc_headers, http_headers, "{decision:?}");
                assert_eq!(denied.body.as_bytes(), &body[..], "{decision:?}");
            }
        }
    }
}
