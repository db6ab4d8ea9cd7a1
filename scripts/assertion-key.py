#!/usr/bin/env python3
"""Writes a new private key for session-authz's assertion_key: PKCS#8 PEM, Ed25519 (default)
or P-256, made with the cryptography package (installed into .tools/venv by
scripts/install-tools.sh). The same as `openssl genpkey -algorithm ed25519` or
`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`, for machines without openssl.

usage: assertion-key.py [ed25519|p256] FILE
"""
import os
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ("ed25519", "p256"):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    kind, path = sys.argv[1], sys.argv[2]
    key = ed25519.Ed25519PrivateKey.generate() if kind == "ed25519" else ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Readable by its owner only, like any private key.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return 0


if __name__ == "__main__":
    sys.exit(main())
