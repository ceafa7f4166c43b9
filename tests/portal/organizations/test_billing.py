"""An organization's billing pages: its balance and ledger, vouchers and card top-ups
credited to its wallet (never to the payer's own), the receipts of its credits made out to
the organization, its billing details, its monthly statement and its auto top-up."""

from __future__ import annotations

import csv
import io

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from pypdf import PdfReader

from billing.models import AutoTopUp, CheckoutTopUp, LedgerEntry, Voucher, Wallet
from billing.selectors import wallet_balance
from billing.services import wallet_credit
from tests.billing.stripe_fakes import deliver, session_event
from tests.portal.conftest import money_html
from tests.portal.organizations.conftest import signed_in

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("role", ["owner", "billing"])
def test_a_voucher_goes_to_the_organizations_balance(team, role):
    redeemer = team.users[role]
    own_before = wallet_balance(user=redeemer).posted_micros
    response = signed_in(redeemer).post(f"/orgs/{team.organization.pk}/billing/voucher/",
                                        {"code": team.voucher}, follow=True)

    page = response.content.decode()
    assert "Voucher redeemed" in page
    assert "added to Acme&#x27;s balance" in page
    assert Wallet.objects.get(organization=team.organization).posted_micros == 55_000_000
    assert wallet_balance(user=redeemer).posted_micros == own_before
    assert Voucher.objects.get().redeemed_by == redeemer
    assert f'data-testid="available-balance">{money_html(55_000_000)}<' in page
    ledger = page[page.index('data-testid="ledger-table"'):]
    assert "Voucher" in ledger
    assert money_html(5_000_000) in ledger


def test_a_used_voucher_is_refused_and_credits_nothing(team):
    client = signed_in(team.users["billing"])
    path = f"/orgs/{team.organization.pk}/billing/voucher/"
    client.post(path, {"code": team.voucher})

    response = client.post(path, {"code": team.voucher})

    assert response.status_code == 400
    assert Wallet.objects.get(organization=team.organization).posted_micros == 55_000_000




# --- card top-ups, receipts, billing details, statements and auto top-up ---

def _path(team, rest: str = "") -> str:
    return f"/orgs/{team.organization.pk}/billing/{rest}"


def _org_wallet(team) -> Wallet:
    return Wallet.objects.get(organization=team.organization)


def test_the_card_form_takes_the_placeholders_place(team, org_stripe):
    page = signed_in(team.users["billing"]).get(_path(team)).content.decode()

    assert 'data-testid="org-card-topups-placeholder"' not in page
    assert f'action="{_path(team, "checkout/")}"' in page
    assert 'name="amount_usd"' in page
    assert f'href="{_path(team, "auto/")}" data-testid="auto-topup-link"' in page


def test_without_card_payments_the_page_says_so(team):
    page = signed_in(team.users["owner"]).get(_path(team)).content.decode()

    assert 'data-testid="card-topups-off"' in page
    assert _path(team, "checkout/") not in page


def test_a_card_top_up_paid_through_stripe_credits_the_organization_once(team, org_stripe,
                                                                        client):
    payer = team.users["billing"]
    payer_before = wallet_balance(user=payer).posted_micros
    browser = signed_in(payer)

    response = browser.post(_path(team, "checkout/"), {"amount_usd": "25"})

    assert response.status_code == 302
    assert response["Location"].startswith("https://checkout.stripe.test/")
    session = org_stripe.calls_to("/v1/checkout/sessions")[-1].form
    assert session["success_url"] == f"http://testserver{_path(team)}?checkout=success"
    topup = CheckoutTopUp.objects.get(session_id=response["Location"].rsplit("/", 1)[1])
    assert (topup.user, topup.wallet) == (payer, _org_wallet(team))

    paid = session_event(topup, event_id="evt_org_paid", payment_intent="pi_org_paid")
    assert deliver(client, paid).json()["outcome"] == "credited"
    assert deliver(client, paid).json()["outcome"] == "duplicate"

    assert _org_wallet(team).posted_micros == 75_000_000
    assert wallet_balance(user=payer).posted_micros == payer_before
    entry = LedgerEntry.objects.get(idempotency_key="stripe:pi_org_paid")
    page = browser.get(_path(team)).content.decode()
    ledger = page[page.index('data-testid="ledger-table"'):]
    assert f'href="{_path(team, f"receipts/{entry.pk}/")}" data-testid="receipt-link"' in ledger
    payments = page[page.index('data-testid="org-card-payments"'):]
    assert "billing@example.com" in payments
    assert "Paid and credited" in payments


def test_a_receipt_names_the_organization_until_billing_details_are_set(team):
    owner = signed_in(team.users["owner"])
    receipt_path = _path(team, f"receipts/{team.receipt_id}/")

    page = owner.get(receipt_path).content.decode()
    assert 'data-testid="receipt-payer">Acme<' in page
    details = _path(team, "details/")
    assert f'href="{details}?next={receipt_path}"' in page

    response = owner.post(details, {"billing_name": "Acme Holdings Ltd",
                                    "billing_address": "1 Main Street\nSpringfield",
                                    "next": receipt_path}, follow=True)

    page = response.content.decode()
    assert response.redirect_chain[-1][0] == receipt_path
    assert 'data-testid="receipt-payer">Acme Holdings Ltd<' in page
    assert "1 Main Street<br>Springfield" in page
    assert _org_wallet(team).billing_name == "Acme Holdings Ltd"
    # The person who set them keeps their own details.
    assert Wallet.objects.get(user=team.users["owner"]).billing_name == ""


