"""The receipt page (printable), its PDF, the receipt links of the top-ups page, and the
billing details form."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.urls import reverse
from pypdf import PdfReader

from billing.models import Wallet
from billing.services import wallet_credit
from tests.billing.receipt_credits import (
    card_topup_paid,
    charged,
    staff_credited,
    voucher_redeemed,
)
from tests.portal.conftest import money_html

pytestmark = pytest.mark.django_db


def _page(client, entry_id: int) -> str:
    response = client.get(reverse("portal:receipt", args=[entry_id]))
    assert response.status_code == 200
    return response.content.decode()


def _testid(page: str, testid: str) -> str:
    """The text inside the element marked ``data-testid=testid``."""
    match = re.search(rf'data-testid="{testid}"[^>]*>(.*?)</(?:dd|p|td|time)>', page, re.S)
    assert match, f"no {testid} on the page"
    return match.group(1).strip()


def test_a_paid_card_top_up_has_a_printable_receipt(member_client, member, stripe_keys):
    entry = card_topup_paid(member, amount_micros=25_000_000, payment_intent="pi_3CardPaid")

    page = _page(member_client, entry.pk)

    assert _testid(page, "receipt-number") == f"R-{entry.pk:08d}"
    assert _testid(page, "receipt-amount") == money_html(25_000_000)
    assert _testid(page, "receipt-balance-after") == money_html(35_000_000)
    assert "Card (Stripe)" in _testid(page, "receipt-method")
    assert "<code>pi_3CardPaid</code>" in _testid(page, "receipt-method")
    assert _testid(page, "receipt-payer") == "member@example.com"
    assert _testid(page, "receipt-issuer") == "Binom Router"


def test_the_receipt_date_is_iso_8601_in_utc_and_says_so(member_client, member):
    entry, _ = voucher_redeemed(member)

    page = _page(member_client, entry.pk)

    expected = entry.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert _testid(page, "receipt-date") == expected
    assert "Date (UTC)" in page


def test_a_voucher_receipt_shows_the_code_prefix_but_never_the_code(member_client, member):
    entry, code = voucher_redeemed(member, amount_micros=5_000_000)

    page = _page(member_client, entry.pk)

    assert _testid(page, "receipt-amount") == money_html(5_000_000)
    method = _testid(page, "receipt-method")
    assert method.startswith("Voucher")
    assert f"<code>{code[:7]}-…</code>" in method
    assert code not in page


def test_a_staff_credit_has_a_receipt(member_client, member, staff):
    entry = staff_credited(member, staff, amount_micros=7_500_000)

    page = _page(member_client, entry.pk)

    assert _testid(page, "receipt-amount") == money_html(7_500_000)
    assert _testid(page, "receipt-method") == "Staff credit"


def test_the_receipt_names_the_operator_set_in_the_settings(member_client, member, settings):
    settings.ROUTER_RECEIPT_ISSUER = "Example Compute Ltd"
    entry, _ = voucher_redeemed(member)

    assert _testid(_page(member_client, entry.pk), "receipt-issuer") == "Example Compute Ltd"


def test_another_users_receipt_is_a_404_page_and_pdf(member_client, other):
    entry, _ = voucher_redeemed(other)

    assert member_client.get(reverse("portal:receipt", args=[entry.pk])).status_code == 404
    assert member_client.get(reverse("portal:receipt_pdf", args=[entry.pk])).status_code == 404


def test_a_charge_has_no_receipt(member_client, member):
    entry = charged(member)

    assert member_client.get(reverse("portal:receipt", args=[entry.pk])).status_code == 404
    assert member_client.get(reverse("portal:receipt_pdf", args=[entry.pk])).status_code == 404


def test_a_receipt_needs_a_signed_in_user(client, member):
    entry, _ = voucher_redeemed(member)

    response = client.get(reverse("portal:receipt", args=[entry.pk]))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("portal:login"))


def test_the_page_prints_the_receipt_without_the_portal_around_it(member_client, member):
    entry, _ = voucher_redeemed(member)

    page = _page(member_client, entry.pk)

    assert 'href="/static/portal/receipt.css"' in page
    assert re.search(r'<nav class="receipt-actions no-print"', page)
    css = Path(finders.find("portal/receipt.css")).read_text()
    hidden_on_paper = re.search(r"@media print \{\s*([^{]+)\{\s*display: none",
                                css).group(1)
    for chrome in (".topbar", ".footer", ".no-print", "nav"):
        assert chrome in hidden_on_paper, chrome


def test_the_top_ups_page_links_each_credit_to_its_receipt(member_client, member, staff):
    voucher_entry, _ = voucher_redeemed(member)
    credit = staff_credited(member, staff)
    charged(member)  # not a credit: not on the page at all

    page = member_client.get(reverse("portal:topups")).content.decode()

    links = re.findall(r'href="/topups/receipts/(\d+)/" data-testid="receipt-link">([^<]+)<',
                       page)
    welcome = member.wallet.entries.get(idempotency_key=f"fund-{member.pk}")
    assert {int(pk) for pk, _ in links} == {voucher_entry.pk, credit.pk, welcome.pk}
    assert (str(credit.pk), f"R-{credit.pk:08d}") in links


def test_a_debit_on_the_top_ups_page_has_no_receipt_link(member_client, member):
    debit = wallet_credit(user=member, amount_micros=-1_000_000, idempotency_key="admin:d",
                          memo="correction")

    page = member_client.get(reverse("portal:topups")).content.decode()

    assert "correction" in page
    assert f"/topups/receipts/{debit.pk}/" not in page


class TestPdf:
    def test_the_pdf_is_drawn_from_the_receipt(self, member_client, member):
        entry, _ = voucher_redeemed(member, amount_micros=5_000_000)
        Wallet.objects.filter(user=member).update(billing_name="Acme GmbH",
                                                  billing_address="Hauptstr. 1\nBerlin")

        response = member_client.get(reverse("portal:receipt_pdf", args=[entry.pk]))

        assert response.status_code == 200
        assert response["Content-Type"] == "application/pdf"
        assert response["Cache-Control"] == "private, no-store"
        assert f'filename="R-{entry.pk:08d}.pdf"' in response["Content-Disposition"]
        assert response.content.startswith(b"%PDF")
        text = "\n".join(page.extract_text() for page in PdfReader(
            io.BytesIO(response.content)).pages)
        assert "$5.000000" in text
        assert f"R-{entry.pk:08d}" in text
        assert "Acme GmbH" in text
        assert "Hauptstr. 1" in text
        # Only the receipt: none of the portal's navigation is drawn.
        assert "Dashboard" not in text
        assert "Log out" not in text

    def test_the_page_links_the_pdf(self, member_client, member):
        entry, _ = voucher_redeemed(member)

        page = _page(member_client, entry.pk)

        assert f'href="/topups/receipts/{entry.pk}/receipt.pdf"' in page

    def test_without_weasyprint_there_is_no_pdf_but_the_page_still_prints(
            self, member_client, member, monkeypatch):
        monkeypatch.setattr("portal.views.receipts.receipt_pdf_available", lambda: False)
        entry, _ = voucher_redeemed(member)

        page = _page(member_client, entry.pk)
        pdf = member_client.get(reverse("portal:receipt_pdf", args=[entry.pk]))

        assert "receipt-pdf-link" not in page
        assert pdf.status_code == 404


class TestBillingDetailsForm:
    def test_saved_details_are_shown_on_receipts(self, member_client, member):
        entry, _ = voucher_redeemed(member)

        response = member_client.post(reverse("portal:billing_details"), {
            "billing_name": "Acme GmbH", "billing_address": "Hauptstr. 1\r\n10115 Berlin"})

        assert response.status_code == 302
        page = _page(member_client, entry.pk)
        assert _testid(page, "receipt-payer") == "Acme GmbH"
        assert _testid(page, "receipt-address") == "Hauptstr. 1<br>10115 Berlin"

    def test_the_form_shows_the_current_details(self, member_client, member):
        Wallet.objects.filter(user=member).update(billing_name="Acme GmbH")

        page = member_client.get(reverse("portal:billing_details")).content.decode()

        assert 'value="Acme GmbH"' in page

    @pytest.mark.parametrize(("data", "message"), [
        ({"billing_name": "x" * 201, "billing_address": ""}, "at most 200 characters"),
        ({"billing_name": "Acme", "billing_address": "y" * 501}, "at most 500 characters"),
        ({"billing_name": "Acme", "billing_address": "\n".join("abcdefghi")},
         "at most 8 lines"),
    ])
    def test_details_too_long_for_a_receipt_are_refused(self, member_client, member, data,
                                                       message):
        response = member_client.post(reverse("portal:billing_details"), data)

        assert response.status_code == 400
        assert message in response.content.decode()
        wallet = Wallet.objects.get(user=member)
        assert (wallet.billing_name, wallet.billing_address) == ("", "")

    def test_it_goes_back_to_the_receipt_it_was_opened_from(self, member_client, member):
        entry, _ = voucher_redeemed(member)
        receipt_url = reverse("portal:receipt", args=[entry.pk])

        response = member_client.post(reverse("portal:billing_details"), {
            "billing_name": "Acme", "billing_address": "", "next": receipt_url})

        assert response.status_code == 302
        assert response["Location"] == receipt_url

    def test_it_never_sends_anyone_to_another_site(self, member_client, member):
        response = member_client.post(reverse("portal:billing_details"), {
            "billing_name": "Acme", "billing_address": "", "next": "//evil.example/x"})

        assert response["Location"] == reverse("portal:billing_details")

    def test_the_settings_page_leads_to_it(self, member_client):
        page = member_client.get(reverse("portal:settings")).content.decode()

        assert f'href="{reverse("portal:billing_details")}"' in page
