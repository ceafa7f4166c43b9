"""POST /v1/embeddings end to end: the openai SDK -> the router -> the mock worker or an
OpenAI-compatible upstream; charged for the input at the model's input price, nothing else."""

from __future__ import annotations

import base64
import struct

import httpx
import openai
import orjson
import pytest

from billing.models import Hold, LedgerEntry, UsageRecord, Wallet
from proxy.dialects.embeddings.request import input_tokens
from proxy.upstream.providers.mock import unit_vector
from tests.openai_schema import validate
from tests.proxy.dialects.embeddings.conftest import INPUT_MICROS

TEXT = "The quick brown fox jumps over the lazy dog."


def _post(router, secret: str, body: dict) -> httpx.Response:
    return httpx.post(f"{router.base_url}/embeddings", json=body, timeout=20,
                      headers={"Authorization": f"Bearer {secret}"})


def _charged(router, request_id: str) -> UsageRecord:
    router.drain()  # a whole answer's charge lands just after it
    return UsageRecord.objects.get(request_id=request_id)


def test_the_mock_answers_floats_that_are_its_base64_decoded_and_charges_the_input(
    mock_embedder, make_key, client_for, router
):
    user_id, secret = make_key()
    client = client_for(secret)
    raw = client.embeddings.with_raw_response.create(model="embed-model", input=TEXT,
                                                     encoding_format="float")
    floats = raw.parse()
    body = orjson.loads(raw.http_response.content)
    validate(body, "CreateEmbeddingResponse")
    assert (body["object"], body["model"]) == ("list", "embed-model")
    assert len(floats.data) == 1
    assert floats.data[0].index == 0
    assert len(floats.data[0].embedding) == 1536
    assert floats.data[0].embedding == unit_vector(TEXT, 1536)
    # The SDK asks for base64 unless told otherwise, and decodes it itself.
    decoded = client.embeddings.create(model="embed-model", input=TEXT)
    assert decoded.data[0].embedding == floats.data[0].embedding

    tokens = input_tokens([TEXT])
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == tokens
    cost = tokens * INPUT_MICROS
    assert raw.headers["x-router-cost-micros"] == str(cost)
    assert body["usage"]["cost"] == pytest.approx(cost / 1e6)
    record = _charged(router, raw.headers["x-request-id"])
    assert (record.endpoint, record.prompt_tokens, record.completion_tokens) == (
        "embeddings", tokens, 0)
    assert (record.cost_micros, record.source, record.status) == (cost, "provider", "ok")
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000 - 2 * cost, 0)


