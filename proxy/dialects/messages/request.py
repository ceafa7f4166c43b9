"""Validate an Anthropic Messages body the way Anthropic does, and parse it into the path's
one internal request (``ChatRequest``), keeping the body itself for Anthropic upstreams.

Errors are ``ApiError``s (400 ``invalid_request_error``), worded like Anthropic's
("max_tokens: Field required"); the dialect renders them in Anthropic's shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from proxy.dialects.body import CONTROL_CHARACTERS
from proxy.dialects.chat.request import ChatRequest
from proxy.dialects.messages.translate import chat_body
from proxy.ground.errors import bad_request

BLOCK_TYPES = frozenset({"text", "image", "document", "tool_use", "tool_result", "thinking",
                         "redacted_thinking"})
TOOL_CHOICES = frozenset({"auto", "any", "tool", "none"})
THINKING_TYPES = frozenset({"enabled", "disabled"})
# Anthropic's floor for a thinking budget.
MIN_THINKING_BUDGET = 1024
# The client headers an Anthropic upstream is sent with a native body (META names).
FORWARDED_HEADERS = {"HTTP_ANTHROPIC_VERSION": "anthropic-version",
                     "HTTP_ANTHROPIC_BETA": "anthropic-beta"}


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(f"{where}: Input should be a valid dictionary", param=where)
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise bad_request(f"{where}: Input should be a valid string", param=where)
    return value


def _blocks(content: object, where: str, role: str) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise bad_request(f"{where}: Input should be a valid string or list of content blocks",
                          param=where)
    for j, block in enumerate(content):
        at = f"{where}.{j}"
        kind = _object(block, at).get("type")
        if kind not in BLOCK_TYPES:
            raise bad_request(f"{at}.type: Input tag '{kind}' found using 'type' does not match "
                              f"any of the expected tags: {', '.join(sorted(BLOCK_TYPES))}",
                              param=f"{at}.type")
        if kind == "text":
            _string(block.get("text"), f"{at}.text")
        elif kind in ("image", "document"):
            _object(block.get("source"), f"{at}.source")
        elif kind == "tool_use":
            if role != "assistant":
                raise bad_request(f"{at}: tool_use blocks are only allowed in assistant "
                                  "messages", param=at)
            _string(block.get("id"), f"{at}.id")
            _string(block.get("name"), f"{at}.name")
            _object(block.get("input"), f"{at}.input")
        elif kind == "tool_result":
            if role != "user":
                raise bad_request(f"{at}: tool_result blocks are only allowed in user "
                                  "messages", param=at)
            _string(block.get("tool_use_id"), f"{at}.tool_use_id")
            if block.get("content") is not None:
                _blocks(block["content"], f"{at}.content", "user")
        elif kind == "thinking":
            _string(block.get("thinking"), f"{at}.thinking")


def _messages(messages: object) -> list[dict[str, Any]]:
    if messages is None:
        raise bad_request("messages: Field required", param="messages")
    if not isinstance(messages, list):
        raise bad_request("messages: Input should be a valid list", param="messages")
    if not messages:
        raise bad_request("messages: at least one message is required", param="messages")
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        role = _object(message, where).get("role")
        if role not in ("user", "assistant"):
            raise bad_request(f"{where}.role: Input should be 'user' or 'assistant'",
                              param=f"{where}.role")
        if "content" not in message:
            raise bad_request(f"{where}.content: Field required", param=f"{where}.content")
        _blocks(message["content"], f"{where}.content", role)
    return messages


def _system(system: object) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise bad_request("system: Input should be a valid string or list of text blocks",
                          param="system")
    for j, block in enumerate(system):
        if _object(block, f"system.{j}").get("type") != "text":
            raise bad_request(f"system.{j}.type: Input should be 'text'", param=f"system.{j}")
        _string(block.get("text"), f"system.{j}.text")


def _tools(tools: object, tool_choice: object) -> None:
    if tools is not None:
        if not isinstance(tools, list):
            raise bad_request("tools: Input should be a valid list", param="tools")
        for j, tool in enumerate(tools):
            _string(_object(tool, f"tools.{j}").get("name"), f"tools.{j}.name")
            _object(tool.get("input_schema"), f"tools.{j}.input_schema")
    if tool_choice is not None:
        kind = _object(tool_choice, "tool_choice").get("type")
        if kind not in TOOL_CHOICES:
            raise bad_request("tool_choice.type: Input should be 'auto', 'any', 'tool' or "
                              "'none'", param="tool_choice.type")
        if kind == "tool":
            _string(tool_choice.get("name"), "tool_choice.name")


def _sampling(body: dict[str, Any]) -> None:
    for name, high in (("temperature", 1), ("top_p", 1)):
        value = body.get(name)
        if value is None:
            continue
        if not _number(value):
            raise bad_request(f"{name}: Input should be a valid number", param=name)
        if not 0 <= value <= high:
            raise bad_request(f"{name}: Input should be between 0 and {high}", param=name)
    top_k = body.get("top_k")
    if top_k is not None and (not _int(top_k) or top_k < 0):
        raise bad_request("top_k: Input should be a non-negative integer", param="top_k")
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list)
                              or not all(isinstance(s, str) for s in stops)):
        raise bad_request("stop_sequences: Input should be a valid list of strings",
                          param="stop_sequences")


def _thinking(thinking: object, max_tokens: int | None) -> None:
    if thinking is None:
        return
    kind = _object(thinking, "thinking").get("type")
    if kind not in THINKING_TYPES:
        raise bad_request("thinking.type: Input should be 'enabled' or 'disabled'",
                          param="thinking.type")
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not _int(budget) or budget < MIN_THINKING_BUDGET:
            raise bad_request("thinking.enabled.budget_tokens: Input should be greater than "
                              f"or equal to {MIN_THINKING_BUDGET}",
                              param="thinking.budget_tokens")
        if max_tokens is not None and budget >= max_tokens:
            raise bad_request("`max_tokens` must be greater than `thinking.budget_tokens`",
                              param="max_tokens")


def _max_tokens(body: dict[str, Any]) -> int:
    value = body.get("max_tokens")
    if value is None:
        raise bad_request("max_tokens: Field required", param="max_tokens")
    if not _int(value):
        raise bad_request("max_tokens: Input should be a valid integer", param="max_tokens")
    if value < 1:
        raise bad_request("max_tokens: Input should be greater than or equal to 1",
                          param="max_tokens")
    return value


def parse_messages_request(raw: bytes, meta: Mapping[str, Any], *,
                           count_only: bool = False) -> ChatRequest:
    """The internal request for a Messages body; ``count_only``: a count_tokens body, which
    has no ``max_tokens`` and is never sent anywhere."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("There was an issue with the format of your request: the body is "
                          "not valid JSON.") from None
    if not isinstance(body, dict):
        raise bad_request("There was an issue with the format of your request: the body must "
                          "be a JSON object.")
    model = body.get("model")
    if model is None:
        raise bad_request("model: Field required", param="model")
    if not isinstance(model, str) or not model.strip() or CONTROL_CHARACTERS.search(model):
        raise bad_request("model: Input should be a valid model name", param="model")
    max_tokens = None if count_only else _max_tokens(body)
    messages = _messages(body.get("messages"))
    _system(body.get("system"))
    _tools(body.get("tools"), body.get("tool_choice"))
    _sampling(body)
    _thinking(body.get("thinking"), max_tokens)
    if body.get("metadata") is not None:
        user_id = _object(body["metadata"], "metadata").get("user_id")
        if user_id is not None:
            _string(user_id, "metadata.user_id")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("stream: Input should be a valid boolean", param="stream")
    translated = chat_body(body, messages)
    if max_tokens is not None:
        translated["max_tokens"] = max_tokens
    headers = {name: str(meta[key]) for key, name in FORWARDED_HEADERS.items() if meta.get(key)}
    return ChatRequest(
        body=translated, model=model, messages=translated["messages"], stream=bool(stream),
        include_usage=False, max_tokens=max_tokens, n=1,
        cap_fields={"max_tokens": max_tokens} if max_tokens is not None else None,
        native=body, client_headers=headers or None,
        # Prompt caching writes cost more than input: the hold allows for them.
        may_write_cache=b"cache_control" in raw,
    )
