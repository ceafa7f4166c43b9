"""Reconciliation sums the ledger and the pending holds once for every wallet, and reports
exactly the wallets that the per-wallet audit finds inconsistent, with the same numbers."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.utils import timezone

from billing.models import Wallet
from billing.selectors import wallet_audit, wallet_audits_failing
from billing.services import hold_create, hold_settle, wallet_credit
from billing.services.holds import UsageReport
from billing.services.sweeper import wallets_reconcile


def _tamper(sql: str, wallet_id: int) -> None:
    with connection.cursor() as cursor:  # what the services would never do
        cursor.execute(sql, [wallet_id])


def test_it_reports_what_the_per_wallet_audit_reports_for_every_wallet(make_user, price):
    users = [make_user() for _ in range(7)]
    for index, user in enumerate(users[:6]):  # the last one's wallet has no entry at all
        wallet_credit(user=user, amount_micros=100_000 + index, idempotency_key=f"f{index}",
                      memo="")
        for n in range(index % 3):
            hold_create(user=user, hold_id=f"h{index}-{n}", amount_micros=2_000 + n,
                        price=price, model=price.model,
                        expires_at=timezone.now() + timedelta(minutes=5))
    hold_settle(hold_id="h1-0", usage=UsageReport(prompt_tokens=100, completion_tokens=50))
    wallets = {user.pk: Wallet.objects.get(user=user).pk for user in users}
    _tamper("UPDATE billing_wallet SET posted_micros = posted_micros + 7 WHERE id = %s",
            wallets[users[0].pk])
    _tamper("UPDATE billing_wallet SET pending_micros = pending_micros + 3 WHERE id = %s",
            wallets[users[2].pk])
    _tamper("UPDATE billing_hold SET amount_micros = amount_micros + 1 "
            "WHERE wallet_id = %s AND status = 'pending'", wallets[users[4].pk])
    _tamper("UPDATE billing_wallet SET posted_micros = posted_micros + 5, "
            "pending_micros = pending_micros + 5 WHERE id = %s", wallets[users[6].pk])

    per_wallet = [wallet_audit(wallet_id=pk) for pk in sorted(Wallet.objects.values_list(
        "pk", flat=True))]
    failing = wallet_audits_failing()

    assert failing == [audit for audit in per_wallet if not audit.consistent]
    assert [audit.wallet_id for audit in failing] == sorted(
        wallets[users[i].pk] for i in (0, 2, 4, 6))
    by_wallet = {audit.wallet_id: audit for audit in failing}
    empty = by_wallet[wallets[users[6].pk]]
    assert (empty.posted_micros, empty.ledger_sum_micros, empty.pending_micros,
            empty.pending_holds_micros) == (5, 0, 5, 0)
    assert wallets_reconcile() == failing


def test_every_wallet_in_step_reports_nothing(make_user, price):
    for index in range(3):
        user = make_user()
        wallet_credit(user=user, amount_micros=9_000, idempotency_key=f"g{index}", memo="")
        hold_create(user=user, hold_id=f"g{index}", amount_micros=1_000, price=price,
                    model=price.model)
    assert wallet_audits_failing() == []
