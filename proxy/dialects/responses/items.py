"""Responses' input items as chat messages.

A Responses conversation is a flat list of items (messages, function calls, their outputs);
chat puts a turn's function calls on the assistant message and each output on a ``tool``
message. Consecutive function calls (and the assistant text before them) are one turn, so
they are merged into one assistant message, as chat upstreams expect.
"""

from __future__ import annotations

from typing import Any

from proxy.ground.errors import ApiError, bad_request

MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
# Items the router has no use for on a chat upstream: a reasoning item's text is the
# upstream's own, and chat has no place to send it back. Codex sends them every turn.
SKIPPED_ITEMS = frozenset({"reasoning"})


def _missing(name: str) -> ApiError:
    return bad_request(f"Missing required parameter: '{name}'.", param=name,
                       code="missing_required_parameter")


def _part(part: object, where: str, role: str) -> dict[str, Any]:
    """One content part in chat's form."""
    if not isinstance(part, dict):
        raise bad_request(f"Invalid type for '{where}': expected an object.", param=where,
                          code="invalid_type")
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        if not isinstance(part.get("text"), str):
            raise _missing(f"{where}.text")
        return {"type": "text", "text": part["text"]}
    if kind == "refusal" and role == "assistant":
        return {"type": "text", "text": str(part.get("refusal") or "")}
    if kind == "input_image":
        if part.get("file_id") is not None:
            raise bad_request(f"Invalid '{where}.file_id': uploaded files are not supported "
                              "here; send the image as 'image_url' (an https URL or a data: "
                              "URL).", param=f"{where}.file_id", code="unsupported_parameter")
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise _missing(f"{where}.image_url")
        return {"type": "image_url",
                "image_url": {"url": url, "detail": part.get("detail") or "auto"}}
    raise bad_request(f"Invalid '{where}.type': {kind!r} is not supported here (input_text, "
                      "input_image and output_text are).", param=f"{where}.type",
                      code="invalid_value")


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role is None:
        raise _missing(f"{where}.role")
    if role not in MESSAGE_ROLES:
        raise bad_request(f"Invalid value: '{role}'. Supported values are: 'user', "
                          "'assistant', 'system' and 'developer'.", param=f"{where}.role",
                          code="invalid_value")
    content = item.get("content")
    if content is None:
        raise _missing(f"{where}.content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise bad_request(f"Invalid type for '{where}.content': expected a string or an array "
                          "of content parts.", param=f"{where}.content", code="invalid_type")
    parts = [_part(part, f"{where}.content[{j}]", role) for j, part in enumerate(content)]
    if role != "user":
        # Only a user's content may hold images; the others' is text, sent as one string
        # (some chat servers accept nothing else for system and assistant turns).
        if any(part["type"] != "text" for part in parts):
            raise bad_request(f"Invalid '{where}.content': only a user message may hold "
                              "images.", param=f"{where}.content", code="invalid_value")
        return {"role": role, "content": "".join(part["text"] for part in parts)}
    return {"role": role, "content": parts}


def _function_call(item: dict[str, Any], where: str) -> dict[str, Any]:
    for name in ("call_id", "name", "arguments"):
        if not isinstance(item.get(name), str):
            raise _missing(f"{where}.{name}")
    return {"id": item["call_id"], "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]}}


def _output_text(output: object, where: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):  # output parts: their texts
        return "".join(str(part.get("text") or "") for part in output
                       if isinstance(part, dict))
    raise _missing(f"{where}.output")


def input_messages(value: object) -> list[dict[str, Any]]:
    """The ``input`` of a Responses body (a string or a list of items) as chat messages."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request("Invalid type for 'input': expected a string or an array of input "
                          "items.", param="input", code="invalid_type")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise bad_request(f"Invalid type for '{where}': expected an object.", param=where,
                              code="invalid_type")
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            call = _function_call(item, where)
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise _missing(f"{where}.call_id")
            messages.append({"role": "tool", "tool_call_id": item["call_id"],
                             "content": _output_text(item.get("output"), where)})
        elif kind in SKIPPED_ITEMS:
            continue
        else:
            raise bad_request(f"Invalid '{where}.type': {kind!r} is not supported here "
                              "(message, function_call and function_call_output are).",
                              param=f"{where}.type", code="invalid_value")
    return messages


def _input_part(part: object) -> dict[str, Any] | None:
    """A chat content part as a Responses input part (the inverse of ``_part``)."""
    if not isinstance(part, dict):
        return None
    if part.get("type") == "text":
        return {"type": "input_text", "text": str(part.get("text") or "")}
    if part.get("type") == "image_url":
        image = part.get("image_url") if isinstance(part.get("image_url"), dict) else {}
        return {"type": "input_image", "image_url": str(image.get("url") or ""),
                "detail": image.get("detail") or "auto"}
    return None


def message_items(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages (a stored conversation) as Responses input items: the inverse of
    ``input_messages``, so that a Responses upstream can be sent a replayed context."""
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role == "tool":
            items.append({"type": "function_call_output",
                          "call_id": str(message.get("tool_call_id") or ""),
                          "output": content if isinstance(content, str) else ""})
            continue
        if isinstance(content, list):
            parts = [p for p in (_input_part(part) for part in content) if p is not None]
            items.append({"type": "message", "role": role, "content": parts})
        elif isinstance(content, str) and (content or not message.get("tool_calls")):
            items.append({"type": "message", "role": role, "content": content})
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            function = function if isinstance(function, dict) else {}
            items.append({"type": "function_call", "call_id": str(call.get("id") or ""),
                          "name": str(function.get("name") or ""),
                          "arguments": str(function.get("arguments") or "")})
    return items
