"""The Anthropic adapter end to end, answers: the openai SDK -> the router -> a local server
speaking Anthropic's Messages API, charged exactly."""

from __future__ import annotations

import orjson
import pytest

from billing.models import Hold, LedgerEntry, UsageRecord
from tests.openai_schema import validate
from tests.proxy.anthropic.helpers import (
    cost_of,
    wallet_of,
)
from tests.proxy.anthropic.messages_api import ToolUse
from tests.proxy.anthropic.samples import (
    LONG_SYSTEM,
    MESSAGES,
    WEATHER_TOOL,
)


def test_a_non_streamed_answer_reads_as_openai_and_is_charged_exactly_with_cached_tokens(
    anthropic_worker, anthropic_upstream, make_key, client_for, claude_price, router
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
    cost = cost_of(answer.prompt_tokens, answer.usage["output_tokens"], cached=151, written=37)
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

    router.drain()  # the charge is written as the answer goes out
    record = UsageRecord.objects.get(request_id=raw.headers["x-request-id"])
    assert (record.prompt_tokens, record.completion_tokens, record.cached_tokens,
            record.cache_write_tokens) == (answer.prompt_tokens, answer.usage["output_tokens"],
                                           151, 37)
    assert (record.cost_micros, record.source, record.status) == (cost, "provider", "ok")
    assert (record.price_id, record.worker) == (claude_price.pk, anthropic_worker.name)
    wallet = wallet_of(user_id)
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
    cost = cost_of(answer.prompt_tokens, answer.usage["output_tokens"], cached=101)
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
    assert wallet_of(user_id).posted_micros == 1_000_000 - cost
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
    assert UsageRecord.objects.get().cost_micros == cost_of(answer.prompt_tokens,
                                                          answer.usage["output_tokens"])


