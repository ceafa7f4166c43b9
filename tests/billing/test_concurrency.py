"""Money under real concurrency: threads with their own PostgreSQL connections."""

from __future__ import annotations

import pytest

from billing.errors import InsufficientFunds
from billing.models import Hold, LedgerEntry, Wallet
from billing.selectors import wallet_audit
from billing.services import UsageReport, hold_create, hold_settle, wallet_credit
from tests.concurrency import run_concurrently

pytestmark = pytest.mark.django_db(transaction=True)

HOLD_MICROS = 3_000


@pytest.mark.parametrize("round_", range(3))
def test_200_concurrent_holds_against_a_wallet_covering_33_let_exactly_33_through(
    user, price, round_
):
    wallet_credit(user=user, amount_micros=33 * HOLD_MICROS + HOLD_MICROS - 1,
                  idempotency_key=f"fund-{round_}", memo="exactly 33 holds and a bit")

    def reserve(index: int) -> Hold:
        return hold_create(user=user, hold_id=f"r{round_}-{index}", amount_micros=HOLD_MICROS,
                           price=price, model=price.model)

    results = run_concurrently(reserve, [(i,) for i in range(200)])

    granted = [r for r in results if isinstance(r, Hold)]
    refused = [r for r in results if isinstance(r, InsufficientFunds)]
    assert len(granted) == 33, [r for r in results if not isinstance(r, Hold | InsufficientFunds)]
    assert len(refused) == 167
    wallet = Wallet.objects.get(user=user)
    assert wallet.pending_micros == 33 * HOLD_MICROS
    assert wallet.available_micros == HOLD_MICROS - 1 >= 0
    assert Hold.objects.filter(status="pending").count() == 33
    assert wallet_audit(wallet_id=wallet.pk).consistent


def test_10_concurrent_settles_of_one_hold_charge_once(user, price):
    wallet_credit(user=user, amount_micros=10_000, idempotency_key="fund", memo="")
    hold_create(user=user, hold_id="one", amount_micros=5_000, price=price, model=price.model)
    usage = UsageReport(prompt_tokens=100, completion_tokens=100)

    results = run_concurrently(lambda: hold_settle(hold_id="one", usage=usage),
                               [() for _ in range(10)])

    assert all(r.charged_micros == 300 for r in results), results
    assert sum(not r.already_resolved for r in results) == 1
    assert LedgerEntry.objects.filter(kind="charge").count() == 1
    wallet = Wallet.objects.get(user=user)
    assert (wallet.posted_micros, wallet.pending_micros) == (9_700, 0)
    assert wallet_audit(wallet_id=wallet.pk).consistent


def test_concurrent_credits_with_one_idempotency_key_credit_once(user):
    results = run_concurrently(
        lambda: wallet_credit(user=user, amount_micros=7, idempotency_key="same", memo=""),
        [() for _ in range(20)],
    )
    assert len({r.pk for r in results}) == 1, results
    assert Wallet.objects.get(user=user).posted_micros == 7
