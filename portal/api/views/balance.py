from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import User
from billing.selectors import usage_spend_summary, wallet_balance
from portal.api.base import ApiView
from portal.api.schema import error_responses
from portal.api.serializers import BalanceSerializer


def balance_of(user: User) -> dict[str, int]:
    balance = wallet_balance(user=user)
    spend = usage_spend_summary(user=user)
    return {"posted_micros": balance.posted_micros, "held_micros": balance.pending_micros,
            "available_micros": balance.available_micros,
            "spend_today_micros": spend.today_micros, "spend_month_micros": spend.month_micros,
            "requests_today": spend.requests_today}


class BalanceApi(ApiView):
    @extend_schema(operation_id="balance_retrieve", summary="Your balance and spend",
                   responses={200: BalanceSerializer, **error_responses()})
    def get(self, request: Request) -> Response:
        return Response(BalanceSerializer(balance_of(request.user)).data)
