"""The paid proxy end to end: the openai SDK -> the router (uvicorn) -> a local upstream."""

from __future__ import annotations

import httpx
import openai
import orjson
import pytest

from billing.models import Hold, LedgerEntry, UsageRecord, Wallet
from tests.live_router import wait_for_charges
from tests.openai_schema import validate
from tests.proxy.upstream import DEFAULT_REPLY, plan_completion

MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say something deterministic."}]


def _wallet(user_id: int) -> Wallet:
    return Wallet.objects.get(user_id=user_id)


def test_a_non_streamed_answer_is_what_the_upstream_sent_and_is_charged_exactly(
    openai_worker, upstream, make_key, client_for, model_price, router
):
    user_id, secret = make_key()
    raw = client_for(secret).chat.completions.with_raw_response.create(
        model="test-model", messages=MESSAGES, max_tokens=100, temperature=0.3)
    completion = raw.parse()

    expected = plan_completion(upstream.bodies[-1], DEFAULT_REPLY)
    assert completion.choices[0].message.content == expected.text
    assert completion.model == "test-model"
    assert completion.usage.prompt_tokens == expected.prompt_tokens
    assert completion.usage.completion_tokens == expected.completion_tokens
    cost = expected.prompt_tokens * 1 + expected.completion_tokens * 2
    assert raw.headers["x-router-cost-micros"] == str(cost)
    assert raw.headers["x-request-id"].startswith("req_")
    body = orjson.loads(raw.http_response.content)
    validate(body, "CreateChatCompletionResponse")
    # The cost is written as exact decimal text, never through a float.
    assert f'"cost":0.{cost:06d}' in raw.http_response.text

    sent = upstream.bodies[-1]
    assert sent["model"] == "gpt-4o-mini"
    assert sent["temperature"] == 0.3
    assert upstream.requests[-1].headers["Authorization"] == "Bearer upstream-secret"

    router.drain()  # the charge is written as the answer goes out
    record = UsageRecord.objects.get(request_id=raw.headers["x-request-id"])
    assert (record.prompt_tokens, record.completion_tokens, record.cost_micros) == (
        expected.prompt_tokens, expected.completion_tokens, cost)
    assert (record.source, record.status, record.price_id) == ("provider", "ok", model_price.pk)
    assert record.worker == openai_worker.name
    wallet = _wallet(user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000 - cost, 0)
    assert LedgerEntry.objects.get(kind="charge").amount_micros == -cost


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_streamed_answer_is_relayed_chunk_by_chunk_and_charged_from_upstream_usage(
    openai_worker, upstream, make_key, client_for, include_usage
):
    user_id, secret = make_key()
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = client_for(secret).chat.completions.create(
        model="test-model", messages=MESSAGES, max_tokens=50, stream=True, **options)
    chunks = list(stream)

    expected = plan_completion(upstream.bodies[-1], DEFAULT_REPLY)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.text
    for chunk in chunks:
        validate(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
        assert chunk.model == "test-model"
    usage_chunks = [c for c in chunks if c.usage is not None]
    cost = expected.prompt_tokens + 2 * expected.completion_tokens
    if include_usage:
        assert len(usage_chunks) == 1
        assert usage_chunks[0].choices == []
        assert usage_chunks[0].usage.completion_tokens == expected.completion_tokens
        assert usage_chunks[0].usage.model_extra["cost"] == pytest.approx(cost / 1e6)
    else:
        assert usage_chunks == []
    # Forced upstream whatever the client asked, so the charge is the upstream's count.
    assert upstream.bodies[-1]["stream_options"] == {"include_usage": True}
    wait_for_charges()  # the stream's end goes while its charge is written
    record = UsageRecord.objects.get()
    assert (record.cost_micros, record.source) == (cost, "provider")
    assert record.ttft_ms is not None
    assert _wallet(user_id).posted_micros == 1_000_000 - cost
    assert not Hold.objects.filter(status="pending").exists()


def test_stream_responses_carry_the_headers_that_keep_proxies_from_buffering(
    openai_worker, make_key, router
):
    _, secret = make_key()
    with httpx.stream("POST", f"{router.base_url}/chat/completions",
                      headers={"Authorization": f"Bearer {secret}"},
                      json={"model": "test-model", "messages": MESSAGES, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    assert r.headers["x-accel-buffering"] == "no"
    assert r.headers["x-request-id"].startswith("req_")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert lines[-1] == "data: [DONE]"


def test_without_max_tokens_the_cap_is_what_the_balance_affords_and_is_sent_upstream(
    openai_worker, upstream, make_key, client_for
):
    _, secret = make_key(credit_micros=400)  # ~100 prompt tokens leave room for ~150 out
    client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES)
    cap = upstream.bodies[-1]["max_tokens"]
    assert 1 <= cap < 500  # below the model's maximum: the balance is the limit
    hold = Hold.objects.get()
    assert hold.amount_micros <= 400


def test_with_a_large_balance_the_cap_is_the_models_maximum(
    openai_worker, upstream, make_key, client_for
):
    _, secret = make_key()
    client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES,
                                               stream=True).close()
    assert upstream.bodies[-1]["max_tokens"] == 500


def test_sdk_errors_map_to_the_right_exceptions(openai_worker, make_key, client_for,
                                                router):
    _, secret = make_key(credit_micros=10)
    with pytest.raises(openai.AuthenticationError):
        client_for("sk-br-" + "x" * 55).chat.completions.create(model="test-model",
                                                                messages=MESSAGES)
    with pytest.raises(openai.NotFoundError) as not_found:
        client_for(secret).chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES,
                                                   temperature=5)
    assert bad.value.param == "temperature"
    with pytest.raises(openai.APIStatusError) as poor:
        client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES)
    assert poor.value.status_code == 402
    assert poor.value.code == "insufficient_quota"
    assert "available balance is $0.000010" in poor.value.message
    for error in (not_found.value, bad.value, poor.value):
        validate(error.response.json(), "ErrorResponse")
    assert not LedgerEntry.objects.filter(kind="charge").exists()


