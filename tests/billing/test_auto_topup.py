"""Auto top-up: a wallet's saved card charged off-session when its posted balance falls below
its threshold; one charge per crossing, never two in flight, within the monthly ceiling,
credited once through Stripe's webhook, switched off (and its owner emailed) by a decline.
Stripe is a local fake answering as its test mode does for its test cards."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail
from django.db import IntegrityError, connections, transaction
from django.test import Client
from django.utils import timezone

from accounts.models import User
from billing.errors import InvalidAutoTopUp, TopUpsDisabled
from billing.models import (
    AutoTopUp,
    AutoTopUpCharge,
    BalanceAlert,
    LedgerEntry,
    OutboxMessage,
    Wallet,
)
from billing.selectors import auto_topup_state_of, wallet_audit, wallet_contacts
from billing.selectors.auto_topup import month_of
from billing.services import UsageReport, hold_create, hold_settle, wallet_credit
from billing.services.auto_topup import (
    auto_topup_card_checkout_complete,
    auto_topup_card_checkout_create,
    auto_topup_charge_send,
    auto_topup_claim,
    auto_topup_configure,
    auto_topup_intent_apply,
    auto_topup_start,
    auto_topups_reconcile,
    auto_topups_run,
    auto_topups_start_due,
)
from billing.services.auto_topup.charges import Source
from billing.services.auto_topup.notices import AUTO_TOPUP_DISABLED
from billing.services.outbox import outbox_drain
from billing.services.stripe_topups import topup_checkout_create
from billing.services.wallets import wallet_get_or_create
from billing.tasks import outbox_drain_task
from tests.billing.auto_topup_fakes import (
    AUTHENTICATION_REQUIRED,
    DECLINED,
    VISA,
    FakeStripeAutoTopUp,
    intent_event,
    setup_intent_event,
)
from tests.billing.stripe_fakes import deliver
from tests.concurrency import run_concurrently

USD = 1_000_000
_keys = itertools.count(1)


@pytest.fixture
def stripe_api(stripe_keys) -> Iterator[FakeStripeAutoTopUp]:
    with FakeStripeAutoTopUp() as server:
        stripe_keys.STRIPE_API_BASE = server.url
        yield server


def move(user: User, micros: int) -> None:
    """Money in (a top-up) or out (spent, as an adjustment) of the user's wallet."""
    wallet_credit(user=user, amount_micros=micros, idempotency_key=f"move-{next(_keys)}",
                  memo="test", kind="topup" if micros > 0 else "adjustment")


def auto_topup(user: User, *, card: str = VISA, balance: int = 10 * USD,
               threshold: int = 5 * USD, amount: int = 20 * USD,
               ceiling: int = 100 * USD) -> AutoTopUp:
    """A wallet holding ``balance`` with auto top-up on and a card saved."""
    wallet = wallet_get_or_create(user=user)
    if balance:
        move(user, balance)
    return AutoTopUp.objects.create(
        wallet=wallet, enabled=True, threshold_micros=threshold, amount_micros=amount,
        monthly_ceiling_micros=ceiling, month=month_of(timezone.now()),
        stripe_customer_id=f"cus_test_wallet_{wallet.pk}", payment_method_id=card)


def posted(user: User) -> int:
    return Wallet.objects.get(user=user).posted_micros


def only_charge() -> AutoTopUpCharge:
    [charge] = AutoTopUpCharge.objects.all()
    return charge


