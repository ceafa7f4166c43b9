"""What Anthropic's Messages API answers, for the test server: errors, the answer a request
gets (true token counts), its stream events, and the checks the real API makes."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.ground.tokens import count_text_tokens, encode_text, token_pieces

DEFAULT_REPLY = ("This is a deterministic reply from the local Anthropic upstream. It has a "
                 "handful of plain words, so its tokens are easy to count.")
API_VERSION = "2023-06-01"
MODELS = ("claude-3-5-haiku-latest", "claude-sonnet-4-5")

# What Anthropic answers for each status, used unless ``error_type``/``error_message`` say.
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "The request was invalid."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified "
                              "resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate "
                              "limit."),
    500: ("api_error", "An unexpected error has occurred internal to Anthropic's systems."),
    529: ("overloaded_error", "Overloaded"),
}


def anthropic_error(status: int, message: str | None = None, *, type_: str | None = None
                    ) -> dict[str, Any]:
    """An Anthropic error body for ``status``."""
    default_type, default_message = _ERRORS.get(
        status, ("api_error" if status >= 500 else "invalid_request_error", f"HTTP {status}"))
    return {"type": "error", "error": {"type": type_ or default_type,
                                       "message": message or default_message}}


@dataclass(frozen=True)
class ToolUse:
    """A tool call the model makes (after the reply text, if any)."""

    name: str
    input: dict[str, Any]
    id: str = "toolu_01A09q90qw90lq917835lq9"


@dataclass(frozen=True)
class AnthropicBehaviour:
    """How the server answers; every field can be set per server or changed between calls."""

    # The reply text ("" for none), or a function of the request body that returns it.
    reply: str | Callable[[dict[str, Any]], str] = DEFAULT_REPLY
    tool_use: ToolUse | None = None  # also call this tool (stop_reason "tool_use")
    # Of the prompt's tokens, this many are reported as written to / read from the cache.
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    # Answer every request with this HTTP status and an Anthropic error body.
    status: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    # Seconds before the status line, and between stream events.
    first_byte_delay: float = 0.0
    chunk_delay: float = 0.0
    # Stream: every event in one write, as a fast upstream (or one the router reads
    # late) hands them over.
    one_write: bool = False
    # Stream: send this many events, then drop the connection (no message_stop). Not
    # streamed: drop the connection without any response.
    die_after_events: int | None = None
    # Stream: after this many events send an ``error`` event (``overloaded_error``) and end.
    error_after_events: int | None = None
    require_api_key: str | None = "sk-ant-test"
    response_model: str | None = None  # the model named in answers; the request's by default


@dataclass
class Answer:
    """One message the server answered with (its final form, also for streams)."""

    message: dict[str, Any]
    text_pieces: list[str] = field(default_factory=list)
    json_pieces: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.text_pieces)

    @property
    def usage(self) -> dict[str, int]:
        return self.message["usage"]

    @property
    def prompt_tokens(self) -> int:
        """The whole prompt, as the OpenAI side reports it (cache reads and writes included)."""
        usage = self.usage
        return (usage["input_tokens"] + usage["cache_creation_input_tokens"]
                + usage["cache_read_input_tokens"])


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    texts: list[str] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            texts += [str(block.get("name", "")), orjson.dumps(block.get("input")).decode()]
        elif block.get("type") == "tool_result":
            texts += [str(block.get("tool_use_id", "")), *_texts(block.get("content"))]
    return texts


def count_prompt_tokens(body: dict[str, Any]) -> int:
    """The prompt's tokens: the texts of system, messages and tool names and descriptions,
    3 per message and 3 for the reply (the framing OpenAI counts, which the router's
    estimate bounds)."""
    texts = _texts(body.get("system"))
    for message in body.get("messages") or ():
        texts += [str(message.get("role", "")), *_texts(message.get("content"))]
    for tool in body.get("tools") or ():
        texts += [str(tool.get("name", "")), str(tool.get("description", ""))]
    return 3 + 3 * len(body.get("messages") or ()) + sum(count_text_tokens(t) for t in texts)


def plan_answer(body: dict[str, Any], behaviour: AnthropicBehaviour) -> Answer:
    """The message the server answers ``body`` with."""
    text = behaviour.reply(body) if callable(behaviour.reply) else behaviour.reply
    stop_reason, stop_sequence = "end_turn", None
    for sequence in body.get("stop_sequences") or ():
        if sequence in text:
            text, stop_reason, stop_sequence = text[:text.index(sequence)], "stop_sequence", (
                sequence)
    tokens = encode_text(text)
    limit = body["max_tokens"]
    tool = behaviour.tool_use
    if len(tokens) > limit:
        tokens, stop_reason, stop_sequence, tool = tokens[:limit], "max_tokens", None, None
    text_pieces = token_pieces(tokens)
    content: list[dict[str, Any]] = []
    if text_pieces:
        content.append({"type": "text", "text": "".join(text_pieces)})
    json_pieces: list[str] = []
    output_tokens = len(tokens)
    if tool is not None and stop_reason == "end_turn":
        content.append({"type": "tool_use", "id": tool.id, "name": tool.name,
                        "input": tool.input})
        arguments = orjson.dumps(tool.input).decode()
        json_pieces = [arguments[i:i + 7] for i in range(0, len(arguments), 7)]
        output_tokens += count_text_tokens(tool.name) + count_text_tokens(arguments)
        stop_reason = "tool_use"
    prompt = count_prompt_tokens(body)
    created = behaviour.cache_creation_input_tokens
    read = behaviour.cache_read_input_tokens
    if created + read > prompt:
        raise ValueError(f"cache tokens {created} + {read} exceed the prompt's {prompt}")
    message = {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": behaviour.response_model or body["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {"input_tokens": prompt - created - read,
                  "cache_creation_input_tokens": created, "cache_read_input_tokens": read,
                  "output_tokens": output_tokens, "service_tier": "standard"},
    }
    return Answer(message=message, text_pieces=text_pieces, json_pieces=json_pieces)


def stream_events(answer: Answer) -> list[dict[str, Any]]:
    """The events of ``answer`` as Anthropic streams them."""
    message = answer.message
    usage = message["usage"]
    start_usage = {**usage, "output_tokens": 1}  # Anthropic reports 1 until message_delta
    events: list[dict[str, Any]] = [{"type": "message_start", "message": {
        **message, "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": start_usage}}]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            events.append({"type": "content_block_start", "index": index,
                           "content_block": {"type": "text", "text": ""}})
            events += [{"type": "content_block_delta", "index": index,
                        "delta": {"type": "text_delta", "text": piece}}
                       for piece in answer.text_pieces]
        else:
            events.append({"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}})
            events += [{"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece}}
                       for piece in ["", *answer.json_pieces]]
        events.append({"type": "content_block_stop", "index": index})
    if message["content"]:
        events.insert(2, {"type": "ping"})  # Anthropic pings after the first block's start
    events.append({"type": "message_delta",
                   "delta": {"stop_reason": message["stop_reason"],
                             "stop_sequence": message["stop_sequence"]},
                   "usage": {"output_tokens": usage["output_tokens"]}})
    events.append({"type": "message_stop"})
    return events


def request_problem(body: Any) -> tuple[str, str] | None:
    """(error type, message) of a body the real API would refuse, or None."""
    if not isinstance(body, dict):
        return "invalid_request_error", "There was an issue with the format of your request"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "invalid_request_error", "model: Field required"
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return "invalid_request_error", "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "invalid_request_error", "messages: at least one message is required"
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= 1:
        return "invalid_request_error", "temperature: Input should be less than or equal to 1"
    previous_tool_uses: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return "invalid_request_error", f"messages.{i}.role: Input should be 'user' or " \
                                            "'assistant'"
        if i and messages[i - 1].get("role") == role:
            return "invalid_request_error", ("messages: roles must alternate between \"user\" "
                                             "and \"assistant\"")
        content = message.get("content")
        if content in ("", []):
            return "invalid_request_error", f"messages.{i}: all messages must have " \
                                            "non-empty content"
        blocks = content if isinstance(content, list) else []
        results = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
        if results - previous_tool_uses:
            return "invalid_request_error", (f"messages.{i}.content: unexpected tool_use_id "
                                             "found in tool_result blocks")
        if previous_tool_uses - results:
            return "invalid_request_error", ("messages: tool_use ids were found without "
                                             "tool_result blocks immediately after")
        previous_tool_uses = {b.get("id") for b in blocks if b.get("type") == "tool_use"}
    return None

