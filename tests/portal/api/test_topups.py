"""Card top-ups through the API: start a Checkout payment, follow it, and never see another
user's payments."""

from __future__ import annotations

import json

import pytest

from billing.models import CheckoutTopUp, LedgerEntry
from billing.selectors import wallet_balance
from billing.services.stripe_topups import stripe_webhook_handle
from tests.billing.stripe_fakes import SECRET_KEY, session_event, signature_for
from tests.portal.api.conftest import session_client

URLS = {"success_url": "https://app.example.com/paid",
        "cancel_url": "https://app.example.com/cancelled"}


def _checkout(api, amount: object = "25.50", **extra):
    return api.post("/api/topups/checkout", {"amount_usd": amount, **URLS, **extra},
                    format="json")


def test_a_checkout_is_started_and_credited_once_when_stripe_reports_it_paid(
    api, member, stripe_api
):
    response = _checkout(api)

    assert response.status_code == 201, response.json()
    assert response.json()["checkout_url"].startswith("https://checkout.stripe.test/")
    sent = stripe_api.calls[0]
    assert sent.form["line_items[0][price_data][unit_amount]"] == "2550"
    assert sent.form["success_url"] == URLS["success_url"]
    assert sent.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    [row] = api.get("/api/topups").json()["results"]
    assert (row["amount_usd"], row["status"], row["credited"]) == ("25.500000", "open", False)

    topup = CheckoutTopUp.objects.get()
    before = wallet_balance(user=member).posted_micros
    payload = json.dumps(session_event(topup))
    for _ in range(2):  # Stripe may deliver twice
        stripe_webhook_handle(payload=payload.encode(), signature=signature_for(payload))

    detail = api.get(f"/api/topups/{topup.pk}").json()
    assert (detail["status"], detail["credited"]) == ("paid", True)
    assert wallet_balance(user=member).posted_micros == before + 25_500_000
    assert LedgerEntry.objects.filter(idempotency_key__startswith="stripe:").count() == 1


@pytest.mark.parametrize(("amount", "field"), [
    ("1.00", "amount below $5"), ("10000.01", "above $10,000"), ("5.005", "whole cents"),
    (12.5, "JSON number"),
])
def test_a_bad_amount_is_a_400_and_stripe_is_not_called(api, stripe_api, amount, field):
    response = _checkout(api, amount)

    assert response.status_code == 400, field
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert stripe_api.calls == []
    assert not CheckoutTopUp.objects.exclude(status="failed").filter(status="open").exists()


def test_bad_redirect_urls_and_unknown_fields_are_refused(api, stripe_api):
    assert _checkout(api, success_url="javascript:alert(1)").status_code == 400
    assert _checkout(api, user=999).status_code == 400
    assert stripe_api.calls == []


def test_without_stripe_settings_card_top_ups_answer_503(api, settings):
    settings.STRIPE_SECRET_KEY = ""

    response = _checkout(api)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "topups_disabled"


def test_stripe_failing_is_a_502_and_nothing_is_credited(api, stripe_keys):
    # STRIPE_API_BASE points at a closed port: Stripe cannot be reached.
    response = _checkout(api)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "payment_provider_error"
    assert CheckoutTopUp.objects.get().status == "failed"


def test_another_users_top_up_is_a_404_and_never_listed(api, other, stripe_api):
    assert _checkout(session_client(other)).status_code == 201
    theirs = CheckoutTopUp.objects.get(user=other)

    assert api.get(f"/api/topups/{theirs.pk}").status_code == 404
    assert api.get(f"/api/topups/{theirs.pk}").json() == api.get("/api/topups/99999").json()
    assert api.get("/api/topups").json()["results"] == []