@pytest.mark.django_db
class TestTheDatabaseRules:
    @pytest.mark.parametrize(("fields", "constraint"), [
        ({"amount_micros": 0}, "billing_autotopup_amount_positive"),
        ({"threshold_micros": -1}, "billing_autotopup_threshold_not_negative"),
        ({"monthly_ceiling_micros": 19_999_999}, "billing_autotopup_ceiling_covers_amount"),
        ({"month_total_micros": -1}, "billing_autotopup_month_total_not_negative"),
        ({"payment_method_id": ""}, "billing_autotopup_enabled_has_card"),
    ])
    def test_it_refuses_settings_that_break_a_rule(self, user, fields, constraint):
        row = auto_topup(user, balance=0)

        with pytest.raises(IntegrityError, match=constraint), transaction.atomic():
            AutoTopUp.objects.filter(pk=row.pk).update(**fields)

    def test_it_refuses_a_second_charge_in_flight_for_one_wallet(self, user):
        wallet = auto_topup(user).wallet
        fields = {"wallet": wallet, "amount_micros": USD, "month": month_of(timezone.now()),
                  "stripe_customer_id": "cus", "payment_method_id": VISA}
        AutoTopUpCharge.objects.create(**fields, status="processing")
        AutoTopUpCharge.objects.create(**fields, status="failed")

        with pytest.raises(IntegrityError, match="one_in_flight"), transaction.atomic():
            AutoTopUpCharge.objects.create(**fields, status="claimed")

    def test_a_stripe_customer_belongs_to_one_wallet(self, user, make_user):
        row = auto_topup(user, balance=0)
        other = auto_topup(make_user(), balance=0)

        with pytest.raises(IntegrityError, match="customer_unique"), transaction.atomic():
            AutoTopUp.objects.filter(pk=other.pk).update(
                stripe_customer_id=row.stripe_customer_id)


@pytest.mark.django_db
class TestStarting:
    def test_a_wallet_at_or_above_its_threshold_is_not_charged(self, user, stripe_api):
        auto_topup(user, balance=5 * USD)

        assert auto_topups_start_due() == []
        assert stripe_api.intent_creations() == []

    def test_below_the_threshold_it_charges_the_saved_card_off_session_once(self, user,
                                                                            stripe_api):
        row = auto_topup(user)
        move(user, -6 * USD)

        [charge_id] = auto_topups_start_due()

        charge = AutoTopUpCharge.objects.get(pk=charge_id)
        [call] = stripe_api.intent_creations()
        assert call.headers["Idempotency-Key"] == f"binom-auto-topup-{charge.pk}"
        assert call.form == {
            "amount": "2000", "currency": "usd", "customer": row.stripe_customer_id,
            "payment_method": VISA, "payment_method_types[0]": "card",
            "off_session": "true", "confirm": "true",
            "description": "Binom Router balance auto top-up",
            "metadata[wallet_id]": str(row.wallet_id),
            "metadata[auto_topup_charge_id]": str(charge.pk),
        }
        # In flight until Stripe's webhook says it succeeded; nothing credited yet.
        assert (charge.status, charge.payment_intent_id) == ("processing", "pi_test_1")
        row.refresh_from_db()
        assert row.in_flight_charge == charge
        assert row.month_total_micros == 20 * USD
        assert posted(user) == 4 * USD
        assert auto_topups_start_due() == []
        assert len(stripe_api.intent_creations()) == 1

    def test_a_disabled_or_cardless_auto_top_up_is_not_charged(self, user, make_user,
                                                              stripe_api):
        auto_topup(user, balance=USD)
        AutoTopUp.objects.filter(wallet__user=user).update(enabled=False)

        assert auto_topups_start_due() == []
        assert auto_topup_claim(wallet_id=Wallet.objects.get(user=user).pk) is None
        assert stripe_api.intent_creations() == []


