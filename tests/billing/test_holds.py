from datetime import timedelta

import pytest
from django.utils import timezone

from billing.errors import HoldNotFound, IdempotencyConflict, InsufficientFunds
from billing.models import Hold, LedgerEntry, UsageRecord
from billing.selectors import wallet_audit, wallet_balance
from billing.services import (
    UsageReport,
    hold_create,
    hold_expire,
    hold_settle,
    hold_void,
    wallet_credit,
)


@pytest.fixture
def funded(user):
    wallet_credit(user=user, amount_micros=10_000, idempotency_key="fund", memo="test")
    return user


def _hold(user, price, hold_id="req-1", amount=4_000):
    return hold_create(user=user, hold_id=hold_id, amount_micros=amount, price=price,
                       model=price.model)


def test_a_hold_reserves_money_without_moving_the_posted_balance(funded, price):
    _hold(funded, price)
    balance = wallet_balance(user=funded)
    assert (balance.posted_micros, balance.pending_micros) == (10_000, 4_000)
    assert balance.available_micros == 6_000


def test_it_refuses_a_hold_the_available_balance_cannot_cover(funded, price):
    _hold(funded, price, "a", 6_000)
    with pytest.raises(InsufficientFunds) as refused:
        _hold(funded, price, "b", 4_001)
    assert (refused.value.needed_micros, refused.value.available_micros) == (4_001, 4_000)
    assert "0.004001" in str(refused.value)
    assert "0.004000" in str(refused.value)
    assert not Hold.objects.filter(pk="b").exists()


def test_creating_the_same_hold_twice_reserves_once(funded, price):
    first = _hold(funded, price)
    assert _hold(funded, price) == first
    assert wallet_balance(user=funded).pending_micros == 4_000
    with pytest.raises(IdempotencyConflict):
        _hold(funded, price, amount=5_000)


def test_settling_charges_the_actual_cost_and_releases_the_rest(funded, price):
    _hold(funded, price)
    outcome = hold_settle(hold_id="req-1", usage=UsageReport(
        prompt_tokens=100, completion_tokens=50, worker="w1", latency_ms=12, ttft_ms=3))
    # 100 input tokens at 1 µ$ and 50 output tokens at 2 µ$.
    assert outcome.charged_micros == 200
    balance = wallet_balance(user=funded)
    assert (balance.posted_micros, balance.pending_micros) == (9_800, 0)
    entry = LedgerEntry.objects.get(kind="charge")
    assert (entry.amount_micros, entry.balance_after_micros, entry.hold_id) == (-200, 9_800,
                                                                                "req-1")
    record = UsageRecord.objects.get(request_id="req-1")
    assert (record.cost_micros, record.price, record.worker) == (200, price, "w1")
    assert record.user == funded
    assert Hold.objects.get(pk="req-1").status == Hold.Status.POSTED


def test_settling_twice_charges_once(funded, price):
    _hold(funded, price)
    usage = UsageReport(prompt_tokens=10, completion_tokens=10)
    first = hold_settle(hold_id="req-1", usage=usage)
    second = hold_settle(hold_id="req-1", usage=usage)
    assert not first.already_resolved
    assert second.already_resolved
    assert second.charged_micros == first.charged_micros == 30
    assert LedgerEntry.objects.filter(kind="charge").count() == 1


def test_a_cost_above_the_hold_is_capped_at_the_hold(funded, price):
    _hold(funded, price, amount=100)
    outcome = hold_settle(hold_id="req-1", usage=UsageReport(prompt_tokens=1000,
                                                             completion_tokens=0))
    assert outcome.charged_micros == 100
    assert wallet_balance(user=funded).posted_micros == 9_900


def test_a_settle_that_costs_nothing_writes_no_ledger_entry(funded, price):
    _hold(funded, price)
    hold_settle(hold_id="req-1", usage=UsageReport(prompt_tokens=0, completion_tokens=0))
    assert not LedgerEntry.objects.filter(kind="charge").exists()
    assert UsageRecord.objects.get(request_id="req-1").cost_micros == 0
    assert wallet_balance(user=funded).pending_micros == 0


@pytest.mark.parametrize(("release", "status"), [(hold_void, "voided"),
                                                 (hold_expire, "expired")])
def test_a_released_hold_charges_nothing_and_cannot_be_settled_after(funded, price, release,
                                                                     status):
    _hold(funded, price)
    release(hold_id="req-1", usage=UsageReport(prompt_tokens=5, completion_tokens=0,
                                               status="upstream_error"))
    assert Hold.objects.get(pk="req-1").status == status
    assert UsageRecord.objects.get(request_id="req-1").cost_micros == 0
    late = hold_settle(hold_id="req-1", usage=UsageReport(prompt_tokens=5, completion_tokens=5))
    assert late.already_resolved
    assert late.charged_micros == 0
    assert wallet_balance(user=funded) == wallet_balance(user=funded).__class__(10_000, 0)
    assert wallet_audit(wallet_id=funded.wallet.pk).consistent


def test_resolving_an_unknown_hold_says_so(db):
    with pytest.raises(HoldNotFound):
        hold_void(hold_id="nope")


def test_a_hold_expires_at_the_configured_ttl_by_default(funded, price, settings):
    settings.ROUTER_HOLD_TTL_SECONDS = 60
    hold = _hold(funded, price)
    assert timedelta(seconds=55) < hold.expires_at - timezone.now() <= timedelta(seconds=60)
