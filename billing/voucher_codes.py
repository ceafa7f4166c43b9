"""The voucher code format: ``BR-`` and four groups of four characters, e.g.
``BR-7KQM-X4TP-9HNA-C2WE``.

The alphabet leaves out characters people confuse when reading a printed code aloud
(0/O, 1/I/L, and U, which passes for V), so 30 symbols remain; 16 of them drawn with
``secrets`` carry 78 bits. Only the SHA-256 of the normalised code is stored: with that
much entropy the digest cannot be reversed by brute force, even knowing the 4-character
prefix that staff see (59 bits left per code), so no slow hash is needed.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

CODE_PREFIX = "BR"
ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
GROUPS = 4
GROUP_LENGTH = 4
_BODY_LENGTH = GROUPS * GROUP_LENGTH
_BODY_RE = re.compile(rf"^[{ALPHABET}]{{{_BODY_LENGTH}}}$")
_SEPARATORS_RE = re.compile(r"[\s\-_]+")


@dataclass(frozen=True)
class GeneratedCode:
    code: str  # shown once, to the staff member who generated it
    prefix: str  # ``BR-`` and the first group: stored, shown in the admin
    digest: str  # hex SHA-256 of the normalised code: stored


def code_generate() -> GeneratedCode:
    body = "".join(secrets.choice(ALPHABET) for _ in range(_BODY_LENGTH))
    groups = [body[i:i + GROUP_LENGTH] for i in range(0, _BODY_LENGTH, GROUP_LENGTH)]
    code = "-".join([CODE_PREFIX, *groups])
    return GeneratedCode(code=code, prefix=f"{CODE_PREFIX}-{groups[0]}",
                         digest=_digest(CODE_PREFIX + body))


def code_digest(raw: str) -> str | None:
    """The digest a typed code would be stored under, or None if it cannot be a code.

    Case, spaces, dashes and underscores do not matter, and the ``BR`` may be left out:
    ``br 7kqm x4tp 9hna c2we`` is the same code as ``BR-7KQM-X4TP-9HNA-C2WE``.
    """
    compact = _SEPARATORS_RE.sub("", raw).upper()
    if len(compact) == len(CODE_PREFIX) + _BODY_LENGTH and compact.startswith(CODE_PREFIX):
        compact = compact[len(CODE_PREFIX):]
    if not _BODY_RE.match(compact):
        return None
    return _digest(CODE_PREFIX + compact)


def _digest(normalised: str) -> str:
    return hashlib.sha256(normalised.encode()).hexdigest()