@pytest.mark.django_db(transaction=True)
class TestConcurrency:
    def test_concurrent_spending_and_looking_start_one_charge_for_the_crossing(
        self, user, price, stripe_api
    ):
        auto_topup(user, balance=10 * USD)  # threshold $5

        def spend_then_look(index: int) -> list[int]:
            # A request's reserve and settle ($0.30), then a beat run or a nudge looking.
            hold_create(user=user, hold_id=f"req-{index}", amount_micros=300_000,
                        price=price, model=price.model)
            hold_settle(hold_id=f"req-{index}",
                        usage=UsageReport(prompt_tokens=300_000, completion_tokens=0))
            return auto_topups_start_due()

        results = run_concurrently(spend_then_look, [(i,) for i in range(30)])

        assert not [r for r in results if not isinstance(r, list)], results
        assert len([charge for started in results for charge in started]) == 1
        assert len(stripe_api.intent_creations()) == 1
        assert posted(user) == USD  # $10 less 30 x $0.30
        charge = only_charge()
        assert charge.status == "processing"
        assert AutoTopUp.objects.get().in_flight_charge == charge
        assert auto_topups_run().started == []
        assert len(stripe_api.intent_creations()) == 1

    def test_20_claims_racing_on_one_wallet_below_its_threshold_claim_once(self, user,
                                                                          caplog):
        auto_topup(user, balance=USD)
        wallet_id = Wallet.objects.get(user=user).pk

        results = run_concurrently(lambda: auto_topup_claim(wallet_id=wallet_id),
                                   [() for _ in range(20)])

        claimed = [r for r in results if isinstance(r, AutoTopUpCharge)]
        assert len(claimed) == 1, results
        assert results.count(None) == 19
        # The conditional UPDATE decided, not the UNIQUE index behind it.
        assert "in flight already" not in caplog.text
        row = AutoTopUp.objects.get()
        assert (row.in_flight_charge_id, row.month_total_micros) == (claimed[0].pk, 20 * USD)
        assert AutoTopUpCharge.objects.count() == 1

    def test_a_charge_stripe_has_not_answered_yet_blocks_a_second(self, user, stripe_api):
        auto_topup(user, balance=USD)
        stripe_api.release.clear()  # Stripe is slow to answer the first charge
        first: list[list[int]] = []
        slow = threading.Thread(target=lambda: first.append(auto_topups_start_due()))
        slow.start()
        try:
            deadline = time.monotonic() + 10
            while not stripe_api.intent_creations() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert stripe_api.intent_creations(), "the first charge never reached Stripe"

            assert auto_topups_run().started == []  # claimed and committed: in flight
        finally:
            stripe_api.release.set()
            slow.join(timeout=30)
        assert len(first[0]) == 1
        assert len(stripe_api.intent_creations()) == 1

    def test_a_claim_that_waited_for_a_late_credit_sees_it_and_charges_nothing(
        self, user, stripe_api, client
    ):
        row = auto_topup(user, balance=USD)
        [charge_id] = auto_topups_start_due()
        charge = AutoTopUpCharge.objects.get(pk=charge_id)
        deliver(client, intent_event(charge, type="payment_intent.payment_failed"))
        auto_topup_configure(wallet=row.wallet, enabled=True, threshold_micros=5 * USD,
                             amount_micros=20 * USD, monthly_ceiling_micros=100 * USD)
        # Stripe tells, late, that the charge it had reported failed went through after all.
        paid = intent_event(charge, event_id="evt_late")["data"]["object"]
        crediting = threading.Event()

        def credit_slowly() -> None:
            try:
                with transaction.atomic():  # the webhook's transaction, slow to commit
                    auto_topup_intent_apply(intent=paid, source=Source.WEBHOOK)
                    crediting.set()
                    time.sleep(0.5)
            finally:
                connections.close_all()

        webhook = threading.Thread(target=credit_slowly)
        webhook.start()
        assert crediting.wait(10)
        # Its UPDATE waits for the webhook's lock on the row and then matches it (on, nothing
        # in flight, room under the ceiling), but the wallet now holds $21, above the $5
        # threshold: no charge for a crossing that is over.
        claimed = auto_topup_claim(wallet_id=row.wallet_id)
        webhook.join(timeout=10)

        assert claimed is None
        assert posted(user) == 21 * USD
        assert AutoTopUpCharge.objects.count() == 1
        row.refresh_from_db()
        assert (row.in_flight_charge, row.month_total_micros) == (None, 20 * USD)

    def test_a_success_delivered_5_times_at_once_with_5_event_ids_credits_once(
        self, user, stripe_api
    ):
        auto_topup(user, balance=USD)
        [charge_id] = auto_topups_start_due()
        charge = AutoTopUpCharge.objects.get(pk=charge_id)
        events = [intent_event(charge, event_id=f"evt_{i}") for i in range(5)]

        responses = run_concurrently(lambda event: deliver(Client(), event),
                                     [(event,) for event in events for _ in range(2)])

        assert [r.status_code for r in responses] == [200] * 10
        outcomes = sorted(r.json()["outcome"] for r in responses)
        assert outcomes == ["already_credited"] * 4 + ["credited"] + ["duplicate"] * 5
        [entry] = LedgerEntry.objects.filter(kind="topup", memo__startswith="Auto")
        assert (entry.amount_micros, entry.idempotency_key) == (20 * USD, "stripe:pi_test_1")
        assert posted(user) == 21 * USD
        charge.refresh_from_db()
        assert (charge.status, charge.credited_entry) == ("succeeded", entry)
        assert AutoTopUp.objects.get().in_flight_charge is None
        assert wallet_audit(wallet_id=charge.wallet_id).consistent


