"""The anthropic SDK -> the router -> a worker that does not speak Messages natively: the
request is translated into the chat form and the answer back into Anthropic's."""

from __future__ import annotations

from billing.models import UsageRecord
from proxy.ground.tokens import encode_text, exact_prompt_tokens
from tests.proxy.anthropic.messages_api import ToolUse
from tests.proxy.dialects.messages.test_native import WEATHER
from tests.proxy.upstream import DEFAULT_REPLY

CHAT_MESSAGES = [{"role": "system", "content": "Be brief."},
                 {"role": "user", "content": "Say something deterministic."}]


def test_a_message_to_an_openai_worker_is_translated_both_ways_and_charged_exactly(
    openai_worker, upstream, make_key, sdk_for, router
):
    _user_id, secret = make_key()
    raw = sdk_for(secret).messages.with_raw_response.create(
        model="test-model", max_tokens=100, system="Be brief.", extra_body={"temperature": 0.5},
        stop_sequences=["\n\n"], metadata={"user_id": "u-7"},
        messages=[{"role": "user", "content": "Say something deterministic."}])
    message = raw.parse()

    assert upstream.bodies[-1] == {"model": "gpt-4o-mini", "messages": CHAT_MESSAGES,
                                   "max_tokens": 100, "temperature": 0.5, "stop": ["\n\n"],
                                   "user": "u-7"}
    prompt, completion = exact_prompt_tokens(CHAT_MESSAGES), len(encode_text(DEFAULT_REPLY))
    assert message.type == "message"
    assert message.id.startswith("msg_")
    assert (message.model, message.role, message.stop_reason) == (
        "test-model", "assistant", "end_turn")
    assert [(b.type, b.text) for b in message.content] == [("text", DEFAULT_REPLY)]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (prompt, completion)
    cost = prompt * 1 + completion * 2
    assert raw.headers["x-router-cost-micros"] == str(cost)
    router.drain()
    record = UsageRecord.objects.get()
    assert (record.endpoint, record.cost_micros, record.prompt_tokens) == (
        "messages", cost, prompt)


def test_a_stream_from_an_openai_worker_is_anthropics_event_stream(
    openai_worker, upstream, make_key, sdk_for, router
):
    _, secret = make_key()
    with sdk_for(secret).messages.stream(
        model="test-model", max_tokens=10, system="Be brief.",
        messages=[{"role": "user", "content": "Say something deterministic."}],
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()

    expected = "".join(encode_text_pieces(DEFAULT_REPLY, 10))
    assert final.content[0].text == expected
    assert final.stop_reason == "max_tokens"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        exact_prompt_tokens(CHAT_MESSAGES), 10)
    assert events[0] == "message_start"
    assert events[-1] == "message_stop"
    assert "content_block_start" in events
    assert "content_block_stop" in events
    assert upstream.bodies[-1]["stream_options"] == {"include_usage": True}
    router.drain()
    record = UsageRecord.objects.get()
    assert (record.endpoint, record.completion_tokens, record.status) == ("messages", 10, "ok")


def encode_text_pieces(text: str, limit: int) -> list[str]:
    from proxy.ground.tokens import token_pieces

    return token_pieces(encode_text(text)[:limit])


def test_tool_use_through_a_translating_anthropic_worker_streams_and_answers_whole(
    anthropic_worker, anthropic_upstream, make_key, sdk_for, router
):
    anthropic_worker.native_dialects = "chat"  # this one is sent the chat translation
    anthropic_worker.save()
    anthropic_upstream.configure(reply="Let me check.",
                                 tool_use=ToolUse(name="get_weather", input={"city": "Oslo"}))
    _, secret = make_key()
    client = sdk_for(secret)
    with client.messages.stream(
        model="claude-test", max_tokens=300, tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
    ) as stream:
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["text", "tool_use"]
    assert (final.content[1].name, final.content[1].input) == ("get_weather", {"city": "Oslo"})
    assert final.stop_reason == "tool_use"
    sent = anthropic_upstream.bodies[-1]
    assert sent["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert sent["tools"] == [WEATHER]

    whole = client.messages.create(model="claude-test", max_tokens=300, tools=[WEATHER],
                                   messages=[{"role": "user", "content": "Weather in Oslo?"}])
    assert [(b.type, getattr(b, "input", None)) for b in whole.content] == [
        ("text", None), ("tool_use", {"city": "Oslo"})]
    router.drain()
    assert UsageRecord.objects.filter(endpoint="messages", status="ok").count() == 2
