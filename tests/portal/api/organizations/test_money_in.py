"""Money into an organization through /api/orgs: a card top-up started for it and credited by
Stripe's webhook to its wallet (never the payer's), the list of its top-ups with who paid,
its receipts made out to it, and its auto top-up, all on the organization's wallet."""

from __future__ import annotations

import pytest
from django.test import Client

from billing.models import AutoTopUp, CheckoutTopUp, LedgerEntry, Wallet
from billing.selectors import wallet_balance
from tests.billing.stripe_fakes import deliver, session_event
from tests.portal.api.conftest import session_client

pytestmark = pytest.mark.django_db

CHECKOUT = {"amount_usd": "25.00", "success_url": "https://example.com/paid",
            "cancel_url": "https://example.com/billing"}


def _api(team, rest: str) -> str:
    return f"/api/orgs/{team.organization.pk}/{rest}"


def _org_wallet(team) -> Wallet:
    return Wallet.objects.get(organization=team.organization)


def test_a_card_top_up_started_through_the_api_credits_the_organization_once(
    team, org_stripe, client_for
):
    payer = team.users["billing"]
    payer_before = wallet_balance(user=payer).posted_micros
    api = client_for(payer)

    response = api.post(_api(team, "topups/checkout"), CHECKOUT, format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["checkout_url"].startswith("https://checkout.stripe.test/")
    topup = CheckoutTopUp.objects.filter(wallet=_org_wallet(team)).latest("id")
    assert (topup.user, topup.amount_micros) == (payer, 25_000_000)
    paid = session_event(topup, event_id="evt_api_org", payment_intent="pi_api_org")
    assert deliver(Client(), paid).json()["outcome"] == "credited"
    assert deliver(Client(), paid).json()["outcome"] == "duplicate"

    assert _org_wallet(team).posted_micros == 75_000_000
    assert wallet_balance(user=payer).posted_micros == payer_before
    newest = api.get(_api(team, "topups")).json()["results"][0]
    assert (newest["id"], newest["status"], newest["credited"], newest["paid_by"]) == (
        topup.pk, "paid", True, "billing@example.com")
    assert api.get(_api(team, f"topups/{topup.pk}")).json()["amount_usd"] == "25.000000"


def test_the_organizations_top_ups_are_not_the_payers(team, org_stripe):
    session_client(team.users["billing"]).post(_api(team, "topups/checkout"), CHECKOUT,
                                               format="json")

    own = session_client(team.users["billing"]).get("/api/topups").json()
    listed = session_client(team.users["owner"]).get(_api(team, "topups")).json()

    assert own["count"] == 0
    assert {row["paid_by"] for row in listed["results"]} == {"billing@example.com"}
    assert team.topups["personal"].pk not in {row["id"] for row in listed["results"]}


def test_without_card_payments_a_checkout_is_a_503(team):
    response = session_client(team.users["owner"]).post(_api(team, "topups/checkout"),
                                                        CHECKOUT, format="json")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "topups_disabled"


def test_the_organizations_receipts_are_made_out_to_it(team, client_for):
    Wallet.objects.filter(organization=team.organization).update(
        billing_name="Acme Holdings Ltd", billing_address="1 Main Street")
    api = client_for(team.users["billing"])

    listed = api.get(_api(team, "receipts")).json()
    one = api.get(_api(team, f"receipts/{team.receipt_id}")).json()

    assert [row["id"] for row in listed["results"]] == [team.receipt_id]
    assert one["billed_to"] == {"name": "Acme Holdings Ltd", "address": "1 Main Street"}
    assert (one["amount_usd"], one["method"]) == ("50.000000", "staff_credit")
    # Not among the payer's own receipts, nor at the personal address.
    assert team.receipt_id not in {row["id"] for row in api.get("/api/receipts").json()[
        "results"]}
    assert api.get(f"/api/receipts/{team.receipt_id}").status_code == 404


def test_without_a_billing_name_a_receipt_names_the_organization(team):
    one = session_client(team.users["owner"]).get(
        _api(team, f"receipts/{team.receipt_id}")).json()

    assert one["billed_to"] == {"name": "Acme", "address": ""}


@pytest.mark.parametrize("role", ["admin", "member", "outsider"])
def test_an_organizations_receipt_is_hidden_from_other_roles(team, role):
    api = session_client(team.users[role])

    inside = api.get(_api(team, f"receipts/{team.receipt_id}"))
    personal = api.get(f"/api/receipts/{team.receipt_id}")

    assert inside.status_code == (404 if role == "outsider" else 403)
    assert personal.status_code == 404


def test_auto_top_up_through_the_api_is_the_organizations(team, org_stripe):
    api = session_client(team.users["billing"])

    response = api.put(_api(team, "auto-topup"), {
        "enabled": False, "threshold_usd": "10", "amount_usd": "50",
        "monthly_ceiling_usd": "500"}, format="json")
    card = api.post(_api(team, "auto-topup/card"), {
        "success_url": "https://example.com/card", "cancel_url": "https://example.com/no"},
        format="json")

    assert response.status_code == 200, response.json()
    assert card.status_code == 201, card.json()
    [row] = AutoTopUp.objects.all()
    assert row.wallet == _org_wallet(team)
    assert (row.threshold_micros, row.amount_micros, row.monthly_ceiling_micros) == (
        10_000_000, 50_000_000, 500_000_000)
    assert api.get(_api(team, "auto-topup")).json()["amount_usd"] == "50.000000"
    assert api.get("/api/auto-topup").json()["amount_usd"] == "20.000000"  # theirs: untouched
    setup = org_stripe.calls_to("/v1/checkout/sessions")[-1].form
    assert setup["metadata[wallet_id]"] == str(_org_wallet(team).pk)
    assert not LedgerEntry.objects.filter(memo__startswith="Auto").exists()
