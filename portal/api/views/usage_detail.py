"""One request: the figures of its page in the portal (the upstream's cost is ours, not
shown)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from billing.models import UsageRecord
from portal.api.base import ApiView
from portal.api.fields import UsdField
from portal.api.schema import error_responses
from portal.api.views.usage import UsageRecordSerializer
from portal.selectors_catalogue import CostBreakdown, cost_breakdown, exact_usd, usage_record_of


@extend_schema_field({"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$",
                      "example": "0.1875"})
class ExactDecimalField(serializers.Field):
    """A Decimal as its exact plain text ("0.075", "0.1875"): a price is never rounded to fit
    a column (a default cache-write price is 1.25x the input price, finer than it)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    def to_representation(self, value: Decimal) -> str:
        return format(value, "f")


class PriceSnapshotSerializer(serializers.Serializer):
    """The price version the request was charged at, in USD per 1M tokens."""

    id = serializers.IntegerField()
    model = serializers.CharField()
    effective_from = serializers.DateTimeField()
    input_usd_per_mtok = ExactDecimalField()
    output_usd_per_mtok = ExactDecimalField()
    cached_input_usd_per_mtok = ExactDecimalField(source="cached_price")
    cache_write_usd_per_mtok = ExactDecimalField(source="cache_write_price")


class CostPartSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["input", "cached", "cache_write", "output"])
    tokens = serializers.IntegerField()
    usd_per_mtok = ExactDecimalField()
    cost_usd_exact = serializers.CharField(source="exact_usd", help_text="Before rounding.")


class CostBreakdownSerializer(serializers.Serializer):
    parts = CostPartSerializer(many=True)
    exact_total_usd = serializers.CharField(source="exact_usd",
                                            help_text="The parts' exact sum.")
    charged_micros = serializers.IntegerField()
    charged_usd = UsdField(source="charged_micros",
                           help_text="What was charged: the exact sum rounded up once to "
                           "the micro-USD (or the hold, when over_hold).")
    rounding_usd = serializers.SerializerMethodField()

    def get_rounding_usd(self, breakdown: CostBreakdown) -> str:
        return exact_usd(breakdown.rounding_micros)


class UsageDetailSerializer(UsageRecordSerializer):
    key_name = serializers.CharField(source="api_key.name", allow_null=True, default=None)
    estimate_reason = serializers.ChoiceField(choices=UsageRecord.EstimateReason.choices,
                                              help_text="Why the router counted the usage "
                                              "itself; empty: the upstream's usage.")
    over_cap = serializers.BooleanField()
    over_hold = serializers.BooleanField()
    price = PriceSnapshotSerializer()
    cost_breakdown = serializers.SerializerMethodField()

    @extend_schema_field(CostBreakdownSerializer)
    def get_cost_breakdown(self, record: UsageRecord) -> dict[str, Any]:
        return CostBreakdownSerializer(cost_breakdown(record)).data


class UsageDetailApi(ApiView):
    @extend_schema(operation_id="usage_detail", summary="One of your requests, in detail",
                   description="Its tokens, the price it was charged at and its cost by kind "
                   "of token; the parts add up to the charge, rounded up once to the "
                   "micro-USD. Another user's request is a 404.",
                   responses={200: UsageDetailSerializer, **error_responses(404)})
    def get(self, request: Request, request_id: str) -> Response:
        record = usage_record_of(user=request.user, request_id=request_id)
        if record is None:
            raise NotFound("No such request.")
        return Response(UsageDetailSerializer(record).data)