@pytest.mark.django_db
class TestInFlightAndCeiling:
    def test_a_second_crossing_while_one_is_in_flight_starts_nothing(self, user, stripe_api,
                                                                     client):
        auto_topup(user)
        move(user, -6 * USD)
        [first] = auto_topups_start_due()
        move(user, 10 * USD)  # back above the threshold ($14) ...
        move(user, -12 * USD)  # ... and below it again ($2), the first still in flight

        assert auto_topups_run().started == []
        assert len(stripe_api.intent_creations()) == 1

        charge = AutoTopUpCharge.objects.get(pk=first)
        assert deliver(client, intent_event(charge)).json()["outcome"] == "credited"
        assert posted(user) == 22 * USD
        move(user, -20 * USD)  # a new crossing, nothing in flight
        assert len(auto_topups_run().started) == 1
        assert len(stripe_api.intent_creations()) == 2

    def test_it_honours_the_monthly_ceiling_and_starts_again_next_month(
        self, user, stripe_api, client
    ):
        auto_topup(user, balance=USD, amount=20 * USD, ceiling=50 * USD)
        march, april = datetime(2026, 3, 30, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)

        for number in (1, 2):
            [charge_id] = auto_topups_start_due(now=march)
            charge = AutoTopUpCharge.objects.get(pk=charge_id)
            deliver(client, intent_event(charge, event_id=f"evt_{number}"))
            move(user, -20 * USD)  # spent: below the threshold again

        assert AutoTopUp.objects.get().month_total_micros == 40 * USD
        assert auto_topups_start_due(now=march) == []  # a third would make $60 > $50
        assert len(stripe_api.intent_creations()) == 2
        assert auto_topup_state_of(wallet=charge.wallet, now=march).month_total_micros == (
            40 * USD)
        assert auto_topup_state_of(wallet=charge.wallet, now=april).month_total_micros == 0

        [charge_id] = auto_topups_start_due(now=april)

        row = AutoTopUp.objects.get()
        assert (row.month, row.month_total_micros) == (april.date(), 20 * USD)
        assert AutoTopUpCharge.objects.get(pk=charge_id).month == april.date()

    def test_a_charge_counts_toward_the_ceiling_from_its_claim_and_a_failure_gives_it_back(
        self, user, stripe_api
    ):
        auto_topup(user, card=DECLINED, balance=USD, amount=20 * USD, ceiling=20 * USD)
        wallet_id = Wallet.objects.get(user=user).pk

        charge = auto_topup_claim(wallet_id=wallet_id)  # Stripe not called yet

        assert AutoTopUp.objects.get().month_total_micros == 20 * USD
        auto_topup_charge_send(charge=charge)  # declined
        assert AutoTopUp.objects.get().month_total_micros == 0


