"""The Responses API with the official openai SDK: the router translates it onto the chat
path, answers in OpenAI's shape, and charges exactly what the upstream counted."""

from __future__ import annotations

import httpx
import openai
import orjson
import pytest
from django.db import connection

from billing.models import Hold, LedgerEntry, UsageRecord, Wallet
from proxy.ground.tokens import exact_prompt_tokens
from tests.live_router import wait_for_charges
from tests.openai_schema import validate
from tests.proxy.dialects.responses.tool_upstream import CALL_ARGUMENTS, CALL_ID, CALL_NAME
from tests.proxy.upstream import DEFAULT_REPLY, plan_completion

WEATHER_TOOL = {"type": "function", "name": CALL_NAME, "description": "The weather now.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                                "unit": {"type": "string"}},
                               "required": ["city", "unit"], "additionalProperties": False},
                "strict": True}


def _charged(request_id: str) -> UsageRecord:
    return UsageRecord.objects.get(request_id=request_id)


def test_a_text_answer_is_a_response_object_charged_exactly_what_the_upstream_counted(
    openai_worker, upstream, make_key, client_for, model_price, router
):
    user_id, secret = make_key()
    raw = client_for(secret).responses.with_raw_response.create(
        model="test-model", input="Say something deterministic.", instructions="Be brief.",
        max_output_tokens=100, temperature=0.3, metadata={"run": "1"}, user="end-user-7")
    response = raw.parse()
    body = orjson.loads(raw.http_response.content)
    validate(body, "Response")

    sent = upstream.bodies[-1]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Say something deterministic."}]
    assert (sent["model"], sent["max_tokens"], sent["temperature"], sent["user"]) == (
        "gpt-4o-mini", 100, 0.3, "end-user-7")
    # Ours, not the upstream's: its chat store and metadata mean something else there.
    assert "store" not in sent
    assert "metadata" not in sent
    expected = plan_completion(sent, DEFAULT_REPLY)
    assert response.output_text == expected.text
    assert response.id.startswith("resp_")
    assert response.object == "response"
    assert (response.status, response.model, response.instructions) == (
        "completed", "test-model", "Be brief.")
    assert (response.metadata, response.user, response.max_output_tokens) == (
        {"run": "1"}, "end-user-7", 100)
    assert body["output"][0]["content"][0]["annotations"] == []
    cost = expected.prompt_tokens + 2 * expected.completion_tokens
    assert (response.usage.input_tokens, response.usage.output_tokens,
            response.usage.total_tokens) == (
        expected.prompt_tokens, expected.completion_tokens,
        expected.prompt_tokens + expected.completion_tokens)
    assert f'"cost":0.{cost:06d}' in raw.http_response.text
    assert raw.headers["x-router-cost-micros"] == str(cost)

    router.drain()
    record = _charged(raw.headers["x-request-id"])
    assert (record.endpoint, record.status, record.source, record.cost_micros) == (
        "responses", "ok", "provider", cost)
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000 - cost, 0)
    assert LedgerEntry.objects.get(kind="charge").amount_micros == -cost


@pytest.mark.parametrize("fmt", ["json_schema", "json_object"])
def test_text_format_becomes_the_chat_response_format(
    openai_worker, upstream, make_key, client_for, fmt
):
    _, secret = make_key()
    upstream.configure(reply='{"city": "Paris"}')
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"], "additionalProperties": False}
    text_format = ({"type": "json_schema", "name": "place", "schema": schema, "strict": True}
                   if fmt == "json_schema" else {"type": "json_object"})
    raw = client_for(secret).responses.with_raw_response.create(
        model="test-model", input="Where? Answer in JSON.", text={"format": text_format})
    response = raw.parse()
    validate(orjson.loads(raw.http_response.content), "Response")
    assert orjson.loads(response.output_text) == {"city": "Paris"}
    assert response.text.format.type == fmt
    expected = ({"type": "json_schema",
                 "json_schema": {"name": "place", "schema": schema, "strict": True}}
                if fmt == "json_schema" else {"type": "json_object"})
    assert upstream.bodies[-1]["response_format"] == expected


