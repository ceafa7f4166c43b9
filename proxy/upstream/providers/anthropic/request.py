"""An OpenAI chat-completions body, translated into an Anthropic Messages request.

Anthropic wants the system prompt apart from the conversation, strictly alternating user and
assistant turns, tool calls and their results as content blocks, and ``max_tokens`` always.
What cannot be expressed (``n`` > 1, legacy ``functions``, an image that is not a URL or a
base64 data URL) is refused here with a 400 in OpenAI's format, before any upstream call.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.upstream.providers.base import UpstreamError

# OpenAI accepts temperatures up to 2, Anthropic up to 1; higher ones are clamped.
MAX_TEMPERATURE = 1
# A tool with no parameters still needs an object schema on Anthropic's side.
EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
_TOOL_CHOICES: dict[str, dict[str, Any]] = {
    "auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"}}

Block = dict[str, Any]


def refused(message: str, *, param: str | None, code: str | None = "invalid_value"
            ) -> UpstreamError:
    """A request this adapter cannot send: the client's error, in OpenAI's format."""
    return UpstreamError(message, retryable=False, status=400, body={"error": {
        "message": message, "type": "invalid_request_error", "param": param, "code": code}})


def messages_request(body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    """The Anthropic request for ``body`` (the router's upstream body, model already mapped)."""
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            raise refused(f"'{legacy}' is not supported for this model; use 'tools'.",
                          param=legacy, code="unsupported_parameter")
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        raise refused("This model returns one choice per request; 'n' must be 1.",
                      param="n", code="unsupported_value")
    system, messages = conversation(body.get("messages") or [])
    request: dict[str, Any] = {"model": body["model"], "max_tokens": _max_tokens(body),
                               "messages": messages}
    if system:
        request["system"] = system
    if body.get("temperature") is not None:
        request["temperature"] = min(body["temperature"], MAX_TEMPERATURE)
    for name in ("top_p", "top_k"):
        if body.get(name) is not None:
            request[name] = body[name]
    stop = body.get("stop")
    if stop:
        request["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if isinstance(body.get("user"), str) and body["user"]:
        request["metadata"] = {"user_id": body["user"]}
    if body.get("tools"):
        request["tools"] = tools(body["tools"])
        choice = tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            request["tool_choice"] = choice
    if stream:
        request["stream"] = True
    return request


def _max_tokens(body: dict[str, Any]) -> int:
    # The router always sets one of the two (the cap its hold was computed for).
    for name in ("max_completion_tokens", "max_tokens"):
        if isinstance(body.get(name), int):
            return body[name]
    raise refused("'max_tokens' is required for this model.", param="max_tokens",
                  code="missing_required_parameter")


def conversation(messages: list[dict[str, Any]]) -> tuple[str | list[Block], list[Block]]:
    """``system`` and ``messages`` for Anthropic: system and developer messages lifted out,
    tool results sent as user turns, and consecutive turns of one role merged, because
    Anthropic refuses two user (or two assistant) messages in a row."""
    system: list[Block] = []
    turns: list[Block] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role")
        if role in ("system", "developer"):
            system += content_blocks(message.get("content"), where, text_only=True)
            continue
        if role == "user":
            blocks = content_blocks(message.get("content"), where)
        elif role == "assistant":
            role, blocks = "assistant", _assistant_blocks(message, where)
        elif role == "tool":
            role, blocks = "user", [_tool_result(message, where)]
        else:
            raise refused(f"Messages with role '{role}' are not supported for this model; use "
                          "'tool' messages.", param=f"{where}.role")
        if not blocks:
            continue  # Anthropic refuses empty turns; an empty message adds nothing
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return _system(system), [_compact(turn) for turn in turns]


def _system(blocks: list[Block]) -> str | list[Block]:
    # Blocks only when one carries cache_control (prompt caching); otherwise one string.
    if any("cache_control" in block for block in blocks):
        return blocks
    return "\n\n".join(block["text"] for block in blocks)


def _compact(turn: Block) -> Block:
    blocks = turn["content"]
    if len(blocks) == 1 and blocks[0].keys() == {"type", "text"}:
        return {"role": turn["role"], "content": blocks[0]["text"]}
    return turn


def content_blocks(content: Any, where: str, *, text_only: bool = False) -> list[Block]:
    """OpenAI message content (a string or content parts) as Anthropic content blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[Block] = []
    for j, part in enumerate(content):
        param = f"{where}.content[{j}]"
        kind = part.get("type")
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if not isinstance(text, str):
                raise refused(f"Missing required parameter: '{param}.{kind}'.", param=param,
                              code="missing_required_parameter")
            if text:
                blocks.append(_with_cache_control({"type": "text", "text": text}, part))
        elif kind == "image_url" and not text_only:
            blocks.append(_with_cache_control(_image(part.get("image_url"), param), part))
        elif kind == "file" and not text_only:
            blocks.append(_with_cache_control(_document(part.get("file"), param), part))
        else:
            raise refused(f"Content parts of type '{kind}' are not supported here for this "
                          "model.", param=f"{param}.type")
    return blocks


def _with_cache_control(block: Block, part: dict[str, Any]) -> Block:
    # Clients of OpenAI-compatible gateways mark Anthropic cache breakpoints on the parts.
    if isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _data_url(url: str, param: str) -> tuple[str, str]:
    """(media type, base64 data) of a ``data:<type>;base64,<data>`` URL."""
    header, comma, data = url[len("data:"):].partition(",")
    media_type, *options = header.split(";")
    if not comma or "base64" not in options or not media_type or not data:
        raise refused("Expected a data URL of the form 'data:<media type>;base64,<data>'.",
                      param=param)
    return media_type, data


def _image(image: Any, param: str) -> Block:
    url = image.get("url") if isinstance(image, dict) else image
    param = f"{param}.image_url.url"
    if not isinstance(url, str):
        raise refused(f"Missing required parameter: '{param}'.", param=param,
                      code="missing_required_parameter")
    if url.startswith("data:"):
        media_type, data = _data_url(url, param)
        return {"type": "image",
                "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise refused("An image URL must be an http(s) URL or a base64 data URL.", param=param)


def _document(file: Any, param: str) -> Block:
    data_url = file.get("file_data") if isinstance(file, dict) else None
    param = f"{param}.file.file_data"
    if not isinstance(data_url, str) or not data_url.startswith("data:"):
        raise refused("Only files sent inline as a base64 PDF data URL ('file_data') are "
                      "supported for this model.", param=param)
    media_type, data = _data_url(data_url, param)
    if media_type != "application/pdf":
        raise refused(f"Files of type '{media_type}' are not supported for this model; "
                      "send a PDF.", param=param)
    return {"type": "document",
            "source": {"type": "base64", "media_type": media_type, "data": data}}


def _assistant_blocks(message: dict[str, Any], where: str) -> list[Block]:
    blocks = content_blocks(message.get("content"), where, text_only=True)
    for k, call in enumerate(message.get("tool_calls") or ()):
        param = f"{where}.tool_calls[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if (not isinstance(function, dict) or not isinstance(call.get("id"), str)
                or not isinstance(function.get("name"), str)):
            raise refused(f"Invalid '{param}': a tool call needs an 'id' and a "
                          "'function.name'.", param=param)
        blocks.append({"type": "tool_use", "id": call["id"], "name": function["name"],
                       "input": _arguments(function.get("arguments"),
                                           f"{param}.function.arguments")})
    return blocks


def _arguments(arguments: Any, param: str) -> dict[str, Any]:
    # Anthropic takes the call's input as an object, where OpenAI carries a JSON string.
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) else None
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise refused(f"Invalid '{param}': expected a JSON object.", param=param)
    return parsed


def _tool_result(message: dict[str, Any], where: str) -> Block:
    block: Block = {"type": "tool_result", "tool_use_id": message["tool_call_id"]}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    else:
        parts = content_blocks(content, where)
        if parts:
            block["content"] = parts
    return block


def tools(definitions: list[Any]) -> list[Block]:
    """OpenAI function tools as Anthropic tools (name, description, input_schema)."""
    translated: list[Block] = []
    for j, tool in enumerate(definitions):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (not isinstance(tool, dict) or tool.get("type") != "function"
                or not isinstance(function, dict) or not isinstance(function.get("name"), str)):
            raise refused(f"Invalid 'tools[{j}]': only function tools with a name are "
                          "supported for this model.", param=f"tools[{j}]")
        parameters = function.get("parameters")
        schema = ({"type": "object", **parameters} if isinstance(parameters, dict) and parameters
                  else dict(EMPTY_SCHEMA))
        entry: Block = {"name": function["name"]}
        if isinstance(function.get("description"), str) and function["description"]:
            entry["description"] = function["description"]
        entry["input_schema"] = schema
        translated.append(entry)
    return translated


def tool_choice(choice: Any, parallel_tool_calls: Any) -> Block | None:
    """OpenAI's ``tool_choice`` (and ``parallel_tool_calls: false``) as Anthropic's."""
    translated: Block | None
    if choice is None:
        translated = None
    elif isinstance(choice, str) and choice in _TOOL_CHOICES:
        translated = dict(_TOOL_CHOICES[choice])
    elif (isinstance(choice, dict) and choice.get("type") == "function"
          and isinstance(choice.get("function"), dict)
          and isinstance(choice["function"].get("name"), str)):
        translated = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise refused("Invalid 'tool_choice': expected 'auto', 'none', 'required' or "
                      "{'type': 'function', 'function': {'name': ...}}.", param="tool_choice")
    if parallel_tool_calls is False and (translated or {}).get("type") != "none":
        translated = {**(translated or {"type": "auto"}), "disable_parallel_tool_use": True}
    return translated
