"""The ``mock`` worker: answers offline, deterministically, with true token counts.

It lets the embedded default work with no network and no upstream account: the reply
echoes the last user message, is cut at ``max_tokens`` like a real model, and reports the
usage a real upstream would (prompt tokens counted the way ``proxy.ground.tokens`` counts them).
It also answers embeddings (``native``): a deterministic unit vector per input, derived from
a hash of it, so the same input always gets the same vector.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from array import array
from collections.abc import AsyncIterator
from typing import Any

from proxy.ground.tokens import count_text_tokens, encode_text, exact_prompt_tokens, token_pieces
from proxy.ground.vectors import to_base64
from proxy.upstream.providers.base import UpstreamError, UpstreamTarget

REPLY_TEMPLATE = "This is a mock reply from Binom Router. You said: {said}"
# text-embedding-3-small's size; the largest real models have 3072, some open ones 4096.
DEFAULT_DIMENSIONS = 1536
MAX_DIMENSIONS = 8192


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class MockProvider:
    def __init__(self, target: UpstreamTarget) -> None:
        self.target = target

    def _answer(self, body: dict[str, Any]) -> tuple[list[str], str, int]:
        """The reply as a list of token strings, its finish reason, and the prompt tokens."""
        said = " ".join(_last_user_text(body.get("messages", [])).split()[:40])
        tokens = encode_text(REPLY_TEMPLATE.format(said=said or "nothing"))
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        finish = "stop"
        if limit is not None and len(tokens) > limit:
            tokens, finish = tokens[:limit], "length"
        pieces = token_pieces(tokens)
        return pieces, finish, exact_prompt_tokens(body.get("messages", []))

    @staticmethod
    def _usage(prompt: int, text: str) -> dict[str, int]:
        completion = count_text_tokens(text)
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        pieces, finish, prompt = self._answer(body)
        text = "".join(pieces)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }],
            "usage": self._usage(prompt, text),
        }

    async def open_stream(self, body: dict[str, Any]) -> MockStream:
        return MockStream(self, body)

    async def native(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The answer to a client's own body in a dialect the mock lists (embeddings)."""
        if path != "/embeddings":
            raise UpstreamError(f"{self.target.worker_name} speaks no {path}",
                                retryable=False)
        return _embeddings(self.target, payload)


def _refused(target: UpstreamTarget, message: str, param: str) -> UpstreamError:
    # A 400 with OpenAI's body: the path returns it to the client as it is, uncharged.
    return UpstreamError(f"{target.worker_name}: {message}", retryable=False, status=400,
                         body={"error": {"message": message, "type": "invalid_request_error",
                                         "param": param, "code": None}})


def _embeddings(target: UpstreamTarget, payload: dict[str, Any]) -> dict[str, Any]:
    # Imported here: the dialect's parsing is what a real upstream would count with.
    from proxy.dialects.embeddings.request import input_tokens, split_inputs

    dimensions = payload.get("dimensions") or DEFAULT_DIMENSIONS
    if dimensions > MAX_DIMENSIONS:
        raise _refused(target, f"This model supports at most {MAX_DIMENSIONS} dimensions.",
                       "dimensions")
    inputs = split_inputs(payload.get("input"), "input")
    base64 = payload.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(inputs):
        vector = unit_vector(item, dimensions)
        data.append({"object": "embedding", "index": index,
                     "embedding": to_base64(vector) if base64 else vector})
    prompt = input_tokens(inputs)
    return {"object": "list", "data": data, "model": payload.get("model", ""),
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}


def unit_vector(item: str | list[int], dimensions: int) -> list[float]:
    """A deterministic L2-normalised vector for ``item``, in float32 precision (so its
    float and base64 forms are the same numbers)."""
    seed = (item.encode("utf-8", "surrogatepass") if isinstance(item, str)
            else b"ids:" + ",".join(map(str, item)).encode())
    raw = hashlib.shake_256(seed).digest(4 * dimensions)
    values = [int.from_bytes(raw[i:i + 4], "little", signed=True) / 2**31
              for i in range(0, len(raw), 4)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return array("f", (v / norm for v in values)).tolist()


class MockStream:
    def __init__(self, provider: MockProvider, body: dict[str, Any]) -> None:
        self._provider = provider
        self._body = body
        self._closed = False

    def ready(self) -> bool:
        return False  # its chunks are made as they are read

    async def aclose(self) -> None:
        self._closed = True

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        pieces, finish, prompt = self._provider._answer(self._body)
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": self._body.get("model", "")}
        first = {"role": "assistant", "content": ""}
        yield {**base, "choices": [{"index": 0, "delta": first, "logprobs": None,
                                    "finish_reason": None}]}
        for piece in pieces:
            if self._closed:
                return
            yield {**base, "choices": [{"index": 0, "delta": {"content": piece},
                                        "logprobs": None, "finish_reason": None}]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                    "finish_reason": finish}]}
        if (self._body.get("stream_options") or {}).get("include_usage"):
            yield {**base, "choices": [],
                   "usage": MockProvider._usage(prompt, "".join(pieces))}