def test_a_function_tool_round_trip_with_its_output(
    tool_worker, tool_upstream, make_key, client_for, router
):
    _, secret = make_key()
    client = client_for(secret)
    raw = client.responses.with_raw_response.create(
        model="test-model", input="What is the weather in Paris?", tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "name": CALL_NAME}, parallel_tool_calls=False)
    first = raw.parse()
    validate(orjson.loads(raw.http_response.content), "Response")
    sent = tool_upstream.bodies[-1]
    assert sent["tools"] == [{"type": "function", "function": {
        key: WEATHER_TOOL[key] for key in ("name", "description", "parameters", "strict")}}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": CALL_NAME}}
    assert sent["parallel_tool_calls"] is False
    [call] = first.output
    assert (call.type, call.call_id, call.name, call.arguments, call.status) == (
        "function_call", CALL_ID, CALL_NAME, CALL_ARGUMENTS, "completed")
    assert call.id.startswith("fc_")

    second = client.responses.create(
        model="test-model", tools=[WEATHER_TOOL], store=False,
        input=[{"role": "user", "content": "What is the weather in Paris?"},
               call.model_dump(exclude_none=True),
               {"type": "function_call_output", "call_id": CALL_ID, "output": "22 C, sunny"}])
    assert second.output_text == DEFAULT_REPLY
    assert tool_upstream.bodies[-1]["messages"] == [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": CALL_ID, "type": "function",
             "function": {"name": CALL_NAME, "arguments": CALL_ARGUMENTS}}]},
        {"role": "tool", "tool_call_id": CALL_ID, "content": "22 C, sunny"}]
    router.drain()
    record = _charged(raw.headers["x-request-id"])
    assert record.completion_tokens == first.usage.output_tokens > 0
    assert record.cost_micros == first.usage.input_tokens + 2 * first.usage.output_tokens


def test_previous_response_id_replays_the_conversation_and_charges_it_as_input(
    openai_worker, upstream, make_key, client_for, router
):
    _, secret = make_key()
    client = client_for(secret)
    one = client.responses.create(model="test-model", input="Turn one.",
                                  instructions="Not carried over.")
    two = client.responses.create(model="test-model", input="Turn two.",
                                  previous_response_id=one.id)
    raw = client.responses.with_raw_response.create(
        model="test-model", input=[{"role": "user", "content": [
            {"type": "input_text", "text": "Turn three."}]}],
        previous_response_id=two.id, instructions="Be brief.")
    three = raw.parse()
    validate(orjson.loads(raw.http_response.content), "Response")

    reply = {"role": "assistant", "content": DEFAULT_REPLY}
    context = [{"role": "system", "content": "Be brief."},
               {"role": "user", "content": "Turn one."}, reply,
               {"role": "user", "content": "Turn two."}, reply,
               {"role": "user", "content": [{"type": "text", "text": "Turn three."}]}]
    assert upstream.bodies[-1]["messages"] == context
    assert three.previous_response_id == two.id
    prompt = exact_prompt_tokens(context)
    assert three.usage.input_tokens == prompt
    router.drain()
    record = _charged(raw.headers["x-request-id"])
    assert record.prompt_tokens == prompt
    assert record.cost_micros == prompt + 2 * three.usage.output_tokens


