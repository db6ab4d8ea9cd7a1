//! Property tests: credential lookup and validator-answer parsing alone, and the real core
//! (`authorize`) with a validator that answers from a table. No input panics; an allow happens
//! only on a valid answer for the exact token found; the identity is only ever the validator's;
//! a cross-site refusal never asks the validator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use proptest::prelude::*;
use session_authz::authorize::{self, Authorizer};
use session_authz::contract::{
    interpret, Identity, Verdict, MAX_EMAIL_BYTES, MAX_ROLES, MAX_ROLE_BYTES, MAX_USER_BYTES,
};
use session_authz::credential::{find, Credential, Lookup, Names, Source};
use session_authz::csrf::{cross_site, TrustedOrigins};
use session_authz::decision::{Decision, Reason};
use session_authz::metrics::Metrics;
use session_authz::request::{Headers, RequestView};
use session_authz_testkit::verdicts::{Counting, Table, RENEWAL};

/// Any one of `words`.
fn one_of(words: &'static [&'static str]) -> impl Strategy<Value = String> + Clone {
    proptest::sample::select(words).prop_map(str::to_owned)
}

/// `origin` and `sec-fetch-site`, in odd spellings, with their words, URLs and noise.
fn fetch_headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let name = one_of(&["origin", "Origin", "sec-fetch-site", "Sec-Fetch-Site"]);
    let words = one_of(&[
        "same-origin",
        "none",
        "same-site",
        "cross-site",
        "https://dashboard",
        "http://dashboard:8080",
        "https://evil.example",
        "null",
    ]);
    let value = prop_oneof![words.prop_map(String::into_bytes), header_value()];
    proptest::collection::vec((name, value), 0..3)
}

/// Header names that matter, in odd spellings, plus noise.
fn header_name() -> impl Strategy<Value = String> {
    let names = one_of(&[
        "cookie",
        "Cookie",
        "x-session-token",
        "X-Session-Token",
        "x-auth-user",
        "x-auth-roles",
    ]);
    prop_oneof![names, "[a-z_-]{1,12}"]
}

/// Header values built from cookie-ish fragments and arbitrary bytes.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        Just(b"session=".to_vec()),
        Just(b"Session=".to_vec()),
        Just(b"; ".to_vec()),
        Just(b";".to_vec()),
        Just(b"=".to_vec()),
        Just(b"\"".to_vec()),
        Just(b",".to_vec()),
        Just(b" ".to_vec()),
        "[a-zA-Z0-9+/=._-]{0,8}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..4),
    ];
    proptest::collection::vec(fragment, 0..10).prop_map(|parts| parts.concat())
}

fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    proptest::collection::vec((header_name(), header_value()), 0..6)
}

