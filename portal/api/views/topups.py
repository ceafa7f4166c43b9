"""Card top-ups: start a Stripe Checkout payment, and follow the ones you started.

The money arrives through Stripe's webhook (``billing.views.stripe_webhook``), never
through this API: a top-up here is only the record of a payment and its state.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from billing.selectors import topup_of, topups_of
from billing.services.stripe_topups import topup_checkout_create
from portal.api.base import ApiView
from portal.api.fields import UsdAmountField, UsdField
from portal.api.pagination import ApiPagination
from portal.api.schema import error_responses
from portal.api.serializers import StrictInputSerializer


class TopUpOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    amount_micros = serializers.IntegerField()
    amount_usd = UsdField(source="amount_micros")
    status = serializers.ChoiceField(choices=["creating", "open", "paid", "expired", "failed"])
    credited = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_credited(self, topup: object) -> bool:
        return getattr(topup, "credited_entry_id", None) is not None


class TopUpListApi(ApiView):
    pagination_class = ApiPagination

    @extend_schema(operation_id="topups_list", summary="Your card top-ups, newest first",
                   responses={200: TopUpOutputSerializer(many=True), **error_responses(404)})
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(topups_of(user=request.user), request, view=self)
        return paginator.get_paginated_response(TopUpOutputSerializer(page, many=True).data)


class TopUpDetailApi(ApiView):
    @extend_schema(operation_id="topups_retrieve", summary="One of your card top-ups",
                   responses={200: TopUpOutputSerializer, **error_responses(404)})
    def get(self, request: Request, topup_id: int) -> Response:
        return Response(TopUpOutputSerializer(topup_of(user=request.user,
                                                       topup_id=topup_id)).data)


class CheckoutApi(ApiView):
    class CheckoutInputSerializer(StrictInputSerializer):
        amount_usd = UsdAmountField(help_text="What to add to the balance, in USD.")
        success_url = serializers.URLField(help_text="Where Stripe sends you once paid.")
        cancel_url = serializers.URLField(help_text="Where Stripe sends you if you cancel.")

    class CheckoutOutputSerializer(serializers.Serializer):
        checkout_url = serializers.URLField(help_text="Stripe's payment page: open it to pay.")

    @extend_schema(operation_id="topups_checkout",
                   summary="Start a card top-up (Stripe Checkout)",
                   description="The balance is credited when Stripe reports the payment, "
                   "once. 503 `topups_disabled` when card payments are not configured; 502 "
                   "`payment_provider_error` when Stripe could not start the payment.",
                   request=CheckoutInputSerializer,
                   responses={201: CheckoutOutputSerializer,
                              **error_responses(400, 502, 503)})
    def post(self, request: Request) -> Response:
        serializer = self.CheckoutInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        url = topup_checkout_create(user=request.user, amount_micros=data["amount_usd"],
                                    success_url=data["success_url"],
                                    cancel_url=data["cancel_url"])
        return Response(self.CheckoutOutputSerializer({"checkout_url": url}).data,
                        status=status.HTTP_201_CREATED)