@pytest.mark.django_db
class TestCrashesAndMissedWebhooks:
    def test_a_claim_whose_process_died_is_sent_again_with_its_key_and_charged_once(
        self, user, stripe_api
    ):
        auto_topup(user, balance=USD)
        stripe_api.lose_answers = 1  # Stripe made the intent; its answer never arrived

        [charge_id] = auto_topups_start_due()

        charge = AutoTopUpCharge.objects.get(pk=charge_id)
        assert (charge.status, charge.payment_intent_id) == ("claimed", "")
        assert auto_topups_reconcile(now=timezone.now()) == ([], [])  # too soon to tell
        assert auto_topups_reconcile(now=timezone.now() + timedelta(minutes=3)) == (
            [charge_id], [])

        charge.refresh_from_db()
        assert (charge.status, charge.payment_intent_id) == ("processing", "pi_test_1")
        keys = {call.headers["Idempotency-Key"] for call in stripe_api.intent_creations()}
        assert keys == {f"binom-auto-topup-{charge_id}"}
        assert len(stripe_api.intent_creations()) == 2
        assert len(stripe_api.intents) == 1  # one payment at Stripe

    def test_a_claim_never_answered_for_a_day_is_ended_not_sent_again(self, user,
                                                                     stripe_api):
        auto_topup(user, balance=USD)
        charge = auto_topup_claim(wallet_id=Wallet.objects.get(user=user).pk)

        auto_topups_reconcile(now=timezone.now() + timedelta(hours=23, minutes=1))

        charge.refresh_from_db()
        assert charge.status == "failed"
        assert stripe_api.intent_creations() == []
        row = AutoTopUp.objects.get()
        assert (row.enabled, row.in_flight_charge, row.month_total_micros) == (False, None, 0)

    def test_a_charge_whose_webhook_never_came_is_read_back_and_credited_once(
        self, user, stripe_api, client
    ):
        auto_topup(user, balance=USD)
        [charge_id] = auto_topups_start_due()
        later = timezone.now() + timedelta(minutes=11)

        assert auto_topups_reconcile(now=later) == ([], [charge_id])
        assert auto_topups_reconcile(now=later) == ([], [])

        assert posted(user) == 21 * USD
        charge = AutoTopUpCharge.objects.get(pk=charge_id)
        assert charge.status == "succeeded"
        outcome = deliver(client, intent_event(charge)).json()["outcome"]
        assert outcome == "already_credited"
        assert posted(user) == 21 * USD

    def test_the_webhook_may_come_before_the_create_call_answers(self, user, stripe_api,
                                                                client):
        auto_topup(user, balance=USD)
        charge = auto_topup_claim(wallet_id=Wallet.objects.get(user=user).pk)

        # Stripe's event names our charge in its metadata; the intent id is not recorded yet.
        response = deliver(client, intent_event(charge, intent_id="pi_test_1"))
        assert response.json()["outcome"] == "credited"
        assert posted(user) == 21 * USD

        auto_topup_charge_send(charge=charge)  # its answer arrives late: changes nothing

        charge.refresh_from_db()
        assert (charge.status, charge.payment_intent_id) == ("succeeded", "pi_test_1")
        assert posted(user) == 21 * USD
        assert AutoTopUp.objects.get().in_flight_charge is None


@pytest.mark.django_db
class TestFailures:
    def assert_switched_off(self, user: User, *, reason: str) -> AutoTopUp:
        row = AutoTopUp.objects.get()
        assert row.enabled is False
        assert reason in row.disabled_reason
        assert row.disabled_at is not None
        assert (row.in_flight_charge, row.month_total_micros) == (None, 0)
        charge = only_charge()
        assert charge.status == "failed"
        assert reason in charge.failure_reason
        [message] = OutboxMessage.objects.filter(kind=AUTO_TOPUP_DISABLED)
        assert message.payload["wallet_id"] == row.wallet_id
        assert not LedgerEntry.objects.filter(memo__startswith="Auto").exists()

        assert outbox_drain().delivered == [message.pk]
        [email] = mail.outbox
        assert email.to == wallet_contacts(row.wallet) == [user.email]
        assert "auto top-up is off" in email.subject
        assert reason in email.body
        assert "$20.000000" in email.body
        return row

    def test_a_declined_card_switches_it_off_and_emails_the_wallets_contacts(self, user,
                                                                            stripe_api):
        auto_topup(user, card=DECLINED, balance=USD)

        assert len(auto_topups_start_due()) == 1

        row = self.assert_switched_off(user, reason="insufficient funds")
        assert "(insufficient_funds)" in row.disabled_reason
        assert only_charge().payment_intent_id == "pi_test_1"
        assert auto_topups_run().started == []
        assert len(stripe_api.intent_creations()) == 1

    def test_a_card_that_needs_authentication_switches_it_off(self, user, stripe_api):
        auto_topup(user, card=AUTHENTICATION_REQUIRED, balance=USD)

        auto_topups_start_due()

        self.assert_switched_off(user, reason="authentication_required")

    @pytest.mark.parametrize("event_type", ["payment_intent.requires_action",
                                            "payment_intent.payment_failed"])
    def test_a_failure_stripe_reports_by_webhook_switches_it_off(self, user, stripe_api,
                                                                 client, event_type):
        auto_topup(user, balance=USD)
        stripe_api.intent_status = "processing"
        [charge_id] = auto_topups_start_due()
        charge = AutoTopUpCharge.objects.get(pk=charge_id)
        error = {"code": "card_declined", "decline_code": "expired_card",
                 "message": "Your card has expired."}

        response = deliver(client, intent_event(charge, type=event_type, error=error))

        assert response.json()["outcome"] == "charge_failed"
        reason = ("authentication_required" if event_type.endswith("requires_action")
                  else "Your card has expired. (expired_card)")
        self.assert_switched_off(user, reason=reason)

    def test_requires_action_in_the_create_calls_answer_switches_it_off(self, user,
                                                                       stripe_api):
        auto_topup(user, balance=USD)
        stripe_api.intent_status = "requires_action"

        auto_topups_start_due()

        self.assert_switched_off(user, reason="authentication_required")

    def test_a_failure_told_twice_emails_once(self, user, stripe_api, client):
        auto_topup(user, card=DECLINED, balance=USD)
        auto_topups_start_due()
        charge = only_charge()

        again = deliver(client, intent_event(charge, type="payment_intent.payment_failed"))

        assert again.json()["outcome"] == "already_settled"
        assert OutboxMessage.objects.filter(kind=AUTO_TOPUP_DISABLED).count() == 1

    def test_turning_it_back_on_clears_the_reason(self, user, stripe_api):
        row = auto_topup(user, card=DECLINED, balance=USD)
        auto_topups_start_due()

        auto_topup_configure(wallet=row.wallet, enabled=True, threshold_micros=5 * USD,
                             amount_micros=20 * USD, monthly_ceiling_micros=100 * USD)

        row.refresh_from_db()
        assert (row.enabled, row.disabled_reason, row.disabled_at) == (True, "", None)


