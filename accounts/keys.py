"""The API key format: ``sk-br-`` + a 12-character public id + a 43-character secret.

The secret part encodes 32 bytes from ``secrets`` in base62, so it carries 256 bits; the
public id only has to be unique, and is what staff and users see as the key's prefix.
Only the prefix and the SHA-256 digest of the whole key are stored: a key of that much
entropy cannot be brute-forced from its digest, so no slow hash is needed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass

KEY_PREFIX = "sk-br-"
PUBLIC_ID_LENGTH = 12
SECRET_BYTES = 32
_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
_SECRET_LENGTH = 43  # ceil(256 / log2(62))
KEY_LENGTH = len(KEY_PREFIX) + PUBLIC_ID_LENGTH + _SECRET_LENGTH
_KEY_RE = re.compile(rf"^{KEY_PREFIX}[0-9A-Za-z]{{{PUBLIC_ID_LENGTH + _SECRET_LENGTH}}}$")


def base62(data: bytes, width: int) -> str:
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, rem = divmod(number, 62)
        digits.append(_ALPHABET[rem])
    return "".join(reversed(digits)).rjust(width, "0")


@dataclass(frozen=True)
class GeneratedKey:
    secret: str  # the whole key, shown to its owner once
    prefix: str  # sk-br- + public id: stored, shown in lists
    digest: str  # hex SHA-256 of the whole key: stored


def key_generate() -> GeneratedKey:
    return secret_generate(KEY_PREFIX)


def secret_generate(kind_prefix: str) -> GeneratedKey:
    """``kind_prefix`` + public id + secret: the shape of API keys and management tokens
    (accounts/tokens.py), which differ only in their prefix."""
    public_id = "".join(secrets.choice(_ALPHABET) for _ in range(PUBLIC_ID_LENGTH))
    secret = kind_prefix + public_id + base62(secrets.token_bytes(SECRET_BYTES), _SECRET_LENGTH)
    return GeneratedKey(secret=secret, prefix=secret[: len(kind_prefix) + PUBLIC_ID_LENGTH],
                        digest=key_digest(secret))


def key_digest(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def key_is_well_formed(raw_key: str) -> bool:
    return len(raw_key) == KEY_LENGTH and _KEY_RE.match(raw_key) is not None


def key_prefix_of(raw_key: str) -> str:
    return raw_key[: len(KEY_PREFIX) + PUBLIC_ID_LENGTH]


def digests_match(stored: str, candidate: str) -> bool:
    # Constant time, so response timing says nothing about how much of a digest matched.
    return hmac.compare_digest(stored.encode(), candidate.encode())
