"""Requests and answers the Anthropic tests share."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.proxy.anthropic.messages_api import Answer, stream_events

MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say something deterministic."}]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
# Long enough that a part of it can be reported as cached.
LONG_SYSTEM = "You are a careful assistant who answers in plain words. " * 30
INPUT, OUTPUT, CACHED = Decimal("3"), Decimal("15"), Decimal("0.3")  # micro-USD per token


def sample_events(*, text: str, tool: bool, usage: dict[str, int], stop: str) -> list[dict]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if tool:
        content.append({"type": "tool_use", "id": "toolu_7", "name": "get_weather",
                        "input": {"city": "Oslo"}})
    answer = Answer(message={"id": "msg_s", "type": "message", "role": "assistant",
                             "model": "claude-x", "content": content, "stop_reason": stop,
                             "stop_sequence": None, "usage": usage},
                    text_pieces=[text[:3], text[3:]],
                    json_pieces=['{"city"', ':"Oslo"}'])
    return stream_events(answer)
