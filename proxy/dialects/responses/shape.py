"""The ``response`` object, built from the internal (chat) answer: shared by whole answers,
streams and stored responses so that all three look alike."""

from __future__ import annotations

import time
import uuid
from typing import Any

from proxy.dialects.responses.request import ResponsesRequest

# finish_reason -> incomplete_details.reason; any other reason is a completed response.
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _echo_tools(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        return []
    return [{"type": "function", "name": tool["name"],
             "description": tool.get("description"), "parameters": tool.get("parameters"),
             "strict": tool.get("strict")} for tool in tools]


def _echo_reasoning(body: dict[str, Any]) -> dict[str, Any] | None:
    reasoning = body.get("reasoning")
    if not isinstance(reasoning, dict):
        return None
    return {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def skeleton(request: ResponsesRequest, created_at: int) -> dict[str, Any]:
    """The response as it is before any output: what the client asked, echoed as OpenAI
    echoes it (its defaults filled in). No ``usage`` until it is known: OpenAI's schema
    has no null for it."""
    body = request.body
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    response: dict[str, Any] = {
        "id": request.id, "object": "response", "created_at": created_at,
        "status": "in_progress", "background": False, "completed_at": None, "error": None,
        "incomplete_details": None, "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens, "model": request.model, "output": [],
        "parallel_tool_calls": _or(body.get("parallel_tool_calls"), True),
        "previous_response_id": request.previous_response_id,
        "reasoning": _echo_reasoning(body), "store": request.store,
        "temperature": _or(body.get("temperature"), 1.0),
        "text": {"format": _or(text.get("format"), {"type": "text"})},
        "tool_choice": _or(body.get("tool_choice"), "auto"),
        "tools": _echo_tools(body.get("tools")), "top_p": _or(body.get("top_p"), 1.0),
        "truncation": "disabled", "metadata": _or(body.get("metadata"), {}),
    }
    if isinstance(body.get("user"), str):
        response["user"] = body["user"]  # a string or absent: the schema allows no null
    return response


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def responses_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """The internal usage (exactly what was charged) in Responses' names."""
    prompt = usage.get("prompt_tokens_details")
    prompt = prompt if isinstance(prompt, dict) else {}
    completion = usage.get("completion_tokens_details")
    completion = completion if isinstance(completion, dict) else {}
    shown = {
        "input_tokens": usage["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": _int(prompt.get("cached_tokens")),
                                 "cache_write_tokens": _int(prompt.get("cache_write_tokens"))},
        "output_tokens": usage["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens":
                                  _int(completion.get("reasoning_tokens"))},
        "total_tokens": usage["total_tokens"],
    }
    if "cost" in usage:
        shown["cost"] = usage["cost"]
    return shown


def finish(response: dict[str, Any], finish_reason: object, output: list[dict[str, Any]],
           usage: dict[str, Any]) -> dict[str, Any]:
    """``response`` completed (or incomplete) with its output and usage."""
    reason = INCOMPLETE_REASONS.get(finish_reason) if isinstance(finish_reason, str) else None
    response = {**response, "output": output, "usage": responses_usage(usage)}
    if reason is None:
        response.update(status="completed", completed_at=int(time.time()))
    else:
        response.update(status="incomplete", incomplete_details={"reason": reason})
    return response


def finish_native(response: dict[str, Any], native: dict[str, Any], finish_reason: object,
                  usage: dict[str, Any]) -> dict[str, Any]:
    """``response`` finished with a native upstream's own output items (ids included) and
    status, and the usage that was charged; the rest is the router's (its id, the client's
    model, what the client asked echoed as it asked it)."""
    output = native.get("output") if isinstance(native.get("output"), list) else []
    finished = finish(response, finish_reason, output, usage)
    details = native.get("incomplete_details")
    if finished["status"] == "incomplete" and isinstance(details, dict):
        finished["incomplete_details"] = details
    if finished["status"] == "completed" and isinstance(native.get("completed_at"), int):
        finished["completed_at"] = native["completed_at"]
    return finished


def item_status(finish_reason: object) -> str:
    return "incomplete" if finish_reason in INCOMPLETE_REASONS else "completed"


def reasoning_item(text: str, status: str, item_id: str | None = None) -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if text else []
    return {"id": item_id or new_id("rs"), "type": "reasoning", "summary": [],
            "content": content, "status": status}


def message_item(text: str, status: str, item_id: str | None = None) -> dict[str, Any]:
    return {"id": item_id or new_id("msg"), "type": "message", "role": "assistant",
            "status": status,
            "content": [{"type": "output_text", "text": text, "annotations": [],
                         "logprobs": []}]}


def call_item(call_id: str, name: str, arguments: str, status: str,
              item_id: str | None = None) -> dict[str, Any]:
    return {"id": item_id or new_id("fc"), "type": "function_call", "call_id": call_id,
            "name": name, "arguments": arguments, "status": status}


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text") or "") for part in content
                       if isinstance(part, dict))
    return ""


def reasoning_text(fields: dict[str, Any]) -> str:
    """A message's or a delta's reasoning (DeepSeek and vLLM say reasoning_content,
    OpenRouter reasoning)."""
    for name in ("reasoning_content", "reasoning"):
        if isinstance(fields.get(name), str) and fields[name]:
            return fields[name]
    return ""


def output_items(message: dict[str, Any], finish_reason: object) -> list[dict[str, Any]]:
    """A whole answer's message as Responses output items: its reasoning, its text, then
    its function calls."""
    status = item_status(finish_reason)
    items: list[dict[str, Any]] = []
    reasoning = reasoning_text(message)
    if reasoning:
        items.append(reasoning_item(reasoning, status))
    text = _text(message.get("content")) or _text(message.get("refusal"))
    calls = message.get("tool_calls") if isinstance(message.get("tool_calls"), list) else []
    if text or not calls:
        items.append(message_item(text, status))
    for call in calls:
        function = (call.get("function") if isinstance(call, dict) else None) or {}
        items.append(call_item(str(call.get("id") or new_id("call")),
                               str(function.get("name") or ""),
                               str(function.get("arguments") or ""), status))
    return items


def assistant_message(output: list[dict[str, Any]]) -> dict[str, Any]:
    """The output items as the chat assistant message a later turn replays (reasoning is
    the upstream's own, and chat has nowhere to send it back)."""
    # .get: a native upstream's items are its own (refusal parts have no text).
    text = "".join(str(part.get("text") or "") for item in output
                   if item.get("type") == "message" for part in item.get("content") or ()
                   if isinstance(part, dict))
    calls = [{"id": item.get("call_id"), "type": "function",
              "function": {"name": item.get("name"), "arguments": item.get("arguments")}}
             for item in output if item.get("type") == "function_call"]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    elif not text:
        message["content"] = ""
    return message
