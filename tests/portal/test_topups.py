from __future__ import annotations

import pytest
from django.urls import reverse

from billing.models import CheckoutTopUp, LedgerEntry
from billing.selectors import wallet_balance
from billing.services.vouchers import voucher_batch_create
from tests.billing.stripe_fakes import deliver, session_event
from tests.portal.conftest import money_html

pytestmark = pytest.mark.django_db


def test_a_voucher_credits_the_balance_once(member_client, member):
    [code] = voucher_batch_create(amount_micros=5_000_000, count=1, memo="conference")

    response = member_client.post(reverse("portal:voucher_redeem"), {"code": code},
                                  follow=True)

    page = response.content.decode()
    assert "Voucher redeemed: $5.000000 was added to your balance." in page
    assert f'data-testid="available-balance">{money_html(15_000_000)}<' in page
    assert wallet_balance(user=member).posted_micros == 15_000_000
    entry = LedgerEntry.objects.get(wallet__user=member, kind="voucher")
    assert entry.amount_micros == 5_000_000
    assert entry.memo in page  # the credits history lists it

    again = member_client.post(reverse("portal:voucher_redeem"), {"code": code})

    assert again.status_code == 400
    assert "not valid, has expired or was already used" in again.content.decode()
    assert wallet_balance(user=member).posted_micros == 15_000_000


def test_an_unknown_voucher_code_is_refused(member_client, member):
    response = member_client.post(reverse("portal:voucher_redeem"),
                                  {"code": "NOPE-NOPE-NOPE-NOPE"})

    assert response.status_code == 400
    assert "not valid" in response.content.decode()
    assert not LedgerEntry.objects.filter(wallet__user=member, kind="voucher").exists()


def test_without_stripe_settings_the_page_says_card_top_ups_are_off(member_client, settings):
    settings.STRIPE_SECRET_KEY = ""

    page = member_client.get(reverse("portal:topups")).content.decode()
    assert 'data-testid="card-topups-off"' in page
    assert 'action="/topups/checkout/"' not in page

    response = member_client.post(reverse("portal:checkout_create"), {"amount_usd": "20"})
    assert response.status_code == 400
    assert "Card top-ups are not available" in response.content.decode()
    assert not CheckoutTopUp.objects.exists()


def test_paying_by_card_redirects_to_checkout_and_the_webhook_credits(client, member_client,
                                                                      member, stripe_api):
    response = member_client.post(reverse("portal:checkout_create"), {"amount_usd": "20"})

    assert response.status_code == 302
    assert response["Location"].startswith("https://checkout.stripe.test/c/pay/cs_test_")
    topup = CheckoutTopUp.objects.get(user=member)
    assert topup.amount_micros == 20_000_000
    sent = stripe_api.calls[0].form
    assert sent["line_items[0][price_data][unit_amount]"] == "2000"
    assert sent["success_url"] == "http://testserver/topups/?checkout=success"
    assert sent["cancel_url"] == "http://testserver/topups/?checkout=cancelled"

    back = member_client.get(reverse("portal:topups") + "?checkout=success").content.decode()
    assert "credited as soon as the payment provider confirms it" in back
    assert "Awaiting payment" in back
    assert wallet_balance(user=member).posted_micros == 10_000_000  # not on the redirect

    topup.refresh_from_db()
    assert deliver(client, session_event(topup)).status_code == 200
    page = member_client.get(reverse("portal:topups")).content.decode()
    assert f'data-testid="available-balance">{money_html(30_000_000)}<' in page
    assert "Paid and credited" in page


@pytest.mark.parametrize(("amount", "message"), [
    ("0", "more than zero"),
    ("2", "A top-up is between"),
    ("20.005", "whole cents"),
    ("lots", "is not an amount of USD"),
])
def test_a_card_amount_out_of_range_is_refused(member_client, stripe_api, amount, message):
    response = member_client.post(reverse("portal:checkout_create"), {"amount_usd": amount})

    assert response.status_code == 400
    assert message in response.content.decode()
    assert stripe_api.calls == []
