"""Stripe's webhook, posted to the real URL with real signatures: verified on the raw body,
de-duplicated by event and by payment, credited exactly once."""

from __future__ import annotations

import json
import logging

import pytest
from django.test import Client
from django.urls import reverse

from billing.models import CheckoutTopUp, LedgerEntry, StripeEvent, Wallet
from billing.selectors import wallet_audit, wallet_balance
from tests.billing.stripe_fakes import (
    deliver,
    payment_intent_event,
    session_event,
    signature_for,
)
from tests.concurrency import run_concurrently

TWENTY_USD = 20_000_000


@pytest.fixture
def topup(user, stripe_keys) -> CheckoutTopUp:
    """A $20 top-up whose Checkout Session is open, as topup_checkout_create leaves it."""
    return CheckoutTopUp.objects.create(user=user, amount_micros=TWENTY_USD, currency="usd",
                                        session_id="cs_test_open",
                                        status=CheckoutTopUp.Status.OPEN)


def credits() -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(kind="topup"))


def assert_credited_once(topup: CheckoutTopUp, *, micros: int = TWENTY_USD,
                         payment_intent: str = "pi_test_1") -> None:
    [entry] = credits()
    assert entry.amount_micros == micros
    assert entry.idempotency_key == f"stripe:{payment_intent}"
    topup.refresh_from_db()
    assert topup.status == CheckoutTopUp.Status.PAID
    assert topup.credited_entry == entry
    assert topup.payment_intent_id == payment_intent
    wallet = Wallet.objects.get(user=topup.user)
    assert wallet.posted_micros == micros
    assert wallet_audit(wallet_id=wallet.pk).consistent


def assert_rejected(response, match: str) -> None:
    assert response.status_code == 400
    assert match in response.json()["error"]["message"]
    assert response.json()["error"]["type"] == "invalid_webhook"
    assert credits() == []
    assert not StripeEvent.objects.exists()


@pytest.mark.django_db
class TestVerification:
    def test_a_valid_completed_session_credits_the_user_once(self, client, topup):
        response = deliver(client, session_event(topup))

        assert response.status_code == 200
        assert response.json() == {"received": True, "outcome": "credited"}
        assert_credited_once(topup)
        assert StripeEvent.objects.get().event_id == "evt_session_1"
        assert wallet_balance(user=topup.user).available_micros == TWENTY_USD

    def test_a_redelivered_event_answers_200_and_credits_nothing_more(self, client, topup):
        deliver(client, session_event(topup))

        response = deliver(client, session_event(topup))

        assert response.status_code == 200
        assert response.json()["outcome"] == "duplicate"
        assert_credited_once(topup)

    def test_a_signature_made_with_another_secret_is_refused(self, client, topup):
        response = deliver(client, session_event(topup), secret="whsec_someone_else")
        assert_rejected(response, "No signatures found matching the expected signature")

    def test_a_body_changed_after_signing_is_refused(self, client, topup):
        body = json.dumps(session_event(topup))
        signature = signature_for(body)
        tampered = body.replace('"amount_total": 2000', '"amount_total": 200000')
        assert tampered != body

        assert_rejected(deliver(client, tampered, signature=signature), "No signatures found")

    def test_a_timestamp_older_than_five_minutes_is_refused(self, client, topup):
        response = deliver(client, session_event(topup), age_seconds=301)
        assert_rejected(response, "Timestamp outside the tolerance zone")

    def test_a_timestamp_within_five_minutes_is_accepted(self, client, topup):
        assert deliver(client, session_event(topup), age_seconds=240).status_code == 200
        assert_credited_once(topup)

    def test_a_missing_or_garbled_signature_header_is_refused(self, client, topup):
        assert_rejected(deliver(client, session_event(topup), signature=""),
                        "No Stripe-Signature header")
        assert_rejected(deliver(client, session_event(topup), signature="t=abc,v1=00"),
                        "Unable to extract timestamp")

    def test_a_signed_body_that_is_not_json_is_refused(self, client, topup):
        assert_rejected(deliver(client, "not json at all"), "not a Stripe event")

    def test_a_signed_json_body_without_an_event_id_is_refused(self, client, topup):
        body = json.dumps({"object": "event", "type": "checkout.session.completed"})
        assert_rejected(deliver(client, body), "no id or type")

    def test_without_stripe_settings_the_endpoint_answers_503_so_stripe_retries(
        self, client, topup, settings
    ):
        settings.STRIPE_WEBHOOK_SECRET = ""
        response = deliver(client, session_event(topup))
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "topups_disabled"
        assert credits() == []

    def test_only_post_is_allowed(self, client, stripe_keys):
        assert client.get(reverse("billing:stripe-webhook")).status_code == 405

    def test_the_endpoint_needs_no_csrf_token(self, topup):
        client = Client(enforce_csrf_checks=True)
        assert deliver(client, session_event(topup)).status_code == 200


