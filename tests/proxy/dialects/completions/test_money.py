"""The money guarantees of chat hold for /v1/completions, on the same path: a client that
hangs up pays for what was produced, a failure before output costs nothing, and a balance
for N answers lets exactly N through."""

from __future__ import annotations

import time

import httpx
import openai
import orjson
import pytest

from billing.models import Hold, LedgerEntry, UsageRecord, Wallet
from billing.selectors import wallet_audit
from proxy.dialects.completions.request import parse_completions_request
from proxy.ground.tokens import count_text_tokens, encode_text
from proxy.money.plan import prompt_bound
from proxy.money.usage_check import allowance
from tests.concurrency import run_concurrently
from tests.openai_schema import validate
from tests.proxy.dialects.completions.helpers import PROMPT, post

LONG_REPLY = " ".join(f"word{i}" for i in range(300))


def _wait_until(condition, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_client_that_drops_the_stream_pays_for_what_was_produced(
    native_worker, legacy_upstream, make_key, router
):
    user_id, secret = make_key()
    legacy_upstream.configure(reply=LONG_REPLY, chunk_delay=0.05)
    body = {"model": "test-model", "prompt": PROMPT, "stream": True, "max_tokens": 400}
    with httpx.stream("POST", f"{router.base_url}/completions", json=body,
                      headers={"Authorization": f"Bearer {secret}"}) as response:
        received = 0
        for line in response.iter_lines():
            received += line.startswith("data: {")
            if received == 2:
                break  # leaving the block closes the connection mid-stream
    _wait_until(lambda: not Hold.objects.filter(status="pending").exists())
    assert Hold.objects.get().status == "posted"
    record = UsageRecord.objects.get()
    assert (record.status, record.source, record.endpoint) == ("cancelled", "estimated",
                                                               "completions")
    assert 2 <= record.completion_tokens < len(encode_text(LONG_REPLY)) // 2
    assert record.cost_micros == record.prompt_tokens + 2 * record.completion_tokens
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000 - record.cost_micros,
                                                             0)
    _wait_until(lambda: legacy_upstream.client_disconnects == 1)
    assert legacy_upstream.completed_streams == 0


def test_an_upstream_that_dies_mid_stream_ends_with_an_error_event_and_charges_the_output(
    native_worker, legacy_upstream, make_key, router
):
    user_id, secret = make_key()
    legacy_upstream.configure(die_after_chunks=3)
    body = {"model": "test-model", "prompt": PROMPT, "stream": True, "max_tokens": 50}
    with httpx.stream("POST", f"{router.base_url}/completions", json=body,
                      headers={"Authorization": f"Bearer {secret}"}) as response:
        events = [orjson.loads(line[6:]) for line in response.iter_lines()
                  if line.startswith("data: {")]
    validate(events[-1], "ErrorResponse")
    produced = "".join(c["text"] for event in events[:-1] for c in event["choices"])
    router.drain()
    record = UsageRecord.objects.get()
    assert (record.status, record.source) == ("upstream_error", "estimated")
    assert record.completion_tokens == count_text_tokens(produced) == 3
    assert record.cost_micros == record.prompt_tokens + 2 * 3
    assert Wallet.objects.get(user_id=user_id).pending_micros == 0


def test_an_upstream_failure_before_any_output_is_not_charged(
    native_worker, legacy_upstream, make_key, client_for, router
):
    user_id, secret = make_key()
    legacy_upstream.configure(status=503)
    client = client_for(secret)
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as failed:
            client.completions.create(model="test-model", prompt=PROMPT, stream=stream)
        assert failed.value.status_code == 502
        validate(failed.value.response.json(), "ErrorResponse")
    legacy_upstream.stop()  # not even reachable
    response = post(router, secret, {"model": "test-model", "prompt": PROMPT})
    assert response.status_code == 502
    router.drain()
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000, 0)
    assert not LedgerEntry.objects.filter(kind="charge").exists()
    assert set(Hold.objects.values_list("status", flat=True)) == {"voided"}
    assert set(UsageRecord.objects.values_list("status", "cost_micros", "endpoint")) == {
        ("upstream_error", 0, "completions")}


def test_concurrent_calls_against_a_balance_for_exactly_n_answers_let_n_through(
    native_worker, legacy_upstream, make_key, client_for, router, settings
):
    settings.ROUTER_RESERVE_WAIT_MS = 0  # refused at once, not after the first ones settle
    body = {"model": "test-model", "prompt": PROMPT, "max_tokens": 20}
    chat = parse_completions_request(orjson.dumps(body)).chat
    hold = prompt_bound(chat) * 1 + allowance(20) * 2
    user_id, secret = make_key(credit_micros=8 * hold)
    legacy_upstream.configure(first_byte_delay=1.5)
    client = client_for(secret)
    results = run_concurrently(lambda: client.completions.create(**body),
                               [() for _ in range(40)], threads=40)
    succeeded = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError)
               and r.status_code == 402]
    assert (len(succeeded), len(refused)) == (8, 32), [
        r for r in results if isinstance(r, Exception)][:3]
    router.drain()
    wallet = Wallet.objects.get(user_id=user_id)
    charged = sum(-e.amount_micros for e in LedgerEntry.objects.filter(kind="charge"))
    assert LedgerEntry.objects.filter(kind="charge").count() == 8
    assert wallet.posted_micros == 8 * hold - charged >= 0
    assert wallet.pending_micros == 0
    assert wallet_audit(wallet_id=wallet.pk).consistent
    assert len(legacy_upstream.bodies_at("/v1/completions")) == 8
