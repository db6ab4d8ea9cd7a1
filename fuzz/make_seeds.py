#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/seeds/ (our own inputs; run from anywhere)."""
import os

here = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    path = os.path.join(here, "seeds", target)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, name), "wb") as f:
        f.write(data)


# credential: header lines "name:value".
for i, text in enumerate([
    b"cookie:a=1; session=T\n",
    b"cookie:session=\"quoted\"; x=1\nx-session-token:quoted\n",
    b"Cookie:Session=no; xsession=no; session_old=no\n",
    b"cookie:session=a; session=b\n",
    b"x-session-token:a,b\n",
    b"cookie:session=YWJjZA==\ncookie:theme=dark\n",
    b"cookie:junk=\xff\xfe; session=T\n",
]):
    write("credential", f"seed-{i}", text)


# validator_answer: two little-endian status bytes, then the body.
def answer(status, body):
    return status.to_bytes(2, "little") + body


for i, data in enumerate([
    answer(200, b'{"valid":true,"user":"alice"}'),
    answer(200, b'{"valid":false}'),
    answer(200, b'{"valid":"true","user":"alice"}'),
    answer(200, b'{"valid":true,"user":"al\\r\\nice"}'),
    answer(200, b'{"valid":true,"valid":false}'),
    answer(401, b'{"valid":true}'),
    answer(200, b"[" * 200 + b"]" * 200),
    answer(200, b'{"valid":true,"user":"a","roles":["admin","ops:read"],"email":"a@example.com"}'),
    answer(200, b'{"valid":true,"user":"a","roles":["ad min"],"email":"a@b,c@d"}'),
    answer(200, b'{"valid":true,"roles":"admin","email":null}'),
]):
    write("validator_answer", f"seed-{i}", data)


# check_request: one choice byte, then a CheckRequest in protobuf wire format.
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def field(tag, payload):
    return varint(tag << 3 | 2) + varint(len(payload)) + payload


def check_request(headers=(), raw=(), method=b"", path=b""):
    http = field(2, method) if method else b""
    http += b"".join(field(3, field(1, k) + field(2, v)) for k, v in headers)
    http += field(4, path) if path else b""
    if raw:
        http += field(13, b"".join(field(1, field(1, k) + field(3, v)) for k, v in raw))
    return field(1, field(4, field(2, http)))


for i, data in enumerate([
    b"\x00" + check_request([(b"cookie", b"session=T")]),
    b"\x01" + check_request([(b"x-session-token", b"T")]),
    b"\x02" + check_request([(b"cookie", b"session=a; session=b")]),
    b"\x00" + check_request(raw=[(b"cookie", b"a=\xff; session=T")]),
    b"\x03" + check_request(),
    b"\x00" + field(1, b""),
    b"\x03" + check_request([(b"cookie", b"session=T"), (b"x-auth-roles", b"admin")]),
    b"\x04" + check_request([(b"x-session-token", b"T")]),
    # A browser's page load, to be sent to sign in (with a dead cookie, and with a hostile path).
    b"\x03" + check_request([(b"sec-fetch-mode", b"navigate")], method=b"GET", path=b"/admin?x=1"),
    b"\x02" + check_request([(b"accept", b"text/html"), (b"cookie", b"session=T")],
                            method=b"GET", path=b"/%2F%2Fevil.example"),
]):
    write("check_request", f"seed-{i}", data)
