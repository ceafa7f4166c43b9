"""Anthropic's answers (a message, its usage, its errors) in OpenAI's wire format."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from proxy.upstream.providers.base import UpstreamError
from proxy.upstream.providers.http import retryable_status

FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",  # a server tool paused the turn; the answer so far is complete
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Error types that mean "try again, maybe elsewhere" even when they arrive as an SSE event
# after a 200 (Anthropic reports overload that way too).
RETRYABLE_ERROR_TYPES = frozenset({"overloaded_error", "api_error", "rate_limit_error"})


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def completion_id(message_id: Any) -> str:
    return f"chatcmpl-{message_id}" if isinstance(message_id, str) and message_id else (
        f"chatcmpl-{uuid.uuid4().hex}")


def _tokens(usage: dict[str, Any], name: str) -> int:
    value = usage.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_from(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI usage from Anthropic's.

    Anthropic's ``input_tokens`` leaves out the tokens written to and read from its prompt
    cache; OpenAI's ``prompt_tokens`` counts every prompt token, with the ones read from the
    cache repeated in ``cached_tokens`` (which billing prices at the cached rate). Tokens
    written to the cache are in ``cache_write_tokens`` (OpenRouter's name), charged at the
    price's cache-write rate.
    """
    read = _tokens(usage, "cache_read_input_tokens")
    written = _tokens(usage, "cache_creation_input_tokens")
    prompt = _tokens(usage, "input_tokens") + written + read
    completion = _tokens(usage, "output_tokens")
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": read, "cache_write_tokens": written}}


def tool_call(block: dict[str, Any]) -> dict[str, Any]:
    arguments = block.get("input") if isinstance(block.get("input"), dict) else {}
    return {"id": str(block.get("id") or f"toolu_{uuid.uuid4().hex}"), "type": "function",
            "function": {"name": str(block.get("name") or ""),
                         "arguments": orjson.dumps(arguments).decode()}}


def chat_completion(message: dict[str, Any], *, model: str) -> dict[str, Any]:
    """A ``chat.completion`` from an Anthropic ``message``."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            calls.append(tool_call(block))
        # thinking and server-tool blocks have no place in a chat completion
    reply: dict[str, Any] = {"role": "assistant",
                             "content": "".join(texts) if texts or not calls else None,
                             "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    answer: dict[str, Any] = {
        "id": completion_id(message.get("id")),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": reply, "logprobs": None,
                     "finish_reason": finish_reason(message.get("stop_reason"))}],
    }
    if isinstance(message.get("usage"), dict):
        # Without it the router counts the tokens itself, so no made-up zeros here.
        answer["usage"] = usage_from(message["usage"])
    return answer


def _client_error_code(status: int, message: str) -> str | None:
    if status == 413:
        return "request_too_large"
    if message.startswith("prompt is too long"):
        return "context_length_exceeded"
    return None


def anthropic_error(raw: bytes | dict[str, Any]) -> tuple[str, str]:
    """(error type, message) of an Anthropic error body, or ("", "") if it is not one."""
    try:
        body = orjson.loads(raw) if isinstance(raw, bytes) else raw
    except orjson.JSONDecodeError:
        return "", ""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", ""
    return str(error.get("type") or ""), str(error.get("message") or "")


def error_from(status: int, raw: bytes, *, worker: str) -> UpstreamError:
    """An Anthropic error response as an ``UpstreamError``; a client error carries the
    OpenAI-shaped body the router returns to the client."""
    kind, message = anthropic_error(raw)
    message = message or raw[:200].decode("utf-8", "replace")
    described = f"{worker} answered {status}" + (f" ({kind})" if kind else "")
    if retryable_status(status):
        return UpstreamError(f"{described}: {message}", retryable=True, status=status)
    body = {"error": {"message": message or "The upstream refused the request.",
                      "type": "invalid_request_error", "param": None,
                      "code": _client_error_code(status, message)}}
    return UpstreamError(f"{described}: {message}", retryable=False, status=status, body=body)


def stream_error(event: dict[str, Any], *, worker: str, before_output: bool) -> UpstreamError:
    """An ``error`` event in a stream. Before any chunk went out, an overload is retryable
    (another worker can still take the request); after, nothing is."""
    kind, message = anthropic_error(event)
    retryable = before_output and kind in RETRYABLE_ERROR_TYPES
    return UpstreamError(f"{worker} sent an error event ({kind or 'unknown'}): {message}",
                         retryable=retryable,
                         body={"error": {"message": message or "The upstream failed.",
                                         "type": "server_error", "param": None,
                                         "code": kind or None}})
