"""The order in which the request path's statements take their locks, seen from PostgreSQL.

Another transaction holds the wallet's row while a statement runs: the statement waits for
it, and what it already holds then shows which of its parts ran first.

- A settle writes its usage records before it locks the wallet: its largest part is done
  outside the time every reservation of that wallet waits for (the rows it inserted are
  in the usage table's month partition, which it holds a lock on while it waits).
- Every statement locks the wallet before the key's budget (the rule of
  ``billing.services.hot_path.statements``; the ORM services do the same): a statement that
  locked the budget first and then waited for the wallet deadlocked with one holding the
  wallet and waiting for the budget.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from accounts.services import api_key_create
from billing.models import Hold, KeyBudget, UsageRecord, Wallet
from billing.selectors import wallet_audit
from billing.services import UsageReport, key_budget_set, wallet_credit
from billing.services.hot_path import hold_discard, hold_reserve, hold_resolve, hold_times
from tests.loop_thread import LoopThread
from tests.wallet_ids import wallet_id_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def budgeted(user, price, loop) -> tuple[int, int]:
    """(wallet id, key id): a funded wallet whose key has a spending budget."""
    wallet_credit(user=user, amount_micros=100_000, idempotency_key="f", memo="")
    key = api_key_create(user=user).api_key
    key_budget_set(api_key=key, lifetime_limit_micros=50_000, monthly_limit_micros=None)
    return wallet_id_of(user.pk), key.pk


def _reserve(loop: LoopThread, wallet_id: int, key_id: int, price: Any, hold_id: str) -> None:
    loop.run(hold_reserve(wallet_id=wallet_id, hold_id=hold_id, amount_micros=2_000,
                          price_id=price.pk, model=price.model, api_key_id=key_id,
                          expires_at=timezone.now() + timedelta(minutes=5)))


def _connect() -> psycopg.Connection[Any]:
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return psycopg.connect(**params)


class WalletHeld:
    """Another transaction holding the wallet's row, and PostgreSQL seen from outside."""

    def __init__(self, wallet_id: int) -> None:
        self.wallet_id = wallet_id
        self.holder = _connect()
        self.observer = _connect()
        self.observer.autocommit = True

    def __enter__(self) -> WalletHeld:
        self.holder.execute("SELECT 1 FROM billing_wallet WHERE id = %s FOR UPDATE",
                            [self.wallet_id])
        return self

    def __exit__(self, *exc: object) -> None:
        self.holder.rollback()
        self.holder.close()
        self.observer.close()

    def waiting_pid(self, timeout: float = 10) -> int:
        """The backend that waits for the holder's transaction (the statement under test)."""
        holder = self.holder.info.backend_pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.observer.execute(
                "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                [holder]).fetchone()
            if row:
                return row[0]
            time.sleep(0.01)
        pytest.fail("the statement never waited for the wallet")

    def holds_usage_partition(self, pid: int) -> bool:
        """Whether ``pid`` has written to a month partition of the usage records (a row
        lock's table lock, taken when its first row is routed there)."""
        return self.observer.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks AS l JOIN pg_inherits AS i"
            "  ON i.inhrelid = l.relation"
            " WHERE i.inhparent = 'billing_usagerecord'::regclass AND l.pid = %s"
            "   AND l.mode = 'RowExclusiveLock' AND l.granted)", [pid]).fetchone()[0]

    def budget_free(self, key_id: int) -> bool:
        """Whether the key's budget row is free (nobody locked it), asked without waiting."""
        try:
            with self.observer.transaction():
                self.observer.execute(
                    "SELECT 1 FROM billing_keybudget WHERE api_key_id = %s FOR UPDATE NOWAIT",
                    [key_id])
        except psycopg.errors.LockNotAvailable:
            return False
        return True


def _usage() -> UsageReport:
    return UsageReport(prompt_tokens=10, completion_tokens=10, worker="w")


def _start(loop: LoopThread, coroutine: Any) -> Future[Any]:
    return asyncio.run_coroutine_threadsafe(coroutine, loop.loop)


@pytest.mark.parametrize("times", ["known", "forgotten"])
@pytest.mark.parametrize("holds", [1, 3])
def test_a_settle_writes_its_usage_before_it_locks_the_wallet_and_its_budget_after(
        loop, price, budgeted, settings, holds, times):
    """One hold: the statement of one settle (``RESOLVE_SQL``); three, charged after their
    answers: one statement for all (``RESOLVE_MANY_SQL``). ``forgotten``: holds reserved
    by another process, whose month the settle does not know (the ``*_AT`` variants
    otherwise)."""
    settings.ROUTER_DB_BATCHING = True
    wallet_id, key_id = budgeted
    hold_ids = [f"order-{i}" for i in range(holds)]
    for hold_id in hold_ids:
        _reserve(loop, wallet_id, key_id, price, hold_id)
        if times == "forgotten":
            hold_times.forget(hold_id)

    with WalletHeld(wallet_id) as wallet:
        settles = [_start(loop, hold_resolve(hold_id=hold_id, usage=_usage(), cost_micros=30,
                                             deferred=holds > 1))
                   for hold_id in hold_ids]
        pid = wallet.waiting_pid()
        assert wallet.holds_usage_partition(pid), "the usage waited for the wallet's lock"
        assert wallet.budget_free(key_id), "the budget was locked before the wallet"
    assert [settle.result(10) for settle in settles] == [30] * holds

    assert UsageRecord.objects.filter(request_id__in=hold_ids).count() == holds
    assert set(Hold.objects.values_list("status", flat=True)) == {"posted"}
    wallet_row = Wallet.objects.get(pk=wallet_id)
    assert (wallet_row.posted_micros, wallet_row.pending_micros) == (100_000 - 30 * holds, 0)
    budget = KeyBudget.objects.get(api_key_id=key_id)
    assert (budget.pending_micros, budget.spent_micros) == (0, 30 * holds)
    assert wallet_audit(wallet_id=wallet_id).consistent


@pytest.mark.parametrize("times", ["known", "forgotten"])
def test_a_discard_locks_the_wallet_before_the_budget(loop, price, budgeted, times):
    wallet_id, key_id = budgeted
    _reserve(loop, wallet_id, key_id, price, "unused")
    if times == "forgotten":
        hold_times.forget("unused")

    with WalletHeld(wallet_id) as wallet:
        discard = _start(loop, hold_discard(hold_id="unused"))
        wallet.waiting_pid()
        assert wallet.budget_free(key_id), "the budget was locked before the wallet"
    discard.result(10)

    assert not Hold.objects.exists()
    wallet_row = Wallet.objects.get(pk=wallet_id)
    assert (wallet_row.posted_micros, wallet_row.pending_micros) == (100_000, 0)
    assert KeyBudget.objects.get(api_key_id=key_id).pending_micros == 0
