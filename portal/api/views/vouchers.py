from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from billing.services.vouchers import voucher_redeem
from portal.api.base import ApiView
from portal.api.fields import UsdField
from portal.api.schema import error_responses
from portal.api.serializers import BalanceSerializer, StrictInputSerializer
from portal.api.views.balance import balance_of


class VoucherRedeemApi(ApiView):
    class VoucherRedeemInputSerializer(StrictInputSerializer):
        code = serializers.CharField(max_length=100, trim_whitespace=True)

    class VoucherRedeemOutputSerializer(serializers.Serializer):
        credited_micros = serializers.IntegerField()
        credited_usd = UsdField(source="credited_micros")
        balance = BalanceSerializer()

    @extend_schema(operation_id="vouchers_redeem", summary="Redeem a voucher code",
                   description="Credits the code's amount once, ever; a used, expired or "
                   "unknown code is a 400 with `code` `voucher_invalid`.",
                   request=VoucherRedeemInputSerializer,
                   responses={200: VoucherRedeemOutputSerializer, **error_responses(400)})
    def post(self, request: Request) -> Response:
        serializer = self.VoucherRedeemInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        entry = voucher_redeem(user=request.user, code=serializer.validated_data["code"])
        return Response(self.VoucherRedeemOutputSerializer({
            "credited_micros": entry.amount_micros, "balance": balance_of(request.user)}).data)
