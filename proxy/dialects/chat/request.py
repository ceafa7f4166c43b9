"""Validate a chat-completions body the way OpenAI does, naming the bad ``param``.

Only what the router itself depends on, or what would certainly be refused upstream, is
checked; every other field is passed through untouched to OpenAI-compatible upstreams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.dialects.body import json_body, model_name
from proxy.ground.errors import ApiError, bad_request

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_N = 16
# The output-cap fields of OpenAI's API: max_tokens (older, still read by most servers)
# and max_completion_tokens (newer, required by reasoning models).
CAP_FIELDS = ("max_tokens", "max_completion_tokens")


@dataclass
class ChatRequest:
    """The path's one internal request: OpenAI's chat-completions form, which every dialect
    parses into (``proxy.dialects.base``)."""

    body: dict[str, Any]  # the chat body, forwarded (with our changes) upstream
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool  # the client asked for the final usage chunk
    max_tokens: int | None  # the client's output cap: the smaller of its cap fields
    n: int
    cap_fields: dict[str, int] | None = None  # each cap field the client sent, by name
    # The client's own body in its dialect, for an upstream that speaks it natively.
    native: dict[str, Any] | None = None
    # The client's headers that go upstream with a native body (anthropic-beta, ...).
    client_headers: dict[str, str] | None = None
    # The prompt's exact count, where the dialect knows it (embeddings' inputs): it is then
    # both the hold's bound and the router's own count.
    prompt_tokens: int | None = None
    # The request marks prompt-cache breakpoints (cache_control): the upstream may write
    # the prompt to its cache, which costs more than input, so the hold allows for it.
    may_write_cache: bool = False


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number_in(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not _is_number(value):
        raise bad_request(f"Invalid type for '{name}': expected a number.", param=name,
                          code="invalid_type")
    if not low <= value <= high:
        raise bad_request(f"Invalid '{name}': {value} is not between {low} and {high}.",
                          param=name, code="invalid_value")


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value):
        raise bad_request(f"Invalid type for '{name}': expected an integer.", param=name,
                          code="invalid_type")
    if value < 1:
        raise bad_request(f"Invalid '{name}': {value} must be at least 1.", param=name,
                          code="invalid_value")
    return value


def _validate_content(message: dict[str, Any], where: str) -> None:
    content = message.get("content")
    role = message["role"]
    if content is None:
        # An assistant turn that only calls tools has no content; every other role needs it.
        if role == "assistant" and ("content" in message or message.get("tool_calls")
                                    or message.get("function_call")):
            return
        raise bad_request(f"Missing required parameter: '{where}.content'.",
                          param=f"{where}.content", code="missing_required_parameter")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise bad_request(f"Invalid type for '{where}.content': expected a string or an array "
                          "of content parts.", param=f"{where}.content", code="invalid_type")
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise bad_request(f"Invalid '{where}.content[{j}]': a content part is an object "
                              "with a string 'type'.", param=f"{where}.content[{j}]",
                              code="invalid_type")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise bad_request(f"Missing required parameter: '{where}.content[{j}].text'.",
                              param=f"{where}.content[{j}].text",
                              code="missing_required_parameter")


def _validate_messages(messages: object) -> list[dict[str, Any]]:
    if messages is None:
        raise bad_request("Missing required parameter: 'messages'.", param="messages",
                          code="missing_required_parameter")
    if not isinstance(messages, list):
        raise bad_request("Invalid type for 'messages': expected an array.", param="messages",
                          code="invalid_type")
    if not messages:
        raise bad_request("Invalid 'messages': empty array. Expected an array with minimum "
                          "length 1.", param="messages", code="empty_array")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"Invalid type for '{where}': expected an object.", param=where,
                              code="invalid_type")
        role = message.get("role")
        if role is None:
            raise bad_request(f"Missing required parameter: '{where}.role'.",
                              param=f"{where}.role", code="missing_required_parameter")
        if role not in ROLES:
            raise bad_request(f"Invalid value: '{role}'. Supported values are: 'system', "
                              "'developer', 'user', 'assistant' and 'tool'.",
                              param=f"{where}.role", code="invalid_value")
        _validate_content(message, where)
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise bad_request(f"Missing required parameter: '{where}.tool_call_id'.",
                              param=f"{where}.tool_call_id", code="missing_required_parameter")
    return messages


def parse_chat_request(raw: bytes) -> ChatRequest:
    body = json_body(raw)
    model = model_name(body)
    messages = _validate_messages(body.get("messages"))

    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad_request("Invalid type for 'stream': expected a boolean.", param="stream",
                          code="invalid_type")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise bad_request("The 'stream_options' parameter is only allowed when 'stream' is "
                              "enabled.", param="stream_options", code="invalid_value")
        if not isinstance(options, dict):
            raise bad_request("Invalid type for 'stream_options': expected an object.",
                              param="stream_options", code="invalid_type")
        include_usage = options.get("include_usage", False)
        if not isinstance(include_usage, bool):
            raise bad_request("Invalid type for 'stream_options.include_usage': expected a "
                              "boolean.", param="stream_options.include_usage",
                              code="invalid_type")

    _number_in(body, "temperature", 0, 2)
    _number_in(body, "top_p", 0, 1)
    _number_in(body, "presence_penalty", -2, 2)
    _number_in(body, "frequency_penalty", -2, 2)
    caps = {name: value for name in CAP_FIELDS
            if (value := _positive_int(body, name)) is not None}
    n = _positive_int(body, "n") or 1
    if n > MAX_N:
        raise bad_request(f"Invalid 'n': {n} is greater than the maximum of {MAX_N}.",
                          param="n", code="invalid_value")
    _validate_stop(body.get("stop"))
    for name in ("tools", "functions"):
        if body.get(name) is not None and not isinstance(body[name], list):
            raise bad_request(f"Invalid type for '{name}': expected an array.", param=name,
                              code="invalid_type")
    for name in ("response_format", "logit_bias", "metadata"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise bad_request(f"Invalid type for '{name}': expected an object.", param=name,
                              code="invalid_type")
    return ChatRequest(
        body=body, model=model, messages=messages, stream=stream, include_usage=include_usage,
        max_tokens=min(caps.values()) if caps else None, n=n, cap_fields=caps or None,
        may_write_cache=b"cache_control" in raw,
    )


def _validate_stop(stop: object) -> None:
    if stop is None or isinstance(stop, str):
        return
    if (not isinstance(stop, list) or len(stop) > 4
            or not all(isinstance(s, str) for s in stop)):
        raise bad_request("Invalid 'stop': expected a string or an array of up to 4 strings.",
                          param="stop", code="invalid_value")


__all__ = ["ApiError", "ChatRequest", "parse_chat_request"]
