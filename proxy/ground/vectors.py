"""Embedding vectors on the wire: OpenAI's ``encoding_format: base64`` is the vector as
little-endian float32, base64-encoded. Shared by the embeddings dialect (which converts
between the two forms) and the mock worker (which answers in either)."""

from __future__ import annotations

import base64
import struct


def to_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def from_base64(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw[: len(raw) // 4 * 4]))