def test_upstream_down_charges_nothing_and_leaves_no_hold(
    openai_worker, upstream, make_key, client_for
):
    user_id, secret = make_key()
    upstream.stop()
    with pytest.raises(openai.APIStatusError) as failed:
        client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES)
    assert failed.value.status_code == 502
    validate(failed.value.response.json(), "ErrorResponse")
    with pytest.raises(openai.APIStatusError):
        client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES,
                                                   stream=True)
    wallet = _wallet(user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000, 0)
    assert not LedgerEntry.objects.filter(kind="charge").exists()
    assert set(Hold.objects.values_list("status", flat=True)) == {"voided"}
    assert set(UsageRecord.objects.values_list("status", "cost_micros")) == {
        ("upstream_error", 0)}


def test_an_upstream_client_error_is_returned_as_it_is_and_not_charged(
    openai_worker, upstream, make_key, client_for
):
    user_id, secret = make_key()
    upstream.configure(status=400, error_body={"error": {
        "message": "This model's maximum context length is 8 tokens.",
        "type": "invalid_request_error", "param": "messages",
        "code": "context_length_exceeded"}})
    with pytest.raises(openai.BadRequestError) as bad:
        client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES)
    assert bad.value.code == "context_length_exceeded"
    assert _wallet(user_id).posted_micros == 1_000_000


def test_an_upstream_that_dies_mid_stream_sends_an_error_event_and_charges_what_it_produced(
    openai_worker, upstream, make_key, router
):
    user_id, secret = make_key()
    upstream.configure(die_after_chunks=4)  # the role chunk and 3 tokens
    with httpx.stream("POST", f"{router.base_url}/chat/completions",
                      headers={"Authorization": f"Bearer {secret}"},
                      json={"model": "test-model", "messages": MESSAGES, "stream": True}) as r:
        events = [orjson.loads(line[6:]) for line in r.iter_lines()
                  if line.startswith("data: {")]
    assert "error" in events[-1]
    validate(events[-1], "ErrorResponse")
    produced = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    router.drain()  # the body ends with its error event; the charge is written after it
    record = UsageRecord.objects.get()
    from proxy.ground.tokens import count_text_tokens

    assert record.source == "estimated"
    assert record.status == "upstream_error"
    assert record.completion_tokens == count_text_tokens(produced) == 3
    assert record.cost_micros == record.prompt_tokens + 2 * 3
    assert _wallet(user_id).pending_micros == 0


def test_fields_the_router_does_not_know_are_passed_through_upstream(
    openai_worker, upstream, make_key, client_for
):
    _, secret = make_key()
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}]
    client_for(secret).chat.completions.create(
        model="test-model", messages=MESSAGES, max_completion_tokens=30, tools=tools,
        response_format={"type": "json_object"}, seed=7, top_p=0.5, stop=["\n\n"],
        extra_body={"repetition_penalty": 1.1, "vendor": {"x": 1}})
    sent = upstream.bodies[-1]
    assert sent["tools"] == tools
    assert sent["response_format"] == {"type": "json_object"}
    assert (sent["seed"], sent["top_p"], sent["stop"]) == (7, 0.5, ["\n\n"])
    assert (sent["repetition_penalty"], sent["vendor"]) == (1.1, {"x": 1})
    # One cap, in the field this worker's upstream reads (max_tokens by default).
    assert sent["max_tokens"] == 30
    assert "max_completion_tokens" not in sent


def test_an_upstream_slower_than_its_first_byte_timeout_fails_fast_and_free(
    openai_worker, upstream, make_key, client_for
):
    import time

    openai_worker.first_byte_timeout_s = 0.3
    openai_worker.save()
    user_id, secret = make_key()
    upstream.configure(first_byte_delay=3)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as failed:
        client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES)
    assert failed.value.status_code == 502
    assert time.monotonic() - started < 2
    assert _wallet(user_id).posted_micros == 1_000_000
    assert _wallet(user_id).pending_micros == 0


def test_an_error_event_from_the_upstream_mid_stream_is_passed_on_as_an_sse_error(
    openai_worker, upstream, make_key, client_for, router
):
    user_id, secret = make_key()
    upstream.configure(error_after_chunks=3)
    stream = client_for(secret).chat.completions.create(model="test-model",
                                                        messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError):
        list(stream)
    router.drain()
    record = UsageRecord.objects.get()
    assert (record.status, record.source, record.completion_tokens) == (
        "upstream_error", "estimated", 2)
    assert _wallet(user_id).pending_micros == 0


def test_a_cookie_an_upstream_sets_never_rides_along_on_another_request(
    openai_worker, upstream, make_key, client_for
):
    # By name, not by address: HTTP clients keep cookies for host names only.
    openai_worker.base_url = upstream.base_url.replace("127.0.0.1", "localhost")
    openai_worker.save()
    upstream.configure(answer_headers={"Set-Cookie": "upstream_session=s3cret; Path=/"})
    for _ in range(2):  # two users, one pooled upstream client
        _, secret = make_key()
        client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES,
                                                   max_tokens=5)
    assert len(upstream.requests) == 2
    assert "Cookie" not in upstream.requests[-1].headers
