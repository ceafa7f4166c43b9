"""Auto top-up: read and set it, and start saving the card it charges (a Stripe Checkout in
setup mode). Charges start off the request path and are credited by Stripe's webhook; this
API only shows them through the month's total and the in-flight flag.

The work is done once, against a wallet (``auto_topup_read``, ``auto_topup_write``,
``auto_topup_card_start``): the caller's own here, an organization's under /api/orgs
(``portal.api.views.organizations.topups``), which chooses it by the caller's role."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from billing.models import Wallet
from billing.selectors import auto_topup_state_of
from billing.services.auto_topup import auto_topup_card_checkout_create, auto_topup_configure
from billing.services.wallets import wallet_get_or_create
from portal.api.base import ApiView
from portal.api.fields import UsdAmountField, UsdField
from portal.api.schema import error_responses
from portal.api.serializers import StrictInputSerializer


def _wallet(request: Request) -> Wallet:
    """The wallet the caller acts on here: their own."""
    return wallet_get_or_create(user=request.user)


class AutoTopUpOutputSerializer(serializers.Serializer):
    available = serializers.BooleanField(help_text="Card payments are configured on this "
                                         "router; without them auto top-up stays off.")
    enabled = serializers.BooleanField()
    threshold_micros = serializers.IntegerField(help_text="Charge when the posted balance "
                                                "falls below this.")
    threshold_usd = UsdField(source="threshold_micros")
    amount_micros = serializers.IntegerField(help_text="What each auto top-up adds.")
    amount_usd = UsdField(source="amount_micros")
    monthly_ceiling_micros = serializers.IntegerField(help_text="The most auto top-up "
                                                      "charges in a calendar month (UTC).")
    monthly_ceiling_usd = UsdField(source="monthly_ceiling_micros")
    month_total_micros = serializers.IntegerField(help_text="Charged, or being charged, "
                                                  "this calendar month (UTC).")
    month_total_usd = UsdField(source="month_total_micros")
    in_flight = serializers.BooleanField(help_text="A charge is started and not finished.")
    has_card = serializers.BooleanField()
    card_brand = serializers.CharField(help_text="Empty until Stripe has described the card.")
    card_last4 = serializers.CharField()
    disabled_reason = serializers.CharField(help_text="Why it switched itself off (a "
                                            "declined card...); empty once turned on again.")
    disabled_at = serializers.DateTimeField(allow_null=True)


class AutoTopUpInputSerializer(StrictInputSerializer):
    enabled = serializers.BooleanField(help_text="On needs a saved card.")
    threshold_usd = UsdAmountField(help_text="Charge when the balance falls below this.")
    amount_usd = UsdAmountField(help_text="Added each time: 5.00 to 10000.00, whole cents.")
    monthly_ceiling_usd = UsdAmountField(help_text="At most this per calendar month (UTC); "
                                         "at least the amount.")

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if data["monthly_ceiling_usd"] < data["amount_usd"]:
            raise serializers.ValidationError({"monthly_ceiling_usd": [
                "The monthly ceiling must be at least the amount of one top-up."]})
        return data


class CardInputSerializer(StrictInputSerializer):
    success_url = serializers.URLField(help_text="Where Stripe sends you once the card "
                                       "is saved; Stripe replaces {CHECKOUT_SESSION_ID}.")
    cancel_url = serializers.URLField(help_text="Where Stripe sends you if you cancel.")


class CardOutputSerializer(serializers.Serializer):
    checkout_url = serializers.URLField(help_text="Stripe's page: open it to enter a card.")


def auto_topup_read(wallet: Wallet) -> Response:
    return Response(AutoTopUpOutputSerializer(auto_topup_state_of(wallet=wallet)).data)


def auto_topup_write(request: Request, wallet: Wallet) -> Response:
    serializer = AutoTopUpInputSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    data = serializer.validated_data
    auto_topup_configure(wallet=wallet, enabled=data["enabled"],
                         threshold_micros=data["threshold_usd"],
                         amount_micros=data["amount_usd"],
                         monthly_ceiling_micros=data["monthly_ceiling_usd"])
    return auto_topup_read(wallet)


def auto_topup_card_start(request: Request, wallet: Wallet) -> Response:
    serializer = CardInputSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    url = auto_topup_card_checkout_create(
        wallet=wallet, success_url=serializer.validated_data["success_url"],
        cancel_url=serializer.validated_data["cancel_url"])
    return Response(CardOutputSerializer({"checkout_url": url}).data,
                    status=status.HTTP_201_CREATED)


class AutoTopUpApi(ApiView):
    @extend_schema(operation_id="auto_topup_retrieve", summary="Your auto top-up",
                   responses={200: AutoTopUpOutputSerializer, **error_responses()})
    def get(self, request: Request) -> Response:
        return auto_topup_read(_wallet(request))

    @extend_schema(operation_id="auto_topup_update", summary="Set your auto top-up",
                   description="Every field is required. Turning it on needs a card saved "
                   "(`POST /api/auto-topup/card`); 503 `topups_disabled` when card payments "
                   "are not configured.",
                   request=AutoTopUpInputSerializer,
                   responses={200: AutoTopUpOutputSerializer, **error_responses(400, 503)})
    def put(self, request: Request) -> Response:
        return auto_topup_write(request, _wallet(request))


class AutoTopUpCardApi(ApiView):
    @extend_schema(operation_id="auto_topup_card",
                   summary="Save a card for auto top-up (Stripe Checkout, setup mode)",
                   description="Nothing is charged. The card is saved when Stripe reports it "
                   "(`setup_intent.succeeded`). 503 `topups_disabled` without card payments; "
                   "502 `payment_provider_error` when Stripe could not start the page.",
                   request=CardInputSerializer,
                   responses={201: CardOutputSerializer, **error_responses(400, 502, 503)})
    def post(self, request: Request) -> Response:
        return auto_topup_card_start(request, _wallet(request))
