"""Reservations and settles that overlap in time share one statement: the same outcomes as
one by one, exact to the micro-USD, with fewer statements and without deadlocks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from accounts.services import api_key_create
from billing.errors import InsufficientFunds, KeySpendCapReached
from billing.models import Hold, KeyBudget, LedgerEntry, UsageRecord, Wallet
from billing.selectors import wallet_audit
from billing.services import UsageReport, key_budget_set, wallet_credit
from billing.services.hot_path import batchers, hold_reserve, hold_resolve
from tests.loop_thread import LoopThread
from tests.wallet_ids import wallet_id_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def loop(settings) -> Iterator[LoopThread]:
    settings.ROUTER_DB_BATCHING = True
    loop = LoopThread()
    yield loop
    loop.close()


def _reserve(user_id: int, price: Any, hold_id: str, amount: int,
             api_key_id: int | None = None) -> Any:
    return hold_reserve(wallet_id=wallet_id_of(user_id), hold_id=hold_id, amount_micros=amount,
                        price_id=price.pk, model=price.model, api_key_id=api_key_id,
                        expires_at=timezone.now() + timedelta(minutes=5))


def _usage() -> UsageReport:
    return UsageReport(prompt_tokens=10, completion_tokens=20, worker="w")


async def _counts() -> dict[str, tuple[int, int, int]]:
    return {b.name: (b.batches, b.items, b.failures) for b in batchers()}


def _assert_ledger_chains(wallet: Wallet) -> None:
    """Each entry's balance_after is the one before it plus its amount, in id order."""
    balance = 0
    for entry in LedgerEntry.objects.filter(wallet=wallet).order_by("id"):
        balance += entry.amount_micros
        assert entry.balance_after_micros == balance, entry.pk
    assert balance == wallet.posted_micros


def test_overlapping_requests_share_statements_and_are_charged_exactly(loop, user, price):
    wallet_credit(user=user, amount_micros=10_000_000, idempotency_key="f", memo="")

    async def request(i: int) -> int | None:
        await _reserve(user.pk, price, f"r{i}", 1_000)
        await asyncio.sleep(0)
        return await hold_resolve(hold_id=f"r{i}", usage=_usage(), cost_micros=i + 1)

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(*(request(i) for i in range(200)))

    assert loop.run(all_at_once()) == [i + 1 for i in range(200)]
    counts = loop.run(_counts())
    for batches, items, failures in (counts["reservations"], counts["settles"]):
        # 200 requests in far fewer statements, none of which failed.
        assert (items, failures) == (200, 0)
        assert batches < 50, counts
    wallet = Wallet.objects.get(user=user)
    assert (wallet.posted_micros, wallet.pending_micros) == (10_000_000 - 200 * 201 // 2, 0)
    assert wallet_audit(wallet_id=wallet.pk).consistent
    _assert_ledger_chains(wallet)
    costs = dict(UsageRecord.objects.values_list("request_id", "cost_micros"))
    assert costs == {f"r{i}": i + 1 for i in range(200)}
    charges = dict(LedgerEntry.objects.filter(kind="charge").values_list("hold_id",
                                                                         "amount_micros"))
    assert charges == {f"r{i}": -(i + 1) for i in range(200)}


def test_a_wallet_that_cannot_cover_its_group_leaves_the_others_alone(loop, make_user,
                                                                       price):
    rich, poor = make_user(), make_user()
    wallet_credit(user=rich, amount_micros=1_000_000, idempotency_key="r", memo="")
    wallet_credit(user=poor, amount_micros=3_500, idempotency_key="p", memo="")

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(*(
            _reserve((poor if i % 2 else rich).pk, price, f"h{i}", 1_000)
            for i in range(40)), return_exceptions=True)

    results = loop.run(all_at_once())
    assert all(r is None for r in results[0::2])  # every one of the rich wallet's
    poor_results = results[1::2]
    assert sum(r is None for r in poor_results) == 3
    refusals = [r for r in poor_results if isinstance(r, InsufficientFunds)]
    assert len(refusals) == 17
    assert all(r.available_micros == 500 for r in refusals)
    assert Wallet.objects.get(user=poor).available_micros == 500
    assert Wallet.objects.get(user=rich).pending_micros == 20_000


def test_a_cap_one_request_would_pass_refuses_only_what_passes_it(loop, user, price):
    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key="f", memo="")
    capped = api_key_create(user=user).api_key
    free = api_key_create(user=user).api_key
    key_budget_set(api_key=capped, lifetime_limit_micros=4 * 300 + 299,
                   monthly_limit_micros=None)

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(*(
            _reserve(user.pk, price, f"k{i}", 300, (capped if i % 2 else free).pk)
            for i in range(30)), return_exceptions=True)

    results = loop.run(all_at_once())
    assert all(r is None for r in results[0::2])
    assert sum(r is None for r in results[1::2]) == 4
    assert all(isinstance(r, KeySpendCapReached) for r in results[1::2] if r is not None)
    assert KeyBudget.objects.get(api_key=capped).pending_micros == 1_200
    assert Wallet.objects.get(user=user).pending_micros == 19 * 300


