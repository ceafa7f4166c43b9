"""The management token format: ``br-mgmt-`` + a 12-character public id + a 43-character
secret, built like an API key (accounts/keys.py) but with its own prefix.

The prefixes keep the two kinds apart by construction: /v1 accepts only ``sk-br-`` keys and
/api only ``br-mgmt-`` tokens, so a leaked token cannot spend money through /v1 and a key
baked into an application cannot create keys or redeem vouchers.
"""

from __future__ import annotations

import re

from accounts.keys import KEY_LENGTH, KEY_PREFIX, PUBLIC_ID_LENGTH, GeneratedKey, secret_generate
from accounts.keys import key_digest as token_digest

TOKEN_PREFIX = "br-mgmt-"
TOKEN_LENGTH = len(TOKEN_PREFIX) + KEY_LENGTH - len(KEY_PREFIX)
_TOKEN_RE = re.compile(rf"^{TOKEN_PREFIX}[0-9A-Za-z]{{{TOKEN_LENGTH - len(TOKEN_PREFIX)}}}$")

__all__ = ["TOKEN_LENGTH", "TOKEN_PREFIX", "token_digest", "token_generate",
           "token_is_well_formed", "token_prefix_of"]


def token_generate() -> GeneratedKey:
    """secret: the whole token, shown once; prefix and digest: what is stored."""
    return secret_generate(TOKEN_PREFIX)


def token_is_well_formed(raw_token: str) -> bool:
    return len(raw_token) == TOKEN_LENGTH and _TOKEN_RE.match(raw_token) is not None


def token_prefix_of(raw_token: str) -> str:
    return raw_token[: len(TOKEN_PREFIX) + PUBLIC_ID_LENGTH]
