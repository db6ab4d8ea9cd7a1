//! The gRPC door's answer as a prost [`Message`]: an allow is written straight from the cached
//! identity to the protobuf bytes of a `CheckResponse`, every other decision goes out as the
//! `CheckResponse` envoy-types' builders make.
//!
//! Why: building an allow as envoy-types' owned message copies every header name, value and
//! metadata field into its own `String` and a `HashMap`, only to encode and free them — more
//! than half of what a cache hit costs us (docs/benchmarks.md, "The allow, encoded directly").
//! The bytes are the ones prost writes for the same message; the tests decode them with
//! envoy-types' own types.

use envoy_types::ext_authz::v3::pb::{CheckResponse, HeaderAppendAction};
use prost::bytes::{Buf, BufMut};
use prost::encoding::{
    encode_varint, encoded_len_varint, key_len, skip_field, DecodeContext, WireType,
};
use prost::{DecodeError, Message};

use super::IdentityHeaders;
use crate::contract::Identity;

/// What the Check RPC answers.
#[derive(Clone, Debug)]
pub enum Answer {
    /// An allow's `CheckResponse`, already encoded (see [`Allowed::encode`]).
    Allow(Vec<u8>),
    /// A denial or a sign-in redirect: rare enough to build the owned message.
    Built(Box<CheckResponse>),
}

/// An allow, as the pieces it is written from.
#[derive(Debug)]
pub struct Allowed<'a> {
    pub identity: &'a Identity,
    /// The signed identity assertion, when assertions are on.
    pub assertion: Option<&'a str>,
    pub names: &'a IdentityHeaders,
    /// Renewal cookies for the client, one `Set-Cookie` apiece.
    pub set_cookies: &'a [String],
    /// The dynamic metadata's `reason` and `cache`.
    pub reason: &'static str,
    pub cache: &'static str,
}

impl Answer {
    /// The answer as envoy-types' message, by encoding and decoding it: what Envoy reads.
    pub fn to_check_response(&self) -> Result<CheckResponse, DecodeError> {
        CheckResponse::decode(self.encode_to_vec().as_slice())
    }
}

impl Default for Answer {
    fn default() -> Self {
        Answer::Built(Box::default())
    }
}

/// Field numbers of envoy.service.auth.v3 and envoy.config.core.v3, and of google.protobuf's
/// `Struct` and `Value`.
mod tag {
    pub(super) const RESPONSE_STATUS: u32 = 1;
    pub(super) const RESPONSE_OK: u32 = 3;
    pub(super) const RESPONSE_METADATA: u32 = 4;
    pub(super) const OK_HEADERS: u32 = 2;
    pub(super) const OK_HEADERS_TO_REMOVE: u32 = 5;
    pub(super) const OK_RESPONSE_HEADERS_TO_ADD: u32 = 6;
    pub(super) const OPTION_HEADER: u32 = 1;
    pub(super) const OPTION_APPEND: u32 = 2;
    pub(super) const OPTION_APPEND_ACTION: u32 = 3;
    pub(super) const HEADER_KEY: u32 = 1;
    pub(super) const HEADER_VALUE: u32 = 2;
    pub(super) const STRUCT_FIELDS: u32 = 1;
    pub(super) const ENTRY_KEY: u32 = 1;
    pub(super) const ENTRY_VALUE: u32 = 2;
    pub(super) const VALUE_STRING: u32 = 3;
}

/// A length-delimited field's whole size, given its payload's.
fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// A varint; the lengths and keys here are nearly always under 128, one byte.
fn put_varint(value: u64, buf: &mut Vec<u8>) {
    match u8::try_from(value) {
        Ok(byte) if byte < 0x80 => buf.push(byte),
        _ => encode_varint(value, buf),
    }
}

fn put_key(tag: u32, wire_type: WireType, buf: &mut Vec<u8>) {
    put_varint(u64::from(tag << 3 | wire_type as u32), buf);
}

fn put_delimited(tag: u32, len: usize, buf: &mut Vec<u8>) {
    put_key(tag, WireType::LengthDelimited, buf);
    put_varint(len as u64, buf);
}

/// A singular proto3 string: left out when empty, as prost does.
fn text_len(tag: u32, text: &str) -> usize {
    if text.is_empty() {
        0
    } else {
        delimited_len(tag, text.len())
    }
}

fn put_text(tag: u32, text: &str, buf: &mut Vec<u8>) {
    if !text.is_empty() {
        put_delimited(tag, text.len(), buf);
        buf.extend_from_slice(text.as_bytes());
    }
}

/// A `HeaderValueOption`. `overwrite`: set, never append (`append_action` and the deprecated
/// `append: false`, which older Envoys read); otherwise appended (each renewal cookie its own
/// header).
#[derive(Clone, Copy)]
struct HeaderOption<'a> {
    key: &'a str,
    value: &'a str,
    overwrite: bool,
    /// The `HeaderValue`'s size, and the whole option's.
    header_len: usize,
    len: usize,
}

const OVERWRITE: u64 = HeaderAppendAction::OverwriteIfExistsOrAdd as u64;

impl<'a> HeaderOption<'a> {
    fn new(key: &'a str, value: &'a str, overwrite: bool) -> Self {
        let header_len = text_len(tag::HEADER_KEY, key) + text_len(tag::HEADER_VALUE, value);
        let set = if overwrite {
            // `append` is an empty BoolValue (false); the action a varint.
            delimited_len(tag::OPTION_APPEND, 0)
                + key_len(tag::OPTION_APPEND_ACTION)
                + encoded_len_varint(OVERWRITE)
        } else {
            0
        };
        Self {
            key,
            value,
            overwrite,
            header_len,
            len: delimited_len(tag::OPTION_HEADER, header_len) + set,
        }
    }

