"""Anthropic's ``message`` pieces from the internal answer: stop reasons, ids, usage and
content blocks, shared by the whole answer (``render``) and the stream (``stream``)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from proxy.relay.call import Call

STOP_REASONS: dict[str, str] = {"stop": "end_turn", "length": "max_tokens",
                                "tool_calls": "tool_use", "function_call": "tool_use",
                                "content_filter": "refusal"}
# Stop reasons that say the upstream itself stopped at max_tokens (not the router's meter).
UPSTREAM_CAPPED = frozenset({"max_tokens", "model_context_window_exceeded"})


def stop_reason(finish_reason: Any) -> str:
    return STOP_REASONS.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else (
        "end_turn")


def message_id(completion_id: Any) -> str:
    if isinstance(completion_id, str) and completion_id:
        bare = completion_id.removeprefix("chatcmpl-")
        return bare if bare.startswith("msg_") else f"msg_{bare}"
    return f"msg_{uuid.uuid4().hex}"


def anthropic_usage(usage: dict[str, Any]) -> dict[str, int]:
    """Anthropic's usage from the internal one the client was charged for: its
    ``input_tokens`` leave out the cache reads and writes, each reported apart."""
    details = usage.get("prompt_tokens_details") or {}
    read = int(details.get("cached_tokens") or 0)
    written = int(details.get("cache_write_tokens") or 0)
    return {"input_tokens": int(usage.get("prompt_tokens") or 0) - read - written,
            "output_tokens": int(usage.get("completion_tokens") or 0),
            "cache_creation_input_tokens": written, "cache_read_input_tokens": read}


def tool_input(arguments: Any) -> dict[str, Any]:
    # Arguments the meter cut short are no JSON object any more: the call goes out empty.
    try:
        value = orjson.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def content_from(message: dict[str, Any], *, thinking: bool) -> list[dict[str, Any]]:
    """Content blocks of an internal assistant message; ``thinking``: the client asked for
    it, so the model's reasoning is shown (with no signature: the router cannot make one)."""
    blocks: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if thinking and isinstance(reasoning, str) and reasoning:
        blocks.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if isinstance(message.get("content"), str) and message["content"]:
        blocks.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        blocks.append({"type": "tool_use", "id": str(call.get("id") or ""),
                       "name": str(function.get("name") or ""),
                       "input": tool_input(function.get("arguments"))})
    return blocks


def wants_thinking(call: Call) -> bool:
    return ((call.chat.native or {}).get("thinking") or {}).get("type") == "enabled"
