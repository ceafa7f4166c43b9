"""The money guarantees hold for the Responses API as they do for chat: a client gone
mid-stream pays for what was produced, a failed upstream costs nothing, a balance for N
answers gives N; and stored responses expire."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import openai
import pytest
from django.utils import timezone

from billing.models import Hold, LedgerEntry, UsageRecord, Wallet
from billing.selectors import wallet_audit
from proxy.ground.tokens import encode_text, estimate_request_prompt_tokens
from proxy.models import StoredResponse
from proxy.money import allowance
from proxy.tasks import responses_expire
from tests.concurrency import run_concurrently

LONG_REPLY = " ".join(f"word{i}" for i in range(300))
STORY = "Tell me a long story."


def test_a_client_that_drops_a_stream_pays_for_what_was_produced(
    openai_worker, upstream, make_key, router
):
    user_id, secret = make_key()
    upstream.configure(reply=LONG_REPLY, chunk_delay=0.05)
    body = {"model": "test-model", "input": STORY, "stream": True, "max_output_tokens": 400}
    with httpx.stream("POST", f"{router.base_url}/responses", json=body,
                      headers={"Authorization": f"Bearer {secret}"}) as response:
        deltas = 0
        for line in response.iter_lines():
            if line == "event: response.output_text.delta":
                deltas += 1
            if deltas == 3:
                break  # leaving the block closes the connection mid-stream

    deadline = time.monotonic() + 5
    while Hold.objects.filter(status="pending").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    router.drain()
    assert Hold.objects.get().status == "posted"
    record = UsageRecord.objects.get()
    assert (record.endpoint, record.status, record.source) == (
        "responses", "cancelled", "estimated")
    assert 3 <= record.completion_tokens < len(encode_text(LONG_REPLY)) // 2
    assert record.cost_micros == record.prompt_tokens + 2 * record.completion_tokens
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (
        1_000_000 - record.cost_micros, 0)
    assert not StoredResponse.objects.exists()  # an unfinished response is not kept


def test_an_upstream_failing_before_any_output_costs_nothing(
    openai_worker, upstream, make_key, client_for, router
):
    user_id, secret = make_key()
    upstream.configure(status=500)
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as failed:
            client_for(secret).responses.create(model="test-model", input=STORY,
                                                stream=stream)
        assert failed.value.status_code == 502
    router.drain()
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000, 0)
    assert set(Hold.objects.values_list("status", flat=True)) == {"voided"}
    assert not LedgerEntry.objects.filter(kind="charge").exists()
    assert not StoredResponse.objects.exists()


def test_concurrent_calls_against_a_balance_for_exactly_5_let_5_through(
    openai_worker, upstream, make_key, client_for, router, settings
):
    settings.ROUTER_RESERVE_WAIT_MS = 0  # refused at once, not after the first ones settle
    cap = 20
    chat_body = {"messages": [{"role": "user", "content": STORY}]}
    hold_micros = estimate_request_prompt_tokens(chat_body) + allowance(cap) * 2
    user_id, secret = make_key(credit_micros=5 * hold_micros)
    upstream.configure(first_byte_delay=1.5)  # every call reserves before one settles
    client = client_for(secret)

    def call() -> object:
        return client.responses.create(model="test-model", input=STORY,
                                       max_output_tokens=cap)

    results = run_concurrently(call, [() for _ in range(30)], threads=30)
    succeeded = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError)
               and r.status_code == 402]
    assert len(succeeded) == 5, [r for r in results if isinstance(r, Exception)][:3]
    assert len(refused) == 25
    router.drain()
    wallet = Wallet.objects.get(user_id=user_id)
    charges = LedgerEntry.objects.filter(kind="charge")
    assert charges.count() == 5
    assert wallet.posted_micros == 5 * hold_micros - sum(-e.amount_micros for e in charges)
    assert wallet.pending_micros == 0
    assert wallet_audit(wallet_id=wallet.pk).consistent
    assert UsageRecord.objects.filter(endpoint="responses", status="ok").count() == 5


def test_the_retention_task_deletes_expired_responses_which_are_already_gone(
    openai_worker, make_key, client_for, settings
):
    settings.ROUTER_RESPONSES_RETENTION_DAYS = 7
    _, secret = make_key()
    client = client_for(secret)
    old, recent = (client.responses.create(model="test-model", input=text).id
                   for text in ("Old.", "Recent."))
    StoredResponse.objects.filter(pk=old).update(
        created_at=timezone.now() - timedelta(days=7, minutes=1))
    with pytest.raises(openai.NotFoundError):  # expired: unseen before the task runs
        client.responses.retrieve(old)

    assert responses_expire() == {"deleted": 1}
    assert list(StoredResponse.objects.values_list("pk", flat=True)) == [recent]
    assert client.responses.retrieve(recent).id == recent