def test_dimensions_lists_and_token_ids_are_embedded_one_vector_per_input(
    mock_embedder, make_key, client_for
):
    _, secret = make_key()
    client = client_for(secret)
    answer = client.embeddings.create(model="embed-model", input=["a", "b", "a"],
                                      dimensions=8)
    vectors = [item.embedding for item in answer.data]
    assert [item.index for item in answer.data] == [0, 1, 2]
    assert all(len(v) == 8 for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert sum(x * x for x in vectors[0]) == pytest.approx(1, abs=1e-6)

    one = client.embeddings.create(model="embed-model", input=[1, 2, 3], dimensions=4)
    assert len(one.data) == 1
    assert one.usage.prompt_tokens == 3
    many = client.embeddings.create(model="embed-model", input=[[1, 2], [3, 4, 5]],
                                    dimensions=4)
    assert len(many.data) == 2
    assert many.usage.prompt_tokens == 5
    assert many.data[0].embedding == unit_vector([1, 2], 4)


def test_an_openai_compatible_upstream_is_sent_the_body_as_it_is_and_its_usage_charged(
    upstream_embedder, legacy_upstream, make_key, client_for, router
):
    _user_id, secret = make_key()
    client = client_for(secret)
    raw = client.embeddings.with_raw_response.create(model="embed-model", input=[TEXT, "hi"],
                                                     dimensions=16, user="u-1")
    answer = raw.parse()
    sent = legacy_upstream.bodies_at("/v1/embeddings")[-1]
    assert sent == {"model": "text-embedding-3-small", "input": [TEXT, "hi"],
                    "dimensions": 16, "user": "u-1", "encoding_format": "base64"}
    assert legacy_upstream.requests[-1].headers["Authorization"] == "Bearer upstream-secret"
    # Passed through as base64 (the SDK's default), decoded by the SDK.
    assert [d.embedding for d in answer.data] == [unit_vector(TEXT, 16), unit_vector("hi", 16)]
    from proxy.ground.tokens import count_text_tokens

    upstream_count = count_text_tokens(TEXT) + count_text_tokens("hi")
    assert answer.usage.prompt_tokens == upstream_count
    record = _charged(router, raw.headers["x-request-id"])
    assert (record.cost_micros, record.endpoint) == (upstream_count * INPUT_MICROS,
                                                     "embeddings")
    assert record.worker == upstream_embedder.name


@pytest.mark.parametrize("asked", ["base64", "float"])
def test_floats_and_base64_are_converted_to_what_the_client_asked_for(
    upstream_embedder, legacy_upstream, make_key, router, asked
):
    """Whichever form the upstream answered in (floats here: it ignores the field)."""
    _, secret = make_key()
    legacy_upstream.configure(floats_only=asked == "float")
    answer = _post(router, secret, {"model": "embed-model", "input": "x", "dimensions": 4,
                                    "encoding_format": asked}).json()
    embedding = answer["data"][0]["embedding"]
    if asked == "base64":
        raw = base64.b64decode(embedding)
        assert list(struct.unpack("<4f", raw)) == unit_vector("x", 4)
    else:
        validate(answer, "CreateEmbeddingResponse")
        assert embedding == unit_vector("x", 4)


@pytest.mark.parametrize(("body", "param"), [
    ({"input": ""}, "input"),
    ({"input": []}, "input"),
    ({"input": ["ok", ""]}, "input"),
    ({"input": ["x"] * 2049}, "input"),
    ({"input": [1, -2]}, "input"),
    ({"input": [[1], []]}, "input[1]"),
    ({"input": ["a", [1]]}, "input"),
    ({"input": 5}, "input"),
    ({}, "input"),
    ({"input": "x", "dimensions": 0}, "dimensions"),
    ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
    ({"input": "x", "stream": True}, "stream"),
    ({"input": "x", "model": None}, "model"),
])
def test_a_malformed_request_is_a_400_naming_the_field_and_costs_nothing(
    mock_embedder, make_key, router, body, param
):
    _user_id, secret = make_key()
    response = _post(router, secret, {"model": "embed-model", **body})
    assert response.status_code == 400, response.text
    validate(response.json(), "ErrorResponse")
    assert response.json()["error"]["param"] == param
    assert not Hold.objects.exists()


def test_a_model_is_called_on_its_own_endpoint_or_refused_with_a_400_that_says_which(
    mock_embedder, openai_worker, make_key, client_for
):
    _, secret = make_key()
    client = client_for(secret)
    with pytest.raises(openai.BadRequestError) as chat_model:
        client.embeddings.create(model="test-model", input="x")
    assert chat_model.value.code == "model_not_embedding"
    assert "/v1/chat/completions" in chat_model.value.message
    validate(chat_model.value.response.json(), "ErrorResponse")
    with pytest.raises(openai.BadRequestError) as embedding_model:
        client.chat.completions.create(model="embed-model",
                                       messages=[{"role": "user", "content": "x"}])
    assert embedding_model.value.code == "model_is_embedding"
    assert "/v1/embeddings" in embedding_model.value.message
    assert not Hold.objects.exists()


def test_an_upstream_failure_before_the_answer_is_not_charged(
    upstream_embedder, legacy_upstream, make_key, client_for, router
):
    user_id, secret = make_key()
    legacy_upstream.configure(status=500)
    with pytest.raises(openai.APIStatusError) as failed:
        client_for(secret).embeddings.create(model="embed-model", input=TEXT)
    assert failed.value.status_code == 502
    validate(failed.value.response.json(), "ErrorResponse")
    legacy_upstream.configure(status=400)  # the client's request, as the upstream saw it
    with pytest.raises(openai.BadRequestError):
        client_for(secret).embeddings.create(model="embed-model", input=TEXT)
    router.drain()
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000, 0)
    assert not LedgerEntry.objects.filter(kind="charge").exists()
    assert set(UsageRecord.objects.values_list("status", "cost_micros", "endpoint")) == {
        ("upstream_error", 0, "embeddings")}


def test_concurrent_calls_against_a_balance_for_exactly_n_embeddings_let_n_through(
    upstream_embedder, legacy_upstream, make_key, client_for, router, settings
):
    from tests.concurrency import run_concurrently

    settings.ROUTER_RESERVE_WAIT_MS = 0  # refused at once, not after the first ones settle
    hold = input_tokens([TEXT]) * INPUT_MICROS  # an embedding's hold: its input's price
    user_id, secret = make_key(credit_micros=6 * hold)
    legacy_upstream.configure(first_byte_delay=1.5)
    client = client_for(secret)
    results = run_concurrently(
        lambda: client.embeddings.create(model="embed-model", input=TEXT, dimensions=4),
        [() for _ in range(30)], threads=30)
    succeeded = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError)
               and r.status_code == 402]
    assert (len(succeeded), len(refused)) == (6, 24)
    router.drain()
    wallet = Wallet.objects.get(user_id=user_id)
    assert LedgerEntry.objects.filter(kind="charge").count() == 6
    assert (wallet.posted_micros, wallet.pending_micros) == (0, 0)
