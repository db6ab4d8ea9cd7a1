//! Validator answers: any status and body, no panic; `Valid` only for a 200 whose JSON says
//! `"valid": true`, and a user only if it is safe as a header value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_authz::contract::{interpret, Verdict, MAX_USER_BYTES};

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
        if let Some(user) = identity.user {
            assert!(!user.is_empty() && user.len() <= MAX_USER_BYTES);
            assert!(!user.chars().any(char::is_control));
            assert!(!user.contains(','));
            assert_eq!(user.trim(), user);
        }
    }
});
