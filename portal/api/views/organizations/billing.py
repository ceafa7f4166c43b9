"""An organization's money: its balance (every member may read it: it is what their
requests draw on), its ledger and redeeming a voucher into it (billing members and
owners). Card top-ups and auto top-up are in ``topups``, receipts in ``receipts``."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from billing.keyset import BY_ID
from billing.models import LedgerEntry
from billing.selectors.organization_usage import (
    organization_balance,
    organization_ledger_entries,
    organization_spend_month,
)
from organizations.roles import Action
from organizations.selectors import usage_scope
from organizations.services import organization_voucher_redeem
from portal.api.fields import UsdField
from portal.api.pagination import KeysetApiPagination
from portal.api.schema import error_responses
from portal.api.serializers import StrictInputSerializer
from portal.api.views.organizations.base import OrgApiView
from portal.views.organizations.access import OrgAccess


class OrgBalanceSerializer(serializers.Serializer):
    posted_micros = serializers.IntegerField(help_text="Money in the organization's wallet.")
    posted_usd = UsdField(source="posted_micros")
    held_micros = serializers.IntegerField(help_text="Reserved by requests in flight.")
    held_usd = UsdField(source="held_micros")
    available_micros = serializers.IntegerField(help_text="Posted minus held.")
    available_usd = UsdField(source="available_micros")
    spend_month_micros = serializers.IntegerField(
        help_text="Spent this UTC month: the organization's, or, for the member role, "
        "your own.")
    spend_month_usd = UsdField(source="spend_month_micros")


class LedgerEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    kind = serializers.ChoiceField(choices=LedgerEntry.Kind.choices)
    amount_micros = serializers.IntegerField(help_text="Signed: a charge is negative.")
    amount_usd = UsdField(source="amount_micros")
    balance_after_micros = serializers.IntegerField()
    balance_after_usd = UsdField(source="balance_after_micros")
    model = serializers.CharField(source="hold.model", allow_null=True, default=None,
                                  help_text="The request's model, for charges.")
    request_id = serializers.CharField(source="hold_id", allow_null=True)
    memo = serializers.CharField()


def _balance(access: OrgAccess) -> dict[str, int]:
    balance = organization_balance(organization=access.organization)
    return {"posted_micros": balance.posted_micros, "held_micros": balance.pending_micros,
            "available_micros": balance.available_micros,
            "spend_month_micros": organization_spend_month(
                organization=access.organization,
                member=usage_scope(role=access.role, user=access.user))}


class OrgBalanceApi(OrgApiView):
    @extend_schema(operation_id="org_balance_retrieve",
                   summary="The organization's balance and this month's spend",
                   responses={200: OrgBalanceSerializer, **error_responses(404)})
    def get(self, request: Request, org_id: int) -> Response:
        return Response(OrgBalanceSerializer(_balance(self.access(request, org_id))).data)


class OrgLedgerApi(OrgApiView):
    pagination_class = KeysetApiPagination

    @extend_schema(operation_id="org_ledger_list",
                   summary="The organization's ledger, newest first (billing and owners)",
                   description="Pages by cursor, as `/api/usage`: `next`, `previous`, "
                   "`has_more`, `results` and no total (the ledger has an entry per "
                   "charged request).",
                   responses={200: LedgerEntrySerializer(many=True),
                              **error_responses(400, 404)})
    def get(self, request: Request, org_id: int) -> Response:
        access = self.access(request, org_id, Action.BILLING)
        paginator = self.pagination_class(scope=f"org-ledger:{org_id}:{request.user.pk}",
                                          order=BY_ID)
        page = paginator.paginate_queryset(
            organization_ledger_entries(organization=access.organization), request)
        return paginator.get_paginated_response(LedgerEntrySerializer(page, many=True).data)


class OrgVoucherRedeemApi(OrgApiView):
    class VoucherInputSerializer(StrictInputSerializer):
        code = serializers.CharField(max_length=100, trim_whitespace=True)

    class VoucherOutputSerializer(serializers.Serializer):
        credited_micros = serializers.IntegerField()
        credited_usd = UsdField(source="credited_micros")
        balance = OrgBalanceSerializer()

    @extend_schema(operation_id="org_vouchers_redeem",
                   summary="Redeem a voucher into the organization (billing and owners)",
                   description="Credits the code's amount to the organization's balance "
                   "once, ever; a used, expired or unknown code is a 400 `voucher_invalid`.",
                   request=VoucherInputSerializer,
                   responses={200: VoucherOutputSerializer, **error_responses(400, 404)})
    def post(self, request: Request, org_id: int) -> Response:
        access = self.access(request, org_id, Action.BILLING)
        serializer = self.VoucherInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        entry = organization_voucher_redeem(organization=access.organization,
                                            actor=request.user,
                                            code=serializer.validated_data["code"])
        return Response(self.VoucherOutputSerializer({
            "credited_micros": entry.amount_micros, "balance": _balance(access)}).data)
