"""The Responses API spoken natively to an OpenAI-compatible worker that lists it: the
client's body goes up as a Responses body (the router's model, cap and ``store: false``;
a named previous response replayed as input items), the answer comes back with the
upstream's own output items, charged exactly from its usage (cached input included), cut
at the router's cap when the upstream writes past it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from billing.models import ModelPrice, UsageRecord, Wallet
from proxy.dialects.responses.items import input_messages
from proxy.dialects.responses.native import ResponsesCodec
from proxy.dialects.responses.render import ResponsesDialect
from proxy.dialects.responses.request import parse_body
from proxy.ground.cache import clear_all_caches
from proxy.ground.tokens import count_text_tokens, exact_prompt_tokens
from proxy.models import Worker, WorkerModel
from proxy.money import allowance
from proxy.upstream.providers.base import UpstreamTarget
from tests.openai_schema import validate
from tests.proxy.dialects.responses.conftest import sse_events
from tests.proxy.dialects.responses.responses_upstream import (
    JSON_REPLY,
    ResponsesUpstream,
)
from tests.proxy.dialects.responses.test_responses import WEATHER_TOOL
from tests.proxy.dialects.responses.tool_upstream import CALL_ARGUMENTS, CALL_ID, CALL_NAME

LONG_REPLY = " ".join(f"word{i}" for i in range(300))
SCHEMA = {"type": "json_schema", "name": "weather", "strict": True,
          "schema": {"type": "object", "additionalProperties": False,
                     "required": ["city", "temperature"],
                     "properties": {"city": {"type": "string"},
                                    "temperature": {"type": "integer"}}}}


@pytest.fixture
def responses_upstream() -> Iterator[ResponsesUpstream]:
    with ResponsesUpstream() as server:
        yield server


@pytest.fixture
def native_worker(responses_upstream: ResponsesUpstream, model_price: ModelPrice) -> Worker:
    """``test-model`` on a worker whose upstream speaks chat and Responses natively."""
    worker = Worker(name="responses-native", kind="openai",
                    base_url=responses_upstream.base_url, native_dialects="chat,responses")
    worker.set_api_key("upstream-secret")
    worker.save()
    WorkerModel.objects.create(worker=worker, model="test-model", upstream_model="gpt-4o-mini")
    clear_all_caches()
    return worker


def cost_of(prompt: int, completion: int, cached: int = 0) -> int:
    """At the test prices: 1 and 2 micro-USD per input and output token, cached 0.5."""
    return math.ceil(prompt - cached + cached * Decimal("0.5") + 2 * completion)


def _stream(router: Any, secret: str, **body: Any) -> list[dict[str, Any]]:
    with httpx.stream("POST", f"{router.base_url}/responses", timeout=20,
                      headers={"Authorization": f"Bearer {secret}"},
                      json={"model": "test-model", "stream": True, **body}) as answer:
        assert answer.status_code == 200
        events = sse_events(list(answer.iter_lines()))
    for name, event in events:
        assert name == event["type"]
        validate(event, "ResponseStreamEvent")
    assert [event["sequence_number"] for _, event in events] == list(range(len(events)))
    return [event for _, event in events]


def _record(raw: Any) -> UsageRecord:
    return UsageRecord.objects.get(request_id=raw.headers["x-request-id"])


def test_only_an_openai_worker_that_lists_responses_is_spoken_to_natively():
    dialect = ResponsesDialect(parse_body({"input": "Hi."}, "m"), [])

    def target(kind: str, dialects: tuple[str, ...]) -> UpstreamTarget:
        return UpstreamTarget(worker_id=1, worker_name="w", kind=kind, base_url="http://x",
                              dialects=dialects)

    assert isinstance(dialect.native(target("openai", ("chat", "responses"))), ResponsesCodec)
    assert dialect.native(target("openai", ("chat", "completions", "embeddings"))) is None
    assert dialect.native(target("anthropic", ("messages", "responses"))) is None


def test_a_text_answer_goes_up_as_responses_and_is_charged_with_its_cached_input(
    native_worker, responses_upstream, make_key, client_for, router
):
    responses_upstream.configure(cached_tokens=7)
    user_id, secret = make_key()
    client = client_for(secret)
    raw = client.responses.with_raw_response.create(
        model="test-model", input="Say something deterministic.", instructions="Be brief.",
        max_output_tokens=100, temperature=0.3, metadata={"run": "1"}, user="end-user-7",
        reasoning={"effort": "low"}, extra_body={"include": ["reasoning.encrypted_content"]})
    body = orjson.loads(raw.http_response.content)
    validate(body, "Response")
    response = raw.parse()

    # A Responses body, not chat: the client's own, with the router's model, cap, store.
    assert not responses_upstream.chat_bodies
    assert responses_upstream.bodies == [{
        "model": "gpt-4o-mini", "input": "Say something deterministic.",
        "instructions": "Be brief.", "max_output_tokens": 100, "temperature": 0.3,
        "metadata": {"run": "1"}, "user": "end-user-7", "reasoning": {"effort": "low"},
        "include": ["reasoning.encrypted_content"], "store": False}]
    assert responses_upstream.requests[-1].headers["Authorization"] == "Bearer upstream-secret"

    answer = responses_upstream.answers[-1]
    upstream = answer.response
    # The upstream's output items (ids included) in the router's response.
    assert body["output"] == upstream["output"]
    assert response.output_text == answer.text
    assert response.id.startswith("resp_")
    assert response.id != upstream["id"]
    assert (response.model, response.status, response.instructions, response.store) == (
        "test-model", "completed", "Be brief.", True)
    assert (response.metadata, response.max_output_tokens) == ({"run": "1"}, 100)

    usage = upstream["usage"]
    cost = cost_of(usage["input_tokens"], usage["output_tokens"], cached=7)
    assert (body["usage"]["input_tokens"], body["usage"]["output_tokens"],
            body["usage"]["input_tokens_details"]["cached_tokens"]) == (
        answer.prompt_tokens, usage["output_tokens"], 7)
    assert raw.headers["x-router-cost-micros"] == str(cost)
    assert round(Decimal(str(body["usage"]["cost"])) * 1_000_000) == cost
    router.drain()
    record = _record(raw)
    assert (record.endpoint, record.source, record.status) == ("responses", "provider", "ok")
    assert (record.prompt_tokens, record.completion_tokens, record.cached_tokens,
            record.cost_micros) == (answer.prompt_tokens, usage["output_tokens"], 7, cost)
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000 - cost, 0)

    # Stored by the router, as it was shown.
    stored = client.responses.retrieve(response.id)
    assert (stored.output_text, stored.output[0].id) == (answer.text, upstream["output"][0]["id"])


def test_without_a_cap_the_router_sends_its_own(native_worker, responses_upstream, make_key,
                                                client_for):
    _, secret = make_key()
    client_for(secret).responses.create(model="test-model", input="Hi.")
    assert responses_upstream.bodies[-1]["max_output_tokens"] == 500  # the model's maximum


def test_a_function_call_comes_back_and_a_previous_response_is_replayed_as_input(
    native_worker, responses_upstream, make_key, client_for, router
):
    _, secret = make_key()
    client = client_for(secret)
    first = client.responses.with_raw_response.create(
        model="test-model", input="Weather in Paris?", tools=[WEATHER_TOOL],
        tool_choice="auto")
    call = first.parse()
    assert responses_upstream.bodies[-1]["tools"] == [WEATHER_TOOL]
    validate(orjson.loads(first.http_response.content), "Response")
    assert [item.type for item in call.output] == ["function_call"]
    assert (call.output[0].call_id, call.output[0].name, call.output[0].arguments) == (
        CALL_ID, CALL_NAME, CALL_ARGUMENTS)
    assert call.output[0].id == responses_upstream.answers[-1].response["output"][0]["id"]
    router.drain()
    completion = count_text_tokens(CALL_NAME) + count_text_tokens(CALL_ARGUMENTS)
    assert _record(first).completion_tokens == completion

    output = {"type": "function_call_output", "call_id": CALL_ID, "output": "21 C, sunny"}
    second = client.responses.with_raw_response.create(
        model="test-model", previous_response_id=call.id, input=[output],
        tools=[WEATHER_TOOL])
    answer = second.parse()
    sent = responses_upstream.bodies[-1]
    assert "previous_response_id" not in sent
    assert sent["store"] is False
    # The stored context, as explicit input items, before the client's own.
    assert sent["input"] == [
        {"type": "message", "role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": CALL_ID, "name": CALL_NAME,
         "arguments": CALL_ARGUMENTS},
        output]
    assert answer.output_text == responses_upstream.answers[-1].text
    assert answer.previous_response_id == call.id
    router.drain()
    # The replayed context is charged as input: the upstream counted it.
    replayed = exact_prompt_tokens(input_messages(sent["input"]))
    assert _record(second).prompt_tokens == replayed == (
        responses_upstream.answers[-1].prompt_tokens)


def test_a_json_schema_answer(native_worker, responses_upstream, make_key, client_for):
    _, secret = make_key()
    raw = client_for(secret).responses.with_raw_response.create(
        model="test-model", input="Weather in Paris, as JSON.", text={"format": SCHEMA})
    validate(orjson.loads(raw.http_response.content), "Response")
    assert responses_upstream.bodies[-1]["text"] == {"format": SCHEMA}
    response = raw.parse()
    assert orjson.loads(response.output_text) == orjson.loads(JSON_REPLY)
    assert response.text.format.type == "json_schema"


def test_a_streamed_answer_is_openais_event_sequence_charged_from_the_upstreams_usage(
    native_worker, responses_upstream, make_key, router
):
    responses_upstream.configure(cached_tokens=4)
    user_id, secret = make_key()
    events = _stream(router, secret, input="Say something.", max_output_tokens=100)
    sent = responses_upstream.bodies[-1]
    assert (sent["stream"], sent["store"], sent["max_output_tokens"]) == (True, False, 100)
    answer = responses_upstream.answers[-1]
    types = [e["type"] for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == answer.text
    final = events[-1]["response"]
    validate(final, "Response")
    assert (final["model"], final["status"], final["output"][0]["content"][0]["text"]) == (
        "test-model", "completed", answer.text)
    usage = answer.response["usage"]
    cost = cost_of(usage["input_tokens"], usage["output_tokens"], cached=4)
    assert (final["usage"]["input_tokens"], final["usage"]["output_tokens"],
            final["usage"]["input_tokens_details"]["cached_tokens"]) == (
        usage["input_tokens"], usage["output_tokens"], 4)
    router.drain()
    record = UsageRecord.objects.get()
    assert (record.endpoint, record.source, record.cached_tokens, record.cost_micros) == (
        "responses", "provider", 4, cost)
    assert Wallet.objects.get(user_id=user_id).posted_micros == 1_000_000 - cost


def test_a_streamed_function_call_with_reasoning_through_the_sdk(
    native_worker, responses_upstream, make_key, client_for, router
):
    responses_upstream.configure(reasoning="The user wants the weather.",
                                 hidden_reasoning_tokens=40)
    _, secret = make_key()
    with client_for(secret).responses.stream(model="test-model", input="Weather in Paris?",
                                             tools=[WEATHER_TOOL]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert kinds[-1] == "response.completed"
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        (CALL_ID, CALL_NAME, CALL_ARGUMENTS)]
    assert final.output[0].type == "reasoning"
    router.drain()
    usage = responses_upstream.answers[-1].response["usage"]
    record = UsageRecord.objects.get()
    # Hidden reasoning is in the upstream's count, and charged.
    assert (record.source, record.completion_tokens) == ("provider", usage["output_tokens"])
    assert final.usage.output_tokens == usage["output_tokens"]
    assert final.usage.output_tokens_details.reasoning_tokens == (
        usage["output_tokens_details"]["reasoning_tokens"])


def test_a_failure_mid_stream_is_response_failed_charged_for_what_was_delivered(
    native_worker, responses_upstream, make_key, router
):
    responses_upstream.configure(fail_after_deltas=3)
    user_id, secret = make_key()
    events = _stream(router, secret, input="Say something.", max_output_tokens=100)
    assert events[-1]["type"] == "response.failed"
    assert "response.completed" not in [e["type"] for e in events]
    delivered = "".join(e["delta"] for e in events
                        if e["type"] == "response.output_text.delta")
    assert count_text_tokens(delivered) == 3
    router.drain()
    record = UsageRecord.objects.get()
    prompt = responses_upstream.answers[-1].prompt_tokens
    assert (record.status, record.source) == ("upstream_error", "estimated")
    assert (record.prompt_tokens, record.completion_tokens) == (prompt, 3)
    assert record.cost_micros == cost_of(prompt, 3)
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (
        1_000_000 - record.cost_micros, 0)


def test_a_lying_upstream_is_cut_at_the_cap_and_the_answer_marked_incomplete(
    native_worker, responses_upstream, make_key, client_for, router
):
    responses_upstream.configure(reply=LONG_REPLY, lie=True)
    _, secret = make_key()
    cap = 20
    raw = client_for(secret).responses.with_raw_response.create(
        model="test-model", input="Tell me a long story.", max_output_tokens=cap)
    body = orjson.loads(raw.http_response.content)
    validate(body, "Response")
    assert responses_upstream.bodies[-1]["max_output_tokens"] == cap
    assert (body["status"], body["incomplete_details"]) == (
        "incomplete", {"reason": "max_output_tokens"})
    text = body["output"][-1]["content"][0]["text"]
    assert LONG_REPLY.startswith(text)
    assert count_text_tokens(text) <= allowance(cap) < count_text_tokens(LONG_REPLY)
    router.drain()
    record = _record(raw)
    assert record.over_cap
    assert record.completion_tokens <= allowance(cap)
    assert body["usage"]["output_tokens"] == record.completion_tokens


def test_a_lying_upstream_streaming_past_the_cap_is_cut_and_incomplete(
    native_worker, responses_upstream, make_key, router
):
    responses_upstream.configure(reply=LONG_REPLY, lie=True)
    _, secret = make_key()
    cap = 20
    events = _stream(router, secret, input="Tell me a long story.", max_output_tokens=cap)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert count_text_tokens(text) <= allowance(cap)
    final = events[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    validate(final["response"], "Response")
    router.drain()
    record = UsageRecord.objects.get()
    assert record.over_cap
    assert record.completion_tokens <= allowance(cap)


def test_a_failure_before_any_output_is_an_error_and_costs_nothing(
    native_worker, responses_upstream, make_key, router
):
    responses_upstream.configure(fail_after_deltas=0)
    user_id, secret = make_key()
    answer = httpx.post(f"{router.base_url}/responses", timeout=20,
                        headers={"Authorization": f"Bearer {secret}"},
                        json={"model": "test-model", "input": "Hi.", "stream": True})
    assert answer.status_code == 502
    validate(answer.json(), "ErrorResponse")
    router.drain()
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000, 0)
    assert UsageRecord.objects.get().cost_micros == 0
