"""With limits counted in Redis, a request's hold is taken while its admission is on its way
(proxy.relay.admission): the answers must be those of asking the limits first, and a hold
taken for a request the limits refuse must leave nothing behind."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator
from functools import partial

import httpx
import openai
import pytest

from accounts.models import ApiKey
from billing.models import Hold, LedgerEntry, RefusedRequests, UsageRecord, Wallet
from billing.services import wallet_credit
from proxy import money
from proxy.ground import shared_state
from proxy.relay import admission
from tests.proxy.test_limits_in_production import own_redis  # noqa: F401 - a fixture

MESSAGES = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(autouse=True)
def _fresh(redis_db, settings) -> Iterator[None]:
    settings.ROUTER_RESERVE_WAIT_MS = 0  # a 402 at once, not after holds in flight settle
    admission.forget_refusals()
    yield
    admission.forget_refusals()


@pytest.fixture
def discarded(monkeypatch) -> list[str]:
    """The request ids whose holds were discarded (the real discard runs)."""
    seen: list[str] = []
    real = money.discard_hold

    async def spy(request_id: str) -> None:
        seen.append(request_id)
        await real(request_id)

    monkeypatch.setattr(money, "discard_hold", spy)
    return seen


def _ask(client: openai.OpenAI):
    return client.chat.completions.create(model="test-model", messages=MESSAGES, max_tokens=5)


def _refused(call) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as refused:
        call()
    return refused.value


def test_a_request_the_limits_refuse_leaves_no_trace_of_the_hold_taken_beside_them(
    openai_worker, make_key, client_for, router, discarded, refusals_in_one_minute
):
    user_id, secret = make_key()
    ApiKey.objects.filter(prefix=secret[:18]).update(rpm=1)
    ask = partial(_ask, client_for(secret))

    ask()
    first = _refused(ask)
    assert first.status_code == 429
    refused_id = first.response.headers["x-request-id"]
    # Its hold was taken while the limits were asked, and given back.
    assert discarded == [refused_id]
    # Refused again within the memory: the limits are asked first, no hold is taken.
    second = _refused(ask)
    assert second.status_code == 429
    assert discarded == [refused_id]
    router.drain()

    assert not Hold.objects.filter(id__in=[refused_id,
                                           second.response.headers["x-request-id"]]).exists()
    record = UsageRecord.objects.get()  # the one answer's, none for a refusal
    assert record.status == UsageRecord.Status.OK
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (
        1_000_000 - record.cost_micros, 0)
    assert LedgerEntry.objects.filter(kind="charge").count() == 1
    group = RefusedRequests.objects.get()
    assert (group.status, group.count) == (429, 2)


def test_a_request_both_over_its_limit_and_short_of_money_is_told_the_limit(
    openai_worker, make_key, client_for, router, discarded
):
    user_id, secret = make_key(credit_micros=10)
    ApiKey.objects.filter(prefix=secret[:18]).update(rpm=1)
    ask = partial(_ask, client_for(secret))

    assert _refused(ask).status_code == 402  # admitted (the minute's one), then short
    error = _refused(ask)
    assert error.status_code == 429  # as when the limits were asked first
    assert discarded == []  # the wallet had no room: no hold was taken to give back
    router.drain()
    assert not Hold.objects.exists()
    assert not UsageRecord.objects.exists()
    assert Wallet.objects.get(user_id=user_id).pending_micros == 0


def test_a_request_short_of_money_frees_the_concurrency_slot_it_was_admitted_with(
    openai_worker, make_key, client_for, router
):
    user_id, secret = make_key(credit_micros=10)
    ApiKey.objects.filter(prefix=secret[:18]).update(max_concurrency=1)
    ask = partial(_ask, client_for(secret))

    # A slot not freed would refuse the second with a 429.
    assert [_refused(ask).status_code for _ in range(2)] == [402, 402]
    wallet_credit(wallet=Wallet.objects.get(user_id=user_id), amount_micros=1_000_000,
                  idempotency_key=f"more-{user_id}", memo="test", kind="topup")
    assert ask().choices[0].message.content
    router.drain()
    assert not Hold.objects.filter(status="pending").exists()


def test_a_client_gone_while_redis_answers_late_leaves_no_hold_and_no_record(
    own_redis, openai_worker, make_key, router, settings, discarded  # noqa: F811
):
    url, server = own_redis
    settings.REDIS_URL = url
    shared_state.reset_for_tests()
    user_id, secret = make_key()
    ApiKey.objects.filter(prefix=secret[:18]).update(rpm=100)
    body = {"model": "test-model", "messages": MESSAGES, "max_tokens": 5}
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.post(f"{router.base_url}/chat/completions", json=body, headers=headers,
                      timeout=20).status_code == 200
    router.drain()

    # Redis stops answering: the admission waits (up to the client's 1 s timeout, then
    # counts in the process), while the hold is taken beside it; the client gives up first.
    server.send_signal(signal.SIGSTOP)
    resume = threading.Timer(1.5, server.send_signal, (signal.SIGCONT,))
    resume.start()
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{router.base_url}/chat/completions", json=body, headers=headers,
                       timeout=httpx.Timeout(20, read=0.4))
    finally:
        resume.join()
    router.drain()

    assert len(discarded) == 1
    assert not Hold.objects.filter(id=discarded[0]).exists()
    assert UsageRecord.objects.count() == 1  # the first request's
    wallet = Wallet.objects.get(user_id=user_id)
    assert wallet.pending_micros == 0
    assert wallet.posted_micros == 1_000_000 - UsageRecord.objects.get().cost_micros
    # What the admission counted was given back: the next request is admitted.
    assert httpx.post(f"{router.base_url}/chat/completions", json=body, headers=headers,
                      timeout=20).status_code == 200
    router.drain()
    shared_state.reset_for_tests()


def test_the_memory_of_refused_callers_stays_bounded(monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr(admission, "REFUSED_KEPT", 3)
    now = admission.time.monotonic()
    callers = [SimpleNamespace(api_key_id=i, wallet_id=i) for i in range(5)]
    admission._refused_at.update({(0, 0): now - 120, (1, 1): now - 90, (2, 2): now,
                                  (3, 3): now})
    # Past the bound, those refused longer ago than the memory go; the rest stay.
    assert admission._refused_lately(callers[2])
    assert set(admission._refused_at) == {(2, 2), (3, 3)}
    assert not admission._refused_lately(callers[0])
    # Past the bound with every one refused lately: all are forgotten.
    admission._refused_at.update({(4, 4): now, (1, 1): now})
    assert not admission._refused_lately(callers[4])
    assert admission._refused_at == {}


def test_the_admission_beside_the_hold_starts_a_turn_after_the_reservation():
    """The script is asked once the reservation's statement has gone (the next turn of
    the loop); an admission dropped before that turn is never asked at all."""
    asked: list[str] = []

    async def admit(name: str) -> str:
        asked.append(name)
        return name

    async def main() -> tuple[list[str], bool, list[str], bool, str]:
        soon = admission._StartedSoon(admit("kept"))  # type: ignore[arg-type]
        dropped = admission._StartedSoon(admit("dropped"))  # type: ignore[arg-type]
        before = list(asked)
        was_started = dropped.drop_unless_started()
        await asyncio.sleep(0)  # the next turn starts it, the one after runs it
        await asyncio.sleep(0)
        after = list(asked)
        return before, was_started, after, soon.drop_unless_started(), await soon.task()

    before, dropped_had_started, after, kept_had_started, result = asyncio.run(main())
    assert before == []  # nothing asked in the turn that set them up
    assert after == ["kept"]  # on its own, without being waited for
    assert (dropped_had_started, kept_had_started, result) == (False, True, "kept")
    assert asked == ["kept"]
