"""Card top-ups into an organization's wallet: the row names the wallet it credits, Stripe's
(faked, signed) webhook credits that wallet and never the payer's own, once however often
and in whatever form Stripe tells of the payment, and a refund takes the money back from the
same wallet. Rows from before the wallet column credit the payer's own wallet."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps as live_apps
from django.test import Client

from audit.actors import Actor
from billing.models import CheckoutTopUp, LedgerEntry, Wallet
from billing.selectors import topups_of, wallet_audit
from billing.services.stripe_topups import topup_checkout_create
from billing.services.topup_refunds import topup_refund
from tests.billing.organization_people import Acme, acme_made
from tests.billing.refund_fakes import FakeStripeRefunds, refund_event, refund_object
from tests.billing.stripe_fakes import deliver, payment_intent_event, session_event
from tests.concurrency import run_concurrently

pytestmark = pytest.mark.django_db

TWENTY_USD = 20_000_000
migration_0019 = importlib.import_module("billing.migrations.0019_checkout_topup_wallet")


@pytest.fixture
def acme() -> Acme:
    return acme_made()


def org_topup_started(acme: Acme, payer: str = "billing") -> CheckoutTopUp:
    topup_checkout_create(user=acme.people[payer], wallet=acme.wallet,
                          amount_micros=TWENTY_USD, success_url="https://r.test/ok",
                          cancel_url="https://r.test/no")
    return CheckoutTopUp.objects.get()


def own_posted(user) -> int:
    return Wallet.objects.get(user=user).posted_micros


def test_a_top_up_started_for_an_organization_names_its_wallet_and_tells_stripe(
    acme, stripe_api
):
    topup = org_topup_started(acme)

    assert (topup.user, topup.wallet) == (acme.people["billing"], acme.wallet)
    [call] = stripe_api.calls
    assert call.form["customer_email"] == "billing@acme.example"  # the payer's receipt
    assert call.form["metadata[organization_id]"] == str(acme.organization.pk)
    assert call.form["payment_intent_data[metadata][organization_id]"] == str(
        acme.organization.pk)
    assert call.form["line_items[0][price_data][product_data][name]"] == (
        "Binom Router balance top-up for Acme")


def test_a_personal_top_up_names_the_payers_own_wallet(user, stripe_api):
    topup_checkout_create(user=user, amount_micros=TWENTY_USD, success_url="https://r.test/ok",
                          cancel_url="https://r.test/no")

    assert CheckoutTopUp.objects.get().wallet == Wallet.objects.get(user=user)


def test_the_webhook_credits_the_organization_not_the_payer_once_even_delivered_twice(
    acme, stripe_api, client
):
    topup = org_topup_started(acme)
    payer_before = own_posted(acme.people["billing"])
    completed = session_event(topup, payment_intent="pi_org_1")

    first = deliver(client, completed)
    again = deliver(client, completed)  # the same event, delivered a second time
    other_form = deliver(client, payment_intent_event(topup, event_id="evt_org_intent",
                                                      payment_intent="pi_org_1"))

    assert first.json()["outcome"] == "credited"
    assert again.json()["outcome"] == "duplicate"
    assert other_form.json()["outcome"] == "already_credited"
    [entry] = LedgerEntry.objects.filter(kind="topup")
    assert (entry.wallet, entry.amount_micros) == (acme.wallet, TWENTY_USD)
    assert entry.memo == f"Card top-up {topup.pk} (Stripe), paid by billing@acme.example"
    assert acme.wallet.posted_micros == TWENTY_USD
    assert own_posted(acme.people["billing"]) == payer_before
    assert wallet_audit(wallet_id=acme.wallet.pk).consistent
    topup.refresh_from_db()
    assert (topup.status, topup.credited_entry) == (CheckoutTopUp.Status.PAID, entry)


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_deliveries_credit_the_organization_once(stripe_keys):
    acme = acme_made()
    topup = CheckoutTopUp.objects.create(
        user=acme.people["owner"], wallet=acme.wallet, amount_micros=TWENTY_USD,
        currency="usd", session_id="cs_org_race", status=CheckoutTopUp.Status.OPEN)

    results = run_concurrently(
        lambda n: deliver(Client(), session_event(topup, event_id=f"evt_race_{n % 2}",
                                                  payment_intent="pi_race")).json(),
        [(n,) for n in range(10)])

    outcomes = [result["outcome"] for result in results]
    assert outcomes.count("credited") == 1
    assert set(outcomes) <= {"credited", "duplicate", "already_credited"}
    assert acme.wallet.posted_micros == TWENTY_USD
    assert own_posted(acme.people["owner"]) == 0
    assert LedgerEntry.objects.filter(kind="topup").count() == 1


def test_a_refund_of_an_organizations_top_up_takes_it_back_from_the_organization(
    acme, stripe_api, client
):
    topup = org_topup_started(acme)
    deliver(client, session_event(topup, payment_intent="pi_org_refund"))
    topup.refresh_from_db()
    payer_before = own_posted(acme.people["billing"])

    response = deliver(client, refund_event(refund_object(topup, amount_cents=500),
                                            type="refund.created"))

    assert response.json()["outcome"] == "refund_applied"
    [debit] = LedgerEntry.objects.filter(kind="card_refund")
    assert (debit.wallet, debit.amount_micros) == (acme.wallet, -5_000_000)
    assert acme.wallet.posted_micros == 15_000_000
    assert own_posted(acme.people["billing"]) == payer_before


def test_a_refund_started_by_staff_debits_the_organization(acme, stripe_keys, client):
    topup = CheckoutTopUp.objects.create(
        user=acme.people["billing"], wallet=acme.wallet, amount_micros=TWENTY_USD,
        currency="usd", session_id="cs_org_staff", status=CheckoutTopUp.Status.OPEN)
    deliver(client, session_event(topup, payment_intent="pi_org_staff"))
    topup.refresh_from_db()

    with FakeStripeRefunds() as server:
        stripe_keys.STRIPE_API_BASE = server.url
        row = topup_refund(topup=topup, amount_micros=TWENTY_USD, reason="asked",
                           operation_key="admin:org-1", actor=Actor.cli())

    assert (row.debited_micros, row.unrecovered_micros) == (TWENTY_USD, 0)
    assert acme.wallet.posted_micros == 0
    assert own_posted(acme.people["billing"]) == 0


def test_an_organizations_top_ups_are_listed_with_it_not_with_the_payer(acme, stripe_api):
    org_topup_started(acme)
    topup_checkout_create(user=acme.people["billing"], amount_micros=7_000_000,
                          success_url="https://r.test/ok", cancel_url="https://r.test/no")

    assert [t.amount_micros for t in topups_of(wallet=acme.wallet)] == [TWENTY_USD]
    assert [t.amount_micros for t in topups_of(user=acme.people["billing"])] == [7_000_000]
    assert not topups_of(wallet=acme.other_wallet).exists()


def test_a_row_written_without_a_wallet_credits_the_payers_own(user, stripe_keys, client):
    # As rows were before the column, and as a writer that predates it still inserts them.
    topup = CheckoutTopUp.objects.create(user=user, amount_micros=TWENTY_USD, currency="usd",
                                         session_id="cs_legacy",
                                         status=CheckoutTopUp.Status.OPEN)

    assert deliver(client, session_event(topup)).json()["outcome"] == "credited"

    assert own_posted(user) == TWENTY_USD


def test_the_migration_gives_each_earlier_top_up_its_payers_own_wallet(acme, make_user):
    payers = [make_user() for _ in range(3)]
    rows = [CheckoutTopUp.objects.create(user=payer, amount_micros=TWENTY_USD, currency="usd")
            for payer in payers]
    org_row = CheckoutTopUp.objects.create(user=acme.people["billing"], wallet=acme.wallet,
                                           amount_micros=TWENTY_USD, currency="usd")

    migration_0019.backfill(live_apps, None)

    for payer, row in zip(payers, rows, strict=True):
        row.refresh_from_db()
        assert row.wallet == Wallet.objects.get(user=payer)
    org_row.refresh_from_db()
    assert org_row.wallet == acme.wallet  # set already: left alone
    assert not CheckoutTopUp.objects.filter(wallet__isnull=True).exists()
