"""Validate a Responses API body the way OpenAI does, and translate it onto the internal
chat-completions form (``ChatRequest``) that the one billed path speaks.

The translation is done in two steps because ``previous_response_id`` needs the database:
``parse_responses_request`` validates and converts what the body itself says; ``chat_request``
then puts the stored context (if any) between the instructions and the new input, so that
the replayed turns are counted, held for and charged as input like any other prompt.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from proxy.dialects.body import json_body, model_name
from proxy.dialects.chat.request import ChatRequest
from proxy.dialects.responses.items import input_messages
from proxy.ground.errors import bad_request

# OpenAI refuses a smaller output cap on the Responses API.
MIN_OUTPUT_TOKENS = 16
TOOL_CHOICE_MODES = frozenset({"auto", "none", "required"})
REASONING_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh"})
# Chat fields the translated body may carry when the client set them.
PASSED_THROUGH = ("temperature", "top_p", "parallel_tool_calls", "user", "safety_identifier",
                  "prompt_cache_key", "service_tier")
# Features that need OpenAI's own state or servers: refused clearly, not ignored.
UNSUPPORTED = {"conversation": "use 'previous_response_id'",
               "prompt": "send the prompt's text as 'instructions' and 'input'",
               "background": "wait for the answer or stream it"}


@dataclass
class ResponsesRequest:
    """A validated Responses body, with what it says already in chat form."""

    body: dict[str, Any]  # the client's own body, echoed back in the response
    model: str
    messages: list[dict[str, Any]]  # the new input, as chat messages
    instructions: str | None
    chat_fields: dict[str, Any]  # the chat body's fields other than model and messages
    max_output_tokens: int | None
    stream: bool
    store: bool
    previous_response_id: str | None
    id: str = field(default_factory=lambda: f"resp_{uuid.uuid4().hex}")

    def context_messages(self, previous: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Instructions first (never carried over from a stored response, as OpenAI does),
        then the stored context, then the new input."""
        system = ([{"role": "system", "content": self.instructions}]
                  if self.instructions else [])
        return [*system, *previous, *self.messages]

    def chat_request(self, previous: list[dict[str, Any]]) -> ChatRequest:
        messages = self.context_messages(previous)
        if not messages:
            raise bad_request("Invalid 'input': empty array. Expected at least one input "
                              "item.", param="input", code="empty_array")
        body = {"model": self.model, "messages": messages, **self.chat_fields}
        if self.stream:
            body["stream"] = True
        caps = ({"max_output_tokens": self.max_output_tokens}
                if self.max_output_tokens is not None else None)
        return ChatRequest(body=body, model=self.model, messages=messages, stream=self.stream,
                           include_usage=False, max_tokens=self.max_output_tokens, n=1,
                           cap_fields=caps, native=self.body)


def _type_error(name: str, expected: str) -> Exception:
    return bad_request(f"Invalid type for '{name}': expected {expected}.", param=name,
                       code="invalid_type")


def _optional(body: dict[str, Any], name: str, kind: type, expected: str) -> Any:
    value = body.get(name)
    if value is not None and not isinstance(value, kind):
        raise _type_error(name, expected)
    return value


