"""Receipts of credited top-ups (card, voucher, staff credit) of your own wallet, by ledger
entry id: the same figures as the portal's printable receipt. Another user's receipt, an
organization's (those are under /api/orgs/{id}/receipts), or an entry that is not a credit,
is a 404."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from billing.selectors.receipts import (
    ReceiptMethod,
    receipt_entries_of,
    receipt_for,
    receipts_from,
)
from portal.api.base import ApiView
from portal.api.fields import UsdField
from portal.api.pagination import ApiPagination
from portal.api.schema import error_responses


class ReceiptOutputSerializer(serializers.Serializer):
    class BilledToSerializer(serializers.Serializer):
        name = serializers.CharField(source="payer_name",
                                     help_text="The billing name; when none is set, your "
                                     "email, or the organization's name.")
        address = serializers.CharField(source="payer_address",
                                        help_text="The billing address, lines separated by \\n.")

    id = serializers.IntegerField(source="entry_id", help_text="The credit's ledger entry id.")
    number = serializers.CharField(help_text="e.g. R-00000042; derived from the entry, it "
                                   "never changes.")
    issued_at = serializers.DateTimeField(help_text="When the money was credited (UTC).")
    currency = serializers.CharField(help_text="Always USD, like the balance.")
    amount_micros = serializers.IntegerField()
    amount_usd = UsdField(source="amount_micros")
    balance_after_micros = serializers.IntegerField()
    balance_after_usd = UsdField(source="balance_after_micros")
    method = serializers.ChoiceField(choices=[method.value for method in ReceiptMethod])
    payment_intent_id = serializers.CharField(allow_null=True,
                                              help_text="Stripe's, for a card payment.")
    voucher_code_prefix = serializers.CharField(allow_null=True,
                                                help_text="e.g. BR-7KQM, for a voucher.")
    billed_to = BilledToSerializer(source="*")
    issuer = serializers.CharField(help_text="The operator issuing the receipt.")


class ReceiptListApi(ApiView):
    pagination_class = ApiPagination

    @extend_schema(operation_id="receipts_list", summary="Receipts of your top-ups, newest "
                   "first", description="One per credit: a paid card top-up, a redeemed "
                   "voucher, a staff credit.",
                   responses={200: ReceiptOutputSerializer(many=True), **error_responses(404)})
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(receipt_entries_of(user=request.user), request,
                                           view=self)
        return paginator.get_paginated_response(
            ReceiptOutputSerializer(receipts_from(entries=page), many=True).data)


class ReceiptDetailApi(ApiView):
    @extend_schema(operation_id="receipts_retrieve", summary="The receipt of one credit",
                   description="By ledger entry id (the `id` of `GET /api/receipts`).",
                   responses={200: ReceiptOutputSerializer, **error_responses(404)})
    def get(self, request: Request, entry_id: int) -> Response:
        return Response(ReceiptOutputSerializer(receipt_for(user=request.user,
                                                            entry_id=entry_id)).data)