@pytest.mark.django_db
class TestCards:
    def test_saving_a_card_makes_one_customer_per_wallet_and_a_setup_session(self, user,
                                                                            stripe_api):
        wallet = wallet_get_or_create(user=user)

        url = auto_topup_card_checkout_create(wallet=wallet, success_url="https://r.test/ok",
                                              cancel_url="https://r.test/no")
        auto_topup_card_checkout_create(wallet=wallet, success_url="https://r.test/ok",
                                        cancel_url="https://r.test/no")

        assert url.startswith("https://checkout.stripe.test/cs_test_")
        [customer] = stripe_api.calls_to("/v1/customers")
        assert customer.headers["Idempotency-Key"] == f"binom-wallet-customer-{wallet.pk}"
        assert customer.form["email"] == user.email
        assert customer.form["metadata[wallet_id]"] == str(wallet.pk)
        session = stripe_api.calls_to("/v1/checkout/sessions")[0].form
        assert session["mode"] == "setup"
        assert session["customer"] == "cus_test_1"
        assert session["setup_intent_data[metadata][wallet_id]"] == str(wallet.pk)
        assert session["setup_intent_data[metadata][purpose]"] == "auto_topup_card"
        row = AutoTopUp.objects.get()
        assert (row.stripe_customer_id, row.enabled, row.payment_method_id) == (
            "cus_test_1", False, "")

    def test_the_setup_intent_webhook_saves_the_card_and_a_run_describes_it(
        self, user, stripe_api, client
    ):
        wallet = wallet_get_or_create(user=user)
        auto_topup_card_checkout_create(wallet=wallet, success_url="https://r.test/ok",
                                        cancel_url="https://r.test/no")

        event = setup_intent_event(wallet_id=wallet.pk, customer="cus_test_1")
        assert deliver(client, event).json()["outcome"] == "card_saved"

        row = AutoTopUp.objects.get()
        assert (row.payment_method_id, row.card_last4) == (VISA, "")
        assert auto_topups_run().cards_described == 1
        row.refresh_from_db()
        assert (row.card_brand, row.card_last4) == ("visa", "4242")

    def test_a_card_set_up_for_another_wallets_customer_is_not_saved(self, user, make_user,
                                                                    stripe_api, client):
        wallet = wallet_get_or_create(user=user)
        auto_topup_card_checkout_create(wallet=wallet, success_url="https://r.test/ok",
                                        cancel_url="https://r.test/no")
        stranger = wallet_get_or_create(user=make_user())

        event = setup_intent_event(wallet_id=stranger.pk, customer="cus_test_1")

        assert deliver(client, event).json()["outcome"] == "ignored"
        assert not AutoTopUp.objects.exclude(payment_method_id="").exists()

    def test_back_from_the_setup_page_the_card_is_read_from_stripe_and_saved(
        self, user, make_user, stripe_api
    ):
        wallet = wallet_get_or_create(user=user)
        auto_topup_card_checkout_create(wallet=wallet, success_url="https://r.test/ok",
                                        cancel_url="https://r.test/no")
        [session_id] = stripe_api.sessions

        assert auto_topup_card_checkout_complete(wallet=wallet, session_id=session_id) is False
        stripe_api.complete_setup(session_id)
        assert auto_topup_card_checkout_complete(wallet=wallet, session_id=session_id) is True

        row = AutoTopUp.objects.get()
        assert (row.payment_method_id, row.card_brand, row.card_last4) == (VISA, "visa", "4242")
        other = wallet_get_or_create(user=make_user())
        assert auto_topup_card_checkout_complete(wallet=other, session_id=session_id) is False

    def test_a_card_top_up_the_payer_asked_to_keep_saves_its_card(self, user, stripe_api,
                                                                 client):
        topup_checkout_create(user=user, amount_micros=10 * USD, save_card=True,
                              success_url="https://r.test/ok", cancel_url="https://r.test/no")

        session = stripe_api.calls_to("/v1/checkout/sessions")[0].form
        assert session["customer"] == "cus_test_1"
        assert "customer_email" not in session
        assert session["payment_intent_data[setup_future_usage]"] == "off_session"
        metadata = {key[len("payment_intent_data[metadata]["):-1]: value
                    for key, value in session.items()
                    if key.startswith("payment_intent_data[metadata][")}
        wallet = Wallet.objects.get(user=user)
        assert metadata["wallet_id"] == str(wallet.pk)
        event = {"id": "evt_pi", "object": "event", "type": "payment_intent.succeeded",
                 "data": {"object": {
                     "id": "pi_paid", "object": "payment_intent", "status": "succeeded",
                     "amount_received": 1000, "currency": "usd", "customer": "cus_test_1",
                     "payment_method": VISA, "metadata": metadata}}}

        assert deliver(client, event).json()["outcome"] == "credited"

        assert posted(user) == 10 * USD
        assert AutoTopUp.objects.get().payment_method_id == VISA


