"""The anthropic SDK -> the router -> an Anthropic worker, spoken to natively: the body goes
up untranslated, the answer comes back as Anthropic's, charged exactly from its usage."""

from __future__ import annotations

from billing.models import LedgerEntry, UsageRecord
from tests.proxy.anthropic.helpers import cost_of, wallet_of
from tests.proxy.anthropic.messages_api import ToolUse
from tests.proxy.anthropic.samples import LONG_SYSTEM

HISTORY = [
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "Two and two make four.", "signature": "sig-abc"},
        {"type": "text", "text": "4"}]},
    {"role": "user", "content": [{"type": "text", "text": "Say something deterministic.",
                                  "cache_control": {"type": "ephemeral"}}]},
]
SYSTEM = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}]
WEATHER = {"name": "get_weather", "description": "The weather in a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}


def test_a_message_goes_up_untranslated_and_is_charged_with_cache_writes_and_reads(
    anthropic_worker, anthropic_upstream, make_key, sdk_for, claude_price, router
):
    anthropic_upstream.configure(cache_creation_input_tokens=37, cache_read_input_tokens=151)
    user_id, secret = make_key()
    raw = sdk_for(secret).messages.with_raw_response.create(
        model="claude-test", max_tokens=2000, system=SYSTEM, messages=HISTORY,
        thinking={"type": "enabled", "budget_tokens": 1024}, extra_body={"top_k": 5},
        metadata={"user_id": "u-42"},
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"})
    message = raw.parse()

    answer = anthropic_upstream.answers[-1]
    assert message.content[0].type == "text"
    assert message.content[0].text == answer.text
    assert (message.id, message.model, message.stop_reason) == (
        answer.message["id"], "claude-test", "end_turn")
    usage = answer.usage
    assert (message.usage.input_tokens, message.usage.output_tokens,
            message.usage.cache_creation_input_tokens,
            message.usage.cache_read_input_tokens) == (
        usage["input_tokens"], usage["output_tokens"], 37, 151)
    cost = cost_of(answer.prompt_tokens, usage["output_tokens"], cached=151, written=37)
    assert raw.headers["x-router-cost-micros"] == str(cost)

    request = anthropic_upstream.requests[-1]
    assert request.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["x-api-key"] == "sk-ant-test"
    # Untranslated: thinking blocks, cache_control and the thinking option as they were;
    # only the model and the router's cap set.
    assert request.body == {
        "model": "claude-3-5-haiku-latest", "max_tokens": 2000, "system": SYSTEM,
        "messages": HISTORY, "thinking": {"type": "enabled", "budget_tokens": 1024},
        "top_k": 5, "metadata": {"user_id": "u-42"}}

    router.drain()
    record = UsageRecord.objects.get(request_id=raw.headers["x-request-id"])
    assert (record.endpoint, record.prompt_tokens, record.completion_tokens,
            record.cached_tokens, record.cache_write_tokens) == (
        "messages", answer.prompt_tokens, usage["output_tokens"], 151, 37)
    assert (record.cost_micros, record.source, record.status) == (cost, "provider", "ok")
    wallet = wallet_of(user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000 - cost, 0)
    assert LedgerEntry.objects.get(kind="charge").amount_micros == -cost


def test_a_streamed_message_is_anthropics_event_stream_charged_from_its_usage(
    anthropic_worker, anthropic_upstream, make_key, sdk_for, router
):
    anthropic_upstream.configure(cache_read_input_tokens=101)
    user_id, secret = make_key()
    with sdk_for(secret).messages.stream(
        model="claude-test", max_tokens=300, system=SYSTEM,
        messages=[{"role": "user", "content": "Say something deterministic."}],
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()

    answer = anthropic_upstream.answers[-1]
    assert "".join(texts) == answer.text
    assert [block.type for block in final.content] == ["text"]
    assert final.content[0].text == answer.text
    assert (final.model, final.stop_reason) == ("claude-test", "end_turn")
    usage = answer.usage
    assert (final.usage.input_tokens, final.usage.output_tokens,
            final.usage.cache_read_input_tokens, final.usage.cache_creation_input_tokens) == (
        usage["input_tokens"], usage["output_tokens"], 101, 0)
    assert anthropic_upstream.bodies[-1]["stream"] is True

    router.drain()
    record = UsageRecord.objects.get()
    cost = cost_of(answer.prompt_tokens, usage["output_tokens"], cached=101)
    assert (record.endpoint, record.cost_micros, record.status) == ("messages", cost, "ok")
    assert wallet_of(user_id).posted_micros == 1_000_000 - cost


def test_a_streamed_tool_call_arrives_whole_in_the_final_message(
    anthropic_worker, anthropic_upstream, make_key, sdk_for, router
):
    anthropic_upstream.configure(reply="Let me check.",
                                 tool_use=ToolUse(name="get_weather", input={"city": "Oslo"}))
    _, secret = make_key()
    with sdk_for(secret).messages.stream(
        model="claude-test", max_tokens=300, tools=[WEATHER],
        tool_choice={"type": "auto"},
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
    ) as stream:
        final = stream.get_final_message()

    assert [block.type for block in final.content] == ["text", "tool_use"]
    call = final.content[1]
    assert (call.name, call.input, call.id) == ("get_weather", {"city": "Oslo"},
                                                 "toolu_01A09q90qw90lq917835lq9")
    assert final.stop_reason == "tool_use"
    assert anthropic_upstream.bodies[-1]["tools"] == [WEATHER]
    router.drain()
    assert UsageRecord.objects.get().completion_tokens == (
        anthropic_upstream.answers[-1].usage["output_tokens"])


def test_a_whole_tool_call_round_trip_goes_up_as_blocks(
    anthropic_worker, anthropic_upstream, make_key, sdk_for, router
):
    anthropic_upstream.configure(tool_use=ToolUse(name="get_weather", input={"city": "Oslo"}))
    _, secret = make_key()
    client = sdk_for(secret)
    first = client.messages.create(model="claude-test", max_tokens=300, tools=[WEATHER],
                                   messages=[{"role": "user", "content": "Oslo?"}])
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    anthropic_upstream.configure(tool_use=None, reply="It is sunny.")
    second = client.messages.create(
        model="claude-test", max_tokens=300, tools=[WEATHER],
        messages=[{"role": "user", "content": "Oslo?"},
                  {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                "content": "sunny"}]}])
    assert second.content[0].text == "It is sunny."
    sent = anthropic_upstream.bodies[-1]["messages"]
    assert sent[2]["content"][0] == {"type": "tool_result", "tool_use_id": call.id,
                                     "content": "sunny"}
    router.drain()


def test_count_tokens_counts_without_charging(claude_price, make_key, sdk_for, router):
    user_id, secret = make_key()
    counted = sdk_for(secret).messages.count_tokens(
        model="claude-test", system="Be brief.",
        messages=[{"role": "user", "content": "Say something deterministic."}])
    # Counted the way the router counts a chat prompt: 3 per message, role, text, 3 more.
    from proxy.ground.tokens import exact_prompt_tokens
    assert counted.input_tokens == exact_prompt_tokens(
        [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": "Say something deterministic."}])
    assert wallet_of(user_id).posted_micros == 1_000_000
    assert not UsageRecord.objects.exists()
