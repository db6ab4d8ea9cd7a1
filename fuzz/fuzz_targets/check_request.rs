//! A CheckRequest off the wire through to the decision: any protobuf bytes, no panic; an allow
//! only with a credential found and a valid verdict, carrying the validator's user.
#![no_main]

use envoy_types::ext_authz::v3::pb::CheckRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use session_authz::credential::{Lookup, Names};
use session_authz::decision::{decide, Decision, OnValidatorError, Situation};
use session_authz::ext_authz::lookup;
use session_authz::validator::{interpret, Verdict};

fuzz_target!(|data: &[u8]| {
    // The first bytes choose the validator's answer; the rest is the CheckRequest.
    let (choice, wire) = match data {
        [c, rest @ ..] => (*c, rest),
        _ => return,
    };
    let Ok(request) = CheckRequest::decode(wire) else {
        return;
    };
    let verdict = match choice % 4 {
        0 => interpret(200, br#"{"valid":true,"user":"fuzz-user"}"#),
        1 => interpret(200, br#"{"valid":true}"#),
        2 => interpret(401, b""),
        _ => interpret(500, b""),
    };
    let situation = match lookup(&request, &Names::default()) {
        None => Situation::Malformed,
        Some(Lookup::Absent) => Situation::NoCredential,
        Some(Lookup::Ambiguous(why)) => Situation::Ambiguous(why),
        Some(Lookup::Found(_)) => Situation::Checked(verdict.clone()),
    };
    let found = matches!(situation, Situation::Checked(_));
    if let Decision::Allow { user, .. } = decide(situation, OnValidatorError::Deny) {
        assert!(found, "allowed without a credential");
        match verdict {
            Verdict::Valid { user: expected } => assert_eq!(user, expected),
            other => panic!("allowed on {other:?}"),
        }
    }
});
