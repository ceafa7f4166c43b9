"""POST /v1/completions to a worker that speaks it natively: the openai SDK -> the router
-> an OpenAI-compatible upstream's /v1/completions, charged like chat."""

from __future__ import annotations

import orjson
import pytest

from billing.models import UsageRecord, Wallet
from proxy.ground.tokens import count_text_tokens, encode_text, text_of_tokens
from tests.openai_schema import validate
from tests.proxy.dialects.completions.helpers import PROMPT, stream_events, validate_chunk
from tests.proxy.dialects.legacy_upstream import LOGPROB
from tests.proxy.upstream import DEFAULT_REPLY


def _reply(cap: int) -> str:
    return text_of_tokens(encode_text(DEFAULT_REPLY)[:cap])


def test_an_answer_is_the_upstreams_text_completion_charged_exactly(
    native_worker, legacy_upstream, make_key, client_for, router
):
    user_id, secret = make_key()
    raw = client_for(secret).completions.with_raw_response.create(
        model="test-model", prompt=PROMPT, max_tokens=10, temperature=0.2, stop=["\n\n"])
    completion = raw.parse()
    body = orjson.loads(raw.http_response.content)
    validate(body, "CreateCompletionResponse")
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert completion.model == "test-model"
    assert completion.choices[0].text == _reply(10)
    assert completion.choices[0].finish_reason == "length"
    sent = legacy_upstream.bodies_at("/v1/completions")[-1]
    assert sent == {"model": "gpt-3.5-turbo-instruct", "prompt": PROMPT, "max_tokens": 10,
                    "temperature": 0.2, "stop": ["\n\n"]}

    prompt = count_text_tokens(PROMPT)
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (prompt, 10)
    cost = prompt + 2 * 10
    assert raw.headers["x-router-cost-micros"] == str(cost)
    router.drain()
    record = UsageRecord.objects.get(request_id=raw.headers["x-request-id"])
    assert (record.endpoint, record.prompt_tokens, record.completion_tokens) == (
        "completions", prompt, 10)
    assert (record.cost_micros, record.source, record.status) == (cost, "provider", "ok")
    assert Wallet.objects.get(user_id=user_id).posted_micros == 1_000_000 - cost


def test_without_max_tokens_the_cap_is_16_as_in_openais_legacy_api(
    native_worker, legacy_upstream, make_key, client_for
):
    _, secret = make_key()
    completion = client_for(secret).completions.create(model="test-model", prompt=PROMPT)
    assert legacy_upstream.bodies_at("/v1/completions")[-1]["max_tokens"] == 16
    assert completion.choices[0].text == _reply(16)


def test_several_prompts_n_logprobs_and_suffix_go_natively_one_choice_per_prompt_and_n(
    native_worker, legacy_upstream, make_key, client_for, router
):
    _, secret = make_key()
    completion = client_for(secret).completions.create(
        model="test-model", prompt=["One", "Two"], n=2, max_tokens=5, logprobs=1,
        suffix=" end.")
    sent = legacy_upstream.bodies_at("/v1/completions")[-1]
    assert (sent["prompt"], sent["n"], sent["logprobs"], sent["suffix"]) == (
        ["One", "Two"], 2, 1, " end.")
    assert [c.index for c in completion.choices] == [0, 1, 2, 3]
    assert {c.text for c in completion.choices} == {_reply(5)}
    assert completion.choices[0].logprobs.token_logprobs == [LOGPROB] * 5
    assert completion.usage.completion_tokens == 4 * 5
    tokens = [[464, 4320], [13225]]
    by_ids = client_for(secret).completions.create(model="test-model", prompt=tokens,
                                                   max_tokens=3)
    assert legacy_upstream.bodies_at("/v1/completions")[-1]["prompt"] == tokens
    assert by_ids.usage.prompt_tokens == 3
    assert len(by_ids.choices) == 2


def test_echo_is_the_routers_so_the_prompt_is_never_billed_as_output(
    native_worker, legacy_upstream, make_key, client_for, router
):
    _, secret = make_key()
    raw = client_for(secret).completions.with_raw_response.create(
        model="test-model", prompt=PROMPT, echo=True, max_tokens=4)
    completion = raw.parse()
    assert "echo" not in legacy_upstream.bodies_at("/v1/completions")[-1]
    assert completion.choices[0].text == PROMPT + _reply(4)
    router.drain()
    record = UsageRecord.objects.get(request_id=raw.headers["x-request-id"])
    assert (record.completion_tokens, record.source) == (4, "provider")


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_stream_is_relayed_as_text_completion_chunks_and_charged_from_upstream_usage(
    native_worker, legacy_upstream, make_key, router, include_usage
):
    user_id, secret = make_key()
    body = {"model": "test-model", "prompt": PROMPT, "max_tokens": 12, "stream": True,
            "logprobs": 0}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    events = stream_events(router, secret, body)
    assert events[-1] is None  # [DONE]
    chunks = events[:-1]
    for chunk in chunks:
        validate_chunk(chunk)
        assert chunk["model"] == "test-model"
        assert chunk["object"] == "text_completion"
    assert len({chunk["id"] for chunk in chunks}) == 1
    text = "".join(c["text"] for chunk in chunks for c in chunk["choices"])
    assert text == _reply(12)
    assert [c["finish_reason"] for chunk in chunks for c in chunk["choices"]][-1] == "length"
    assert chunks[0]["choices"][0]["logprobs"]["token_logprobs"] == [LOGPROB]
    sent = legacy_upstream.bodies_at("/v1/completions")[-1]
    assert sent["stream_options"] == {"include_usage": True}  # forced, for the charge
    prompt = count_text_tokens(PROMPT)
    cost = prompt + 2 * 12
    usage = [chunk["usage"] for chunk in chunks if chunk.get("usage")]
    if include_usage:
        assert chunks[-1]["choices"] == []
        assert usage == [{"prompt_tokens": prompt, "completion_tokens": 12,
                          "total_tokens": prompt + 12, "cost": cost / 1e6}]
    else:
        assert usage == []
    router.drain()  # the stream's end goes while its charge is written
    record = UsageRecord.objects.get()
    assert (record.cost_micros, record.source, record.endpoint) == (cost, "provider",
                                                                    "completions")
    assert Wallet.objects.get(user_id=user_id).posted_micros == 1_000_000 - cost


def test_echo_in_a_stream_leads_each_choices_first_chunk(
    native_worker, legacy_upstream, make_key, client_for
):
    _, secret = make_key()
    chunks = list(client_for(secret).completions.create(
        model="test-model", prompt=["A", "B"], echo=True, max_tokens=3, stream=True))
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    assert texts == {0: "A" + _reply(3), 1: "B" + _reply(3)}
