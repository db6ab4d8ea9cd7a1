//! A CheckRequest off the wire through the gRPC door and the real core: any protobuf bytes, no
//! panic; an allow only with a credential found and a valid verdict, setting exactly the
//! validator's identity and removing every identity header it lacks; every denial a non-OK
//! status; every response with its metadata; the validator's `Set-Cookie` only on an allow or
//! on the invalid-session 401 (or its sign-in redirect); a redirect only to the login page, its
//! return value a local path.
#![no_main]

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    CheckRequest, HeaderValueOption, HttpResponse,
};
use libfuzzer_sys::fuzz_target;
use percent_encoding::{percent_decode, percent_decode_str};
use prost::Message;
use session_authz::authorize::{self, Authorizer, Verdicts};
use session_authz::request::RequestView;
use session_authz::cache::{Answered, Origin};
use session_authz::contract::{interpret, Verdict};
use session_authz::credential::Credential;
use session_authz::doors::grpc::{CheckService, OnValidatorError};
use session_authz::doors::IdentityHeaders;
use session_authz::metrics::Metrics;
use session_authz::signin::{self, LoginUrl};

/// One fixed answer for every credential, setting [`RENEWAL`] when it is valid or invalid.
struct Fixed(Verdict);

const RENEWAL: &str = "session=fuzz; Max-Age=60";

impl Verdicts for Fixed {
    async fn verdict(&self, _: &Credential, _: &RequestView<'_>) -> Answered {
        let set_cookies = match self.0 {
            Verdict::Error(_) => Vec::new(),
            _ => vec![RENEWAL.to_owned()],
        };
        Answered {
            verdict: self.0.clone(),
            origin: Origin::Miss,
            set_cookies,
        }
    }
}

/// The `set-cookie` values among `options`.
fn set_cookies(options: &[HeaderValueOption]) -> Vec<String> {
    options
        .iter()
        .filter_map(|o| o.header.as_ref())
        .filter(|h| h.key == "set-cookie")
        .map(|h| h.value.clone())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the validator's answer; the rest is the CheckRequest.
    let (choice, wire) = match data {
        [c, rest @ ..] => (*c, rest),
        _ => return,
    };
    let Ok(request) = CheckRequest::decode(wire) else {
        return;
    };
    let verdict = match choice % 5 {
        0 => interpret(200, br#"{"valid":true,"user":"fuzz-user"}"#),
        1 => interpret(200, br#"{"valid":true}"#),
        2 => interpret(401, b""),
        3 => interpret(
            200,
            br#"{"valid":true,"user":"u","roles":["admin","viewer"],"email":"u@example.com"}"#,
        ),
        _ => interpret(500, b""),
    };
    // Sign-in redirects on, so that any request path goes through the redirect's checks.
    let settings = authorize::Settings {
        sign_in: signin::Settings {
            login_url: Some(LoginUrl::parse("/login").expect("a valid login_url")),
            ..signin::Settings::default()
        },
        ..authorize::Settings::default()
    };
    let core = Authorizer::new(
        settings,
        Fixed(verdict.clone()),
        Arc::new(Metrics::new(true)),
    );
    let names = IdentityHeaders::default();
    let service = CheckService::new(Arc::new(core), OnValidatorError::Deny);
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    let response = runtime
        .block_on(service.check(&request))
        .expect("only grpc-error mode fails the RPC")
        .to_check_response()
        .expect("every answer decodes as a CheckResponse");
    let code = response.status.as_ref().map_or(0, |s| s.code);
    let metadata = response
        .dynamic_metadata
        .as_ref()
        .expect("metadata on every response");
    assert!(metadata.fields.contains_key("reason") && metadata.fields.contains_key("cache"));
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            assert_eq!(code, 0);
            let Verdict::Valid(identity) = verdict else {
                panic!("allowed on {verdict:?}");
            };
            let set: Vec<_> = ok
                .headers
                .iter()
                .filter_map(|o| o.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect();
            let fields = [
                (names.user, identity.user()),
                (names.roles, identity.roles_value()),
                (names.email, identity.email()),
                // Assertions are off: a client's copy is removed.
                (names.assertion, None),
            ];
            let expected: Vec<_> = fields
                .iter()
                .filter_map(|(name, value)| Some((name.clone(), (*value)?.to_owned())))
                .collect();
            let removed: Vec<_> = fields
                .iter()
                .filter(|(_, value)| value.is_none())
                .map(|(name, _)| name.clone())
                .collect();
            assert_eq!(set, expected);
            assert_eq!(ok.headers_to_remove, removed);
            // Auth disabled asks no verdict, so it sets none.
            let renewed = set_cookies(&ok.response_headers_to_add);
            assert!(renewed.is_empty() || renewed == [RENEWAL], "{renewed:?}");
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            assert_ne!(code, 0, "a denial Envoy would allow");
            let cleared = set_cookies(&denied.headers);
            let status = denied.status.as_ref().map(|s| s.code);
            if !cleared.is_empty() {
                assert_eq!(verdict, Verdict::Invalid);
                assert!(matches!(status, Some(401 | 302)), "{status:?}");
                assert_eq!(cleared, [RENEWAL]);
            }
            if status == Some(302) {
                assert_eq!(code, tonic::Code::Unauthenticated as i32);
                let location = denied
                    .headers
                    .iter()
                    .filter_map(|o| o.header.as_ref())
                    .find(|h| h.key == "location")
                    .map(|h| h.value.clone())
                    .expect("a redirect names its location");
                // The login page, and a return value that decodes to a local path only.
                match location.strip_prefix("/login?return_to=") {
                    Some(encoded) => {
                        let back = percent_decode_str(encoded).decode_utf8_lossy();
                        assert!(signin::is_safe_return(&back), "{back:?}");
                        // Checked here on its own too: every further decoding is still a
                        // local path of visible ASCII (no control character, no `//`, `/\`).
                        let mut text = back.as_bytes().to_vec();
                        loop {
                            assert!(text.iter().all(u8::is_ascii_graphic), "{back:?}");
                            assert!(
                                text.first() == Some(&b'/')
                                    && !matches!(text.get(1), Some(b'/' | b'\\')),
                                "{back:?}"
                            );
                            let next: Vec<u8> = percent_decode(&text).collect();
                            if next == text {
                                break;
                            }
                            text = next;
                        }
                    }
                    None => assert_eq!(location, "/login"),
                }
            }
        }
        other => panic!("neither ok nor denied: {other:?}"),
    }
});
