//! Cookie and header parsing: any header bytes, no panic; a found token is non-empty, free of
//! control characters and present in a header of its kind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_authz::credential::{find, Lookup, Names, Source};
use session_authz::request::Headers;

/// Splits the input into `(name, value)` pairs: lines, name before the first `:`.
fn pairs(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    data.split(|b| *b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|b| *b == b':')?;
            let name = String::from_utf8_lossy(&line[..colon]).into_owned();
            Some((name, line[colon + 1..].to_vec()))
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let headers = pairs(data);
    let pairs: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let found = find(Headers::new(&pairs), &Names::default());
    if let Lookup::Found(credential) = found {
        let token = credential.token();
        assert!(!token.is_empty());
        assert!(!token.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f));
        let carrier = match credential.source() {
            Source::Cookie => "cookie",
            Source::Header => "x-session-token",
        };
        assert!(headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(carrier)
                && String::from_utf8_lossy(v).contains(token)));
    }
});