def test_two_processes_batching_the_same_wallets_do_not_deadlock(make_user, price,
                                                                  settings):
    """Two loops, two pools: what two router processes do. Their groups hold both wallets,
    submitted in opposite orders, and queue on each other's wallet locks; a deadlock
    (which PostgreSQL breaks after a second, failing a statement) would show as a failure
    here. The statements lock wallets in id order whatever plan PostgreSQL picks."""
    settings.ROUTER_DB_BATCHING = True
    users = [make_user(), make_user()]
    for i, user in enumerate(users):
        wallet_credit(user=user, amount_micros=10_000_000, idempotency_key=f"f{i}", memo="")
    loops = [LoopThread(), LoopThread()]

    async def requests(n: int) -> list[int | None]:
        order = users if n == 0 else users[::-1]

        async def one(i: int) -> int | None:
            user = order[i % 2]
            await _reserve(user.pk, price, f"p{n}-{i}", 1_000)
            return await hold_resolve(hold_id=f"p{n}-{i}", usage=_usage(), cost_micros=7)

        results = []
        for round_ in range(5):
            results += await asyncio.gather(*(one(round_ * 40 + i) for i in range(40)))
        return results

    try:
        started = time.monotonic()
        futures = [asyncio.run_coroutine_threadsafe(requests(n), loop.loop)
                   for n, loop in enumerate(loops)]
        assert all(f.result(60) == [7] * 200 for f in futures)
        elapsed = time.monotonic() - started
        failures = [counts[name][2] for loop in loops for counts in [loop.run(_counts())]
                    for name in ("reservations", "settles")]
    finally:
        for loop in loops:
            loop.close()
    assert failures == [0, 0, 0, 0]
    assert elapsed < 20
    for user in users:
        wallet = Wallet.objects.get(user=user)
        assert (wallet.posted_micros, wallet.pending_micros) == (10_000_000 - 200 * 7, 0)
        _assert_ledger_chains(wallet)


def test_a_reservation_abandoned_while_in_flight_is_released_at_once(loop, user, price):
    """A client that hangs up while its reservation is in the database gets no hold left
    pending for the sweeper; one that hangs up before it was sent gets none made."""
    wallet_credit(user=user, amount_micros=100_000, idempotency_key="f", memo="")
    with transaction.atomic():
        Wallet.objects.select_for_update().get(user=user)  # the statement waits on this
        sent = asyncio.run_coroutine_threadsafe(_reserve(user.pk, price, "sent", 1_000),
                                                loop.loop)
        time.sleep(0.3)
        queued = asyncio.run_coroutine_threadsafe(_reserve(user.pk, price, "queued", 1_000),
                                                  loop.loop)
        time.sleep(0.1)
        sent.cancel()
        queued.cancel()
    deadline = time.monotonic() + 10
    # One query per look: the reservation commits, then its release, at any moment.
    while set(Hold.objects.values_list("status", flat=True)) != {"voided"}:
        assert time.monotonic() < deadline, list(Hold.objects.values("id", "status"))
        time.sleep(0.05)
    assert list(Hold.objects.values_list("id", "status")) == [("sent", "voided")]
    record = UsageRecord.objects.get()
    assert (record.request_id, record.status, record.cost_micros) == ("sent", "cancelled", 0)
    wallet = Wallet.objects.get(user=user)
    assert (wallet.posted_micros, wallet.pending_micros) == (100_000, 0)


def test_charges_of_answers_already_sent_wait_a_moment_to_share_a_statement(
    loop, user, price, settings
):
    settings.ROUTER_SETTLE_LINGER_MS = 50
    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key="f", memo="")

    async def reserve_all() -> None:
        await asyncio.gather(*(_reserve(user.pk, price, f"d{i}", 1_000) for i in range(20)))

    async def charge_all() -> list[int | None]:
        return await asyncio.gather(*(
            hold_resolve(hold_id=f"d{i}", usage=_usage(), cost_micros=10 + i, deferred=True)
            for i in range(20)))

    loop.run(reserve_all())
    started = time.monotonic()
    assert loop.run(charge_all()) == [10 + i for i in range(20)]
    assert time.monotonic() - started >= 0.05
    assert loop.run(_counts())["deferred charges"] == (1, 20, 0)
    wallet = Wallet.objects.get(user=user)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000 - sum(range(10, 30)), 0)
    _assert_ledger_chains(wallet)

