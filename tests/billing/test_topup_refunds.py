"""Refunding a card top-up: Stripe's refund API (a local fake), the wallet debited only as far
as its available balance goes, and Stripe's refund webhooks applied once, whoever started
the refund."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.test import Client
from django.urls import reverse

from audit.actors import Actor
from billing.errors import PaymentProviderError
from billing.models import CheckoutTopUp, LedgerEntry, Wallet
from billing.models.topups import TopUpRefund
from billing.selectors import wallet_audit
from billing.services import hold_create, wallet_credit
from billing.services.topup_refunds import TopUpRefundRefused, topup_refund
from tests.billing.refund_fakes import (
    FakeStripeRefunds,
    charge_refunded_event,
    refund_event,
    refund_object,
)
from tests.billing.stripe_fakes import deliver, signature_for
from tests.concurrency import run_concurrently

TWENTY_USD = 20_000_000


@pytest.fixture
def refunds_api(stripe_keys) -> Iterator[FakeStripeRefunds]:
    with FakeStripeRefunds() as server:
        stripe_keys.STRIPE_API_BASE = server.url
        yield server


@pytest.fixture
def paid_topup(user) -> CheckoutTopUp:
    """A $20 card top-up, paid and credited as the checkout webhook leaves it."""
    entry = wallet_credit(user=user, amount_micros=TWENTY_USD, kind="topup",
                          idempotency_key="stripe:pi_paid", memo="Card top-up")
    return CheckoutTopUp.objects.create(
        user=user, amount_micros=TWENTY_USD, currency="usd", session_id="cs_paid",
        payment_intent_id="pi_paid", status=CheckoutTopUp.Status.PAID, credited_entry=entry)


def spend(user, micros: int) -> None:
    wallet_credit(user=user, amount_micros=-micros, kind="adjustment",
                  idempotency_key=f"spend-{micros}", memo="spent")


def refund(topup, micros: int, *, key: str = "admin:op-1", actor=None) -> TopUpRefund:
    return topup_refund(topup=topup, amount_micros=micros, reason="customer asked",
                        operation_key=key, actor=actor or Actor.cli())


def card_refunds() -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(kind="card_refund"))


def posted(user) -> int:
    return Wallet.objects.get(user=user).posted_micros


@pytest.mark.django_db
class TestStartedByStaff:
    def test_a_full_refund_calls_stripe_once_and_debits_the_wallet(self, refunds_api,
                                                                   paid_topup):
        row = refund(paid_topup, TWENTY_USD)

        [call] = refunds_api.calls
        assert call.form["payment_intent"] == "pi_paid"
        assert call.form["amount"] == "2000"
        assert call.form["metadata[topup_refund_id]"] == str(row.pk)
        assert call.headers["Idempotency-Key"] == f"binom-refund-{row.pk}"
        assert (row.status, row.stripe_refund_id) == ("succeeded", "re_test_1")
        assert (row.debited_micros, row.unrecovered_micros) == (TWENTY_USD, 0)
        [entry] = card_refunds()
        assert row.debit_entry == entry
        assert entry.amount_micros == -TWENTY_USD
        assert posted(paid_topup.user) == 0
        assert wallet_audit(wallet_id=entry.wallet_id).consistent

    def test_a_refund_larger_than_what_is_left_debits_to_zero_and_records_the_rest(
        self, refunds_api, paid_topup
    ):
        spend(paid_topup.user, 15_000_000)

        row = refund(paid_topup, TWENTY_USD)

        assert (row.debited_micros, row.unrecovered_micros) == (5_000_000, 15_000_000)
        assert [e.amount_micros for e in card_refunds()] == [-5_000_000]
        assert posted(paid_topup.user) == 0

    def test_money_held_by_requests_in_flight_is_not_taken(self, refunds_api, paid_topup,
                                                          price):
        hold_create(user=paid_topup.user, hold_id="in-flight", amount_micros=4_000_000,
                    price=price, model=price.model)

        row = refund(paid_topup, TWENTY_USD)

        assert (row.debited_micros, row.unrecovered_micros) == (16_000_000, 4_000_000)
        wallet = Wallet.objects.get(user=paid_topup.user)
        assert (wallet.posted_micros, wallet.pending_micros) == (4_000_000, 4_000_000)

    def test_nothing_left_in_the_wallet_records_the_whole_refund_as_unrecovered(
        self, refunds_api, paid_topup
    ):
        spend(paid_topup.user, TWENTY_USD)

        row = refund(paid_topup, 1_000_000)

        assert (row.debited_micros, row.unrecovered_micros) == (0, 1_000_000)
        assert row.debit_entry is None
        assert row.debited_at is not None
        assert card_refunds() == []

    def test_refunds_past_the_top_up_are_refused_without_calling_stripe(self, refunds_api,
                                                                        paid_topup):
        refund(paid_topup, 15_000_000, key="admin:a")
        with pytest.raises(TopUpRefundRefused, match=r"At most 5\.000000 USD"):
            refund(paid_topup, 6_000_000, key="admin:b")
        assert len(refunds_api.calls) == 1

    def test_the_same_submission_twice_refunds_once(self, refunds_api, paid_topup):
        first = refund(paid_topup, 5_000_000)
        again = refund(paid_topup, 5_000_000)

        assert again.pk == first.pk
        assert len(card_refunds()) == 1
        assert TopUpRefund.objects.count() == 1

    def test_stripe_refusing_marks_it_failed_and_debits_nothing(self, stripe_keys, paid_topup):
        with FakeStripeRefunds(failures=[(400, "invalid_request_error")]) as server:
            stripe_keys.STRIPE_API_BASE = server.url
            with pytest.raises(PaymentProviderError, match="Nothing was debited"):
                refund(paid_topup, 5_000_000)
        assert TopUpRefund.objects.get().status == "failed"
        assert card_refunds() == []
        assert posted(paid_topup.user) == TWENTY_USD

    def test_an_unpaid_top_up_cannot_be_refunded(self, refunds_api, user):
        topup = CheckoutTopUp.objects.create(user=user, amount_micros=TWENTY_USD,
                                             currency="usd", status="open")
        with pytest.raises(TopUpRefundRefused, match="Only a paid"):
            refund(topup, 1_000_000)


@pytest.mark.django_db
class TestWebhooks:
    def test_a_webhook_for_a_refund_started_in_the_admin_does_not_debit_again(
        self, client, refunds_api, paid_topup
    ):
        row = refund(paid_topup, 8_000_000)
        stripe_refund = dict(next(iter(refunds_api.refunds.values())))

        updated = deliver(client, refund_event(stripe_refund, event_id="evt_r1"))
        charged = deliver(client, charge_refunded_event(paid_topup, [stripe_refund],
                                                        event_id="evt_c1"))

        assert updated.json()["outcome"] == "refund_already_applied"
        assert charged.json()["outcome"] == "refund_already_applied"
        assert [e.amount_micros for e in card_refunds()] == [-8_000_000]
        assert TopUpRefund.objects.get().pk == row.pk
        assert posted(paid_topup.user) == 12_000_000

    def test_a_refund_made_in_stripes_dashboard_is_recorded_and_debited_once(
        self, client, stripe_keys, paid_topup
    ):
        obj = refund_object(paid_topup, amount_cents=500)

        first = deliver(client, refund_event(obj, event_id="evt_r1", type="refund.created"))
        redelivered = deliver(client, refund_event(obj, event_id="evt_r1",
                                                   type="refund.created"))
        same_refund = deliver(client, charge_refunded_event(paid_topup, [obj]))

        assert first.json()["outcome"] == "refund_applied"
        assert redelivered.json()["outcome"] == "duplicate"
        assert same_refund.json()["outcome"] == "refund_already_applied"
        row = TopUpRefund.objects.get()
        assert (row.stripe_refund_id, row.amount_micros, row.debited_micros) == (
            "re_dash_1", 5_000_000, 5_000_000)
        assert [e.amount_micros for e in card_refunds()] == [-5_000_000]

    def test_a_webhook_that_beats_the_admins_own_answer_is_matched_by_its_metadata(
        self, client, stripe_keys, paid_topup
    ):
        # The row as the admin leaves it before Stripe answers; then Stripe's event arrives.
        row = TopUpRefund.objects.create(topup=paid_topup, amount_micros=3_000_000,
                                         idempotency_key="admin:racing", reason="r")
        obj = refund_object(paid_topup, refund_id="re_race", amount_cents=300,
                            metadata={"topup_refund_id": str(row.pk)})

        assert deliver(client, refund_event(obj)).json()["outcome"] == "refund_applied"

        row.refresh_from_db()
        assert (row.stripe_refund_id, row.debited_micros) == ("re_race", 3_000_000)
        assert TopUpRefund.objects.count() == 1

    def test_a_refund_that_fails_later_gives_the_debit_back(self, client, refunds_api,
                                                           paid_topup):
        row = refund(paid_topup, 8_000_000)
        failed = {**next(iter(refunds_api.refunds.values())), "status": "failed"}

        deliver(client, refund_event(failed, event_id="evt_failed"))
        deliver(client, refund_event(failed, event_id="evt_failed_again"))

        row.refresh_from_db()
        assert row.status == "failed"
        assert row.return_entry.amount_micros == 8_000_000
        assert posted(paid_topup.user) == TWENTY_USD
        assert wallet_audit(wallet_id=row.debit_entry.wallet_id).consistent

    def test_a_refund_of_a_payment_that_is_not_a_top_up_is_ignored(self, client, stripe_keys,
                                                                   paid_topup):
        obj = {**refund_object(paid_topup, amount_cents=100), "payment_intent": "pi_other"}
        assert deliver(client, refund_event(obj)).json()["outcome"] == "ignored"
        assert not TopUpRefund.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_deliveries_of_a_refunds_events_debit_once(stripe_keys, paid_topup):
    obj = refund_object(paid_topup, amount_cents=700)
    events = [refund_event(obj, event_id=f"evt_{i % 3}", type="refund.updated") for i in
              range(9)] + [charge_refunded_event(paid_topup, [obj], event_id=f"evt_c{i}")
                           for i in range(3)]
    bodies = [json.dumps(event) for event in events]

    def post(body: str) -> int:
        return Client().post(reverse("billing:stripe-webhook"), data=body,
                             content_type="application/json",
                             HTTP_STRIPE_SIGNATURE=signature_for(body)).status_code

    statuses = run_concurrently(post, [(body,) for body in bodies])

    assert statuses == [200] * len(bodies)
    assert [e.amount_micros for e in card_refunds()] == [-7_000_000]
    assert TopUpRefund.objects.count() == 1
    assert posted(paid_topup.user) == 13_000_000


@pytest.mark.django_db
class TestAdmin:
    def test_the_top_up_page_refunds_with_a_reason_and_a_double_click_refunds_once(
        self, admin_client, refunds_api, paid_topup
    ):
        page = reverse("admin:billing_checkouttopup_change", args=[paid_topup.pk])
        url = reverse("admin:billing_checkouttopup_refund", args=[paid_topup.pk])
        assert url in admin_client.get(page).text
        form = admin_client.get(url)
        assert form.status_code == 200
        operation = form.context["form"]["operation_id"].value()
        data = {"amount_usd": "20.00", "reason": "chargeback threat", "operation_id": operation}

        first = admin_client.post(url, data)
        second = admin_client.post(url, data)

        assert first.status_code == second.status_code == 302
        assert len(refunds_api.calls) == 1
        assert [e.amount_micros for e in card_refunds()] == [-TWENTY_USD]
        row = TopUpRefund.objects.get()
        assert row.reason == "chargeback threat"
        assert admin_client.get(reverse("admin:billing_topuprefund_change", args=[row.pk])
                                ).status_code == 200
        assert admin_client.get(reverse("admin:billing_topuprefund_changelist")
                                ).status_code == 200

    def test_an_amount_in_fractions_of_a_cent_is_refused_by_the_form(self, admin_client,
                                                                     refunds_api, paid_topup):
        url = reverse("admin:billing_checkouttopup_refund", args=[paid_topup.pk])
        response = admin_client.post(url, {"amount_usd": "1.001", "reason": "x",
                                           "operation_id": "6f1d2c3b-0000-4000-8000-000000000000"})
        assert response.status_code == 200
        assert "whole cents" in response.text
        assert refunds_api.calls == []