@pytest.mark.django_db
class TestPayments:
    def test_completed_session_then_payment_intent_for_one_payment_credit_once(
        self, client, topup
    ):
        first = deliver(client, session_event(topup))
        second = deliver(client, payment_intent_event(topup))

        assert [first.json()["outcome"], second.json()["outcome"]] == [
            "credited", "already_credited"]
        assert_credited_once(topup)
        assert StripeEvent.objects.count() == 2

    def test_payment_intent_first_then_completed_session_credit_once(self, client, topup):
        deliver(client, payment_intent_event(topup))
        assert deliver(client, session_event(topup)).json()["outcome"] == "already_credited"
        assert_credited_once(topup)

    def test_a_completed_session_still_awaiting_payment_credits_nothing_until_it_succeeds(
        self, client, topup
    ):
        pending = deliver(client, session_event(topup, payment_status="unpaid"))

        assert pending.status_code == 200
        assert pending.json()["outcome"] == "not_paid"
        assert credits() == []
        topup.refresh_from_db()
        assert topup.status == CheckoutTopUp.Status.OPEN

        paid = deliver(client, session_event(
            topup, event_id="evt_async", type="checkout.session.async_payment_succeeded"))
        assert paid.json()["outcome"] == "credited"
        assert_credited_once(topup)

    def test_an_unknown_event_type_is_acknowledged_and_ignored(self, client, topup):
        event = session_event(topup, type="customer.created")

        response = deliver(client, event)

        assert response.status_code == 200
        assert response.json()["outcome"] == "ignored"
        assert credits() == []
        assert not StripeEvent.objects.exists()

    def test_a_payment_that_is_not_a_top_up_is_acknowledged_and_ignored(self, client,
                                                                          stripe_keys):
        response = deliver(client, payment_intent_event(None, payment_intent="pi_other"))
        assert response.json()["outcome"] == "ignored"
        assert credits() == []

    def test_metadata_naming_another_user_credits_nobody(self, client, topup, make_user):
        stranger = make_user()
        event = session_event(topup, metadata={"user_id": str(stranger.pk),
                                               "topup_id": str(topup.pk)})

        assert deliver(client, event).json()["outcome"] == "ignored"
        assert credits() == []

    def test_a_session_found_by_its_id_when_metadata_is_missing(self, client, topup):
        assert deliver(client, session_event(topup, metadata={})).json()["outcome"] == "credited"
        assert_credited_once(topup)

    def test_when_stripe_received_another_amount_it_credits_what_was_received(
        self, client, topup, caplog
    ):
        with caplog.at_level(logging.WARNING, logger="billing.services.stripe_topups"):
            response = deliver(client, session_event(topup, amount_cents=1_500))

        assert response.json()["outcome"] == "credited"
        assert_credited_once(topup, micros=15_000_000)
        assert "asked for 20.000000 USD but Stripe received 15.000000 USD" in caplog.text

    def test_a_payment_in_another_currency_is_not_credited_and_is_logged(
        self, client, topup, caplog
    ):
        with caplog.at_level(logging.ERROR, logger="billing.services.stripe_topups"):
            response = deliver(client, session_event(topup, currency="eur"))

        assert response.json()["outcome"] == "ignored"
        assert credits() == []
        assert "Not credited" in caplog.text

    @pytest.mark.parametrize(("event_type", "status"), [
        ("checkout.session.expired", CheckoutTopUp.Status.EXPIRED),
        ("checkout.session.async_payment_failed", CheckoutTopUp.Status.FAILED),
    ])
    def test_a_session_that_ends_unpaid_is_marked_and_credits_nothing(
        self, client, topup, event_type, status
    ):
        event = session_event(topup, type=event_type, payment_status="unpaid")

        assert deliver(client, event).json()["outcome"] == "updated"

        topup.refresh_from_db()
        assert topup.status == status
        assert credits() == []


@pytest.mark.django_db(transaction=True)
class TestConcurrentDeliveries:
    def test_the_same_event_delivered_5_times_at_once_credits_once(self, topup):
        event = session_event(topup)

        responses = run_concurrently(lambda: deliver(Client(), event), [() for _ in range(5)])

        assert [r.status_code for r in responses] == [200] * 5, responses
        outcomes = sorted(r.json()["outcome"] for r in responses)
        assert outcomes == ["credited"] + ["duplicate"] * 4
        assert_credited_once(topup)
        assert StripeEvent.objects.count() == 1

    def test_both_event_types_of_one_payment_5_times_each_at_once_credit_once(self, topup):
        events = [session_event(topup), payment_intent_event(topup)]

        responses = run_concurrently(lambda event: deliver(Client(), event),
                                     [(event,) for event in events for _ in range(5)])

        assert [r.status_code for r in responses] == [200] * 10
        outcomes = sorted(r.json()["outcome"] for r in responses)
        assert outcomes == ["already_credited", "credited"] + ["duplicate"] * 8
        assert_credited_once(topup)
