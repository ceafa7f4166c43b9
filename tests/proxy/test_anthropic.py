"""The Anthropic adapter: OpenAI requests translated to the Messages API and answers back.

First the translation on its own (no network, no database), then end to end: the openai SDK
-> the router -> a local server speaking Anthropic's Messages API.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import orjson
import pytest

from billing.models import Hold, LedgerEntry, ModelPrice, UsageRecord, Wallet
from billing.services import price_set
from proxy.models import Worker, WorkerModel
from proxy.providers import UpstreamError, provider_for
from proxy.providers.anthropic import AnthropicProvider
from proxy.providers.anthropic.request import messages_request
from proxy.providers.anthropic.response import chat_completion, error_from, stream_error
from proxy.providers.anthropic.stream import ChunkTranslator
from proxy.providers.base import UpstreamTarget
from proxy.tokens import count_text_tokens, exact_prompt_tokens
from tests.openai_schema import validate
from tests.proxy.anthropic_upstream import (
    Answer,
    AnthropicServer,
    ToolUse,
    anthropic_error,
    stream_events,
)

MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say something deterministic."}]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
# Long enough that a part of it can be reported as cached.
LONG_SYSTEM = "You are a careful assistant who answers in plain words. " * 30
INPUT, OUTPUT, CACHED = Decimal("3"), Decimal("15"), Decimal("0.3")  # micro-USD per token

_names = itertools.count(1)


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


def test_a_message_becomes_a_chat_completion_with_usage_counting_cached_tokens():
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
                               "prompt_tokens_details": {"cached_tokens": 300}}


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


# --- the stream ----------------------------------------------------------------------------


def _events(*, text: str, tool: bool, usage: dict[str, int], stop: str) -> list[dict]:
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


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_events_become_chunks_role_first_then_content_tool_calls_finish_and_usage(
    include_usage
):
    usage = {"input_tokens": 7, "cache_creation_input_tokens": 2,
             "cache_read_input_tokens": 11, "output_tokens": 9}
    translator = ChunkTranslator(model="claude-3-5-haiku-latest", include_usage=include_usage)
    chunks = [c for event in _events(text="Hello!", tool=True, usage=usage, stop="tool_use")
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
                                       "prompt_tokens_details": {"cached_tokens": 11}}
    else:
        assert all("usage" not in c for c in chunks)


def test_pings_and_unknown_events_produce_no_chunks():
    translator = ChunkTranslator(model="m", include_usage=True)
    assert translator.feed({"type": "ping"}) == []
    assert translator.feed({"type": "content_block_delta", "index": 0,
                            "delta": {"type": "thinking_delta", "thinking": "hm"}}) == []
    assert translator.feed({"type": "something_new"}) == []


# --- end to end through the router ---------------------------------------------------------


@pytest.fixture
def anthropic_upstream() -> Iterator[AnthropicServer]:
    """A running Anthropic server that wants the key ``sk-ant-test``."""
    with AnthropicServer() as server:
        yield server


@pytest.fixture
def claude_price(transactional_db) -> ModelPrice:
    return price_set(model="claude-test", input_usd_per_mtok=INPUT,
                     output_usd_per_mtok=OUTPUT, cached_input_usd_per_mtok=CACHED,
                     max_output_tokens=1000)


def _worker(server: AnthropicServer, *, priority: int = 0, key: str = "sk-ant-test"
            ) -> Worker:
    worker = Worker(name=f"anthropic-{next(_names)}", kind="anthropic",
                    base_url=server.base_url, priority=priority)
    worker.set_api_key(key)
    worker.save()
    WorkerModel.objects.create(worker=worker, model="claude-test",
                               upstream_model="claude-3-5-haiku-latest")
    return worker


@pytest.fixture
def anthropic_worker(anthropic_upstream: AnthropicServer, claude_price) -> Worker:
    return _worker(anthropic_upstream)


def _cost(prompt: int, completion: int, cached: int = 0) -> int:
    return math.ceil((prompt - cached) * INPUT + cached * CACHED + completion * OUTPUT)


def _wallet(user_id: int) -> Wallet:
    return Wallet.objects.get(user_id=user_id)


def _assert_nothing_charged(user_id: int) -> None:
    wallet = _wallet(user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000, 0)
    assert not LedgerEntry.objects.filter(kind="charge").exists()
    assert not Hold.objects.filter(status="pending").exists()


def test_a_non_streamed_answer_reads_as_openai_and_is_charged_exactly_with_cached_tokens(
    anthropic_worker, anthropic_upstream, make_key, client_for, claude_price
):
    anthropic_upstream.configure(cache_creation_input_tokens=37, cache_read_input_tokens=151)
    user_id, secret = make_key()
    raw = client_for(secret).chat.completions.with_raw_response.create(
        model="claude-test", max_tokens=100, temperature=1.5, stop=["\n\n"], user="u-42",
        messages=[{"role": "system", "content": LONG_SYSTEM},
                  {"role": "developer", "content": "Be brief."},
                  {"role": "user", "content": "Say something deterministic."}])
    completion = raw.parse()
    validate(orjson.loads(raw.http_response.content), "CreateChatCompletionResponse")

    answer = anthropic_upstream.answers[-1]
    assert completion.choices[0].message.content == answer.text
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "claude-test"
    assert completion.id == f"chatcmpl-{answer.message['id']}"
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        answer.prompt_tokens, answer.usage["output_tokens"])
    assert usage.prompt_tokens_details.cached_tokens == 151
    cost = _cost(answer.prompt_tokens, answer.usage["output_tokens"], cached=151)
    assert raw.headers["x-router-cost-micros"] == str(cost)

    request = anthropic_upstream.requests[-1]
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == "sk-ant-test"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in request.headers
    assert request.body == {
        "model": "claude-3-5-haiku-latest", "max_tokens": 100,
        "system": f"{LONG_SYSTEM}\n\nBe brief.",
        "messages": [{"role": "user", "content": "Say something deterministic."}],
        "temperature": 1, "stop_sequences": ["\n\n"], "metadata": {"user_id": "u-42"}}

    record = UsageRecord.objects.get(request_id=raw.headers["x-request-id"])
    assert (record.prompt_tokens, record.completion_tokens, record.cached_tokens) == (
        answer.prompt_tokens, answer.usage["output_tokens"], 151)
    assert (record.cost_micros, record.source, record.status) == (cost, "provider", "ok")
    assert (record.price_id, record.worker) == (claude_price.pk, anthropic_worker.name)
    wallet = _wallet(user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000 - cost, 0)
    assert LedgerEntry.objects.get(kind="charge").amount_micros == -cost


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_streamed_answer_is_translated_chunk_by_chunk_and_charged_from_anthropic_usage(
    anthropic_worker, anthropic_upstream, make_key, client_for, router, include_usage
):
    anthropic_upstream.configure(cache_read_input_tokens=101, chunk_delay=0.001)
    user_id, secret = make_key()
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = client_for(secret).chat.completions.create(
        model="claude-test", max_completion_tokens=60, stream=True,
        messages=[{"role": "system", "content": LONG_SYSTEM},
                  {"role": "user", "content": "Say something deterministic."}], **options)
    chunks = list(stream)
    router.drain()

    answer = anthropic_upstream.answers[-1]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.text
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert set(finishes[:-1]) == {None}
    for chunk in chunks:
        validate(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
        assert chunk.model == "claude-test"
    cost = _cost(answer.prompt_tokens, answer.usage["output_tokens"], cached=101)
    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        (last,) = usage_chunks
        assert last is chunks[-1]
        assert last.choices == []
        assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
            answer.prompt_tokens, answer.usage["output_tokens"])
        assert last.usage.prompt_tokens_details.cached_tokens == 101
        assert last.usage.model_extra["cost"] == pytest.approx(cost / 1e6)
    else:
        assert usage_chunks == []

    sent = anthropic_upstream.bodies[-1]
    assert (sent["stream"], sent["max_tokens"], sent["model"]) == (
        True, 60, "claude-3-5-haiku-latest")
    assert "stream_options" not in sent
    record = UsageRecord.objects.get()
    assert (record.cost_micros, record.cached_tokens, record.source, record.status) == (
        cost, 101, "provider", "ok")
    assert _wallet(user_id).posted_micros == 1_000_000 - cost
    assert not Hold.objects.filter(status="pending").exists()


def test_a_reply_cut_at_max_tokens_finishes_with_length(
    anthropic_worker, anthropic_upstream, make_key, client_for
):
    _, secret = make_key()
    completion = client_for(secret).chat.completions.create(
        model="claude-test", messages=MESSAGES, max_tokens=5)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 5


def test_a_tool_call_round_trips_through_tool_use_and_tool_result(
    anthropic_worker, anthropic_upstream, make_key, client_for
):
    anthropic_upstream.configure(reply="", tool_use=ToolUse(
        name="get_weather", input={"city": "Paris"}, id="toolu_01Paris"))
    _, secret = make_key()
    client = client_for(secret)
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    raw = client.chat.completions.with_raw_response.create(
        model="claude-test", messages=question, tools=[WEATHER_TOOL], tool_choice="required",
        max_tokens=100)
    validate(orjson.loads(raw.http_response.content), "CreateChatCompletionResponse")
    first = raw.parse()
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert (call.id, call.type, call.function.name) == ("toolu_01Paris", "function",
                                                        "get_weather")
    assert orjson.loads(call.function.arguments) == {"city": "Paris"}
    sent = anthropic_upstream.bodies[-1]
    assert sent["tools"][0]["name"] == "get_weather"
    assert sent["tools"][0]["input_schema"] == WEATHER_TOOL["function"]["parameters"]
    assert sent["tool_choice"] == {"type": "any"}

    anthropic_upstream.configure(reply="It is sunny in Paris.", tool_use=None)
    second = client.chat.completions.create(
        model="claude-test", tools=[WEATHER_TOOL], max_tokens=100, messages=[
            *question, choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 C"}])
    assert second.choices[0].message.content == "It is sunny in Paris."
    # The server refuses (400) a tool_result that does not answer the tool_use before it.
    assert anthropic_upstream.bodies[-1]["messages"] == [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01Paris",
                                           "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01Paris",
                                      "content": "Sunny, 24 C"}]},
    ]


def test_a_streamed_tool_call_arrives_as_openai_tool_call_deltas(
    anthropic_worker, anthropic_upstream, make_key, client_for, router
):
    anthropic_upstream.configure(reply="Checking.", tool_use=ToolUse(
        name="get_weather", input={"city": "Reykjavík", "unit": "celsius"}))
    _, secret = make_key()
    chunks = list(client_for(secret).chat.completions.create(
        model="claude-test", messages=MESSAGES, tools=[WEATHER_TOOL], stream=True,
        max_tokens=100, stream_options={"include_usage": True}))
    router.drain()
    for chunk in chunks:
        validate(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas) == "Checking."
    calls = [call for d in deltas for call in d.tool_calls or ()]
    assert calls[0].id == "toolu_01A09q90qw90lq917835lq9"
    assert calls[0].function.name == "get_weather"
    arguments = "".join(call.function.arguments or "" for call in calls)
    assert orjson.loads(arguments) == {"city": "Reykjavík", "unit": "celsius"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    answer = anthropic_upstream.answers[-1]
    assert chunks[-1].usage.completion_tokens == answer.usage["output_tokens"]
    assert UsageRecord.objects.get().cost_micros == _cost(answer.prompt_tokens,
                                                          answer.usage["output_tokens"])


def test_an_anthropic_400_reaches_the_client_as_an_openai_400_and_costs_nothing(
    anthropic_worker, anthropic_upstream, make_key, client_for, router
):
    anthropic_upstream.configure(status=400, error_message="messages.0.content: bad image")
    user_id, secret = make_key()
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as bad:
            client_for(secret).chat.completions.create(model="claude-test",
                                                       messages=MESSAGES, stream=stream)
        validate(bad.value.response.json(), "ErrorResponse")
        assert bad.value.body["message"] == "messages.0.content: bad image"
        assert bad.value.type == "invalid_request_error"
    router.drain()
    _assert_nothing_charged(user_id)
    assert set(UsageRecord.objects.values_list("status", "cost_micros")) == {
        ("upstream_error", 0)}


def test_a_request_the_adapter_cannot_translate_is_a_400_that_never_reaches_anthropic(
    anthropic_worker, anthropic_upstream, make_key, client_for
):
    user_id, secret = make_key()
    with pytest.raises(openai.BadRequestError) as bad:
        client_for(secret).chat.completions.create(model="claude-test", messages=MESSAGES,
                                                   n=2)
    assert bad.value.param == "n"
    assert anthropic_upstream.requests == []
    _assert_nothing_charged(user_id)


def test_an_overloaded_anthropic_worker_alone_ends_as_a_502_and_costs_nothing(
    anthropic_worker, anthropic_upstream, make_key, client_for, router
):
    anthropic_upstream.configure(status=529)
    user_id, secret = make_key()
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as failed:
            client_for(secret).chat.completions.create(model="claude-test",
                                                       messages=MESSAGES, stream=stream)
        assert failed.value.status_code == 502
        validate(failed.value.response.json(), "ErrorResponse")
    router.drain()
    _assert_nothing_charged(user_id)


def test_an_overloaded_anthropic_worker_fails_over_to_the_next_one(
    anthropic_upstream, claude_price, make_key, client_for, router
):
    anthropic_upstream.configure(status=529)
    _worker(anthropic_upstream, priority=10)
    with AnthropicServer(reply="From the second worker.") as second:
        backup = _worker(second, priority=0)
        user_id, secret = make_key()
        completion = client_for(secret).chat.completions.create(
            model="claude-test", messages=MESSAGES, max_tokens=50)
        assert completion.choices[0].message.content == "From the second worker."
        assert len(anthropic_upstream.requests) == 1
        answer = second.answers[-1]
    record = UsageRecord.objects.get()
    assert (record.worker, record.status) == (backup.name, "ok")
    assert record.cost_micros == _cost(answer.prompt_tokens, answer.usage["output_tokens"])
    assert _wallet(user_id).posted_micros == 1_000_000 - record.cost_micros


def test_a_worker_with_a_bad_anthropic_key_is_a_502_not_the_clients_401(
    anthropic_upstream, claude_price, make_key, client_for, router
):
    _worker(anthropic_upstream, key="sk-ant-revoked")
    user_id, secret = make_key()
    with pytest.raises(openai.APIStatusError) as failed:
        client_for(secret).chat.completions.create(model="claude-test", messages=MESSAGES)
    assert failed.value.status_code == 502
    assert anthropic_upstream.requests[-1].headers["x-api-key"] == "sk-ant-revoked"
    router.drain()
    _assert_nothing_charged(user_id)


def _sse_events(router, secret: str) -> list[dict[str, Any]]:
    with httpx.stream("POST", f"{router.base_url}/chat/completions",
                      headers={"Authorization": f"Bearer {secret}"},
                      json={"model": "claude-test", "messages": MESSAGES, "stream": True,
                            "max_tokens": 100}) as response:
        assert response.status_code == 200
        return [orjson.loads(line[6:]) for line in response.iter_lines()
                if line.startswith("data: {")]


def test_anthropic_dying_mid_stream_sends_an_error_event_and_charges_what_was_produced(
    anthropic_worker, anthropic_upstream, make_key, router
):
    # message_start, content_block_start, ping and three text deltas, then the connection
    # drops.
    anthropic_upstream.configure(die_after_events=6)
    user_id, secret = make_key()
    events = _sse_events(router, secret)
    router.drain()
    assert "error" in events[-1]
    validate(events[-1], "ErrorResponse")
    produced = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert produced == "".join(anthropic_upstream.answers[-1].text_pieces[:3])
    record = UsageRecord.objects.get()
    assert (record.source, record.status) == ("estimated", "upstream_error")
    assert record.completion_tokens == count_text_tokens(produced) == 3
    assert record.prompt_tokens == exact_prompt_tokens(MESSAGES)
    assert record.cost_micros == _cost(record.prompt_tokens, 3)
    wallet = _wallet(user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000 - record.cost_micros,
                                                             0)
    assert not Hold.objects.filter(status="pending").exists()


def test_an_error_event_mid_stream_is_passed_on_and_charges_what_was_produced(
    anthropic_worker, anthropic_upstream, make_key, router
):
    anthropic_upstream.configure(error_after_events=5)  # after two text deltas
    user_id, secret = make_key()
    events = _sse_events(router, secret)
    router.drain()
    validate(events[-1], "ErrorResponse")
    assert "overloaded_error" in events[-1]["error"]["message"]
    record = UsageRecord.objects.get()
    assert (record.status, record.source, record.completion_tokens) == (
        "upstream_error", "estimated", 2)
    assert _wallet(user_id).pending_micros == 0


def test_an_overload_event_before_the_message_starts_fails_over_like_a_529(
    anthropic_upstream, claude_price, make_key, client_for, router
):
    anthropic_upstream.configure(error_after_events=0)
    _worker(anthropic_upstream, priority=10)
    with AnthropicServer(reply="Second.") as second:
        _worker(second)
        _, secret = make_key()
        chunks = list(client_for(secret).chat.completions.create(
            model="claude-test", messages=MESSAGES, stream=True, max_tokens=20))
    router.drain()
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Second."
    assert UsageRecord.objects.get().status == "ok"


def test_the_provider_is_registered_for_the_anthropic_kind():
    target = UpstreamTarget(worker_id=1, worker_name="w", kind="anthropic",
                            base_url="https://api.anthropic.com/v1")
    provider = provider_for(target)
    assert isinstance(provider, AnthropicProvider)
    assert provider._url() == "https://api.anthropic.com/v1/messages"


def test_an_anthropic_worker_slower_than_its_first_byte_timeout_fails_fast_and_free(
    anthropic_worker, anthropic_upstream, make_key, client_for, router
):
    import time

    anthropic_worker.first_byte_timeout_s = 0.3
    anthropic_worker.save()
    anthropic_upstream.configure(first_byte_delay=3)
    user_id, secret = make_key()
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as failed:
        client_for(secret).chat.completions.create(model="claude-test", messages=MESSAGES)
    assert failed.value.status_code == 502
    assert time.monotonic() - started < 2
    router.drain()
    _assert_nothing_charged(user_id)
