"""Receipts read from the ledger: one per credit that put money in, visible to the wallet's
owner only, and the billing details they are made out to."""

from __future__ import annotations

from datetime import UTC

import pytest
from django.db import transaction

from audit.actors import Actor
from audit.models import AuditEntry
from billing.models import LedgerEntry, Wallet
from billing.selectors.receipts import (
    RECEIPT_ENTRIES,
    ReceiptMethod,
    ReceiptNotFound,
    entry_has_receipt,
    receipt_entries_of,
    receipt_for,
    receipt_number,
    wallet_of_viewer,
)
from billing.services import wallet_credit
from billing.services.billing_profiles import (
    BILLING_ADDRESS_LINES_MAX,
    BILLING_ADDRESS_MAX,
    BillingProfileInvalid,
    wallet_billing_profile_set,
)
from billing.services.ledger import ledger_post
from tests.billing.receipt_credits import (
    card_topup_paid,
    charged,
    staff_credited,
    voucher_redeemed,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def payer(make_user):
    return make_user(email="payer@example.com")


def test_a_paid_card_top_up_has_a_receipt_naming_its_payment_intent(payer, stripe_keys):
    entry = card_topup_paid(payer, amount_micros=20_000_000, payment_intent="pi_3Receipt")

    receipt = receipt_for(user=payer, entry_id=entry.pk)

    assert receipt.method == ReceiptMethod.CARD
    assert receipt.method_label == "Card (Stripe)"
    assert receipt.payment_intent_id == "pi_3Receipt"
    assert receipt.voucher_code_prefix is None
    assert receipt.amount_micros == 20_000_000
    assert receipt.balance_after_micros == 20_000_000
    assert receipt.payer_name == "payer@example.com"
    assert receipt.issued_at == entry.created_at


def test_a_redeemed_voucher_has_a_receipt_naming_the_code_prefix_only(payer):
    entry, code = voucher_redeemed(payer, amount_micros=5_000_000)

    receipt = receipt_for(user=payer, entry_id=entry.pk)

    assert receipt.method == ReceiptMethod.VOUCHER
    assert receipt.voucher_code_prefix == code[:7]  # "BR-7KQM": what staff see, never the code
    assert receipt.payment_intent_id is None
    assert receipt.amount_micros == 5_000_000


@pytest.mark.parametrize("kind", [LedgerEntry.Kind.ADJUSTMENT, LedgerEntry.Kind.TOPUP])
def test_a_staff_credit_has_a_receipt_whichever_kind_staff_chose(payer, staff, kind):
    entry = staff_credited(payer, staff, amount_micros=7_500_000, kind=kind)

    receipt = receipt_for(user=payer, entry_id=entry.pk)

    assert receipt.method == ReceiptMethod.STAFF_CREDIT
    assert receipt.method_label == "Staff credit"
    assert (receipt.payment_intent_id, receipt.voucher_code_prefix) == (None, None)
    assert receipt.amount_micros == 7_500_000


def test_the_receipt_number_comes_from_the_entry_and_does_not_change(payer):
    entry, _ = voucher_redeemed(payer)

    first = receipt_for(user=payer, entry_id=entry.pk)
    voucher_redeemed(payer)  # later entries change nothing about an earlier receipt
    again = receipt_for(user=payer, entry_id=entry.pk)

    assert first.number == again.number == receipt_number(entry.pk) == f"R-{entry.pk:08d}"
    assert first.issued_at == again.issued_at
    assert first.balance_after_micros == again.balance_after_micros


def test_another_users_receipt_is_not_found(payer, make_user):
    entry, _ = voucher_redeemed(payer)
    stranger = make_user()

    with pytest.raises(ReceiptNotFound):
        receipt_for(user=stranger, entry_id=entry.pk)
    assert not receipt_entries_of(user=stranger).exists()


def test_a_charge_or_a_debit_has_no_receipt(payer, staff):
    staff_credited(payer, staff, amount_micros=1_000_000)
    charge = charged(payer, amount_micros=1_000)
    debit = wallet_credit(user=payer, amount_micros=-2_000, idempotency_key="admin:debit",
                          memo="correction")

    for entry in (charge, debit):
        assert not entry_has_receipt(entry)
        with pytest.raises(ReceiptNotFound):
            receipt_for(user=payer, entry_id=entry.pk)


def test_money_returned_after_a_failed_card_refund_has_no_receipt(payer, staff):
    staff_credited(payer, staff)
    with transaction.atomic():
        wallet = Wallet.objects.select_for_update().get(user=payer)
        returned = ledger_post(wallet=wallet, kind=LedgerEntry.Kind.ADJUSTMENT,
                               amount_micros=5_000, idempotency_key="card_refund_returned:1")

    assert not entry_has_receipt(returned)
    assert not receipt_entries_of(user=payer).filter(pk=returned.pk).exists()


def test_the_row_rule_and_the_query_pick_the_same_entries(payer, staff, stripe_keys):
    card_topup_paid(payer)
    voucher_redeemed(payer)
    staff_credited(payer, staff)
    charged(payer)
    wallet_credit(user=payer, amount_micros=-1, idempotency_key="admin:minus", memo="x")

    entries = LedgerEntry.objects.filter(wallet__user=payer)
    by_rule = {entry.pk for entry in entries if entry_has_receipt(entry)}
    by_query = set(entries.filter(RECEIPT_ENTRIES).values_list("pk", flat=True))

    assert by_rule == by_query
    assert len(by_rule) == 3


def test_receipts_list_newest_first(payer, staff):
    older = staff_credited(payer, staff)
    newer, _ = voucher_redeemed(payer)

    assert list(receipt_entries_of(user=payer).values_list("pk", flat=True)) == [newer.pk,
                                                                                   older.pk]


def test_a_receipt_is_issued_in_the_operators_name(payer, settings):
    settings.ROUTER_RECEIPT_ISSUER = "Example Compute Ltd"
    entry, _ = voucher_redeemed(payer)

    assert receipt_for(user=payer, entry_id=entry.pk).issuer == "Example Compute Ltd"


def test_the_receipt_date_is_the_credits_moment_in_utc(payer):
    entry, _ = voucher_redeemed(payer)

    issued = receipt_for(user=payer, entry_id=entry.pk).issued_at

    assert issued.astimezone(UTC) == entry.created_at.astimezone(UTC)


class TestBillingDetails:
    def test_receipts_name_the_billing_name_and_address_once_set(self, payer):
        entry, _ = voucher_redeemed(payer)
        wallet = wallet_of_viewer(user=payer)

        wallet_billing_profile_set(wallet=wallet, billing_name="  Acme   GmbH ",
                                   billing_address="Hauptstr. 1\r\n\r\n10115  Berlin\r\nDE ")

        receipt = receipt_for(user=payer, entry_id=entry.pk)
        assert receipt.payer_name == "Acme GmbH"
        assert receipt.payer_address == "Hauptstr. 1\n10115 Berlin\nDE"

    def test_an_empty_name_falls_back_to_the_email(self, payer):
        entry, _ = voucher_redeemed(payer)
        wallet = wallet_of_viewer(user=payer)
        wallet_billing_profile_set(wallet=wallet, billing_name="Acme", billing_address="")

        wallet_billing_profile_set(wallet=wallet, billing_name=" ", billing_address="")

        assert receipt_for(user=payer, entry_id=entry.pk).payer_name == "payer@example.com"

    @pytest.mark.parametrize(("name", "address", "message"), [
        ("x" * 201, "", "at most 200 characters"),
        ("Acme", "y" * (BILLING_ADDRESS_MAX + 1), f"at most {BILLING_ADDRESS_MAX} characters"),
        ("Acme", "\n".join(["line"] * (BILLING_ADDRESS_LINES_MAX + 1)),
         f"at most {BILLING_ADDRESS_LINES_MAX} lines"),
        ("Acme\u202eEvil", "", "control characters"),
        ("Acme", "Street\x001", "control characters"),
    ])
    def test_details_that_do_not_fit_a_receipt_are_refused(self, payer, name, address,
                                                           message):
        wallet = wallet_of_viewer(user=payer)

        with pytest.raises(BillingProfileInvalid, match=message):
            wallet_billing_profile_set(wallet=wallet, billing_name=name,
                                       billing_address=address)

        wallet.refresh_from_db()
        assert (wallet.billing_name, wallet.billing_address) == ("", "")

    def test_saving_details_never_writes_back_a_stale_balance(self, payer, staff):
        stale = wallet_of_viewer(user=payer)  # read before the credit below
        staff_credited(payer, staff, amount_micros=3_000_000)

        wallet_billing_profile_set(wallet=stale, billing_name="Acme", billing_address="")

        fresh = Wallet.objects.get(pk=stale.pk)
        assert fresh.posted_micros == 3_000_000
        assert fresh.billing_name == "Acme"

    def test_a_staff_change_is_audited_and_the_users_own_is_not(self, payer, staff):
        wallet = wallet_of_viewer(user=payer)

        wallet_billing_profile_set(wallet=wallet, billing_name="Mine", billing_address="")
        assert not AuditEntry.objects.filter(action="wallet.billing_profile").exists()

        wallet_billing_profile_set(wallet=wallet, billing_name="Acme Ltd", billing_address="",
                                   actor=Actor(user=staff, label=staff.email))
        [row] = AuditEntry.objects.filter(action="wallet.billing_profile")
        assert row.before["billing_name"] == "Mine"
        assert row.after["billing_name"] == "Acme Ltd"
        assert row.actor == staff
