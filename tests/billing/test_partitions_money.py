"""The money guarantees hold on the partitioned tables: the ledger stays append-only, a
request is charged once however many settles race, a retried reservation still finds its
own hold, and a settle that knows its hold's creation time reads one partition."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from billing.models import Hold, LedgerEntry, UsageRecord, Wallet
from billing.services import UsageReport, hold_create, hold_settle, hot_path, wallet_credit
from billing.services.budgets import current_month
from billing.services.hot_path import hold_reserve, hold_resolve, hold_times
from billing.services.hot_path.statements import RESOLVE_AT_SQL, RESOLVE_SQL
from billing.services.partitions import month_start
from tests.concurrency import run_concurrently
from tests.wallet_ids import wallet_id_of

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql",
                       reason="partitions exist on PostgreSQL only"),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture(params=["batched", "alone"])
def batching(request, settings) -> None:
    settings.ROUTER_DB_BATCHING = request.param == "batched"


@pytest.fixture
def funded(user):
    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key="fund", memo="")
    return user


def _usage() -> UsageReport:
    return UsageReport(prompt_tokens=100, completion_tokens=100, worker="w")


def _reserve(user, price, hold_id: str) -> Any:
    return hold_reserve(wallet_id=wallet_id_of(user.pk), hold_id=hold_id, amount_micros=5_000,
                        price_id=price.pk, model=price.model, api_key_id=None,
                        expires_at=timezone.now() + timedelta(minutes=5))


def _wallet(user) -> tuple[int, int]:
    wallet = Wallet.objects.get(user=user)
    return wallet.posted_micros, wallet.pending_micros


def test_the_ledger_still_refuses_update_and_delete(funded, price):
    hold_create(user=funded, hold_id="r1", amount_micros=5_000, price=price, model=price.model)
    hold_settle(hold_id="r1", usage=_usage())
    entry = LedgerEntry.objects.get(kind="charge")
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        LedgerEntry.objects.filter(pk=entry.pk).update(amount_micros=-1)
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        LedgerEntry.objects.filter(pk=entry.pk).delete()
    # The wallet still equals its ledger, and its CHECKs still refuse an overdraft.
    posted, _ = _wallet(funded)
    assert posted == sum(LedgerEntry.objects.values_list("amount_micros", flat=True))
    with pytest.raises(IntegrityError), transaction.atomic():
        Wallet.objects.filter(user=funded).update(pending_micros=posted + 1)


def test_a_settle_on_the_request_path_charges_once_and_names_its_holds_month(
    loop, funded, price, batching
):
    loop.run(_reserve(funded, price, "req-a"))
    hold = Hold.objects.get(pk="req-a")
    # The router chose the hold's creation time and remembers it for the settle.
    assert hold_times.recall("req-a") == hold.created_at
    assert loop.run(hold_resolve(hold_id="req-a", usage=_usage(), cost_micros=300)) == 300
    assert hold_times.recall("req-a") is None
    assert loop.run(hold_resolve(hold_id="req-a", usage=_usage(), cost_micros=300)) is None
    assert LedgerEntry.objects.filter(kind="charge").count() == 1
    assert UsageRecord.objects.get(request_id="req-a").cost_micros == 300
    assert _wallet(funded) == (1_000_000 - 300, 0)


def test_a_settle_that_does_not_know_the_holds_time_still_finds_it(loop, funded, price,
                                                                   batching):
    loop.run(_reserve(funded, price, "req-b"))
    hold_times.forget("req-b")  # reserved by another process, say
    assert loop.run(hold_resolve(hold_id="req-b", usage=_usage(), cost_micros=200)) == 200
    assert _wallet(funded) == (1_000_000 - 200, 0)


def test_ten_concurrent_settles_of_one_hold_charge_once(loop, funded, price, batching):
    loop.run(_reserve(funded, price, "req-c"))

    async def settle_all() -> list[Any]:
        return await asyncio.gather(*(hold_resolve(hold_id="req-c", usage=_usage(),
                                                   cost_micros=400) for _ in range(10)))

    results = loop.run(settle_all())
    assert sorted(results, key=lambda r: r is None) == [400] + [None] * 9
    assert LedgerEntry.objects.filter(kind="charge").count() == 1
    assert UsageRecord.objects.filter(request_id="req-c").count() == 1
    assert _wallet(funded) == (1_000_000 - 400, 0)


def test_two_concurrent_orm_settles_of_one_hold_charge_once(funded, price):
    hold_create(user=funded, hold_id="orm-1", amount_micros=5_000, price=price,
                model=price.model)
    outcomes = run_concurrently(lambda: hold_settle(hold_id="orm-1", usage=_usage()),
                                [(), ()], threads=2)
    assert sorted(outcome.already_resolved for outcome in outcomes) == [False, True]
    assert LedgerEntry.objects.filter(kind="charge").count() == 1
    assert UsageRecord.objects.filter(request_id="orm-1").count() == 1


def test_a_retried_reservation_hits_its_own_holds_key_and_reserves_once(loop, funded, price):
    params = {"wallet_id": wallet_id_of(funded.pk), "hold_id": "req-d", "amount_micros": 5_000,
              "price_id": price.pk, "model": price.model, "api_key_id": None,
              "expires_at": timezone.now() + timedelta(minutes=5),
              "created_at": timezone.now()}
    loop.run(hot_path._reserve_alone(**params))
    # The same statement again, as after a connection lost before its answer.
    loop.run(hot_path._reserve_alone(**params))
    assert Hold.objects.filter(pk="req-d").count() == 1
    assert _wallet(funded) == (1_000_000, 5_000)


def _named_to_positional(sql: str) -> tuple[str, list[str]]:
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)s", number, sql), names


def _settle_params(hold: Hold) -> dict[str, object]:
    return {"hold_id": hold.pk, "created_at": hold.created_at, "status": "posted", "cost": 1,
            "worker": "w", "prompt_tokens": 1, "completion_tokens": 1, "cached_tokens": 0,
            "cache_write_tokens": 0, "endpoint": "chat", "source": "provider",
            "estimate_reason": "", "over_cap": False, "usage_status": "ok",
            "latency_ms": None, "ttft_ms": None, "upstream_cost": None,
            "month": current_month()}


def _hold_partitions_in(plan: str) -> set[str]:
    """The hold partitions a plan reads (its scans; an UPDATE's plan also lists every
    partition it could write to, pruned or not)."""
    return set(re.findall(r"Scan (?:using \S+ )?on (billing_hold_\w+)", plan))


def test_the_settles_hold_lookup_reads_one_partition_when_it_knows_the_time(funded, price):
    hold = hold_create(user=funded, hold_id="plan-1", amount_micros=5_000, price=price,
                       model=price.model)
    params = _settle_params(hold)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_inherits "
                       "WHERE inhparent = 'billing_hold'::regclass")
        assert cursor.fetchone()[0] >= 5  # four months and DEFAULT, at least
        # Values bound into the plan (a custom plan): pruned while planning.
        cursor.execute("EXPLAIN " + RESOLVE_AT_SQL, params)
        pruned = "\n".join(row[0] for row in cursor.fetchall())
        assert _hold_partitions_in(pruned) == {
            f"billing_hold_p{month_start(hold.created_at):%Y_%m}"}
        cursor.execute("EXPLAIN " + RESOLVE_SQL, params)
        unpruned = "\n".join(row[0] for row in cursor.fetchall())
        assert len(_hold_partitions_in(unpruned)) >= 5
        # As the request path runs it: a prepared statement, and here its generic plan,
        # whose partitions are pruned when it starts (``Subplans Removed``).
        sql, names = _named_to_positional(RESOLVE_AT_SQL)
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        try:
            cursor.execute(f"PREPARE settle_at AS {sql}")
            cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
                           "EXECUTE settle_at(" + ", ".join(["%s"] * len(names)) + ")",
                           [params[name] for name in names])
            generic = "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("DEALLOCATE ALL")
            cursor.execute("RESET plan_cache_mode")
    removed = int(re.search(r"Subplans Removed: (\d+)", generic).group(1))
    assert _hold_partitions_in(generic) == {
        f"billing_hold_p{month_start(hold.created_at):%Y_%m}"}, generic
    assert removed >= 4
    # EXPLAIN ANALYZE ran it: the hold was charged, once.
    assert Hold.objects.get(pk="plan-1").status == "posted"
