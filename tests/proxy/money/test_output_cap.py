"""One output cap per request: the same number in the hold, the limits and the one cap field
sent upstream, and the router cuts whatever an upstream sends past it."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from accounts.models import ApiKey
from billing.models import Hold, KeyBudget
from billing.services import key_budget_set
from proxy.ground.tokens import (
    count_text_tokens,
    estimate_request_prompt_tokens,
    exact_prompt_tokens,
)
from proxy.money import allowance, tolerance
from tests.proxy.money.conftest import MESSAGES, set_cap_field, settled

PROMPT = exact_prompt_tokens(MESSAGES)
BOUND = estimate_request_prompt_tokens({"messages": MESSAGES})


def _hold(cap: int, n: int = 1) -> int:
    """test-model's hold for a cap: 1 micro-USD per prompt token, 2 per output token."""
    return BOUND + 2 * allowance(cap) * n


def test_with_both_cap_fields_the_smaller_is_the_one_cap_sent_upstream(
    liar_worker, liar, make_key, client_for
):
    """The hostile case: a 5-token hold, and max_tokens 400 beside it for an upstream that
    reads max_tokens. The upstream is sent 5, in the one field it reads."""
    liar.configure(reads_cap="max_tokens")
    _, secret = make_key()
    answer = client_for(secret).chat.completions.create(
        model="test-model", messages=MESSAGES, max_completion_tokens=5, max_tokens=400)
    sent = liar.requests[-1].body
    assert (sent["max_tokens"], "max_completion_tokens" in sent) == (5, False)
    assert liar.sent[-1].cap == 5
    assert count_text_tokens(answer.choices[0].message.content) == 5
    assert answer.choices[0].finish_reason == "length"
    record = settled()
    assert record.completion_tokens == 5
    assert Hold.objects.get().amount_micros == _hold(5)


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_a_cap_field_past_the_models_maximum_is_a_400_naming_it(
    liar_worker, liar, make_key, client_for, field
):
    other = "max_completion_tokens" if field == "max_tokens" else "max_tokens"
    _, secret = make_key()
    with pytest.raises(openai.BadRequestError) as refused:
        client_for(secret).chat.completions.create(
            model="test-model", messages=MESSAGES, extra_body={field: 1_000_000_000, other: 5})
    assert refused.value.body["param"] == field
    assert refused.value.body["code"] == "invalid_value"
    assert liar.requests == []


def test_max_completion_tokens_alone_caps_an_upstream_that_reads_only_max_tokens(
    liar_worker, liar, make_key, client_for
):
    liar.configure(reads_cap="max_tokens")
    _, secret = make_key()
    answer = client_for(secret).chat.completions.create(
        model="test-model", messages=MESSAGES, max_completion_tokens=7)
    assert liar.requests[-1].body["max_tokens"] == 7
    assert count_text_tokens(answer.choices[0].message.content) == 7
    assert settled().completion_tokens == 7


