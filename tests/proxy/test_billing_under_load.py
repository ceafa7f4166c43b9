"""The money side of the proxy when clients leave early or arrive all at once."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from billing.models import Hold, LedgerEntry, UsageRecord, Wallet
from billing.selectors import wallet_audit
from proxy.ground.tokens import count_text_tokens, encode_text, estimate_request_prompt_tokens
from proxy.money import allowance
from tests.concurrency import run_concurrently

MESSAGES = [{"role": "user", "content": "Tell me a long story."}]
LONG_REPLY = " ".join(f"word{i}" for i in range(300))


def test_a_client_that_drops_the_stream_after_two_chunks_pays_for_what_was_produced(
    openai_worker, upstream, make_key, router
):
    user_id, secret = make_key()
    upstream.configure(reply=LONG_REPLY, chunk_delay=0.05)
    body = {"model": "test-model", "messages": MESSAGES, "stream": True, "max_tokens": 400}
    with httpx.stream("POST", f"{router.base_url}/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {secret}"}) as response:
        received = []
        for line in response.iter_lines():
            if line.startswith("data: {"):
                received.append(line)
            if len(received) == 2:
                break  # leaving the block closes the connection mid-stream
    dropped_at = time.monotonic()

    deadline = dropped_at + 5
    while Hold.objects.filter(status="pending").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    hold = Hold.objects.get()
    assert hold.status == "posted", "settled within 5 s of the disconnect"
    record = UsageRecord.objects.get()
    assert (record.status, record.source) == ("cancelled", "estimated")
    # What was relayed before the router noticed: at least what the client read, far less
    # than the whole answer; and the upstream was told to stop.
    assert 1 <= record.completion_tokens < len(encode_text(LONG_REPLY)) // 2
    assert record.cost_micros == record.prompt_tokens + 2 * record.completion_tokens
    wallet = Wallet.objects.get(user_id=user_id)
    assert wallet.pending_micros == 0
    assert wallet.posted_micros == 1_000_000 - record.cost_micros
    deadline = time.monotonic() + 5
    while upstream.client_disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream.client_disconnects == 1
    assert upstream.completed_streams == 0


def test_100_concurrent_calls_against_a_balance_for_exactly_10_let_10_through(
    openai_worker, upstream, make_key, client_for, model_price, router, settings
):
    # Refused at once, not after the 10 settle (which would leave room for a few more).
    settings.ROUTER_RESERVE_WAIT_MS = 0
    max_tokens = 20
    body = {"model": "test-model", "messages": MESSAGES, "max_tokens": max_tokens}
    # The hold covers the cap plus the output meter's tolerance.
    hold_micros = estimate_request_prompt_tokens(body) * 1 + allowance(max_tokens) * 2
    user_id, secret = make_key(credit_micros=10 * hold_micros)
    # Slow enough that every call has reserved before the first one settles.
    upstream.configure(first_byte_delay=1.5)
    client = client_for(secret)

    def call() -> object:
        return client.chat.completions.create(**body)

    results = run_concurrently(call, [() for _ in range(100)], threads=100)

    succeeded = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError)
               and r.status_code == 402]
    assert len(succeeded) == 10, [r for r in results if isinstance(r, Exception)][:3]
    assert len(refused) == 90
    assert all(r.code == "insufficient_quota" for r in refused)
    router.drain()
    wallet = Wallet.objects.get(user_id=user_id)
    charged = sum(-e.amount_micros for e in LedgerEntry.objects.filter(kind="charge"))
    assert LedgerEntry.objects.filter(kind="charge").count() == 10
    assert wallet.posted_micros == 10 * hold_micros - charged >= 0
    assert wallet.pending_micros == 0
    assert wallet_audit(wallet_id=wallet.pk).consistent
    assert len(upstream.bodies) == 10


def test_the_mock_worker_answers_offline_with_true_token_counts(make_key, client_for):
    from billing.services import price_set
    from proxy.models import Worker, WorkerModel

    price_set(model="mock-gpt", input_usd_per_mtok="1", output_usd_per_mtok="1")
    WorkerModel.objects.create(worker=Worker.objects.create(name="mock", kind="mock"),
                               model="mock-gpt")
    _, secret = make_key()
    client = client_for(secret)
    answer = client.chat.completions.create(model="mock-gpt", messages=MESSAGES)
    text = answer.choices[0].message.content
    assert "Tell me a long story." in text
    assert answer.usage.completion_tokens == count_text_tokens(text)
    streamed = client.chat.completions.create(model="mock-gpt", messages=MESSAGES,
                                              stream=True,
                                              stream_options={"include_usage": True})
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens
    short = client.chat.completions.create(model="mock-gpt", messages=MESSAGES, max_tokens=3)
    assert (short.usage.completion_tokens, short.choices[0].finish_reason) == (3, "length")


def test_a_client_that_hangs_up_before_a_json_answer_pays_for_its_prompt_only(
    openai_worker, upstream, make_key, router
):
    from proxy.ground.tokens import exact_prompt_tokens

    user_id, secret = make_key()
    upstream.configure(first_byte_delay=3)
    body = {"model": "test-model", "messages": MESSAGES, "max_tokens": 50}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{router.base_url}/chat/completions", json=body, timeout=0.5,
                   headers={"Authorization": f"Bearer {secret}"})
    router.drain()
    record = UsageRecord.objects.get()
    assert (record.status, record.source) == ("cancelled", "estimated")
    assert (record.prompt_tokens, record.completion_tokens) == (exact_prompt_tokens(MESSAGES), 0)
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (
        1_000_000 - record.prompt_tokens, 0)
