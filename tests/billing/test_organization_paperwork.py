"""The paperwork of an organization's money: who sees its receipts (owners and billing
members, by the role table; nobody else, and never another organization's), whom they are
made out to, who is told when its auto top-up switches off, and its monthly statement."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from billing.models import AutoTopUp, Wallet
from billing.selectors import wallet_contacts
from billing.selectors.auto_topup import month_of
from billing.selectors.receipts import (
    ReceiptNotFound,
    receipt_entries_of,
    receipt_for,
    wallet_of_viewer,
)
from billing.selectors.statements import statement, statement_entries, statement_months
from billing.services import wallet_credit
from billing.services.auto_topup import auto_topups_start_due
from billing.services.billing_profiles import wallet_billing_profile_set
from billing.services.outbox import outbox_drain
from organizations.services import (
    invitation_accept,
    invitation_create,
    membership_role_set,
    organization_delete,
)
from tests.billing.auto_topup_fakes import DECLINED, FakeStripeAutoTopUp
from tests.billing.organization_people import Acme, acme_made

pytestmark = pytest.mark.django_db

USD = 1_000_000
SEE_BILLING = ("owner", "co-owner", "billing")
SEE_NOTHING = ("admin", "member", "outsider")


@pytest.fixture
def acme() -> Acme:
    return acme_made()


def credit(wallet: Wallet, micros: int, key: str, kind: str = "topup"):
    return wallet_credit(wallet=wallet, amount_micros=micros, idempotency_key=key,
                         memo="test credit", kind=kind)


class TestWhoSeesReceipts:
    @pytest.mark.parametrize("who", SEE_BILLING)
    def test_owners_and_billing_members_see_the_organizations_receipts(self, acme, who):
        entry = credit(acme.wallet, 30 * USD, "org-1")

        receipt = receipt_for(user=acme.people[who], entry_id=entry.pk, wallet=acme.wallet)

        assert (receipt.entry_id, receipt.amount_micros) == (entry.pk, 30 * USD)
        assert wallet_of_viewer(user=acme.people[who],
                                organization_id=acme.organization.pk) == acme.wallet

    @pytest.mark.parametrize("who", SEE_NOTHING)
    def test_admins_members_and_strangers_are_told_there_is_no_such_receipt(self, acme, who):
        entry = credit(acme.wallet, 30 * USD, "org-1")

        with pytest.raises(ReceiptNotFound):
            receipt_for(user=acme.people[who], entry_id=entry.pk, wallet=acme.wallet)
        with pytest.raises(ReceiptNotFound):  # nor as one of their own
            receipt_for(user=acme.people[who], entry_id=entry.pk)
        assert not receipt_entries_of(user=acme.people[who], wallet=acme.wallet).exists()
        assert wallet_of_viewer(user=acme.people[who],
                                organization_id=acme.organization.pk) is None

    def test_another_organizations_entry_is_not_found_under_this_one_even_for_its_owner(
        self, acme
    ):
        # The stranger joins as an owner here too: they may see both, one at a time.
        _, token = invitation_create(organization=acme.organization, actor=acme.people["owner"],
                                     email="outsider@acme.example", role="owner")
        invitation_accept(token=token, user=acme.people["outsider"])
        theirs = credit(acme.other_wallet, 9 * USD, "other-1")

        with pytest.raises(ReceiptNotFound):
            receipt_for(user=acme.people["outsider"], entry_id=theirs.pk, wallet=acme.wallet)
        with pytest.raises(ReceiptNotFound):
            receipt_for(user=acme.people["owner"], entry_id=theirs.pk, wallet=acme.wallet)
        assert receipt_for(user=acme.people["outsider"], entry_id=theirs.pk,
                           wallet=acme.other_wallet).amount_micros == 9 * USD

    def test_a_members_own_receipts_and_the_organizations_are_listed_apart(self, acme):
        own = credit(Wallet.objects.get(user=acme.people["billing"]), 2 * USD, "own-1")
        org = credit(acme.wallet, 30 * USD, "org-1")
        billing = acme.people["billing"]

        assert list(receipt_entries_of(user=billing).values_list("pk", flat=True)) == [own.pk]
        assert list(receipt_entries_of(user=billing, wallet=acme.wallet)
                    .values_list("pk", flat=True)) == [org.pk]
        with pytest.raises(ReceiptNotFound):
            receipt_for(user=billing, entry_id=own.pk, wallet=acme.wallet)

    def test_a_role_taken_away_takes_the_receipts_with_it(self, acme):
        entry = credit(acme.wallet, 30 * USD, "org-1")
        membership_role_set(organization=acme.organization, actor=acme.people["owner"],
                            user=acme.people["billing"], role="member")

        with pytest.raises(ReceiptNotFound):
            receipt_for(user=acme.people["billing"], entry_id=entry.pk, wallet=acme.wallet)

    def test_a_deleted_organizations_receipts_are_nobodys(self, acme):
        entry = credit(acme.wallet, 30 * USD, "org-1")
        organization_delete(organization=acme.organization, actor=acme.people["owner"])

        with pytest.raises(ReceiptNotFound):
            receipt_for(user=acme.people["owner"], entry_id=entry.pk, wallet=acme.wallet)


class TestWhomReceiptsName:
    def test_without_a_billing_name_a_receipt_names_the_organization(self, acme):
        entry = credit(acme.wallet, 30 * USD, "org-1")

        receipt = receipt_for(user=acme.people["billing"], entry_id=entry.pk,
                              wallet=acme.wallet)

        assert (receipt.payer_name, receipt.payer_address) == ("Acme", "")

    def test_the_billing_name_and_address_set_for_it_are_on_every_receipt(self, acme):
        earlier = credit(acme.wallet, 30 * USD, "org-1")
        wallet_billing_profile_set(wallet=acme.wallet, billing_name="Acme Holdings Ltd",
                                   billing_address="1 Main Street\nSpringfield")
        later = credit(acme.wallet, 5 * USD, "org-2", kind="voucher")

        for entry in (earlier, later):
            receipt = receipt_for(user=acme.people["owner"], entry_id=entry.pk,
                                  wallet=acme.wallet)
            assert receipt.payer_name == "Acme Holdings Ltd"
            assert receipt.payer_address == "1 Main Street\nSpringfield"
        # The payer's own receipts keep their own details.
        assert Wallet.objects.get(user=acme.people["owner"]).billing_name == ""


class TestWhoIsTold:
    def test_an_organizations_contacts_are_its_owners_then_billing_members(self, acme):
        assert wallet_contacts(acme.wallet) == [
            "co-owner@acme.example", "owner@acme.example", "billing@acme.example"]
        assert wallet_contacts(acme.other_wallet) == ["outsider@acme.example"]

    def test_contacts_follow_the_roles_as_they_are_now(self, acme):
        membership_role_set(organization=acme.organization, actor=acme.people["owner"],
                            user=acme.people["admin"], role="billing")
        membership_role_set(organization=acme.organization, actor=acme.people["owner"],
                            user=acme.people["co-owner"], role="member")

        assert wallet_contacts(acme.wallet) == [
            "owner@acme.example", "admin@acme.example", "billing@acme.example"]

    def test_a_deleted_organization_has_nobody_to_tell(self, acme):
        organization_delete(organization=acme.organization, actor=acme.people["owner"])

        assert wallet_contacts(acme.wallet) == []

    def test_a_person_is_still_told_alone(self, acme):
        assert wallet_contacts(Wallet.objects.get(user=acme.people["admin"])) == [
            "admin@acme.example"]


@pytest.fixture
def stripe_api(stripe_keys) -> Iterator[FakeStripeAutoTopUp]:
    with FakeStripeAutoTopUp() as server:
        stripe_keys.STRIPE_API_BASE = server.url
        yield server


def test_a_declined_organization_card_switches_auto_top_up_off_and_emails_its_billing_people(
    acme, stripe_api
):
    credit(acme.wallet, 1 * USD, "org-low")
    AutoTopUp.objects.create(
        wallet=acme.wallet, enabled=True, threshold_micros=5 * USD, amount_micros=20 * USD,
        monthly_ceiling_micros=100 * USD, month=month_of(timezone.now()),
        stripe_customer_id=f"cus_test_wallet_{acme.wallet.pk}", payment_method_id=DECLINED)

    assert len(auto_topups_start_due()) == 1
    outbox_drain()

    row = AutoTopUp.objects.get()
    assert row.enabled is False
    assert "insufficient funds" in row.disabled_reason
    [email] = mail.outbox
    assert sorted(email.to) == ["billing@acme.example", "co-owner@acme.example",
                                "owner@acme.example"]
    assert "auto top-up is off" in email.subject
    assert f"to {acme.organization.name}'s Binom Router balance" in email.body
    assert acme.wallet.posted_micros == 1 * USD  # nothing was credited


class TestStatement:
    def test_an_organizations_statement_is_its_wallets_own_and_reconciles(self, acme):
        month = timezone.localdate().replace(day=1)
        credit(acme.wallet, 30 * USD, "org-1")
        credit(acme.wallet, -2 * USD, "org-2", kind="adjustment")
        credit(Wallet.objects.get(user=acme.people["billing"]), 7 * USD, "own-1")

        s = statement(wallet=acme.wallet, month=month)

        assert (s.holder, s.holder_ref, s.user) == ("Acme", f"org{acme.organization.pk}", None)
        assert (s.opening_micros, s.closing_micros, s.movement_micros) == (0, 28 * USD,
                                                                            28 * USD)
        assert s.reconciles
        assert s.section("topups").total_micros == 30 * USD
        assert statement_entries(wallet=acme.wallet, month=month).count() == 2
        assert list(statement_months(wallet=acme.wallet)) == [month]

    def test_a_persons_statement_leaves_the_organizations_money_out(self, acme):
        billing = acme.people["billing"]
        credit(acme.wallet, 30 * USD, "org-1")
        credit(Wallet.objects.get(user=billing), 7 * USD, "own-1")
        month = timezone.localdate().replace(day=1)

        mine = statement(user=billing, month=month)
        by_wallet = statement(wallet=Wallet.objects.get(user=billing), month=month)

        assert (mine.holder, mine.user, mine.closing_micros) == (billing.email, billing, 7 * USD)
        assert by_wallet == mine

    def test_a_month_before_any_entry_is_empty(self, acme):
        s = statement(wallet=acme.wallet, month=date(2020, 1, 1))

        assert (s.opening_micros, s.closing_micros, s.movement_micros) == (0, 0, 0)


class TestStaff:
    def test_staff_see_an_organizations_statement_from_its_wallet_page(self, acme,
                                                                       admin_client):
        credit(acme.wallet, 30 * USD, "org-1")

        page = admin_client.get(reverse("admin:billing_wallet_statement",
                                        args=[acme.wallet.pk]))
        csv_response = admin_client.get(reverse("admin:billing_wallet_statement_csv",
                                                args=[acme.wallet.pk]))

        assert page.status_code == 200
        assert page.context["statement"].holder == "Acme"
        assert "Statement of Acme" in page.text
        assert csv_response["Content-Disposition"].endswith(
            f'-org{acme.organization.pk}.csv"')

    def test_the_months_ledger_names_an_organizations_entries_by_the_organization(
        self, acme, admin_client
    ):
        credit(acme.wallet, 30 * USD, "org-1")
        credit(Wallet.objects.get(user=acme.people["billing"]), 7 * USD, "own-1")

        response = admin_client.get(reverse("admin:billing_ledgerentry_export"),
                                    {"month": f"{timezone.now():%Y-%m}"})

        rows = list(csv.DictReader(io.StringIO(b"".join(response).decode())))
        assert {row["user"] for row in rows} == {
            f"organization {acme.organization.pk}: Acme", "billing@acme.example"}
