"""Requests refused while their own wallet's holds are in flight wait for those holds to
settle (at most ROUTER_RESERVE_WAIT_MS) instead of starving each other."""

from __future__ import annotations

import time

import openai
import pytest

from billing.models import LedgerEntry, Wallet
from proxy.ground.tokens import encode_text, estimate_request_prompt_tokens, exact_prompt_tokens
from proxy.money import allowance
from tests.concurrency import run_concurrently
from tests.proxy.money.conftest import MESSAGES, all_settled

PROMPT = exact_prompt_tokens(MESSAGES)
BOUND = estimate_request_prompt_tokens({"messages": MESSAGES})
REPLY = "One short answer of a known length, and nothing more than that, to keep count."
R = len(encode_text(REPLY))
CHARGE = PROMPT + 2 * R  # one whole answer at test-model's 1 and 2 micro-USD per token


def _hold(cap: int) -> int:
    return BOUND + 2 * allowance(cap)


@pytest.fixture
def patient(settings):
    settings.ROUTER_RESERVE_WAIT_MS = 10_000


def _stream(client: openai.OpenAI) -> tuple[str, str]:
    """(text, finish reason) of one streamed answer without max_tokens."""
    text, finish = "", ""
    for chunk in client.chat.completions.create(model="test-model", messages=MESSAGES,
                                                stream=True):
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return text, finish


def test_five_concurrent_requests_without_a_cap_on_a_balance_for_five_answers_all_succeed(
    liar_worker, liar, make_key, client_for, patient
):
    # Each takes ~0.3 s, so all five ask while the first holds the whole balance.
    liar.configure(reply=REPLY, chunk_delay=0.015)
    # Four answers, and for the last one a hold whose cap is its whole answer.
    balance = 4 * CHARGE + _hold(R)
    user_id, secret = make_key(credit_micros=balance)
    client = client_for(secret)
    results = run_concurrently(_stream, [(client,)] * 5, threads=5)
    assert results == [(REPLY, "stop")] * 5
    all_settled()
    wallet = Wallet.objects.get(user_id=user_id)
    assert wallet.posted_micros == balance - 5 * CHARGE >= 0
    assert LedgerEntry.objects.filter(kind="charge").count() == 5


def test_forty_concurrent_on_a_balance_for_one_answer_serve_one_and_refuse_the_rest_quickly(
    liar_worker, liar, make_key, client_for, patient
):
    liar.configure(reply=REPLY, chunk_delay=0.015)
    balance = _hold(R)
    # What is left after one answer does not cover a hold of even one output token.
    assert balance - CHARGE < _hold(1)
    user_id, secret = make_key(credit_micros=balance)
    client = client_for(secret)
    started = time.monotonic()
    results = run_concurrently(_stream, [(client,)] * 40, threads=40)
    took = time.monotonic() - started
    served = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert served == [(REPLY, "stop")]
    assert len(refused) == 39
    assert {(r.status_code, r.code) for r in refused} == {(402, "insufficient_quota")}
    # Refused as soon as the one answer settled, not when their patience ran out.
    assert took < 5
    all_settled()
    assert Wallet.objects.get(user_id=user_id).posted_micros == balance - CHARGE


def test_a_refusal_with_nothing_in_flight_does_not_wait(
    liar_worker, make_key, client_for, patient
):
    _, secret = make_key(credit_micros=_hold(1) - 1)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as refused:
        client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES)
    assert refused.value.status_code == 402
    assert time.monotonic() - started < 2
