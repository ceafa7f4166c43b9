"""The request-path statements keep the same rules as the ORM services, under concurrency.

They run on their own pooled async connections, so these tests use committed data
(``transactional_db``) and a loop of their own in a background thread. Each runs twice:
with overlapping requests grouped into one statement (the default) and one by one.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from accounts.services import api_key_create
from billing.errors import InsufficientFunds
from billing.models import Hold, KeyBudget, LedgerEntry, UsageRecord, Wallet
from billing.selectors import wallet_audit
from billing.services import (
    UsageReport,
    hold_create,
    hold_settle,
    key_budget_set,
    wallet_credit,
)
from billing.services.holds import hold_discard as hold_discard_orm
from billing.services.holds import holds_extend as holds_extend_orm
from billing.services.hot_path import (
    hold_discard,
    hold_reserve,
    hold_resolve,
    holds_extend,
    wallet_available,
)
from tests.wallet_ids import wallet_id_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True, params=["batched", "alone"])
def _paths(request, settings) -> None:
    # Every test runs with overlapping requests grouped into one statement, and without.
    settings.ROUTER_DB_BATCHING = request.param == "batched"
    # Enough connections for real contention; at 40 (with the ORM threads beside them) this
    # file held 74 of PostgreSQL's 100 at once, and a test on the other xdist worker starting
    # two routers was refused connections ("too many clients already").
    settings.ROUTER_DB_POOL_SIZE = 16


def _reserve(user, price, hold_id: str, amount: int):
    return hold_reserve(wallet_id=wallet_id_of(user.pk), hold_id=hold_id, amount_micros=amount,
                        price_id=price.pk, model=price.model, api_key_id=None,
                        expires_at=timezone.now() + timedelta(minutes=5))


def _usage(prompt: int = 100, completion: int = 100) -> UsageReport:
    return UsageReport(prompt_tokens=prompt, completion_tokens=completion, worker="w")


@pytest.mark.parametrize("round_", range(3))
def test_200_concurrent_reserves_against_a_wallet_covering_33_let_exactly_33_through(
    loop, user, price, round_
):
    wallet_credit(user=user, amount_micros=33 * 3_000 + 2_999, idempotency_key=f"f{round_}",
                  memo="")

    async def attempt_all() -> list[Any]:
        return await asyncio.gather(
            *(_reserve(user, price, f"r{round_}-{i}", 3_000) for i in range(200)),
            return_exceptions=True)

    results = loop.run(attempt_all())
    assert sum(r is None for r in results) == 33, [r for r in results if r is not None][:3]
    refused = [r for r in results if isinstance(r, InsufficientFunds)]
    assert len(refused) == 167
    # Each refusal reports a balance that really could not cover it.
    assert all(0 <= r.available_micros < 3_000 for r in refused)
    wallet = Wallet.objects.get(user=user)
    assert (wallet.pending_micros, wallet.available_micros) == (33 * 3_000, 2_999)
    assert wallet_audit(wallet_id=wallet.pk).consistent


def test_a_refusal_says_what_is_available(loop, user, price):
    wallet_credit(user=user, amount_micros=500, idempotency_key="f", memo="")
    with pytest.raises(InsufficientFunds) as refused:
        loop.run(_reserve(user, price, "big", 501))
    assert (refused.value.needed_micros, refused.value.available_micros) == (501, 500)
    assert loop.run(wallet_available(wallet_id=wallet_id_of(user.pk))) == 500
    assert not Hold.objects.exists()


def test_a_user_without_a_wallet_is_refused(loop, make_user, price):
    with pytest.raises(InsufficientFunds):
        loop.run(_reserve(make_user(), price, "nowallet", 1))


def test_10_concurrent_settles_of_one_hold_charge_once(loop, user, price):
    wallet_credit(user=user, amount_micros=10_000, idempotency_key="f", memo="")
    loop.run(_reserve(user, price, "one", 5_000))

    async def settle_all() -> list[Any]:
        return await asyncio.gather(*(hold_resolve(hold_id="one", usage=_usage(),
                                                   cost_micros=300) for _ in range(10)))

    results = loop.run(settle_all())
    assert sorted(results, key=str) == [300] + [None] * 9
    assert LedgerEntry.objects.filter(kind="charge").get().amount_micros == -300
    record = UsageRecord.objects.get()
    assert (record.cost_micros, record.prompt_tokens, record.worker) == (300, 100, "w")
    wallet = Wallet.objects.get(user=user)
    assert (wallet.posted_micros, wallet.pending_micros) == (9_700, 0)
    assert wallet_audit(wallet_id=wallet.pk).consistent


def test_a_cost_above_the_hold_is_capped_and_a_void_charges_nothing(loop, user, price):
    wallet_credit(user=user, amount_micros=10_000, idempotency_key="f", memo="")
    loop.run(_reserve(user, price, "capped", 100))
    loop.run(_reserve(user, price, "voided", 100))
    assert loop.run(hold_resolve(hold_id="capped", usage=_usage(), cost_micros=999)) == 100
    assert loop.run(hold_resolve(hold_id="voided", usage=_usage(0, 0), cost_micros=None)) == 0
    assert Hold.objects.get(pk="voided").status == "voided"
    assert UsageRecord.objects.get(request_id="voided").cost_micros == 0
    wallet = Wallet.objects.get(user=user)
    assert (wallet.posted_micros, wallet.pending_micros) == (9_900, 0)


def test_both_paths_interleave_on_one_wallet_and_the_books_balance(loop, user, price):
    """ORM services in threads and request-path statements at once, on one wallet."""
    from tests.concurrency import run_concurrently

    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key="f", memo="")

    async def fast(i: int) -> None:
        await _reserve(user, price, f"fast-{i}", 2_000)
        await hold_resolve(hold_id=f"fast-{i}", usage=_usage(10, 10), cost_micros=30)

    def orm(i: int) -> None:
        hold_create(user=user, hold_id=f"orm-{i}", amount_micros=2_000, price=price,
                    model=price.model)
        hold_settle(hold_id=f"orm-{i}", usage=_usage(10, 10))

    async def fast_all() -> None:
        await asyncio.gather(*(fast(i) for i in range(100)))

    fast_done = threading.Thread(target=loop.run, args=(fast_all(),))
    fast_done.start()
    results = run_concurrently(orm, [(i,) for i in range(100)], threads=16)
    fast_done.join(60)
    assert all(r is None for r in results), results[:3]
    wallet = Wallet.objects.get(user=user)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000 - 200 * 30, 0)
    assert LedgerEntry.objects.filter(kind="charge").count() == 200
    assert wallet_audit(wallet_id=wallet.pk).consistent


def test_pooled_connections_killed_by_the_server_are_replaced_without_an_error(
    loop, user, price
):
    from django.db import connection

    wallet_credit(user=user, amount_micros=10_000, idempotency_key="f", memo="")
    loop.run(_reserve(user, price, "before", 100))
    with connection.cursor() as cursor:  # what a PostgreSQL restart does to the pool
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                       "datname = current_database() AND pid <> pg_backend_pid()")
    loop.run(_reserve(user, price, "after", 100))
    assert loop.run(hold_resolve(hold_id="after", usage=_usage(), cost_micros=50)) == 50
    assert Hold.objects.filter(status="pending").count() == 1


@pytest.mark.parametrize("path", ["statement", "orm"])
def test_extending_holds_moves_only_pending_ones_and_never_earlier(loop, user, price, path):
    wallet_credit(user=user, amount_micros=10_000, idempotency_key="f", memo="")
    for hold_id in ("running", "settled", "later"):
        loop.run(_reserve(user, price, hold_id, 1_000))
    loop.run(hold_resolve(hold_id="settled", usage=_usage(1, 1), cost_micros=3))
    far = timezone.now() + timedelta(hours=2)
    Hold.objects.filter(pk="later").update(expires_at=far)
    before = {hold.pk: hold.expires_at for hold in Hold.objects.all()}
    new_expiry = timezone.now() + timedelta(hours=1)

    extend = holds_extend if path == "statement" else sync_to_async(holds_extend_orm)
    moved = loop.run(extend(hold_ids=["running", "settled", "later", "unknown"],
                            expires_at=new_expiry))

    after = {hold.pk: hold.expires_at for hold in Hold.objects.all()}
    assert moved == 1
    assert after == {**before, "running": new_expiry}


@pytest.mark.parametrize("path", ["statement", "orm"])
def test_a_discarded_hold_is_gone_with_its_money_back_and_nothing_written(loop, user, price,
                                                                          path):
    """What a request the limits refused beside its hold leaves: nothing."""
    wallet_credit(user=user, amount_micros=10_000, idempotency_key="f", memo="")
    key = api_key_create(user=user).api_key
    key_budget_set(api_key=key, lifetime_limit_micros=5_000, monthly_limit_micros=None)
    for hold_id in ("unused", "settled"):
        loop.run(hold_reserve(wallet_id=wallet_id_of(user.pk), hold_id=hold_id,
                              amount_micros=2_000, price_id=price.pk, model=price.model,
                              api_key_id=key.pk,
                              expires_at=timezone.now() + timedelta(minutes=5)))
    loop.run(hold_resolve(hold_id="settled", usage=_usage(1, 1), cost_micros=3))
    discard = (hold_discard if path == "statement"
               else sync_to_async(hold_discard_orm))

    loop.run(discard(hold_id="unused"))
    loop.run(discard(hold_id="settled"))  # no longer pending: left as it is

    assert list(Hold.objects.values_list("pk", "status")) == [("settled", "posted")]
    assert list(UsageRecord.objects.values_list("request_id", flat=True)) == ["settled"]
    assert LedgerEntry.objects.filter(kind="charge").count() == 1
    wallet = Wallet.objects.get(user=user)
    assert (wallet.posted_micros, wallet.pending_micros) == (9_997, 0)
    budget = KeyBudget.objects.get(api_key=key)
    assert (budget.pending_micros, budget.spent_micros) == (0, 3)
    assert wallet_audit(wallet_id=wallet.pk).consistent