def test_a_receipt_prints_as_a_pdf_made_out_to_the_organization(team):
    response = signed_in(team.users["billing"]).get(
        _path(team, f"receipts/{team.receipt_id}/receipt.pdf"))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    assert "Acme" in text
    assert f"R-{team.receipt_id:08d}" in text


def test_an_organizations_receipt_is_not_served_at_the_personal_address(team):
    for role in ("owner", "billing", "admin"):
        response = signed_in(team.users[role]).get(f"/topups/receipts/{team.receipt_id}/")
        assert response.status_code == 404


def test_an_entry_that_is_not_a_credit_has_no_receipt(team):
    charge = wallet_credit(wallet=_org_wallet(team), amount_micros=-1_000_000,
                           kind="adjustment", idempotency_key="org-correction",
                           memo="correction")

    response = signed_in(team.users["owner"]).get(_path(team, f"receipts/{charge.pk}/"))

    assert response.status_code == 404


def test_the_statement_is_the_organizations_with_its_csv(team):
    browser = signed_in(team.users["billing"])

    response = browser.get(_path(team, "statement/"))

    s = response.context["statement"]
    assert (s.holder, s.closing_micros, s.reconciles) == ("Acme", 50_000_000, True)
    page = response.content.decode()
    assert 'data-testid="statement-holder">Acme ·' in page
    assert 'data-testid="reconciles"' in page
    csv_response = browser.get(_path(team, "statement.csv"))
    assert csv_response["Content-Disposition"].endswith(
        f'-org{team.organization.pk}.csv"')
    rows = list(csv.DictReader(io.StringIO(b"".join(csv_response).decode())))
    assert [row["memo"] for row in rows[1:-1]] == ["opening credit"]
    # The payer's own statement is theirs alone.
    own = browser.get("/statement/").context["statement"]
    assert (own.user, own.closing_micros) == (team.users["billing"], 0)


def test_auto_top_up_for_the_organization_acts_on_its_wallet(team, org_stripe):
    browser = signed_in(team.users["owner"])
    page = browser.get(_path(team, "auto/")).content.decode()
    assert 'data-testid="auto-topup-status">Off<' in page
    assert f'action="{_path(team, "auto/card/")}"' in page

    saved = browser.post(_path(team, "auto/"), {
        "threshold_usd": "10", "amount_usd": "50", "monthly_ceiling_usd": "500"})
    card = browser.post(_path(team, "auto/card/"))

    assert saved.status_code == card.status_code == 302
    [row] = AutoTopUp.objects.all()
    assert row.wallet == _org_wallet(team)
    assert (row.threshold_micros, row.amount_micros) == (10_000_000, 50_000_000)
    setup = org_stripe.calls_to("/v1/checkout/sessions")[-1].form
    assert setup["mode"] == "setup"
    assert setup["metadata[wallet_id]"] == str(_org_wallet(team).pk)
    assert setup["success_url"] == (
        f"http://testserver{_path(team, 'auto/card/done/')}?session_id={{CHECKOUT_SESSION_ID}}")
    customer = org_stripe.calls_to("/v1/customers")[-1].form
    assert customer["email"] == "owner@example.com"  # the first of its contacts


# --- the ledger, a page at a time by cursor (no count of the organization's history) ---

def _credit_entries(team, count: int) -> list[LedgerEntry]:
    wallet = _org_wallet(team)
    return [wallet_credit(wallet=wallet, amount_micros=1_000 + n, kind="adjustment",
                          idempotency_key=f"org-pages-{n}", memo=f"entry {n}")
            for n in range(count)]


def test_the_ledger_page_walks_older_by_cursor_without_counting(team):
    _credit_entries(team, 60)  # with the opening credit: 61 entries, two pages of 50
    client = signed_in(team.users["owner"])

    with CaptureQueriesContext(connection) as queries:
        first = client.get(_path(team)).content.decode()
    link = first.split('data-testid="page-older"')[0].rsplit('href="', 1)[1].split('"')[0]
    second = client.get(_path(team) + link.replace("&amp;", "&")).content.decode()

    assert not any("COUNT(" in query["sql"] for query in queries.captured_queries)
    assert "entry 59" in first
    assert "entry 10" in first
    assert "entry 9" not in first
    assert "entry 9" in second
    assert "opening credit" in second
    assert "entry 59" not in second
    assert 'data-testid="page-newer"' in second
    assert 'data-testid="page-older"' not in second


def test_a_foreign_cursor_shows_the_newest_entries(team):
    _credit_entries(team, 3)

    page = signed_in(team.users["owner"]).get(_path(team) + "?cursor=forged").content.decode()

    assert "entry 2" in page
