"""Anthropic's streamed events, relayed as OpenAI ``chat.completion.chunk`` objects.

Anthropic sends ``message_start`` (id, input and cache usage), then per content block a
``content_block_start``, its ``content_block_delta``s and a ``content_block_stop``, then
``message_delta`` (stop reason, output usage) and ``message_stop``; ``ping``s may come at
any time, and an ``error`` event ends a stream that failed.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from proxy.upstream.http_client import UpstreamResponse
from proxy.upstream.providers.anthropic.response import (
    completion_id,
    finish_reason,
    stream_error,
    usage_from,
)
from proxy.upstream.providers.base import UpstreamTarget
from proxy.upstream.providers.sse import TranslatedStream

Chunk = dict[str, Any]


class ChunkTranslator:
    """Turns the events of one Anthropic stream into OpenAI chunks; no I/O, so it can be
    tested event by event."""

    def __init__(self, *, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.started = False  # message_start seen: the role chunk went out
        self.done = False  # message_stop seen
        self._usage: dict[str, Any] | None = None
        self._finished = False
        self._stop_reason: str | None = None
        self._tool_calls: dict[int, int] = {}  # content block index -> tool call index

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> Chunk:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [{"index": 0, "delta": delta,
                                                  "logprobs": None, "finish_reason": finish}]}

    def _merge_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        # message_delta's usage is cumulative and may repeat message_start's fields, some as
        # null; a number always replaces the earlier one.
        merged = dict(self._usage or {})
        merged.update({k: v for k, v in usage.items() if isinstance(v, int)})
        self._usage = merged

    def feed(self, event: dict[str, Any]) -> list[Chunk]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") if isinstance(event.get("message"), dict) else {}
            self.id = completion_id(message.get("id"))
            self._merge_usage(message.get("usage"))
            self.started = True
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "message_delta":
            delta = event.get("delta") if isinstance(event.get("delta"), dict) else {}
            self._stop_reason = delta.get("stop_reason") or self._stop_reason
            self._merge_usage(event.get("usage"))
            return [self._finish()]
        if kind == "message_stop":
            self.done = True
            chunks = [] if self._finished else [self._finish()]
            if self.include_usage and self._usage is not None:
                chunks.append({"id": self.id, "object": "chat.completion.chunk",
                               "created": self.created, "model": self.model, "choices": [],
                               "usage": usage_from(self._usage)})
            return chunks
        return []  # ping, content_block_stop, and event types newer than this adapter

    def _finish(self) -> Chunk:
        self._finished = True
        return self._chunk({}, finish_reason(self._stop_reason))

    def _block_start(self, event: dict[str, Any]) -> list[Chunk]:
        block = event.get("content_block")
        if not isinstance(block, dict):
            return []
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if block.get("type") == "tool_use":
            index = len(self._tool_calls)
            self._tool_calls[event.get("index", index)] = index
            return [self._chunk({"tool_calls": [{
                "index": index, "id": str(block.get("id") or f"toolu_{uuid.uuid4().hex}"),
                "type": "function",
                "function": {"name": str(block.get("name") or ""), "arguments": ""}}]})]
        return []  # thinking and server-tool blocks

    def _block_delta(self, event: dict[str, Any]) -> list[Chunk]:
        delta = event.get("delta")
        if not isinstance(delta, dict):
            return []
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            index = self._tool_calls.get(event.get("index", -1))
            if index is not None:
                return [self._chunk({"tool_calls": [{
                    "index": index, "function": {"arguments": delta["partial_json"]}}]})]
        return []  # thinking, signature and citation deltas


class AnthropicStream(TranslatedStream):
    # Anthropic's streams end with message_stop; a [DONE] ends one early.
    done_ends = False

    def __init__(self, response: UpstreamResponse, target: UpstreamTarget, *,
                 model: str, include_usage: bool) -> None:
        super().__init__(response, target.worker_name)
        self._translator = ChunkTranslator(model=model, include_usage=include_usage)

    def translate(self, event: dict[str, Any]) -> list[Chunk]:
        if event.get("type") == "error":
            raise stream_error(event, worker=self._worker,
                               before_output=not self._translator.started)
        return self._translator.feed(event)

    @property
    def finished(self) -> bool:
        return self._translator.done
