"""The Anthropic adapter on its own (no network, no database): OpenAI requests translated to
the Messages API, and answers and stream events translated back."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy.upstream.providers import UpstreamError
from proxy.upstream.providers.anthropic.request import messages_request
from proxy.upstream.providers.anthropic.response import chat_completion, error_from, stream_error
from proxy.upstream.providers.anthropic.stream import ChunkTranslator
from tests.openai_schema import validate
from tests.proxy.anthropic.messages_api import anthropic_error
from tests.proxy.anthropic.samples import (
    WEATHER_TOOL,
    sample_events,
)


def _translate(**body: Any) -> dict[str, Any]:
    return messages_request({"model": "claude-3-5-haiku-latest", "max_tokens": 100, **body},
                            stream=False)


def _refusal(**body: Any) -> UpstreamError:
    with pytest.raises(UpstreamError) as refused:
        _translate(**body)
    error = refused.value
    assert (error.retryable, error.status) == (False, 400)
    validate(error.body, "ErrorResponse")
    return error


# --- the request ---------------------------------------------------------------------------


def test_system_and_developer_messages_become_the_top_level_system():
    request = _translate(messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
        {"role": "user", "content": "Hi"},
    ])
    assert request == {"model": "claude-3-5-haiku-latest", "max_tokens": 100,
                       "system": "Be brief.\n\nAnswer in English.",
                       "messages": [{"role": "user", "content": "Hi"}]}


def test_a_cache_breakpoint_on_a_part_is_kept_so_anthropic_caches_the_prompt():
    mark = {"type": "ephemeral"}
    request = _translate(messages=[
        {"role": "system", "content": [{"type": "text", "text": "Long rules.",
                                        "cache_control": mark}]},
        {"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": mark}]},
    ])
    assert request["system"] == [{"type": "text", "text": "Long rules.", "cache_control": mark}]
    assert request["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Hi", "cache_control": mark}]}]


def test_consecutive_messages_of_one_role_are_merged_as_anthropic_requires_alternation():
    request = _translate(messages=[
        {"role": "user", "content": "First."},
        {"role": "user", "content": [{"type": "text", "text": "Second."}]},
        {"role": "assistant", "content": "One."},
        {"role": "assistant", "content": "Two."},
        {"role": "user", "content": "Third."},
    ])
    assert request["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "First."},
                                     {"type": "text", "text": "Second."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "One."},
                                          {"type": "text", "text": "Two."}]},
        {"role": "user", "content": "Third."},
    ]


def test_the_cap_sampling_stop_and_user_are_translated_and_temperature_is_clamped():
    request = messages_request({
        "model": "claude-3-5-haiku-latest", "messages": [{"role": "user", "content": "Hi"}],
        "max_completion_tokens": 42, "temperature": 1.7, "top_p": 0.9, "stop": "\n\n",
        "user": "customer-7", "seed": 3, "presence_penalty": 0.5, "stream": True,
        "stream_options": {"include_usage": True},
    }, stream=True)
    assert request == {"model": "claude-3-5-haiku-latest", "max_tokens": 42,
                       "messages": [{"role": "user", "content": "Hi"}],
                       "temperature": 1, "top_p": 0.9, "stop_sequences": ["\n\n"],
                       "metadata": {"user_id": "customer-7"}, "stream": True}
    assert _translate(messages=[{"role": "user", "content": "Hi"}], temperature=0.3,
                      stop=["END", "STOP"]) == {
        "model": "claude-3-5-haiku-latest", "max_tokens": 100, "temperature": 0.3,
        "stop_sequences": ["END", "STOP"], "messages": [{"role": "user", "content": "Hi"}]}


def test_images_are_sent_as_base64_or_url_sources():
    request = _translate(messages=[{"role": "user", "content": [
        {"type": "text", "text": "Compare these."},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg",
                                            "detail": "high"}},
    ]}])
    assert request["messages"][0]["content"] == [
        {"type": "text", "text": "Compare these."},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize("url", ["ftp://example.com/cat.jpg", "data:image/png,rawbytes",
                                 "data:;base64,AAAA"])
def test_an_image_anthropic_cannot_take_is_refused_naming_the_part(url):
    error = _refusal(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}]}])
    assert error.body["error"]["param"] == "messages[0].content[0].image_url.url"


def test_tool_calls_become_tool_use_and_tool_messages_become_tool_results():
    request = _translate(tools=[WEATHER_TOOL], messages=[
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "toolu_2", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny, 24 C"},
        {"role": "tool", "tool_call_id": "toolu_2",
         "content": [{"type": "text", "text": "Rain, 18 C"}]},
        {"role": "user", "content": "Which is warmer?"},
    ])
    assert request["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
             "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather",
             "input": {"city": "Rome"}}]},
        # The tool results and the next user message are one user turn, results first.
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny, 24 C"},
            {"type": "tool_result", "tool_use_id": "toolu_2",
             "content": [{"type": "text", "text": "Rain, 18 C"}]},
            {"type": "text", "text": "Which is warmer?"}]},
    ]
    assert request["tools"] == [{
        "name": "get_weather", "description": "The weather in a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"]}}]
    assert "tool_choice" not in request


def test_tool_call_arguments_that_are_not_a_json_object_are_refused():
    error = _refusal(messages=[
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "tool_calls": [{"id": "t", "type": "function", "function": {
            "name": "get_weather", "arguments": "{not json"}}]}])
    assert error.body["error"]["param"] == "messages[1].tool_calls[0].function.arguments"


@pytest.mark.parametrize(("choice", "parallel", "expected"), [
    ("auto", None, {"type": "auto"}),
    ("none", None, {"type": "none"}),
    ("required", None, {"type": "any"}),
    ({"type": "function", "function": {"name": "get_weather"}}, None,
     {"type": "tool", "name": "get_weather"}),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
])
def test_tool_choice_maps_to_anthropics(choice, parallel, expected):
    request = _translate(messages=[{"role": "user", "content": "Hi"}], tools=[WEATHER_TOOL],
                         tool_choice=choice, parallel_tool_calls=parallel)
    assert request["tool_choice"] == expected


def test_a_tool_without_parameters_gets_an_empty_object_schema():
    request = _translate(messages=[{"role": "user", "content": "Hi"}], tools=[
        {"type": "function", "function": {"name": "now"}}])
    assert request["tools"] == [{"name": "now",
                                 "input_schema": {"type": "object", "properties": {}}}]


@pytest.mark.parametrize(("body", "param"), [
    ({"n": 2}, "n"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"tools": [{"type": "code_interpreter"}]}, "tools[0]"),
    ({"tool_choice": "sometimes", "tools": [WEATHER_TOOL]}, "tool_choice"),
])
def test_what_anthropic_cannot_express_is_refused_as_a_400(body, param):
    error = _refusal(messages=[{"role": "user", "content": "Hi"}], **body)
    assert error.body["error"]["param"] == param


# --- the answer ----------------------------------------------------------------------------


def _message(content: list[dict[str, Any]], stop_reason: str = "end_turn",
             **usage: int) -> dict[str, Any]:
    return {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-x",
            "content": content, "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5, **usage}}


def test_a_message_becomes_a_chat_completion_with_usage_counting_cache_reads_and_writes():
    answer = chat_completion(_message([{"type": "text", "text": "Hello "},
                                       {"type": "text", "text": "there."}],
                                      cache_creation_input_tokens=20,
                                      cache_read_input_tokens=300),
                             model="claude-3-5-haiku-latest")
    validate(answer, "CreateChatCompletionResponse")
    assert answer["id"] == "chatcmpl-msg_01"
    assert answer["model"] == "claude-3-5-haiku-latest"
    assert answer["choices"] == [{"index": 0, "logprobs": None, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": "Hello there.",
                                              "refusal": None}}]
    assert answer["usage"] == {"prompt_tokens": 330, "completion_tokens": 5,
                               "total_tokens": 335,
                               "prompt_tokens_details": {"cached_tokens": 300,
                                                         "cache_write_tokens": 20}}


@pytest.mark.parametrize(("stop_reason", "finish_reason"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
    ("tool_use", "tool_calls"), ("refusal", "content_filter"), (None, "stop"),
])
def test_stop_reasons_map_to_finish_reasons(stop_reason, finish_reason):
    answer = chat_completion(_message([{"type": "text", "text": "x"}], stop_reason), model="m")
    assert answer["choices"][0]["finish_reason"] == finish_reason


def test_a_tool_use_becomes_a_tool_call_with_json_string_arguments():
    answer = chat_completion(_message([
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_9", "name": "get_weather",
         "input": {"city": "Paris", "days": 2}}], "tool_use"), model="m")
    validate(answer, "CreateChatCompletionResponse")
    message = answer["choices"][0]["message"]
    assert message["content"] == "Let me check."
    assert message["tool_calls"] == [{"id": "toolu_9", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city":"Paris","days":2}'}}]
    only_tool = chat_completion(_message([{"type": "tool_use", "id": "t", "name": "f",
                                           "input": {}}], "tool_use"), model="m")
    assert only_tool["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(("status", "kind", "retryable"), [
    (400, "invalid_request_error", False), (413, "request_too_large", False),
    (429, "rate_limit_error", True), (500, "api_error", True),
    (529, "overloaded_error", True),
    # The worker's own key is bad: another worker may do, and the client's key is fine.
    (401, "authentication_error", True), (403, "permission_error", True),
])
def test_anthropic_error_responses_say_whether_another_worker_could_help(
    status, kind, retryable
):
    error = error_from(status, orjson.dumps(anthropic_error(status)), worker="w")
    assert (error.retryable, error.status) == (retryable, status)
    assert kind in str(error)
    if retryable:
        assert error.body is None
    else:
        validate(error.body, "ErrorResponse")
        assert error.body["error"]["type"] == "invalid_request_error"
        assert error.body["error"]["message"] == anthropic_error(status)["error"]["message"]


def test_a_prompt_too_long_is_reported_as_openais_context_length_exceeded():
    raw = orjson.dumps(anthropic_error(400, "prompt is too long: 210000 tokens > 200000 "
                                            "maximum"))
    assert error_from(400, raw, worker="w").body["error"]["code"] == "context_length_exceeded"


def test_an_error_event_is_retryable_only_if_it_is_an_overload_before_any_output():
    overloaded = anthropic_error(529)
    assert stream_error(overloaded, worker="w", before_output=True).retryable
    assert not stream_error(overloaded, worker="w", before_output=False).retryable
    assert not stream_error(anthropic_error(400), worker="w", before_output=True).retryable




@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_events_become_chunks_role_first_then_content_tool_calls_finish_and_usage(
    include_usage
):
    usage = {"input_tokens": 7, "cache_creation_input_tokens": 2,
             "cache_read_input_tokens": 11, "output_tokens": 9}
    translator = ChunkTranslator(model="claude-3-5-haiku-latest", include_usage=include_usage)
    chunks = [c for event in sample_events(text="Hello!", tool=True, usage=usage, stop="tool_use")
              for c in translator.feed(event)]
    assert translator.done
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
        assert (chunk["id"], chunk["model"]) == ("chatcmpl-msg_s", "claude-3-5-haiku-latest")
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert [d["content"] for d in deltas if d.get("content")] == ["Hel", "lo!"]
    calls = [call for d in deltas for call in d.get("tool_calls", ())]
    assert calls[0] == {"index": 0, "id": "toolu_7", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}
    assert "".join(c["function"]["arguments"] for c in calls) == '{"city":"Oslo"}'
    assert all(c["index"] == 0 for c in calls)
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[:-1] == [None] * (len(finishes) - 1)
    assert finishes[-1] == "tool_calls"
    if include_usage:
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"] == {"prompt_tokens": 20, "completion_tokens": 9,
                                       "total_tokens": 29,
                                       "prompt_tokens_details": {"cached_tokens": 11,
                                                                 "cache_write_tokens": 2}}
    else:
        assert all("usage" not in c for c in chunks)


def test_pings_and_unknown_events_produce_no_chunks():
    translator = ChunkTranslator(model="m", include_usage=True)
    assert translator.feed({"type": "ping"}) == []
    assert translator.feed({"type": "content_block_delta", "index": 0,
                            "delta": {"type": "thinking_delta", "thinking": "hm"}}) == []
    assert translator.feed({"type": "something_new"}) == []


