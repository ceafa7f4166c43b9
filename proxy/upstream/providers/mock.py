"""The ``mock`` worker: answers offline, deterministically, with true token counts.

It lets the embedded default work with no network and no upstream account: the reply
echoes the last user message, is cut at ``max_tokens`` like a real model, and reports the
usage a real upstream would (prompt tokens counted the way ``proxy.ground.tokens`` counts them).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from proxy.ground.tokens import count_text_tokens, encode_text, exact_prompt_tokens, token_pieces
from proxy.upstream.providers.base import UpstreamTarget

REPLY_TEMPLATE = "This is a mock reply from Binom Router. You said: {said}"


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


class MockStream:
    def __init__(self, provider: MockProvider, body: dict[str, Any]) -> None:
        self._provider = provider
        self._body = body
        self._closed = False

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