def test_a_stored_response_can_be_fetched_and_deleted_by_its_owner_only(
    openai_worker, make_key, client_for
):
    _, secret = make_key()
    _, other_secret = make_key()
    client, other = client_for(secret), client_for(other_secret)
    answered = client.responses.with_raw_response.create(model="test-model", input="Keep this.")
    created = answered.parse()
    cost = answered.headers["x-router-cost-micros"]

    raw = client.responses.with_raw_response.retrieve(created.id)
    validate(orjson.loads(raw.http_response.content), "Response")
    # The stored cost is the exact decimal the answer showed, never a float's rendering.
    assert f'"cost":0.{int(cost):06d}' in raw.http_response.text
    assert raw.parse().output_text == created.output_text
    assert raw.parse().usage.total_tokens == created.usage.total_tokens

    for attempt in (lambda: other.responses.retrieve(created.id),
                    lambda: other.responses.delete(created.id),
                    lambda: other.responses.create(model="test-model", input="Go on.",
                                                   previous_response_id=created.id)):
        with pytest.raises(openai.NotFoundError) as refused:
            attempt()
        validate(refused.value.body and {"error": refused.value.body}, "ErrorResponse")
        assert refused.value.code == "not_found"
    assert refused.value.param == "previous_response_id"

    deleted = httpx.delete(f"{client.base_url}responses/{created.id}",
                           headers={"Authorization": f"Bearer {secret}"})
    assert deleted.json() == {"id": created.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(created.id)


def test_store_false_keeps_nothing(openai_worker, make_key, client_for):
    _, secret = make_key()
    client = client_for(secret)
    created = client.responses.create(model="test-model", input="Forget this.", store=False)
    assert created.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_an_answer_cut_at_max_output_tokens_is_incomplete(
    openai_worker, upstream, make_key, client_for
):
    _, secret = make_key()
    upstream.configure(reply=" ".join(f"word{i}" for i in range(200)))
    raw = client_for(secret).responses.with_raw_response.create(
        model="test-model", input="Talk.", max_output_tokens=16)
    response = raw.parse()
    validate(orjson.loads(raw.http_response.content), "Response")
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"
    assert response.usage.output_tokens == 16


def test_reasoning_effort_is_passed_to_the_upstream(
    openai_worker, upstream, make_key, client_for
):
    _, secret = make_key()
    response = client_for(secret).responses.create(model="test-model", input="Think.",
                                                   reasoning={"effort": "low"})
    assert upstream.bodies[-1]["reasoning_effort"] == "low"
    assert response.reasoning.effort == "low"


def test_input_tokens_counts_the_whole_input_and_charges_nothing(
    openai_worker, make_key, client_for, router
):
    _, secret = make_key()
    client = client_for(secret)
    first = client.responses.create(model="test-model", input="Turn one.")
    router.drain()
    charged = UsageRecord.objects.count()
    counted = client.responses.input_tokens.count(
        model="test-model", input="Turn two.", instructions="Be brief.",
        previous_response_id=first.id)
    assert counted.object == "response.input_tokens"
    assert counted.input_tokens == exact_prompt_tokens([
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Turn one."},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "Turn two."}])
    with_tools = client.responses.input_tokens.count(model="test-model", input="Turn two.",
                                                     tools=[WEATHER_TOOL])
    assert with_tools.input_tokens > exact_prompt_tokens(
        [{"role": "user", "content": "Turn two."}])
    assert UsageRecord.objects.count() == charged
    assert not Hold.objects.filter(status="pending").exists()


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "test-model"}, "input"),
    ({"input": "x"}, "model"),
    ({"model": "test-model", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"model": "test-model", "input": [{"role": "user", "content": [
        {"type": "input_image", "file_id": "file-1"}]}]}, "input[0].content[0].file_id"),
    ({"model": "test-model", "input": [{"type": "item_reference", "id": "x"}]},
     "input[0].type"),
    ({"model": "test-model", "input": "x", "max_output_tokens": 600}, "max_output_tokens"),
    ({"model": "test-model", "input": "x", "max_output_tokens": 4}, "max_output_tokens"),
    ({"model": "test-model", "input": "x", "temperature": 3}, "temperature"),
    ({"model": "test-model", "input": "x", "tools": [{"type": "web_search"}]},
     "tools[0].type"),
    ({"model": "test-model", "input": "x", "tool_choice": "sometimes"}, "tool_choice"),
    ({"model": "test-model", "input": "x", "text": {"format": {"type": "xml"}}},
     "text.format.type"),
    ({"model": "test-model", "input": "x", "text": {"format": {"type": "json_schema"}}},
     "text.format.name"),
    ({"model": "test-model", "input": "x", "reasoning": {"effort": "max"}},
     "reasoning.effort"),
    ({"model": "test-model", "input": []}, "input"),
    ({"model": "test-model", "input": "x", "background": True}, "background"),
    ({"model": "test-model", "input": "x", "previous_response_id": "resp_unknown"},
     "previous_response_id"),
])
def test_a_bad_request_is_refused_naming_its_param(
    openai_worker, upstream, make_key, router, body, param
):
    _, secret = make_key()
    answer = httpx.post(f"{router.base_url}/responses", json=body,
                        headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == (404 if param == "previous_response_id" else 400)
    validate(answer.json(), "ErrorResponse")
    assert answer.json()["error"]["param"] == param
    assert upstream.bodies == []
    assert not Hold.objects.exists()


def test_stored_responses_outlive_the_database_dropping_the_routers_connections(
    openai_worker, make_key, client_for
):
    _, secret = make_key()
    client = client_for(secret)
    first = client.responses.create(model="test-model", input="Keep this.")
    assert client.responses.retrieve(first.id).id == first.id  # the store's connection is open
    wait_for_charges(10)
    with connection.cursor() as cursor:  # what a PostgreSQL restart or failover does
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                       "datname = current_database() AND pid <> pg_backend_pid()")

    second = client.responses.create(model="test-model", input="Go on.",
                                     previous_response_id=first.id)

    assert client.responses.retrieve(second.id).previous_response_id == first.id
