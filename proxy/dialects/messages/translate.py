"""An Anthropic Messages body in the path's internal (OpenAI chat) form: the inverse of
``proxy.upstream.providers.anthropic.request``.

The body is validated first (``request``), so the shapes here are known. What has no chat
equivalent is dropped: thinking blocks (an OpenAI-compatible upstream cannot verify their
signatures) and the ``thinking`` option itself (``reasoning_effort`` is refused by the many
OpenAI-compatible models that do not reason, so it is not guessed from a budget). Anthropic
upstreams that speak the dialect get the body itself, with all of this intact.
"""

from __future__ import annotations

from typing import Any

import orjson

Part = dict[str, Any]


def _text_part(block: dict[str, Any]) -> Part:
    part: Part = {"type": "text", "text": block["text"]}
    # Kept on the part: the chat -> Anthropic translation reads it (OpenRouter's convention).
    if isinstance(block.get("cache_control"), dict):
        part["cache_control"] = block["cache_control"]
    return part


def _source_url(source: dict[str, Any], default_type: str) -> str:
    if source.get("type") == "base64":
        media_type = source.get("media_type") or default_type
        return f"data:{media_type};base64,{source.get('data') or ''}"
    return str(source.get("url") or "")


def _document(block: dict[str, Any]) -> Part:
    source = block["source"]
    if source.get("type") == "text":  # a plain-text document is just text to a chat model
        return {"type": "text", "text": str(source.get("data") or "")}
    file: dict[str, Any] = {"file_data": _source_url(source, "application/pdf")}
    if isinstance(block.get("title"), str):
        file["filename"] = block["title"]
    return {"type": "file", "file": file}


def _parts(content: str | list[dict[str, Any]]) -> str | list[Part]:
    """User content as chat content: a string stays one; blocks become parts."""
    if isinstance(content, str):
        return content
    parts: list[Part] = []
    for block in content:
        kind = block["type"]
        if kind == "text":
            parts.append(_text_part(block))
        elif kind == "image":
            parts.append({"type": "image_url",
                          "image_url": {"url": _source_url(block["source"], "image/png")}})
        elif kind == "document":
            parts.append(_document(block))
        # thinking blocks are dropped; tool_result blocks are handled by the caller
    return _compact(parts)


def _compact(parts: list[Part]) -> str | list[Part]:
    # Plain text goes as a string: every chat upstream takes one, not all take parts.
    if all(part.keys() == {"type", "text"} for part in parts):
        return "".join(part["text"] for part in parts)
    return parts


def _user(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One user turn: its tool results first (each a tool message, answering the assistant's
    calls just before), then the rest of what it says as a user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    turns: list[dict[str, Any]] = []
    for block in content:
        if block["type"] != "tool_result":
            continue
        result = block.get("content")
        text = _parts(result) if result is not None else ""
        if block.get("is_error") and isinstance(text, str):
            text = f"Error: {text}"
        turns.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
    rest = [block for block in content if block["type"] != "tool_result"]
    if rest or not turns:
        said = _parts(rest)
        if said or not turns:
            turns.append({"role": "user", "content": said})
    return turns


def _assistant(content: str | list[dict[str, Any]]) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts = [block["text"] for block in content if block["type"] == "text"]
    calls = [{"id": block["id"], "type": "function",
              "function": {"name": block["name"],
                           "arguments": orjson.dumps(block["input"]).decode()}}
             for block in content if block["type"] == "tool_use"]
    message: dict[str, Any] = {"role": "assistant",
                               "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _system(system: str | list[dict[str, Any]]) -> dict[str, Any]:
    if isinstance(system, str):
        return {"role": "system", "content": system}
    return {"role": "system", "content": _compact([_text_part(block) for block in system])}


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: dict[str, Any]) -> str | dict[str, Any]:
    kind = choice["type"]
    if kind == "tool":
        return {"type": "function", "function": {"name": choice["name"]}}
    return {"auto": "auto", "any": "required", "none": "none"}[kind]


def chat_body(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat-completions body of a validated Messages ``body`` (its cap set by the
    caller)."""
    chat: list[dict[str, Any]] = []
    if body.get("system"):
        chat.append(_system(body["system"]))
    for message in messages:
        if message["role"] == "user":
            chat += _user(message["content"])
        else:
            chat.append(_assistant(message["content"]))
    translated: dict[str, Any] = {"model": body["model"], "messages": chat}
    if body.get("stream"):
        translated["stream"] = True
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            translated[name] = body[name]
    if body.get("stop_sequences"):
        translated["stop"] = body["stop_sequences"]
    user_id = (body.get("metadata") or {}).get("user_id")
    if isinstance(user_id, str) and user_id:
        translated["user"] = user_id
    if body.get("tools"):
        translated["tools"] = [_tool(tool) for tool in body["tools"]]
    choice = body.get("tool_choice")
    # OpenAI refuses a tool_choice without tools.
    if choice is not None and body.get("tools"):
        translated["tool_choice"] = _tool_choice(choice)
        if choice.get("disable_parallel_tool_use") is True:
            translated["parallel_tool_calls"] = False
    return translated
