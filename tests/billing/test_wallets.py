import pytest

from billing.errors import IdempotencyConflict, InsufficientFunds, InvalidAmount
from billing.models import LedgerEntry
from billing.selectors import wallet_balance
from billing.services import wallet_credit


def test_a_credit_writes_one_entry_and_raises_the_posted_balance(user, make_user):
    staff = make_user(is_staff=True)
    entry = wallet_credit(user=user, amount_micros=2_500_000, idempotency_key="c1",
                          memo="welcome", created_by=staff)
    assert entry.balance_after_micros == 2_500_000
    assert entry.created_by == staff
    assert wallet_balance(user=user).available_micros == 2_500_000


def test_the_same_idempotency_key_credits_once(user):
    first = wallet_credit(user=user, amount_micros=1_000, idempotency_key="once", memo="a")
    again = wallet_credit(user=user, amount_micros=1_000, idempotency_key="once", memo="a")
    assert first.pk == again.pk
    assert LedgerEntry.objects.count() == 1
    assert wallet_balance(user=user).posted_micros == 1_000


def test_reusing_a_key_for_a_different_credit_is_refused(user, make_user):
    wallet_credit(user=user, amount_micros=1_000, idempotency_key="k", memo="a")
    with pytest.raises(IdempotencyConflict):
        wallet_credit(user=user, amount_micros=2_000, idempotency_key="k", memo="a")
    with pytest.raises(IdempotencyConflict):
        wallet_credit(user=make_user(), amount_micros=1_000, idempotency_key="k", memo="a")


def test_a_negative_adjustment_cannot_take_the_balance_below_zero(user):
    wallet_credit(user=user, amount_micros=1_000, idempotency_key="in", memo="a")
    with pytest.raises(InsufficientFunds):
        wallet_credit(user=user, amount_micros=-1_001, idempotency_key="out", memo="oops")
    wallet_credit(user=user, amount_micros=-1_000, idempotency_key="out2", memo="fix")
    assert wallet_balance(user=user).posted_micros == 0


@pytest.mark.parametrize(("amount", "kind"), [(0, "adjustment"), (-5, "topup"), (5, "charge")])
def test_credits_that_make_no_sense_are_refused(user, amount, kind):
    with pytest.raises(InvalidAmount):
        wallet_credit(user=user, amount_micros=amount, idempotency_key="x", memo="", kind=kind)
    assert LedgerEntry.objects.count() == 0