/// Validator answers: well-formed ones of every kind and garbage.
fn answer() -> impl Strategy<Value = (u16, Vec<u8>)> {
    let status = prop_oneof![
        Just(200u16),
        Just(401),
        Just(403),
        Just(302),
        Just(404),
        Just(500),
        100u16..600
    ];
    let user = prop_oneof![
        Just(None),
        "[a-z]{1,10}".prop_map(Some),
        any::<String>().prop_map(Some),
        "[a-z]{300}".prop_map(Some),
    ];
    let roles = prop_oneof![
        Just(None),
        proptest::collection::vec("[A-Za-z0-9._:/-]{1,8}", 0..4).prop_map(Some),
        proptest::collection::vec(any::<String>(), 0..3).prop_map(Some),
        proptest::collection::vec("[a-z]{1,3}", 60..70).prop_map(Some),
        "[a-z]{65}".prop_map(|role| Some(vec![role])),
    ];
    let email = prop_oneof![
        Just(None),
        "[a-z]{0,8}@example\\.com".prop_map(Some),
        any::<String>().prop_map(Some),
        "[a-z]{250}@x\\.io".prop_map(Some),
    ];
    let json = (any::<bool>(), user, roles, email).prop_map(|(valid, user, roles, email)| {
        let mut body = serde_json::json!({ "valid": valid });
        if let Some(user) = user {
            body["user"] = serde_json::Value::String(user);
        }
        if let Some(roles) = roles {
            body["roles"] = serde_json::json!(roles);
        }
        if let Some(email) = email {
            body["email"] = serde_json::Value::String(email);
        }
        body.to_string().into_bytes()
    });
    let body = prop_oneof![
        json,
        proptest::collection::vec(any::<u8>(), 0..64),
        Just(br#"{"valid":"true"}"#.to_vec()),
        Just(br#"[{"valid":true}]"#.to_vec()),
        Just(br#"{"valid":true,"user":null}"#.to_vec()),
        Just(br#"{"valid":true,"user":42}"#.to_vec()),
        Just(br#"{"valid":true,"user":4.2}"#.to_vec()),
        Just(
            "{\"valid\":true,\"user\":\"a\u{200b}b\"}"
                .as_bytes()
                .to_vec()
        ),
        Just(br#"{"valid":true,"user":"user1, admin"}"#.to_vec()),
        Just(br#"{"valid":true,"user":"a","roles":"admin"}"#.to_vec()),
        Just(br#"{"valid":true,"user":"a","roles":["admin",7]}"#.to_vec()),
        Just(br#"{"valid":true,"user":"a","roles":null}"#.to_vec()),
        Just(br#"{"valid":true,"user":"a","email":null}"#.to_vec()),
        Just(br#"{"valid":true,"user":"a","email":["a@b"]}"#.to_vec()),
    ];
    (status, body)
}

fn lookup(headers: &[(String, Vec<u8>)]) -> Lookup {
    let pairs: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    find(Headers::new(&pairs), &Names::default())
}

/// The `user` an answer carried, as the contract renders it (integers in decimal).
fn sent_user(answer: &serde_json::Value) -> Option<String> {
    match &answer["user"] {
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        other => other.as_str().map(str::to_owned),
    }
}

/// The identity an answer carried, as the contract reads it (an empty user or email is none).
fn sent_identity(answer: &serde_json::Value) -> Identity {
    let roles: Vec<&str> = answer["roles"]
        .as_array()
        .map(|roles| roles.iter().map(|r| r.as_str().unwrap()).collect())
        .unwrap_or_default();
    Identity::new(
        sent_user(answer).as_deref(),
        &roles,
        answer["email"].as_str(),
    )
}

fn role_is_safe(role: &str) -> bool {
    (1..=MAX_ROLE_BYTES).contains(&role.len())
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b))
}

fn user_is_safe(user: &str) -> bool {
    text_is_safe(user, MAX_USER_BYTES)
}

fn text_is_safe(user: &str, max_bytes: usize) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    user.len() <= max_bytes
        && !user.chars().any(char::is_control)
        && !user.contains(',')
        && !user.chars().any(|c| {
            matches!(
                c.general_category(),
                GeneralCategory::Format
                    | GeneralCategory::LineSeparator
                    | GeneralCategory::ParagraphSeparator
            )
        })
        && user.trim() == user
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn a_found_token_was_in_the_request_and_is_forwardable(headers in headers()) {
        if let Lookup::Found(credential) = lookup(&headers) {
            let token = credential.token();
            prop_assert!(!token.is_empty());
            prop_assert!(!token.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f));
            let carrier = match credential.source() {
                Source::Cookie => "cookie",
                Source::Header => "x-session-token",
            };
            let present = headers.iter().any(|(name, value)| {
                name.eq_ignore_ascii_case(carrier)
                    && String::from_utf8_lossy(value).contains(token)
            });
            prop_assert!(present, "{token:?} not in any {carrier} header");
        }
    }

    #[test]
    fn lookup_is_stable_under_header_order(headers in headers()) {
        let mut reversed = headers.clone();
        reversed.reverse();
        // Order may change which copy is seen first, never whether the result is a credential.
        let a = matches!(lookup(&headers), Lookup::Found(_));
        let b = matches!(lookup(&reversed), Lookup::Found(_));
        prop_assert_eq!(a, b);
    }

    #[test]
    fn interpret_never_panics_and_is_strict((status, body) in answer()) {
        match interpret(status, &body) {
            Verdict::Valid(identity) => {
                prop_assert_eq!(status, 200);
                let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
                prop_assert_eq!(&parsed["valid"], &serde_json::Value::Bool(true));
                if let Some(user) = identity.user() {
                    prop_assert!(!user.is_empty() && user_is_safe(user));
                }
                prop_assert!(identity.roles().count() <= MAX_ROLES);
                prop_assert!(identity.roles().all(role_is_safe));
                if let Some(email) = identity.email() {
                    prop_assert!(!email.is_empty() && text_is_safe(email, MAX_EMAIL_BYTES));
                }
                // All of the validator's identity, nothing else.
                prop_assert_eq!(identity, sent_identity(&parsed));
            }
            Verdict::Invalid => prop_assert!(status == 200 || status == 401 || status == 403),
            Verdict::Error(_) => prop_assert!(status != 401 && status != 403),
        }
    }

    /// The real core, with a validator that answers per token.
    #[test]
    fn allows_only_on_a_valid_answer_for_that_exact_token(
        headers in headers(),
        answers in proptest::collection::hash_map("[a-zA-Z0-9=._-]{1,8}", answer(), 0..4),
        fallback in answer(),
    ) {
        let table = Table::new(answers, fallback);
        let core = Authorizer::new(
            authorize::Settings::default(),
            &table,
            Arc::new(Metrics::new(true)),
        );
        let pairs: Vec<(&str, &[u8])> =
            headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
        let view = RequestView { method: "GET", path: "/admin", host: "dashboard", headers: Headers::new(&pairs), extensions: None };
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let checked = runtime.block_on(core.authorize(&view));
        // The validator's cookies pass on exactly with a valid answer's allow and an invalid
        // answer's 401.
        let renewing = matches!(
            checked.decision,
            Decision::Allow { reason: Reason::ValidSession, .. }
                | Decision::Deny { reason: Reason::InvalidSession, .. }
        );
        let expected: Vec<String> = if renewing { vec![RENEWAL.to_owned()] } else { Vec::new() };
        prop_assert_eq!(&checked.set_cookies, &expected, "{:?}", checked.decision);
        if let Decision::Allow { identity, .. } = checked.decision {
            let Lookup::Found(credential) = lookup(&headers) else {
                return Err(TestCaseError::fail("allowed without a credential"));
            };
            let (status, body) = table.answer(credential.token());
            prop_assert_eq!(*status, 200);
            let parsed: serde_json::Value = serde_json::from_slice(body).unwrap();
            prop_assert_eq!(&parsed["valid"], &serde_json::Value::Bool(true));
            prop_assert_eq!(identity, sent_identity(&parsed));
        }
    }

    /// The real core refuses exactly what the pure check calls cross-site, and only cookie
    /// requests on unsafe methods, before any validator call.
    #[test]
    fn a_cross_site_refusal_never_asks_the_validator(
        headers in headers(),
        fetch in fetch_headers(),
        method in prop_oneof![Just("GET"), Just("HEAD"), Just("OPTIONS"), Just("POST"), Just("DELETE"), Just("get"), Just("")],
    ) {
        let all: Vec<(String, Vec<u8>)> = headers.into_iter().chain(fetch).collect();
        let validator = Counting::default();
        let core = Authorizer::new(
            authorize::Settings::default(),
            &validator,
            Arc::new(Metrics::new(true)),
        );
        let pairs: Vec<(&str, &[u8])> =
            all.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
        let view = RequestView { method, path: "/admin", host: "dashboard", headers: Headers::new(&pairs), extensions: None };
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let refused = runtime.block_on(core.authorize(&view)).decision.reason() == Reason::CrossSite;
        let expected = match lookup(&all) {
            Lookup::Found(credential) => {
                cross_site(&view, credential.source(), &TrustedOrigins::default()).is_some()
            }
            _ => false,
        };
        prop_assert_eq!(refused, expected);
        if refused {
            prop_assert_eq!(validator.calls(), 0);
            let Lookup::Found(credential) = lookup(&all) else { unreachable!() };
            prop_assert_eq!(credential.source(), Source::Cookie);
            prop_assert!(!["GET", "HEAD", "OPTIONS"].contains(&method));
        }
    }

    #[test]
    fn fingerprints_never_contain_the_token(token in "[ -~]{1,64}") {
        let credential = Credential::new(Source::Cookie, token.clone());
        let fingerprint = credential.fingerprint();
        prop_assert_eq!(fingerprint.len(), 8);
        // Debug shows the source and the fingerprint, and nothing of the token.
        let expected = format!("Credential {{ source: Cookie, token: #{fingerprint} }}");
        prop_assert_eq!(format!("{credential:?}"), expected);
    }
}
