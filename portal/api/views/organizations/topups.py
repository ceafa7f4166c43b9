"""Money into an organization by card, for its owners and billing members: a Stripe Checkout
top-up (and the list of them, whoever paid), and auto top-up with the card it charges. The
same as /api/topups and /api/auto-topup, on the organization's wallet.

The balance is credited by Stripe's webhook to the organization's wallet, never the
payer's own, once however often Stripe tells of the payment.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from billing.selectors import topup_of, topups_of
from billing.services.stripe_topups import topup_checkout_create
from portal.api.pagination import ApiPagination
from portal.api.schema import error_responses
from portal.api.views.auto_topup import (
    AutoTopUpInputSerializer,
    AutoTopUpOutputSerializer,
    CardInputSerializer,
    CardOutputSerializer,
    auto_topup_card_start,
    auto_topup_read,
    auto_topup_write,
)
from portal.api.views.organizations.base import OrgApiView
from portal.api.views.topups import CheckoutApi, TopUpOutputSerializer

_MONEY = "Owners and billing members; other members get 403."


class OrgTopUpOutputSerializer(TopUpOutputSerializer):
    paid_by = serializers.EmailField(source="user.email",
                                     help_text="The member whose card paid it.")


class OrgTopUpListApi(OrgApiView):
    pagination_class = ApiPagination

    @extend_schema(operation_id="org_topups_list",
                   summary="The organization's card top-ups, newest first",
                   description=_MONEY,
                   responses={200: OrgTopUpOutputSerializer(many=True),
                              **error_responses(404)})
    def get(self, request: Request, org_id: int) -> Response:
        _, wallet = self.billing_access(request, org_id)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(topups_of(wallet=wallet).select_related("user"),
                                           request, view=self)
        return paginator.get_paginated_response(OrgTopUpOutputSerializer(page, many=True).data)


class OrgTopUpDetailApi(OrgApiView):
    @extend_schema(operation_id="org_topups_retrieve",
                   summary="One of the organization's card top-ups", description=_MONEY,
                   responses={200: OrgTopUpOutputSerializer, **error_responses(404)})
    def get(self, request: Request, org_id: int, topup_id: int) -> Response:
        _, wallet = self.billing_access(request, org_id)
        return Response(OrgTopUpOutputSerializer(topup_of(wallet=wallet,
                                                          topup_id=topup_id)).data)


class OrgCheckoutApi(OrgApiView):
    @extend_schema(operation_id="org_topups_checkout",
                   summary="Start a card top-up of the organization (Stripe Checkout)",
                   description=f"{_MONEY} The organization's balance (not yours) is credited "
                   "when Stripe reports the payment, once. 503 `topups_disabled` when card "
                   "payments are not configured; 502 `payment_provider_error` when Stripe "
                   "could not start the payment.",
                   request=CheckoutApi.CheckoutInputSerializer,
                   responses={201: CheckoutApi.CheckoutOutputSerializer,
                              **error_responses(400, 404, 502, 503)})
    def post(self, request: Request, org_id: int) -> Response:
        access, wallet = self.billing_access(request, org_id)
        serializer = CheckoutApi.CheckoutInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        url = topup_checkout_create(user=access.user, wallet=wallet,
                                    amount_micros=data["amount_usd"],
                                    success_url=data["success_url"],
                                    cancel_url=data["cancel_url"])
        return Response(CheckoutApi.CheckoutOutputSerializer({"checkout_url": url}).data,
                        status=status.HTTP_201_CREATED)


class OrgAutoTopUpApi(OrgApiView):
    @extend_schema(operation_id="org_auto_topup_retrieve",
                   summary="The organization's auto top-up", description=_MONEY,
                   responses={200: AutoTopUpOutputSerializer, **error_responses(404)})
    def get(self, request: Request, org_id: int) -> Response:
        _, wallet = self.billing_access(request, org_id)
        return auto_topup_read(wallet)

    @extend_schema(operation_id="org_auto_topup_update",
                   summary="Set the organization's auto top-up",
                   description=f"{_MONEY} As `PUT /api/auto-topup`; a card that fails "
                   "switches it off and emails the organization's owners and billing members.",
                   request=AutoTopUpInputSerializer,
                   responses={200: AutoTopUpOutputSerializer, **error_responses(400, 404, 503)})
    def put(self, request: Request, org_id: int) -> Response:
        _, wallet = self.billing_access(request, org_id)
        return auto_topup_write(request, wallet)


class OrgAutoTopUpCardApi(OrgApiView):
    @extend_schema(operation_id="org_auto_topup_card",
                   summary="Save the organization's card for auto top-up (Stripe Checkout, "
                   "setup mode)", description=f"{_MONEY} Nothing is charged.",
                   request=CardInputSerializer,
                   responses={201: CardOutputSerializer, **error_responses(400, 404, 502, 503)})
    def post(self, request: Request, org_id: int) -> Response:
        _, wallet = self.billing_access(request, org_id)
        return auto_topup_card_start(request, wallet)