@pytest.mark.django_db
class TestSettings:
    def configure(self, user: User, **changes: object) -> AutoTopUp:
        values = {"enabled": False, "threshold_micros": 5 * USD, "amount_micros": 20 * USD,
                  "monthly_ceiling_micros": 100 * USD, **changes}
        return auto_topup_configure(wallet=wallet_get_or_create(user=user), **values)

    def test_settings_are_saved_in_micro_usd(self, user, stripe_keys):
        row = self.configure(user, threshold_micros=2_500_000, amount_micros=12_340_000)

        assert (row.threshold_micros, row.amount_micros, row.monthly_ceiling_micros) == (
            2_500_000, 12_340_000, 100 * USD)
        assert row.enabled is False

    @pytest.mark.parametrize(("changes", "message"), [
        ({"amount_micros": 4_990_000}, "between $5.00 and $10,000.00"),
        ({"amount_micros": 20_000_001}, "in whole cents"),
        ({"threshold_micros": 0}, "threshold must be more than zero"),
        ({"monthly_ceiling_micros": 19 * USD}, "at least the amount"),
        ({"enabled": True}, "Save a card first"),
    ])
    def test_it_refuses_settings_that_make_no_sense(self, user, stripe_keys, changes,
                                                    message):
        with pytest.raises(InvalidAutoTopUp, match=message.replace("$", r"\$")):
            self.configure(user, **changes)

    def test_without_stripe_there_is_no_auto_top_up(self, user, settings):
        with pytest.raises(TopUpsDisabled):
            self.configure(user)


@pytest.mark.django_db
def test_a_low_balance_alert_nudges_the_auto_top_up_at_once(user, stripe_api):
    auto_topup(user, balance=10 * USD, threshold=5 * USD)
    BalanceAlert.objects.create(user=user, threshold_micros=6 * USD)
    move(user, -6 * USD)  # the database queues the alert in the same transaction

    assert outbox_drain_task()["auto_topups_started"] == 1

    assert only_charge().status == "processing"


@pytest.mark.django_db
def test_contacts_of_a_wallet_are_its_owners_email(user):
    assert wallet_contacts(wallet_get_or_create(user=user)) == [user.email]


@pytest.mark.django_db
def test_auto_top_up_start_of_a_wallet_without_one_does_nothing(user, stripe_api):
    assert auto_topup_start(wallet_id=wallet_get_or_create(user=user).pk) is None
