"""A process that dies before settling loses no money and locks none."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from billing.models import Hold, Wallet
from billing.services import hold_create, wallet_credit
from billing.services.sweeper import holds_sweep, wallets_reconcile
from billing.tasks import holds_sweep_task, wallets_reconcile_task
from tests.concurrency import run_concurrently


def _abandoned_holds(user, price, count: int, *, expired: bool = True) -> None:
    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key=f"f{user.pk}", memo="")
    moment = timezone.now() + (timedelta(seconds=-1) if expired else timedelta(minutes=5))
    for i in range(count):
        # The request's process "dies" here: the hold is created and never settled.
        hold_create(user=user, hold_id=f"dead-{user.pk}-{i}", amount_micros=1_000,
                    price=price, model=price.model, expires_at=moment)


def test_after_expiry_the_sweeper_releases_what_a_dead_process_held(user, price):
    _abandoned_holds(user, price, 3)
    assert Wallet.objects.get(user=user).pending_micros == 3_000
    assert len(holds_sweep().expired) == 3
    wallet = Wallet.objects.get(user=user)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000, 0)
    assert set(Hold.objects.values_list("status", flat=True)) == {"expired"}
    assert holds_sweep().expired == []


def test_holds_not_yet_expired_are_left_alone(user, price):
    _abandoned_holds(user, price, 2, expired=False)
    assert holds_sweep().expired == []
    assert Wallet.objects.get(user=user).pending_micros == 2_000


@pytest.mark.django_db(transaction=True)
def test_two_sweepers_at_once_resolve_each_hold_once(user, price):
    _abandoned_holds(user, price, 120)
    results = run_concurrently(lambda: holds_sweep(batch=25).expired, [(), ()], threads=2)
    expired = [hold_id for result in results for hold_id in result]
    assert len(expired) == 120
    assert len(set(expired)) == 120
    assert Wallet.objects.get(user=user).pending_micros == 0
    assert wallets_reconcile() == []


def test_the_task_and_the_cli_run_the_same_sweep(user, price):
    _abandoned_holds(user, price, 2)
    assert holds_sweep_task.apply().get() == {"expired": 2}
    late = hold_create(user=user, hold_id="late", amount_micros=5, price=price,
                       model=price.model, expires_at=timezone.now() - timedelta(seconds=1))
    assert late.status == "pending"
    from io import StringIO

    out = StringIO()
    call_command("router", "sweep", stdout=out)
    assert out.getvalue().strip() == "Expired 1 hold."


def test_a_planted_mismatch_in_one_wallet_is_reported_and_the_others_are_not(
    make_user, price, caplog
):
    users = [make_user() for _ in range(3)]
    for user in users:
        wallet_credit(user=user, amount_micros=500, idempotency_key=f"r{user.pk}", memo="")
    with connection.cursor() as cursor:  # tampering the services would never do
        cursor.execute("UPDATE billing_wallet SET posted_micros = posted_micros + 7 "
                       "WHERE user_id = %s", [users[1].pk])
    mismatches = wallets_reconcile()
    assert [m.wallet_id for m in mismatches] == [Wallet.objects.get(user=users[1]).pk]
    assert (mismatches[0].posted_micros, mismatches[0].ledger_sum_micros) == (507, 500)
    assert "does not reconcile" in caplog.text
    assert wallets_reconcile_task.apply().get() == {
        "mismatched_wallets": [mismatches[0].wallet_id]}
    assert Wallet.objects.get(user=users[1]).posted_micros == 507  # reported, not "fixed"
