//! Validator answers: any status and body, no panic; `Valid` only for a 200 whose JSON says
//! `"valid": true`, and a user, roles and email only if each is safe as a header value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_authz::contract::{
    interpret, Verdict, MAX_EMAIL_BYTES, MAX_ROLES, MAX_ROLE_BYTES, MAX_USER_BYTES,
};

fn plain(text: &str, max_bytes: usize) {
    assert!(!text.is_empty() && text.len() <= max_bytes);
    assert!(!text.chars().any(char::is_control));
    assert!(!text.contains(','));
    assert_eq!(text.trim(), text);
}

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]) % 600, rest),
        _ => return,
    };
    // Bias towards 200, where the body matters.
    let status = if status % 4 == 0 { status } else { 200 };
    if let Verdict::Valid(identity) = interpret(status, body) {
        assert_eq!(status, 200);
        assert!(body.trim_ascii_start().starts_with(b"{"));
        if let Some(user) = identity.user() {
            plain(user, MAX_USER_BYTES);
        }
        if let Some(email) = identity.email() {
            plain(email, MAX_EMAIL_BYTES);
        }
        assert!(identity.roles().count() <= MAX_ROLES);
        for role in identity.roles() {
            assert!(!role.is_empty() && role.len() <= MAX_ROLE_BYTES);
            assert!(role
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b)));
        }
    }
});
