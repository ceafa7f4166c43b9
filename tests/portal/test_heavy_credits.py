"""A busy wallet's credits stay on the top-ups page: they are read by kind, not picked out
of the latest entries (a heavy user's latest hundreds of entries are all charges), through
the partial index made for them (billing 0022)."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.urls import reverse

from billing.models import LedgerEntry, Wallet
from billing.selectors.receipts import receipt_entries_of
from billing.selectors.wallets import wallet_credits_of
from billing.services import wallet_credit
from billing.services.ledger import ledger_post
from billing.services.vouchers import voucher_batch_create, voucher_redeem
from tests.billing.plans import plan_of, uses

pytestmark = pytest.mark.django_db

CHARGES = 300


def _charges(user, count: int, tag: str) -> None:
    """``count`` charges of 1 µ$ each, after the credits: the newest entries by far."""
    with transaction.atomic():
        wallet = Wallet.objects.select_for_update().get(user=user)
        for n in range(count):
            ledger_post(wallet=wallet, kind=LedgerEntry.Kind.CHARGE, amount_micros=-1,
                        idempotency_key=f"{tag}-charge-{n}", memo=f"{tag} charge {n}")


@pytest.fixture
def heavy(member, make_user):
    """The member's four kinds of credit (a top-up from the fixture, a voucher, a refund, an
    adjustment each way), then 300 charges; and another user with a credit of their own."""
    [code] = voucher_batch_create(amount_micros=2_000_000, count=1, memo="meetup voucher")
    voucher_redeem(user=member, code=code)
    wallet_credit(user=member, amount_micros=300_000, idempotency_key="refund-1",
                  memo="refund of a failed request", kind=LedgerEntry.Kind.REFUND)
    wallet_credit(user=member, amount_micros=400_000, idempotency_key="adj-plus",
                  memo="goodwill adjustment", kind=LedgerEntry.Kind.ADJUSTMENT)
    wallet_credit(user=member, amount_micros=-100_000, idempotency_key="adj-minus",
                  memo="correction adjustment", kind=LedgerEntry.Kind.ADJUSTMENT)
    _charges(member, CHARGES, "member")
    other = make_user(email="other@example.com")
    wallet_credit(user=other, amount_micros=9_000_000, idempotency_key="other-topup",
                  memo="someone else's top-up", kind=LedgerEntry.Kind.TOPUP)
    return member


def test_a_heavy_users_credits_are_listed_after_300_charges(member_client, heavy):
    page = member_client.get(reverse("portal:topups")).content.decode()

    credits = LedgerEntry.objects.filter(wallet__user=heavy).exclude(kind="charge")
    assert sorted(credits.values_list("kind", flat=True)) == [
        "adjustment", "adjustment", "refund", "topup", "voucher"]
    for entry in credits:  # "welcome credit", "Voucher XXXX", "refund of ...", ...
        assert entry.memo
        assert f"<td>{entry.memo}</td>" in page, entry
    assert "member charge" not in page
    assert "someone else's top-up" not in page


def test_credits_are_the_newest_of_the_credit_kinds_only(heavy):
    credits = wallet_credits_of(user=heavy, limit=50)

    expected = list(LedgerEntry.objects.filter(
        wallet__user=heavy, kind__in=["topup", "voucher", "refund", "adjustment"])
        .order_by("-id"))
    assert [entry.pk for entry in credits] == [entry.pk for entry in expected]
    assert len(credits) == 5
    assert [entry.memo for entry in wallet_credits_of(user=heavy, limit=2)] == [
        "correction adjustment", "goodwill adjustment"]


def test_a_user_without_a_wallet_has_no_credits(make_user):
    assert wallet_credits_of(user=make_user(email="new@example.com")) == []


@pytest.mark.skipif("connection.vendor != 'postgresql'",
                    reason="the plan of PostgreSQL is what is checked")
def test_the_credits_are_one_scan_of_the_partial_index_in_its_order(heavy):
    assert connection.vendor == "postgresql"

    plan = plan_of(lambda: wallet_credits_of(user=heavy, limit=50))

    # The index's own order serves ORDER BY id DESC LIMIT 50: no sort, no charge read.
    uses(plan, "billing_ledger_wallet_credits")


def test_a_heavy_users_receipts_are_their_paid_in_credits_newest_first(heavy):
    receipts = list(receipt_entries_of(user=heavy))

    # Top-ups, vouchers and positive adjustments have receipts; refunds of requests,
    # negative adjustments and charges do not; another user's never.
    assert [entry.kind for entry in receipts] == ["adjustment", "voucher", "topup"]
    assert [entry.pk for entry in receipts] == sorted((e.pk for e in receipts), reverse=True)
    assert all(entry.wallet.user_id == heavy.pk for entry in receipts)


@pytest.mark.skipif("connection.vendor != 'postgresql'",
                    reason="the plan of PostgreSQL is what is checked")
def test_receipts_are_read_through_the_partial_index_not_the_whole_ledger(heavy):
    assert connection.vendor == "postgresql"

    plan = plan_of(lambda: list(receipt_entries_of(user=heavy)[:20]))

    # With the wallet as a subquery PostgreSQL read the wallet's whole ledger index.
    uses(plan, "billing_ledger_wallet_credits")
