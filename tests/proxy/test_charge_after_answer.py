"""A whole answer (and a stream's end) goes to the client while its charge is written: the
charge is what the answer reported, it always lands, and a client calling one request
after another is never refused for the hold of its own previous answer."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import timedelta

import httpx
import openai
import psycopg
import pytest
import redis
from django.utils import timezone

from billing.models import Hold, LedgerEntry, UsageRecord, Wallet
from billing.services import UsageReport, wallet_credit
from billing.services.hot_path import hold_reserve
from proxy import money
from proxy.ground.tokens import estimate_request_prompt_tokens
from proxy.money import allowance, settlement
from tests.live_router import wait_for_charges
from tests.loop_thread import LoopThread
from tests.proxy.upstream import plan_completion
from tests.wallet_ids import wallet_id_of

MESSAGES = [{"role": "user", "content": "Say something short."}]


def test_the_charge_written_after_the_answer_is_the_one_it_reported(
    openai_worker, upstream, make_key, client_for, router
):
    user_id, secret = make_key()
    raw = client_for(secret).chat.completions.with_raw_response.create(
        model="test-model", messages=MESSAGES, max_tokens=100)
    reported = int(raw.headers["x-router-cost-micros"])
    router.drain()
    record = UsageRecord.objects.get(request_id=raw.headers["x-request-id"])
    assert record.cost_micros == reported > 0
    assert LedgerEntry.objects.get(kind="charge").amount_micros == -reported
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000 - reported, 0)


@pytest.mark.parametrize("stream", [False, True], ids=["answers", "streams"])
def test_calls_one_after_another_use_the_whole_balance_without_a_spurious_refusal(
    openai_worker, upstream, make_key, client_for, router, stream
):
    """Funded for exactly three answers, given that each charges less than it holds: the
    third fits only once the second's charge is written, which happens while (or just
    after) the client reads the second answer (a stream's end, likewise). It must still be
    served; the fourth not."""
    body = {"model": "test-model", "messages": MESSAGES, "max_tokens": 100}
    hold = estimate_request_prompt_tokens(body) + 2 * allowance(100)
    answer = plan_completion({**body, "model": "gpt-4o-mini"}, upstream.behaviour.reply)
    charge = answer.prompt_tokens + 2 * answer.completion_tokens
    assert charge < hold
    user_id, secret = make_key(credit_micros=hold + 2 * charge)
    client = client_for(secret)
    outcomes = []
    for _ in range(4):
        try:
            if stream:
                list(client.chat.completions.create(**body, stream=True))
            else:
                client.chat.completions.create(**body)
            outcomes.append(200)
        except openai.APIStatusError as refused:
            outcomes.append(refused.status_code)
    assert outcomes == [200, 200, 200, 402]
    router.drain()
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (hold - charge, 0)


@pytest.mark.django_db(transaction=True)
def test_a_charge_the_database_refuses_at_first_is_written_on_a_later_try(
    user, price, monkeypatch
):
    wallet_credit(user=user, amount_micros=10_000, idempotency_key="f", memo="")
    real = settlement.hold_resolve
    tries = []

    async def flaky(**kwargs: object) -> int | None:
        tries.append(kwargs["hold_id"])
        if len(tries) == 1:  # what a dropped connection looks like, twice over
            raise psycopg.OperationalError("the connection was lost")
        return await real(**kwargs)

    monkeypatch.setattr(settlement, "hold_resolve", flaky)
    monkeypatch.setattr(settlement, "SETTLE_RETRY_DELAYS_S", (0.01, 0.01))
    usage = UsageReport(prompt_tokens=10, completion_tokens=20, worker="w")
    loop = LoopThread()
    try:
        loop.run(hold_reserve(wallet_id=wallet_id_of(user.pk), hold_id="late", amount_micros=210,
                              price_id=price.pk, model=price.model, api_key_id=None,
                              expires_at=timezone.now() + timedelta(minutes=5)))
        charged = loop.run(settlement.settle(request_id="late",
                                             wallet_id=wallet_id_of(user.pk), price=price,
                                             usage=usage, fallback=lambda: usage,
                                             deferred=True))
    finally:
        loop.close()
    assert tries == ["late", "late"]
    assert charged == 10 * 1 + 20 * 2
    wallet = Wallet.objects.get(user=user)
    assert (wallet.posted_micros, wallet.pending_micros) == (10_000 - 50, 0)
    assert UsageRecord.objects.get(request_id="late").cost_micros == 50


def test_a_paused_redis_holds_back_neither_the_answer_nor_its_charge(
    openai_worker, upstream, make_key, router, settings, caplog
):
    """Right after the upstream answers, the router frees the worker's slot and corrects the
    tokens in Redis: the command is written before the answer goes, and its reply is not
    waited for. With Redis paused across the moment the answer arrives, the client still
    gets it at once, it is charged, and the slot is freed once Redis answers again."""
    if not settings.REDIS_URL:
        pytest.skip("the worker's slots are kept in Redis only when there is one")
    _, warm = make_key()  # the key, price and worker lookups are cached first
    httpx.post(f"{router.base_url}/chat/completions", timeout=10,
               json={"model": "test-model", "messages": MESSAGES, "max_tokens": 20},
               headers={"Authorization": f"Bearer {warm}"}).raise_for_status()
    user_id, secret = make_key()
    upstream.configure(first_byte_delay=0.5)
    redis_admin = redis.Redis.from_url(settings.REDIS_URL)
    pause = threading.Timer(0.3, redis_admin.execute_command, ("CLIENT", "PAUSE", "600", "ALL"))
    pause.start()
    # Read timeout 0.6 s: the answer comes at about 0.5 s, while Redis is paused until 0.9 s.
    answer = httpx.post(f"{router.base_url}/chat/completions",
                        timeout=httpx.Timeout(5, read=0.6),
                        json={"model": "test-model", "messages": MESSAGES, "max_tokens": 20},
                        headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 200
    pause.join()
    wait_for_charges()
    hold = Hold.objects.get(wallet__user_id=user_id)
    assert hold.status == "posted"
    record = UsageRecord.objects.get(user_id=user_id)
    assert (record.status, record.source) == ("ok", "provider")
    assert Wallet.objects.get(user_id=user_id).posted_micros == 1_000_000 - record.cost_micros
    worker_slots = f"{settings.ROUTER_REDIS_PREFIX}inflight:{openai_worker.pk}"
    deadline = time.monotonic() + 3
    while redis_admin.zcard(worker_slots) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert redis_admin.zcard(worker_slots) == 0
    # The pause was an answer late, not a Redis down: the limits stay shared.
    assert "Redis is not answering" not in caplog.text


def _database_away_for(seconds: float, real):
    """``hold_resolve`` as a database that cannot be reached for ``seconds`` from the first
    try (``seconds`` None: never again) answers it; the tries it saw."""
    tries: list[float] = []

    async def away(**kwargs: object) -> int | None:
        tries.append(time.monotonic())
        if seconds is None or tries[-1] - tries[0] < seconds:
            raise psycopg.OperationalError("the connection was lost")
        return await real(**kwargs)

    return away, tries


def _reserve_in(loop: LoopThread, user, price, hold_id: str) -> None:
    loop.run(hold_reserve(wallet_id=wallet_id_of(user.pk), hold_id=hold_id, amount_micros=210,
                          price_id=price.pk, model=price.model, api_key_id=None,
                          expires_at=timezone.now() + timedelta(minutes=5)))


def _settle_in(loop: LoopThread, user, price, hold_id: str) -> int:
    usage = UsageReport(prompt_tokens=10, completion_tokens=20, worker="w")
    return loop.run(settlement.settle(request_id=hold_id, wallet_id=wallet_id_of(user.pk),
                                      price=price, usage=usage, fallback=lambda: usage,
                                      deferred=True))


@pytest.mark.django_db(transaction=True)
def test_a_charge_keeps_trying_past_a_minute_for_as_long_as_its_hold_lives(
    user, price, monkeypatch, settings
):
    """A failover longer than a minute: the charges of the answers given meanwhile land
    once the database is back (until 2026-12 they gave up after a minute, and the sweeper
    released their holds uncharged). Here the minute is 0.1 s and the hold's life 5 s."""
    wallet_credit(user=user, amount_micros=10_000, idempotency_key="f", memo="")
    away, tries = _database_away_for(0.4, settlement.hold_resolve)
    monkeypatch.setattr(settlement, "hold_resolve", away)
    monkeypatch.setattr(settlement, "SETTLE_RETRY_DELAYS_S", (0.05,))
    monkeypatch.setattr(settlement, "RETRY_WINDOW_S", 0.1)
    settings.ROUTER_HOLD_TTL_SECONDS = 5
    assert settlement.charge_retry_seconds() == 5
    loop = LoopThread()
    try:
        _reserve_in(loop, user, price, "late")
        assert _settle_in(loop, user, price, "late") == 50
    finally:
        loop.close()
    assert tries[-1] - tries[0] >= 0.4
    assert UsageRecord.objects.get(request_id="late").cost_micros == 50
    wallet = Wallet.objects.get(user=user)
    assert (wallet.posted_micros, wallet.pending_micros) == (10_000 - 50, 0)


@pytest.mark.django_db(transaction=True)
def test_a_process_shutting_down_gives_up_on_a_charge_after_its_minute_not_its_holds_life(
    user, price, monkeypatch, settings, caplog
):
    """Shutting down with the database away, a process tries its charges for a minute more
    (0.3 s here), not for the holds' whole life (30 s here): its process manager would
    kill it first. The hold is left for the sweeper, and the loop's later charges get
    their whole time again."""
    wallet_credit(user=user, amount_micros=10_000, idempotency_key="f", memo="")
    real = settlement.hold_resolve
    away, _ = _database_away_for(None, real)
    monkeypatch.setattr(settlement, "hold_resolve", away)
    monkeypatch.setattr(settlement, "SETTLE_RETRY_DELAYS_S", (0.05,))
    monkeypatch.setattr(settlement, "SHUTDOWN_RETRY_S", 0.3)
    settings.ROUTER_HOLD_TTL_SECONDS = 30
    loop = LoopThread()
    try:
        _reserve_in(loop, user, price, "stuck")

        async def answered_then_shut_down() -> float:
            usage = UsageReport(prompt_tokens=10, completion_tokens=20, worker="w")
            money.in_background(settlement.settle(
                request_id="stuck", wallet_id=wallet_id_of(user.pk), price=price,
                usage=usage, fallback=lambda: usage, deferred=True))
            await asyncio.sleep(0.2)  # trying, while the database is away
            started = time.monotonic()
            await money.wait_for_settlements()
            return time.monotonic() - started

        with caplog.at_level(logging.ERROR, logger="proxy.charging"):
            waited = loop.run(answered_then_shut_down())
        assert 0.25 <= waited < 5
        assert "request stuck: the database stayed unreachable" in caplog.text
        assert Hold.objects.get(pk="stuck").status == "pending"
        # The same loop afterwards: a charge tries for its hold's life again.
        away_briefly, _ = _database_away_for(0.5, real)
        monkeypatch.setattr(settlement, "hold_resolve", away_briefly)
        _reserve_in(loop, user, price, "later")
        assert _settle_in(loop, user, price, "later") == 50
    finally:
        loop.close()
