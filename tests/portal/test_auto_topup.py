"""Auto top-up in the portal and the self-service API: its state shown, its settings typed
as USD text and kept as exact micro-USD, and a card saved through Stripe's pages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.models import AutoTopUp, Wallet
from billing.selectors.auto_topup import month_of
from billing.services.auto_topup import auto_topups_start_due
from billing.services.wallets import wallet_get_or_create
from tests.billing.auto_topup_fakes import DECLINED, VISA, FakeStripeAutoTopUp
from tests.portal.api.conftest import session_client, token_client

pytestmark = pytest.mark.django_db

USD = 1_000_000
SETTINGS = {"threshold_usd": "5", "amount_usd": "20.00", "monthly_ceiling_usd": "$1,000"}


@pytest.fixture
def stripe_api(stripe_keys) -> Iterator[FakeStripeAutoTopUp]:
    with FakeStripeAutoTopUp() as server:
        stripe_keys.STRIPE_API_BASE = server.url
        yield server


def save_card(user, card: str = VISA, *, last4: str = "4242") -> AutoTopUp:
    wallet = wallet_get_or_create(user=user)
    return AutoTopUp.objects.create(
        wallet=wallet, threshold_micros=5 * USD, amount_micros=20 * USD,
        monthly_ceiling_micros=100 * USD, month=month_of(timezone.now()),
        stripe_customer_id=f"cus_test_{wallet.pk}", payment_method_id=card,
        card_brand="visa", card_last4=last4)


class TestPage:
    def test_the_top_up_page_links_to_it(self, member_client, stripe_keys):
        page = member_client.get(reverse("portal:topups")).content.decode()

        assert f'href="{reverse("portal:auto_topup")}" data-testid="auto-topup-link"' in page

    def test_before_anything_is_set_it_shows_off_no_card_and_the_defaults(self, member_client,
                                                                         stripe_keys):
        page = member_client.get(reverse("portal:auto_topup")).content.decode()

        assert 'data-testid="auto-topup-status">Off<' in page
        assert 'data-testid="auto-topup-card">No card saved<' in page
        assert 'name="threshold_usd" value="5"' in page
        assert 'name="amount_usd" value="20"' in page
        assert 'name="monthly_ceiling_usd" value="100"' in page

    def test_without_card_payments_it_says_auto_top_up_is_unavailable(self, member_client,
                                                                      settings):
        settings.STRIPE_SECRET_KEY = ""

        page = member_client.get(reverse("portal:auto_topup")).content.decode()

        assert 'data-testid="auto-topup-unavailable"' in page
        assert 'name="threshold_usd"' not in page

    def test_settings_typed_in_usd_are_saved_as_micro_usd(self, member_client, member,
                                                         stripe_keys):
        save_card(member)

        response = member_client.post(reverse("portal:auto_topup"), {
            "enabled": "on", "threshold_usd": "2.50", "amount_usd": "12.34",
            "monthly_ceiling_usd": "$1,000.5"}, follow=True)

        assert "Auto top-up is on." in response.content.decode()
        row = AutoTopUp.objects.get()
        assert (row.enabled, row.threshold_micros, row.amount_micros,
                row.monthly_ceiling_micros) == (True, 2_500_000, 12_340_000, 1_000_500_000)
        page = response.content.decode()
        assert 'data-testid="auto-topup-status">On<' in page
        assert 'data-testid="auto-topup-card">Visa ending in 4242<' in page

    @pytest.mark.parametrize(("changes", "message"), [
        ({"threshold_usd": "abc"}, "is not an amount of USD"),
        ({"threshold_usd": "0"}, "Enter an amount more than zero."),
        ({"amount_usd": "20.0000001"}, "finer than one micro-USD"),
        ({"amount_usd": "-20"}, "Enter an amount more than zero."),
        ({"amount_usd": "20.001"}, "in whole cents"),
        ({"amount_usd": "4.99"}, "between $5.00 and $10,000.00"),
        ({"monthly_ceiling_usd": "19.99"}, "at least the amount of one top-up"),
        ({"monthly_ceiling_usd": ""}, "This field is required."),
        ({"enabled": "on"}, "Save a card first"),
    ])
    def test_settings_that_do_not_parse_or_make_no_sense_are_refused(
        self, member_client, stripe_keys, changes, message
    ):
        response = member_client.post(reverse("portal:auto_topup"), {**SETTINGS, **changes})

        assert response.status_code == 400
        assert message in response.content.decode()
        assert not AutoTopUp.objects.exclude(threshold_micros=5 * USD).exists()
        assert not AutoTopUp.objects.filter(enabled=True).exists()

    def test_a_switched_off_auto_top_up_says_why_and_lists_the_charge(self, member_client,
                                                                     member, stripe_api):
        row = save_card(member, DECLINED, last4="9995")
        # The member's $10 is below a $15 threshold.
        AutoTopUp.objects.filter(pk=row.pk).update(enabled=True, threshold_micros=15 * USD)
        auto_topups_start_due()

        page = member_client.get(reverse("portal:auto_topup")).content.decode()

        assert 'data-testid="auto-topup-status">Off<' in page
        assert 'data-testid="auto-topup-disabled-reason"' in page
        assert "insufficient funds" in page
        assert 'data-testid="auto-topup-charges"' in page
        assert "Failed" in page

    def test_saving_a_card_goes_to_stripes_setup_page_and_back(self, member_client, member,
                                                              stripe_api):
        response = member_client.post(reverse("portal:auto_topup_card"))

        assert response.status_code == 302
        [session_id] = stripe_api.sessions
        assert response["Location"] == f"https://checkout.stripe.test/{session_id}"
        form = stripe_api.calls_to("/v1/checkout/sessions")[0].form
        assert form["mode"] == "setup"
        assert form["success_url"] == (
            "http://testserver/topups/auto/card/done/?session_id={CHECKOUT_SESSION_ID}")

        stripe_api.complete_setup(session_id)
        back = member_client.get(reverse("portal:auto_topup_card_done"),
                                 {"session_id": session_id}, follow=True)

        assert "Card saved." in back.content.decode()
        assert 'data-testid="auto-topup-card">Visa ending in 4242<' in back.content.decode()
        assert AutoTopUp.objects.get().payment_method_id == VISA

    def test_a_forged_return_saves_nothing(self, member_client, stripe_api):
        member_client.post(reverse("portal:auto_topup_card"))

        for session_id in ("cs_test_999", "../../v1/customers", ""):
            member_client.get(reverse("portal:auto_topup_card_done"),
                              {"session_id": session_id})

        assert AutoTopUp.objects.get().payment_method_id == ""

    def test_top_up_now_and_keep_the_card_asks_stripe_to_keep_it(self, member_client,
                                                                stripe_api):
        response = member_client.post(reverse("portal:auto_topup_pay_and_save"),
                                      {"amount_usd": "25"})

        assert response.status_code == 302
        form = stripe_api.calls_to("/v1/checkout/sessions")[0].form
        assert form["mode"] == "payment"
        assert form["payment_intent_data[setup_future_usage]"] == "off_session"
        assert form["success_url"] == "http://testserver/topups/auto/?checkout=success"


class TestApi:
    @pytest.fixture(params=[session_client, token_client], ids=["session", "token"])
    def api(self, request, member):
        return request.param(member)

    def test_it_reads_the_defaults_then_what_was_set(self, api, member, stripe_keys):
        assert api.get("/api/auto-topup").json() == {
            "available": True, "enabled": False,
            "threshold_micros": 5 * USD, "threshold_usd": "5.000000",
            "amount_micros": 20 * USD, "amount_usd": "20.000000",
            "monthly_ceiling_micros": 100 * USD, "monthly_ceiling_usd": "100.000000",
            "month_total_micros": 0, "month_total_usd": "0.000000", "in_flight": False,
            "has_card": False, "card_brand": "", "card_last4": "", "disabled_reason": "",
            "disabled_at": None}
        save_card(member)

        response = api.put("/api/auto-topup", {
            "enabled": True, "threshold_usd": "7.5", "amount_usd": "25.00",
            "monthly_ceiling_usd": 200}, format="json")

        assert response.status_code == 200, response.json()
        body = response.json()
        assert (body["enabled"], body["threshold_micros"], body["amount_micros"],
                body["monthly_ceiling_micros"]) == (True, 7_500_000, 25 * USD, 200 * USD)
        assert (body["has_card"], body["card_last4"]) == (True, "4242")
        assert api.get("/api/auto-topup").json() == body

    @pytest.mark.parametrize(("changes", "field"), [
        ({"threshold_usd": 7.5}, "threshold_usd"),  # a JSON number with a fraction
        ({"amount_usd": "twenty"}, "amount_usd"),
        ({"amount_usd": "20.0000001"}, "amount_usd"),
        ({"monthly_ceiling_usd": "10"}, "monthly_ceiling_usd"),
        ({"enabled": None}, "enabled"),
        ({"month_total_usd": "0"}, "month_total_usd"),  # not writable
        ({"payment_method_id": "pm_card_visa"}, "payment_method_id"),
    ])
    def test_bad_input_is_a_400_naming_the_field(self, api, stripe_keys, changes, field):
        body = {"enabled": False, "threshold_usd": "5", "amount_usd": "20",
                "monthly_ceiling_usd": "100", **changes}

        response = api.put("/api/auto-topup", body, format="json")

        assert response.status_code == 400, response.json()
        assert field in response.json()["error"]["fields"]
        assert not AutoTopUp.objects.exists()

    def test_every_field_is_required(self, api, stripe_keys):
        response = api.put("/api/auto-topup", {"enabled": False}, format="json")

        assert response.status_code == 400
        assert set(response.json()["error"]["fields"]) == {
            "threshold_usd", "amount_usd", "monthly_ceiling_usd"}

    def test_rules_of_the_service_are_a_400_too(self, api, stripe_keys):
        response = api.put("/api/auto-topup", {
            "enabled": True, "threshold_usd": "5", "amount_usd": "20",
            "monthly_ceiling_usd": "100"}, format="json")

        assert response.status_code == 400
        assert "Save a card first" in response.json()["error"]["message"]

    def test_without_card_payments_setting_it_is_a_503(self, api, settings):
        response = api.put("/api/auto-topup", {
            "enabled": False, "threshold_usd": "5", "amount_usd": "20",
            "monthly_ceiling_usd": "100"}, format="json")

        assert response.status_code == 503
        assert response.json()["error"]["code"] == "topups_disabled"
        assert api.get("/api/auto-topup").json()["available"] is False

    def test_a_card_is_saved_through_a_setup_page(self, api, member, stripe_api):
        response = api.post("/api/auto-topup/card", {
            "success_url": "https://app.example.com/saved?s={CHECKOUT_SESSION_ID}",
            "cancel_url": "https://app.example.com/auto"}, format="json")

        assert response.status_code == 201, response.json()
        assert response.json()["checkout_url"].startswith("https://checkout.stripe.test/")
        form = stripe_api.calls_to("/v1/checkout/sessions")[0].form
        assert form["mode"] == "setup"
        assert form["setup_intent_data[metadata][wallet_id]"] == str(
            Wallet.objects.get(user=member).pk)