    fn put(&self, tag: u32, buf: &mut Vec<u8>) {
        put_delimited(tag, self.len, buf);
        put_delimited(tag::OPTION_HEADER, self.header_len, buf);
        put_text(tag::HEADER_KEY, self.key, buf);
        put_text(tag::HEADER_VALUE, self.value, buf);
        if self.overwrite {
            put_delimited(tag::OPTION_APPEND, 0, buf);
            put_key(tag::OPTION_APPEND_ACTION, WireType::Varint, buf);
            put_varint(OVERWRITE, buf);
        }
    }
}

/// One `Struct` map entry whose value is a string `Value`.
fn entry_value_len(value: &str) -> usize {
    // A oneof member is written even when empty.
    delimited_len(tag::VALUE_STRING, value.len())
}

fn entry_len(key: &str, value: &str) -> usize {
    text_len(tag::ENTRY_KEY, key) + delimited_len(tag::ENTRY_VALUE, entry_value_len(value))
}

fn put_entry(key: &str, value: &str, buf: &mut Vec<u8>) {
    put_delimited(tag::STRUCT_FIELDS, entry_len(key, value), buf);
    put_text(tag::ENTRY_KEY, key, buf);
    put_delimited(tag::ENTRY_VALUE, entry_value_len(value), buf);
    put_delimited(tag::VALUE_STRING, value.len(), buf);
    buf.extend_from_slice(value.as_bytes());
}

impl Allowed<'_> {
    /// The `CheckResponse` bytes: status OK (an empty `google.rpc.Status`), the `ok_response`
    /// with the identity headers set or removed and the cookies for the client, and the
    /// dynamic metadata. Each accessor runs once and the bytes go to one exact-size buffer:
    /// writing through tonic's buffer byte by byte costs more than the copy.
    pub fn encode(&self) -> Vec<u8> {
        let identity = self.names.fields(self.identity, self.assertion);
        let set =
            identity.map(|(key, value)| value.map(|value| HeaderOption::new(key, value, true)));
        let set = set.iter().flatten();
        let removed = identity
            .iter()
            .filter(|(_, value)| value.is_none())
            .map(|&(key, _)| key);
        let cookies = self
            .set_cookies
            .iter()
            .map(|cookie| HeaderOption::new("set-cookie", cookie, false));
        let metadata = metadata_fields(self.reason, self.cache, Some(self.identity));

        let ok_len = set
            .clone()
            .map(|option| delimited_len(tag::OK_HEADERS, option.len))
            .chain(
                removed
                    .clone()
                    .map(|key| delimited_len(tag::OK_HEADERS_TO_REMOVE, key.len())),
            )
            .chain(
                cookies
                    .clone()
                    .map(|option| delimited_len(tag::OK_RESPONSE_HEADERS_TO_ADD, option.len)),
            )
            .sum();
        let metadata_len = metadata
            .clone()
            .map(|(key, value)| delimited_len(tag::STRUCT_FIELDS, entry_len(key, value)))
            .sum();
        let len = delimited_len(tag::RESPONSE_STATUS, 0)
            + delimited_len(tag::RESPONSE_OK, ok_len)
            + delimited_len(tag::RESPONSE_METADATA, metadata_len);

        let mut buf = Vec::with_capacity(len);
        put_delimited(tag::RESPONSE_STATUS, 0, &mut buf);
        put_delimited(tag::RESPONSE_OK, ok_len, &mut buf);
        for option in set {
            option.put(tag::OK_HEADERS, &mut buf);
        }
        for key in removed {
            // A repeated string is written even when empty.
            put_delimited(tag::OK_HEADERS_TO_REMOVE, key.len(), &mut buf);
            buf.extend_from_slice(key.as_bytes());
        }
        for option in cookies {
            option.put(tag::OK_RESPONSE_HEADERS_TO_ADD, &mut buf);
        }
        put_delimited(tag::RESPONSE_METADATA, metadata_len, &mut buf);
        for (key, value) in metadata {
            put_entry(key, value, &mut buf);
        }
        buf
    }
}

impl Message for Answer {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match self {
            Answer::Allow(bytes) => buf.put_slice(bytes),
            Answer::Built(response) => response.encode_raw(buf),
        }
    }

    /// Never decoded: every field is skipped.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        match self {
            Answer::Allow(bytes) => bytes.len(),
            Answer::Built(response) => response.encoded_len(),
        }
    }

    fn clear(&mut self) {
        *self = Answer::default();
    }
}

/// The flat `dynamic_metadata` Envoy files under `envoy.filters.http.ext_authz`, for its access
/// log and rate limiter: `reason` and `cache` always; `user` and `roles` (comma-joined) only on
/// an allow's identity that has them — left out otherwise, so that an access log shows `-`.
/// Never a token, and not the email (logs need no address).
pub fn metadata_fields<'a>(
    reason: &'static str,
    cache: &'static str,
    identity: Option<&'a Identity>,
) -> impl Iterator<Item = (&'static str, &'a str)> + Clone {
    let user = identity.and_then(Identity::user).map(|user| ("user", user));
    let roles = identity
        .and_then(Identity::roles_value)
        .map(|roles| ("roles", roles));
    [("reason", reason), ("cache", cache)]
        .into_iter()
        .chain(user)
        .chain(roles)
}
