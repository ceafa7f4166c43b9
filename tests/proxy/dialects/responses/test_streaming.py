"""Streamed responses: OpenAI's event sequence, every event valid against its schema, read
by the SDK's parser and its stream helper, ended by the usage that was charged."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from billing.models import UsageRecord, Wallet
from tests.openai_schema import validate
from tests.proxy.dialects.responses.conftest import sse_events
from tests.proxy.dialects.responses.test_responses import WEATHER_TOOL
from tests.proxy.dialects.responses.tool_upstream import CALL_ARGUMENTS, CALL_ID, CALL_NAME
from tests.proxy.upstream import DEFAULT_REPLY, plan_completion

TEXT_SEQUENCE = ["response.created", "response.in_progress", "response.output_item.added",
                 "response.content_part.added", "response.output_text.delta",
                 "response.output_text.done", "response.content_part.done",
                 "response.output_item.done"]


def _stream(router: Any, secret: str, **body: Any) -> tuple[httpx.Response, list[Any]]:
    with httpx.stream("POST", f"{router.base_url}/responses", timeout=20,
                      headers={"Authorization": f"Bearer {secret}"},
                      json={"model": "test-model", "stream": True, **body}) as answer:
        lines = list(answer.iter_lines())
    events = sse_events(lines)
    for name, event in events:
        assert name == event["type"]  # "event: <type>" names the data that follows
        validate(event, "ResponseStreamEvent")
    assert [event["sequence_number"] for _, event in events] == list(range(len(events)))
    return answer, [event for _, event in events]


def _collapsed(types: list[str]) -> list[str]:
    """The event types with runs of the same delta event collapsed to one."""
    return [kind for i, kind in enumerate(types)
            if i == 0 or kind != types[i - 1] or not kind.endswith(".delta")]


def test_a_streamed_text_answer_sends_openais_event_sequence_and_its_charge(
    openai_worker, upstream, make_key, router
):
    user_id, secret = make_key()
    answer, events = _stream(router, secret, input="Say something.", max_output_tokens=100)
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert _collapsed([e["type"] for e in events]) == [*TEXT_SEQUENCE, "response.completed"]
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    expected = plan_completion(upstream.bodies[-1], DEFAULT_REPLY)
    assert text == expected.text
    ids = {e["response"]["id"] for e in events if "response" in e}
    assert len(ids) == 1
    final = events[-1]["response"]
    validate(final, "Response")
    assert final["status"] == "completed"
    assert final["output"][0]["content"][0]["text"] == expected.text
    cost = expected.prompt_tokens + 2 * expected.completion_tokens
    assert (final["usage"]["input_tokens"], final["usage"]["output_tokens"]) == (
        expected.prompt_tokens, expected.completion_tokens)
    assert round(final["usage"]["cost"] * 1_000_000) == cost
    router.drain()  # the stream's end goes while its charge is written
    record = UsageRecord.objects.get()
    assert (record.endpoint, record.source, record.cost_micros) == ("responses", "provider",
                                                                     cost)
    assert Wallet.objects.get(user_id=user_id).posted_micros == 1_000_000 - cost


def test_the_sdk_parses_every_event_and_its_stream_helper_builds_the_response(
    openai_worker, upstream, make_key, client_for
):
    _, secret = make_key()
    client = client_for(secret)
    events = list(client.responses.create(model="test-model", input="Hi.", stream=True))
    assert _collapsed([e.type for e in events]) == [*TEXT_SEQUENCE, "response.completed"]
    assert events[-1].response.output_text == DEFAULT_REPLY

    with client.responses.stream(model="test-model", input="Hi again.") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[-1] == "response.completed"
    assert final.output_text == DEFAULT_REPLY
    stored = client.responses.retrieve(final.id)  # stored before the stream ended
    assert stored.output_text == DEFAULT_REPLY


def test_a_streamed_function_call_sends_its_argument_events(
    tool_worker, tool_upstream, make_key, client_for, router
):
    _, secret = make_key()
    _, events = _stream(router, secret, input="Weather in Paris?", tools=[WEATHER_TOOL])
    types = _collapsed([e["type"] for e in events])
    assert types == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.function_call_arguments.delta",
                     "response.function_call_arguments.done", "response.output_item.done",
                     "response.completed"]
    added = events[2]["item"]
    assert (added["type"], added["call_id"], added["name"], added["arguments"]) == (
        "function_call", CALL_ID, CALL_NAME, "")
    deltas = "".join(e["delta"] for e in events
                     if e["type"] == "response.function_call_arguments.delta")
    assert deltas == CALL_ARGUMENTS
    [call] = events[-1]["response"]["output"]
    assert (call["arguments"], call["status"]) == (CALL_ARGUMENTS, "completed")

    with client_for(secret).responses.stream(model="test-model", input="Weather?",
                                             tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_response()
    assert final.output[0].arguments == CALL_ARGUMENTS


def test_a_stream_cut_at_its_cap_ends_incomplete(openai_worker, upstream, make_key, router):
    _, secret = make_key()
    upstream.configure(reply=" ".join(f"word{i}" for i in range(200)))
    _, events = _stream(router, secret, input="Talk.", max_output_tokens=16)
    assert events[-1]["type"] == "response.incomplete"
    final = events[-1]["response"]
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["usage"]["output_tokens"] == 16
    assert final["output"][0]["status"] == "incomplete"


def test_an_upstream_failing_mid_stream_ends_with_response_failed_and_pays_for_the_output(
    openai_worker, upstream, make_key, router
):
    user_id, secret = make_key()
    upstream.configure(error_after_chunks=3)
    _, events = _stream(router, secret, input="Say something.")
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "server_error"
    router.drain()
    record = UsageRecord.objects.get()
    assert (record.status, record.source, record.completion_tokens) == (
        "upstream_error", "estimated", 2)
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (
        1_000_000 - record.cost_micros, 0)
    assert orjson.dumps(events[-1])  # plain JSON all through
