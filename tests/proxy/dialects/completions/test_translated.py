"""POST /v1/completions to a worker that speaks only chat (the mock): the prompt goes as one
user message and the chat answer comes back as a text completion; what chat cannot say
is refused with a 400 naming the field."""

from __future__ import annotations

import openai
import orjson
import pytest

from billing.models import Hold, UsageRecord, Wallet
from billing.services import price_set
from proxy.ground.tokens import encode_text, exact_prompt_tokens, text_of_tokens
from proxy.upstream.providers.mock import REPLY_TEMPLATE
from tests.openai_schema import validate
from tests.proxy.dialects.completions.helpers import PROMPT, post, stream_events, validate_chunk

MOCK_REPLY = REPLY_TEMPLATE.format(said=PROMPT)
PROMPT_TOKENS = exact_prompt_tokens([{"role": "user", "content": PROMPT}])


def _reply(cap: int) -> str:
    return text_of_tokens(encode_text(MOCK_REPLY)[:cap])


def test_an_answer_from_a_chat_worker_is_a_text_completion_charged_exactly(
    mock_worker, make_key, client_for, router
):
    user_id, secret = make_key()
    raw = client_for(secret).completions.with_raw_response.create(
        model="mock-model", prompt=PROMPT, max_tokens=8, n=2)
    completion = raw.parse()
    body = orjson.loads(raw.http_response.content)
    validate(body, "CreateCompletionResponse")
    assert body["id"].startswith("cmpl-")
    assert body["model"] == "mock-model"
    assert [c.text for c in completion.choices] == [_reply(8)]  # the mock answers one
    assert completion.choices[0].finish_reason == "length"
    cost = PROMPT_TOKENS + 2 * 8
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        PROMPT_TOKENS, 8)
    router.drain()
    record = UsageRecord.objects.get(request_id=raw.headers["x-request-id"])
    assert (record.cost_micros, record.endpoint, record.source) == (cost, "completions",
                                                                    "provider")
    assert Wallet.objects.get(user_id=user_id).posted_micros == 1_000_000 - cost


def test_a_stream_from_a_chat_worker_is_text_completion_chunks(mock_worker, make_key, router):
    _, secret = make_key()
    events = stream_events(router, secret, {
        "model": "mock-model", "prompt": PROMPT, "echo": True, "max_tokens": 200,
        "stream": True, "stream_options": {"include_usage": True}})
    assert events[-1] is None
    chunks = events[:-1]
    for chunk in chunks:
        validate_chunk(chunk)
    text = "".join(c["text"] for chunk in chunks for c in chunk["choices"])
    assert text == PROMPT + MOCK_REPLY  # echoed by the router, not billed
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    usage = chunks[-1]["usage"]
    completion = len(encode_text(MOCK_REPLY))
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (PROMPT_TOKENS, completion)
    router.drain()  # the stream's end goes while its charge is written
    assert UsageRecord.objects.get().cost_micros == PROMPT_TOKENS + 2 * completion


def test_a_prompt_of_token_ids_is_sent_to_a_chat_worker_as_its_text(
    mock_worker, make_key, client_for
):
    _, secret = make_key()
    completion = client_for(secret).completions.create(
        model="mock-model", prompt=encode_text("Hello there"), max_tokens=50)
    assert completion.choices[0].text == REPLY_TEMPLATE.format(said="Hello there")


@pytest.mark.parametrize(("extra", "param"), [
    ({"suffix": " the end."}, "suffix"),
    ({"logprobs": 2}, "logprobs"),
    ({"prompt": ["one", "two"]}, "prompt"),
    ({"best_of": 3}, "best_of"),
])
def test_what_chat_cannot_say_is_refused_for_a_chat_worker_before_any_hold(
    mock_worker, make_key, router, extra, param
):
    _, secret = make_key()
    response = post(router, secret, {"model": "mock-model", "prompt": PROMPT, **extra})
    assert response.status_code == 400, response.text
    validate(response.json(), "ErrorResponse")
    assert response.json()["error"]["param"] == param
    assert not Hold.objects.exists()


@pytest.mark.parametrize(("body", "param"), [
    ({}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [[]]}, "prompt[0]"),
    ({"prompt": PROMPT, "logprobs": 6}, "logprobs"),
    ({"prompt": PROMPT, "echo": True, "logprobs": 1}, "echo"),
    ({"prompt": PROMPT, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": PROMPT, "n": 3, "best_of": 2}, "best_of"),
    ({"prompt": PROMPT, "stream": True, "best_of": 2}, "best_of"),
    ({"prompt": PROMPT, "max_tokens": -1}, "max_tokens"),
    ({"prompt": PROMPT, "temperature": 3}, "temperature"),
    ({"prompt": PROMPT, "echo": "yes"}, "echo"),
    ({"prompt": PROMPT, "suffix": 5}, "suffix"),
])
def test_a_malformed_request_is_a_400_naming_the_field(mock_worker, make_key, router, body,
                                                       param):
    _, secret = make_key()
    response = post(router, secret, {"model": "mock-model", **body})
    assert response.status_code == 400, response.text
    validate(response.json(), "ErrorResponse")
    assert response.json()["error"]["param"] == param


def test_an_embedding_model_on_completions_is_a_400_that_says_where_it_belongs(
    mock_worker, make_key, client_for
):
    price_set(model="embed-model", input_usd_per_mtok="1", output_usd_per_mtok="0",
              kind="embedding")
    _, secret = make_key()
    with pytest.raises(openai.BadRequestError) as refused:
        client_for(secret).completions.create(model="embed-model", prompt=PROMPT)
    assert refused.value.code == "model_is_embedding"
    assert "/v1/embeddings" in refused.value.message
