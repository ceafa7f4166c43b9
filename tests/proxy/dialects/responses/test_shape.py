"""Reasoning from an upstream (DeepSeek's and vLLM's reasoning_content) becomes a
``reasoning`` output item, whole or streamed, valid against OpenAI's schemas."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from proxy.dialects.responses.render import ResponsesDialect
from proxy.dialects.responses.request import parse_responses_request
from tests.openai_schema import validate
from tests.proxy.dialects.responses.conftest import sse_events

USAGE = {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16,
         "completion_tokens_details": {"reasoning_tokens": 4}}


def _dialect() -> ResponsesDialect:
    body = {"model": "test-model", "input": "Why?", "store": False,
            "reasoning": {"effort": "high", "summary": "auto"}}
    return ResponsesDialect(parse_responses_request(orjson.dumps(body)), [])


def test_a_whole_answers_reasoning_comes_first_as_a_reasoning_item() -> None:
    answer: dict[str, Any] = {"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "reasoning_content": "Because.", "content": "Answer."}}],
        "usage": USAGE}
    response = asyncio.run(_dialect().render(None, answer))  # type: ignore[arg-type]
    validate(response, "Response")
    assert [item["type"] for item in response["output"]] == ["reasoning", "message"]
    assert response["output"][0]["content"] == [{"type": "reasoning_text", "text": "Because."}]
    assert response["usage"]["output_tokens_details"] == {"reasoning_tokens": 4}
    assert response["reasoning"] == {"effort": "high", "summary": "auto"}


def test_streamed_reasoning_is_its_own_item_before_the_message() -> None:
    dialect = _dialect()
    render = dialect.stream(None)  # type: ignore[arg-type]
    parts = render.opening()
    for delta, finish in (({"role": "assistant", "reasoning_content": "Be"}, None),
                          ({"reasoning_content": "cause."}, None), ({"content": "Ans"}, None),
                          ({"content": "wer."}, None), ({}, "stop")):
        parts += render.chunk({"choices": [{"index": 0, "delta": delta,
                                            "finish_reason": finish}]})
    parts += asyncio.run(render.closing(None, USAGE, 23, {}))  # type: ignore[arg-type]
    events = [event for _, event in sse_events(b"".join(parts).decode().splitlines())]
    for event in events:
        validate(event, "ResponseStreamEvent")
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.reasoning_text.delta", "response.reasoning_text.delta",
        "response.reasoning_text.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Because."
    assert final["output"][1]["content"][0]["text"] == "Answer."
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.done"] == [
        0, 1]


def test_an_empty_streamed_answer_is_still_one_empty_message() -> None:
    render = _dialect().stream(None)  # type: ignore[arg-type]
    parts = render.opening()
    parts += render.chunk({"choices": [{"index": 0, "delta": {"content": ""},
                                        "finish_reason": "stop"}]})
    parts += asyncio.run(render.closing(None, USAGE, 23, {}))  # type: ignore[arg-type]
    events = [event for _, event in sse_events(b"".join(parts).decode().splitlines())]
    for event in events:
        validate(event, "ResponseStreamEvent")
    final = events[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["message"]
    assert final["output"][0]["content"][0]["text"] == ""