def test_a_worker_for_reasoning_models_gets_max_completion_tokens_and_never_max_tokens(
    liar_worker, liar, make_key, client_for
):
    set_cap_field(liar_worker, "max_completion_tokens")
    liar.configure(reads_cap="max_completion_tokens")
    _, secret = make_key()
    client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES)
    client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES,
                                               max_tokens=9)
    first, second = (request.body for request in liar.requests)
    # Without a client cap, the router's own (the model's maximum, with 1 USD to spend).
    assert (first["max_completion_tokens"], "max_tokens" in first) == (500, False)
    assert (second["max_completion_tokens"], "max_tokens" in second) == (9, False)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_output_past_the_cap_is_cut_there_and_flagged(
    liar_worker, liar, make_key, client_for, stream
):
    """An upstream that ignores its cap: the client gets no more than its hold covers,
    finishing with "length", and pays for what it got."""
    # Slow enough that it is still writing when the router stops reading.
    liar.configure(reads_cap="none", extra_tokens=200, chunk_delay=0.005)
    _, secret = make_key()
    client = client_for(secret)
    if stream:
        chunks = list(client.chat.completions.create(
            model="test-model", messages=MESSAGES, max_tokens=10, stream=True,
            stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks
                  if c.choices and c.choices[0].finish_reason]
        assert finish == ["length"]
        shown = chunks[-1].usage
    else:
        answer = client.chat.completions.create(model="test-model", messages=MESSAGES,
                                                max_tokens=10)
        text, finish = answer.choices[0].message.content, answer.choices[0].finish_reason
        assert finish == "length"
        shown = answer.usage
    received = count_text_tokens(text)
    assert received == allowance(10)  # the cap, and the tolerance for other tokenizers
    assert liar.sent[-1].completion_tokens > 10 * received or stream
    record = settled()
    assert record.over_cap
    assert record.source == "estimated"
    assert record.estimate_reason == ("incomplete" if stream else "completion_above_cap")
    assert record.completion_tokens == received == shown.completion_tokens
    assert 2 * (received - tolerance(received)) <= record.cost_micros <= _hold(10)
    if stream:  # the upstream was told to stop, long before its 260 chunks were out
        deadline = time.monotonic() + 5
        while liar.client_disconnects == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert liar.client_disconnects == 1
        assert len(liar.sent[-1].choices[0].content) < len(liar.lies.reply)


def test_tool_call_arguments_and_reasoning_count_and_are_cut_too(
    liar_worker, liar, make_key, client_for
):
    liar.configure(reads_cap="none", reasoning="Let me think about this. " * 5,
                   tool_call_args='{"city": "' + "Paris, " * 40 + '"}')
    _, secret = make_key()
    answer = client_for(secret).chat.completions.create(
        model="test-model", messages=MESSAGES, max_tokens=60)
    message = answer.choices[0].message
    counted = sum(count_text_tokens(text) for text in (
        message.model_extra.get("reasoning_content") or "", message.content or "",
        *(call.function.name + call.function.arguments for call in message.tool_calls or ())))
    assert counted <= allowance(60)
    assert answer.choices[0].finish_reason == "length"
    assert settled().over_cap


def test_without_a_cap_a_keys_spend_cap_shrinks_the_cap_like_the_wallet_does(
    liar_worker, liar, make_key, client_for
):
    """A key with room for about 20 output tokens left, and no max_tokens: served, capped
    at what the key affords, not refused."""
    _, secret = make_key()
    key = ApiKey.objects.get(prefix=secret[:18])
    key_budget_set(api_key=key, lifetime_limit_micros=_hold(20), monthly_limit_micros=None)
    answer = client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES)
    assert liar.requests[-1].body["max_tokens"] == 20
    assert answer.choices[0].finish_reason == "length"
    settled()
    assert KeyBudget.objects.get(api_key=key).spent_micros == PROMPT + 2 * 20


@pytest.mark.parametrize("period", ["lifetime", "monthly"])
def test_a_spend_cap_that_leaves_no_room_for_one_token_is_a_402_naming_it(
    liar_worker, liar, make_key, client_for, period
):
    _, secret = make_key()
    key = ApiKey.objects.get(prefix=secret[:18])
    limits = {"lifetime_limit_micros": None, "monthly_limit_micros": None}
    limits[f"{period}_limit_micros"] = _hold(1) - 1
    key_budget_set(api_key=key, **limits)
    with pytest.raises(openai.APIStatusError) as refused:
        client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES)
    assert refused.value.status_code == 402
    assert f"API key has reached its {period} spend cap" in refused.value.message
    assert liar.requests == []


def test_the_wallet_refusal_names_the_balance(liar_worker, make_key, client_for):
    _, secret = make_key(credit_micros=_hold(1) - 1)
    with pytest.raises(openai.APIStatusError) as refused:
        client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES)
    assert refused.value.status_code == 402
    assert "your available balance is" in refused.value.message


def test_a_model_name_with_a_control_character_is_a_400_naming_model(
    liar_worker, make_key, router
):
    _, secret = make_key()
    response = httpx.post(f"{router.base_url}/chat/completions",
                          headers={"Authorization": f"Bearer {secret}"},
                          json={"model": "test-model\u0000", "messages": MESSAGES})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"
