"""Creating a Checkout Session with the stripe SDK, against a local server standing in for
Stripe's API base URL."""

from __future__ import annotations

import pytest

from billing.errors import InvalidAmount, PaymentProviderError, TopUpsDisabled
from billing.models import CheckoutTopUp, LedgerEntry
from billing.selectors import stripe_topups_enabled, topups_of, wallet_balance
from billing.services.stripe_topups import topup_checkout_create
from tests.billing.stripe_fakes import SECRET_KEY, deliver, session_event

SUCCESS_URL = "https://router.example/top-up/done?session={CHECKOUT_SESSION_ID}"
CANCEL_URL = "https://router.example/top-up"

pytestmark = pytest.mark.django_db


def create(user, amount_micros: int = 25_000_000) -> str:
    return topup_checkout_create(user=user, amount_micros=amount_micros,
                                 success_url=SUCCESS_URL, cancel_url=CANCEL_URL)


def test_it_creates_a_payment_session_for_the_amount_in_cents_and_returns_its_url(
    user, stripe_api
):
    url = create(user, 25_000_000)

    topup = CheckoutTopUp.objects.get()
    assert url == "https://checkout.stripe.test/c/pay/cs_test_1"
    [call] = stripe_api.calls
    assert call.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert call.headers["Idempotency-Key"] == f"binom-topup-{topup.pk}"
    assert call.form == {
        "mode": "payment",
        "line_items[0][quantity]": "1",
        "line_items[0][price_data][currency]": "usd",
        "line_items[0][price_data][unit_amount]": "2500",
        "line_items[0][price_data][product_data][name]": "Binom Router balance top-up",
        "client_reference_id": str(topup.pk),
        "customer_email": user.email,
        "metadata[user_id]": str(user.pk),
        "metadata[topup_id]": str(topup.pk),
        "payment_intent_data[metadata][user_id]": str(user.pk),
        "payment_intent_data[metadata][topup_id]": str(topup.pk),
        "success_url": SUCCESS_URL,
        "cancel_url": CANCEL_URL,
    }
    assert (topup.user, topup.amount_micros, topup.currency) == (user, 25_000_000, "usd")
    assert (topup.status, topup.session_id) == (CheckoutTopUp.Status.OPEN, "cs_test_1")
    assert topup.credited_entry is None
    assert wallet_balance(user=user).available_micros == 0


def test_the_session_it_created_is_credited_when_stripe_reports_it_paid(user, stripe_api,
                                                                       client):
    create(user, 10_000_000)
    topup = CheckoutTopUp.objects.get()

    assert deliver(client, session_event(topup)).json()["outcome"] == "credited"

    assert wallet_balance(user=user).available_micros == 10_000_000
    topup.refresh_from_db()
    assert topup.status == CheckoutTopUp.Status.PAID


@pytest.mark.parametrize("missing", ["STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"])
def test_without_either_stripe_setting_top_ups_are_off_and_stripe_is_not_called(
    user, stripe_api, stripe_keys, missing
):
    setattr(stripe_keys, missing, "")

    assert stripe_topups_enabled() is False
    with pytest.raises(TopUpsDisabled, match="not available"):
        create(user)
    assert stripe_api.calls == []
    assert not CheckoutTopUp.objects.exists()


def test_with_both_settings_top_ups_are_on(stripe_keys):
    assert stripe_topups_enabled() is True


@pytest.mark.parametrize("amount_micros", [
    4_990_000,  # under $5
    10_000_010_000,  # over $10,000
    5_000_001,  # a fraction of a cent
    0,
    -5_000_000,
])
def test_amounts_outside_5_to_10000_dollars_in_whole_cents_are_refused(
    user, stripe_api, amount_micros
):
    with pytest.raises(InvalidAmount, match=r"between \$5\.00 and \$10,000\.00, in whole cents"):
        create(user, amount_micros)
    assert stripe_api.calls == []
    assert not CheckoutTopUp.objects.exists()


@pytest.mark.parametrize("amount_micros", [5_000_000, 10_000_000_000])
def test_the_bounds_themselves_are_accepted(user, stripe_api, amount_micros):
    create(user, amount_micros)
    assert stripe_api.calls[0].form["line_items[0][price_data][unit_amount]"] == str(
        amount_micros // 10_000)


def test_a_stripe_refusal_is_a_retryable_provider_error_and_the_row_is_marked_failed(
    user, stripe_api
):
    stripe_api.failures.append((400, "invalid_request_error"))

    with pytest.raises(PaymentProviderError, match="payment provider could not start") as exc:
        create(user)

    assert exc.value.retryable is True
    assert len(stripe_api.calls) == 1  # a 400 is not retried
    assert CheckoutTopUp.objects.get().status == CheckoutTopUp.Status.FAILED
    assert not LedgerEntry.objects.exists()


def test_a_stripe_server_error_is_retried_with_the_same_idempotency_key(user, stripe_api):
    stripe_api.failures.append((500, "api_error"))

    url = create(user)

    assert url.endswith("/cs_test_2")
    keys = {call.headers["Idempotency-Key"] for call in stripe_api.calls}
    assert len(stripe_api.calls) == 2
    assert len(keys) == 1
    assert CheckoutTopUp.objects.get().status == CheckoutTopUp.Status.OPEN


def test_an_unreachable_stripe_is_a_provider_error_not_a_traceback(user, stripe_keys):
    stripe_keys.STRIPE_API_BASE = "http://127.0.0.1:9"  # discard port: nothing listens

    with pytest.raises(PaymentProviderError, match="try again"):
        create(user)

    assert CheckoutTopUp.objects.get().status == CheckoutTopUp.Status.FAILED


def test_a_users_top_ups_are_listed_newest_first_and_only_theirs(user, make_user, stripe_api):
    other = make_user()
    create(user, 5_000_000)
    create(other, 6_000_000)
    create(user, 7_000_000)

    assert [t.amount_micros for t in topups_of(user=user)] == [7_000_000, 5_000_000]
    assert [t.amount_micros for t in topups_of(user=other)] == [6_000_000]