def _number_in(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(name, "a number")
    if not low <= value <= high:
        raise bad_request(f"Invalid '{name}': {value} is not between {low} and {high}.",
                          param=name, code="invalid_value")


def _max_output_tokens(body: dict[str, Any]) -> int | None:
    value = body.get("max_output_tokens")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error("max_output_tokens", "an integer")
    if value < MIN_OUTPUT_TOKENS:
        raise bad_request(f"Invalid 'max_output_tokens': integer below minimum value. "
                          f"Expected a value >= {MIN_OUTPUT_TOKENS}, but got {value} instead.",
                          param="max_output_tokens", code="integer_below_min_value")
    return value


def _tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Responses' flat function tools as chat's nested ones; other kinds are refused (the
    router has no built-in tools to run)."""
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise _type_error("tools", "an array")
    converted = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _type_error(where, "an object")
        if tool.get("type") != "function":
            raise bad_request(f"Invalid '{where}.type': {tool.get('type')!r}. Only 'function' "
                              "tools are supported here.", param=f"{where}.type",
                              code="invalid_value")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request(f"Missing required parameter: '{where}.name'.",
                              param=f"{where}.name", code="missing_required_parameter")
        function: dict[str, Any] = {"name": name}
        for key, kind, expected in (("description", str, "a string"),
                                    ("parameters", dict, "an object"),
                                    ("strict", bool, "a boolean")):
            value = tool.get(key)
            if value is None:
                continue
            if not isinstance(value, kind):
                raise _type_error(f"{where}.{key}", expected)
            function[key] = value
        converted.append({"type": "function", "function": function})
    return converted


def _tool_choice(body: dict[str, Any]) -> str | dict[str, Any] | None:
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in TOOL_CHOICE_MODES:
            raise bad_request(f"Invalid value: '{choice}'. Supported values are: 'none', "
                              "'auto' and 'required'.", param="tool_choice",
                              code="invalid_value")
        return choice
    if not isinstance(choice, dict):
        raise _type_error("tool_choice", "a string or an object")
    if choice.get("type") != "function":
        raise bad_request(f"Invalid 'tool_choice.type': {choice.get('type')!r}. Only "
                          "'function' is supported here.", param="tool_choice.type",
                          code="invalid_value")
    if not isinstance(choice.get("name"), str) or not choice["name"]:
        raise bad_request("Missing required parameter: 'tool_choice.name'.",
                          param="tool_choice.name", code="missing_required_parameter")
    return {"type": "function", "function": {"name": choice["name"]}}


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    text = _optional(body, "text", dict, "an object")
    if not text or text.get("format") is None:
        return None
    fmt = text["format"]
    if not isinstance(fmt, dict):
        raise _type_error("text.format", "an object")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        raise bad_request(f"Invalid value: {kind!r}. Supported values are: 'text', "
                          "'json_object' and 'json_schema'.", param="text.format.type",
                          code="invalid_value")
    if not isinstance(fmt.get("name"), str) or not fmt["name"]:
        raise bad_request("Missing required parameter: 'text.format.name'.",
                          param="text.format.name", code="missing_required_parameter")
    if not isinstance(fmt.get("schema"), dict):
        raise bad_request("Missing required parameter: 'text.format.schema'.",
                          param="text.format.schema", code="missing_required_parameter")
    schema = {key: fmt[key] for key in ("name", "schema", "description", "strict")
              if fmt.get(key) is not None}
    return {"type": "json_schema", "json_schema": schema}


def _reasoning_effort(body: dict[str, Any]) -> str | None:
    reasoning = _optional(body, "reasoning", dict, "an object")
    effort = (reasoning or {}).get("effort")
    if effort is None:
        return None
    if effort not in REASONING_EFFORTS:
        raise bad_request(f"Invalid value: {effort!r}. Supported values are: "
                          + ", ".join(f"'{e}'" for e in sorted(REASONING_EFFORTS)) + ".",
                          param="reasoning.effort", code="invalid_value")
    return effort


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _type_error(name, "a boolean")
    return value


def _metadata(body: dict[str, Any]) -> None:
    metadata = _optional(body, "metadata", dict, "an object")
    if metadata is None:
        return
    if len(metadata) > 16 or not all(isinstance(k, str) and len(k) <= 64 and isinstance(v, str)
                                     and len(v) <= 512 for k, v in metadata.items()):
        raise bad_request("Invalid 'metadata': at most 16 string keys (64 characters) with "
                          "string values (512 characters).", param="metadata",
                          code="invalid_value")


def parse_responses_request(raw: bytes) -> ResponsesRequest:
    body = json_body(raw)
    model = model_name(body)
    if body.get("input") is None:
        raise bad_request("Missing required parameter: 'input'.", param="input",
                          code="missing_required_parameter")
    return parse_body(body, model)


def parse_body(body: dict[str, Any], model: str) -> ResponsesRequest:
    """Everything but the model and the presence of ``input`` (input_tokens needs neither)."""
    messages = input_messages(body.get("input"))
    instructions = _optional(body, "instructions", str, "a string")
    _number_in(body, "temperature", 0, 2)
    _number_in(body, "top_p", 0, 1)
    _optional(body, "user", str, "a string")
    _optional(body, "previous_response_id", str, "a string")
    _metadata(body)
    for name, instead in UNSUPPORTED.items():
        if body.get(name):
            raise bad_request(f"'{name}' is not supported here: {instead}.", param=name,
                              code="unsupported_parameter")
    fields: dict[str, Any] = {name: body[name] for name in PASSED_THROUGH
                              if body.get(name) is not None}
    _flag(body, "parallel_tool_calls", True)
    converted = {"tools": _tools(body), "tool_choice": _tool_choice(body),
                 "response_format": _response_format(body),
                 "reasoning_effort": _reasoning_effort(body)}
    fields.update({name: value for name, value in converted.items() if value is not None})
    return ResponsesRequest(
        body=body, model=model, messages=messages, instructions=instructions or None,
        chat_fields=fields, max_output_tokens=_max_output_tokens(body),
        stream=_flag(body, "stream", False), store=_flag(body, "store", True),
        previous_response_id=body.get("previous_response_id"))
