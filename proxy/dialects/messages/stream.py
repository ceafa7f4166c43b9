"""Anthropic's event stream (``message_start``, content blocks, ``message_delta``,
``message_stop``), from the path's internal chunks.

From an Anthropic worker spoken to natively, each chunk carries the upstream's event,
which goes out as it came (the model renamed); ``message_delta`` and ``message_stop`` are
held back and written once the stream is settled, so that the usage they carry is exactly
what was charged. Once the meter cut the output at the router's cap (a chunk whose finish
reason is no longer the one the upstream gave), and for every other worker, events are
built from the internal chunks instead; both ways share the block bookkeeping, so the
indexes stay contiguous when a native stream is cut midway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from proxy.dialects.base import NATIVE
from proxy.dialects.messages.shape import (
    anthropic_usage,
    message_id,
    stop_reason,
    wants_thinking,
)

if TYPE_CHECKING:
    from proxy.ground.errors import ApiError
    from proxy.relay.call import Call


def event(payload: dict[str, Any]) -> bytes:
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class MessagesStream:
    def __init__(self, call: Call) -> None:
        self._model = call.chat.model
        self._thinking = wants_thinking(call)
        self._started = False  # message_start went out
        self._next = 0  # the index of the next content block
        self._open: str | None = None  # the type of the block open now
        self._stop: str | None = None  # Anthropic's stop reason, once the upstream gave one
        self._stop_sequence: str | None = None
        self._cut = False  # the meter cut the output: native events no longer fit

    def opening(self) -> list[bytes]:
        return []  # message_start needs the first chunk's id

    def chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        native = chunk.pop(NATIVE, None)
        if native is not None and not self._cut:
            finish = chunk["choices"][0].get("finish_reason")
            if finish == "length" and native["finish"] != "length":
                self._cut = True
            else:
                return self._relay(native["events"])
        return self._build(chunk)

    def aside(self, chunk: dict[str, Any]) -> list[bytes]:
        native = chunk.pop(NATIVE, None)
        if native is None or self._cut:
            return []  # a content-filter note has no place in Anthropic's stream
        return self._relay(native["events"])

    async def closing(self, call: Call, usage: dict[str, Any], charged: int,
                      last: dict[str, Any]) -> list[bytes]:
        out = self._start(last)
        out += self._close()
        if self._cut:
            stop, sequence = "max_tokens", None
        else:
            stop, sequence = self._stop or "end_turn", self._stop_sequence
        out.append(event({"type": "message_delta",
                          "delta": {"stop_reason": stop, "stop_sequence": sequence},
                          "usage": anthropic_usage(usage)}))
        out.append(event({"type": "message_stop"}))
        return out

    def failure(self, error: ApiError) -> list[bytes]:
        return [event({"type": "error",
                       "error": {"type": "api_error", "message": error.message}})]

    # --- the upstream's own events ---

    def _relay(self, events: list[dict[str, Any]]) -> list[bytes]:
        out: list[bytes] = []
        for item in events:
            kind = item.get("type")
            if kind == "message_start":
                self._started = True
                item = {**item, "message": {**(item.get("message") or {}),
                                            "model": self._model}}
            elif kind == "content_block_start":
                block = item.get("content_block") or {}
                self._open = str(block.get("type") or "text")
                index = item.get("index")
                self._next = (index if isinstance(index, int) else self._next) + 1
            elif kind == "content_block_stop":
                self._open = None
            elif kind == "message_delta":
                delta = item.get("delta") or {}
                self._stop = delta.get("stop_reason") or self._stop
                self._stop_sequence = delta.get("stop_sequence")
                continue  # written by closing, with the charged usage
            elif kind == "message_stop":
                continue
            out.append(event(item))
        return out

    # --- built from internal chunks ---

    def _start(self, chunk: dict[str, Any]) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        return [event({"type": "message_start", "message": {
            "id": message_id(chunk.get("id")), "type": "message", "role": "assistant",
            "model": self._model, "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}})]

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [event({"type": "content_block_stop", "index": self._next - 1})]

    def _block(self, kind: str, block: dict[str, Any], *, new: bool = False) -> list[bytes]:
        if self._open == kind and not new:
            return []
        out = self._close()
        out.append(event({"type": "content_block_start", "index": self._next,
                          "content_block": block}))
        self._open = kind
        self._next += 1
        return out

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return event({"type": "content_block_delta", "index": self._next - 1, "delta": delta})

    def _build(self, chunk: dict[str, Any]) -> list[bytes]:
        out = self._start(chunk)
        choice = (chunk.get("choices") or [{}])[0]
        delta = choice.get("delta") or {}
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if self._thinking and isinstance(reasoning, str) and reasoning:
            out += self._block("thinking", {"type": "thinking", "thinking": "",
                                            "signature": ""})
            out.append(self._delta({"type": "thinking_delta", "thinking": reasoning}))
        content = delta.get("content")
        if isinstance(content, str) and content:
            out += self._block("text", {"type": "text", "text": ""})
            out.append(self._delta({"type": "text_delta", "text": content}))
        for call in delta.get("tool_calls") or ():
            function = call.get("function") or {}
            if call.get("id") or self._open != "tool_use":
                out += self._block("tool_use", {"type": "tool_use", "id": str(call.get("id") or ""),
                                                "name": str(function.get("name") or ""),
                                                "input": {}}, new=True)
            arguments = function.get("arguments")
            if isinstance(arguments, str) and arguments:
                out.append(self._delta({"type": "input_json_delta",
                                        "partial_json": arguments}))
        if choice.get("finish_reason"):
            self._stop = stop_reason(choice["finish_reason"])
            out += self._close()
        return out
