"""Usage: the requests made (filtered, paginated, or as CSV) and daily and per-model sums."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import renderers, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.selectors import api_key_of
from billing.models import UsageRecord
from billing.money import format_usd
from billing.selectors import UsageFilters, usage_by_model, usage_daily, usage_records_of
from portal.api.base import ApiView
from portal.api.fields import UsdField
from portal.api.pagination import KeysetApiPagination
from portal.api.schema import error_responses
from portal.csv_copy import SafeText, Text, Usd, UtcIso
from portal.csv_export import csv_lines, spreadsheet_safe, usage_csv_response

CSV_COLUMNS = ("created_at", "request_id", "endpoint", "model", "key_prefix", "prompt_tokens",
               "completion_tokens", "cached_tokens", "cache_write_tokens", "cost_usd",
               "cost_micros", "status", "source", "latency_ms", "ttft_ms")


class CsvRenderer(renderers.BaseRenderer):
    """``?format=csv`` or ``Accept: text/csv`` on the usage list."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None,
               renderer_context: dict | None = None) -> bytes:
        # Only reached for data the view did not stream itself (errors are answered in
        # JSON by the exception handler): a list of records as dicts.
        rows = [[row.get(column, "") for column in CSV_COLUMNS] for row in data or []]
        return "".join(csv_lines(CSV_COLUMNS, rows)).encode()


class UsageRecordSerializer(serializers.Serializer):
    request_id = serializers.CharField()
    created_at = serializers.DateTimeField()
    endpoint = serializers.ChoiceField(choices=UsageRecord.Endpoint.choices,
                                       help_text="The API the request came in through.")
    model = serializers.CharField()
    key_id = serializers.IntegerField(source="api_key_id", allow_null=True)
    key_prefix = serializers.CharField(source="api_key.prefix", allow_null=True, default=None)
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    cached_tokens = serializers.IntegerField()
    cache_write_tokens = serializers.IntegerField(
        help_text="Prompt tokens written to the upstream's cache, at its cache-write price.")
    cost_micros = serializers.IntegerField()
    cost_usd = UsdField(source="cost_micros")
    status = serializers.ChoiceField(choices=UsageRecord.Status.choices)
    source = serializers.ChoiceField(choices=UsageRecord.Source.choices,
                                     help_text="estimated: tokens counted by the router "
                                     "(a stream cut short), not reported by the upstream.")
    latency_ms = serializers.IntegerField(allow_null=True)
    ttft_ms = serializers.IntegerField(allow_null=True, help_text="Time to first token.")


class UsageSumsSerializer(serializers.Serializer):
    requests = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    cost_micros = serializers.IntegerField()
    cost_usd = UsdField(source="cost_micros")


class DaySerializer(UsageSumsSerializer):
    day = serializers.DateField(help_text="A UTC day.")


class ModelSumsSerializer(UsageSumsSerializer):
    model = serializers.CharField()


class DaysInputSerializer(serializers.Serializer):
    days = serializers.IntegerField(min_value=1, max_value=366, default=30,
                                    help_text="How many UTC days back, today included.")


class UsageListApi(ApiView):
    pagination_class = KeysetApiPagination
    renderer_classes = [renderers.JSONRenderer, CsvRenderer]

    class UsageFilterSerializer(serializers.Serializer):
        model = serializers.CharField(required=False, max_length=200)
        key = serializers.IntegerField(required=False, help_text="An id of one of your keys.")
        status = serializers.ChoiceField(required=False, choices=UsageRecord.Status.choices)
        endpoint = serializers.ChoiceField(required=False,
                                           choices=UsageRecord.Endpoint.choices)
        since = serializers.DateTimeField(required=False, help_text="From (inclusive), "
                                          "ISO 8601; a date alone means its 00:00 UTC.")
        until = serializers.DateTimeField(required=False, help_text="Before (exclusive).")

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if "since" in attrs and "until" in attrs and attrs["since"] >= attrs["until"]:
                raise serializers.ValidationError({"until": ["Must be after since."]})
            return attrs

    @extend_schema(
        operation_id="usage_list", summary="Your requests, newest first",
        description="Filter by model, key, status and time. Pages by cursor: follow "
        "`next` (and `previous`) with the same filters; `has_more` says whether `next` has "
        "rows; no total is counted. `?format=csv` (or `Accept: text/csv`) downloads every "
        "matching request as CSV instead of a page of JSON.",
        parameters=[UsageFilterSerializer],
        responses={(200, "application/json"): UsageRecordSerializer(many=True),
                   (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR,
                                                      description="Columns: "
                                                      + ", ".join(CSV_COLUMNS)),
                   **error_responses(400, 404)})
    def get(self, request: Request) -> Response | StreamingHttpResponse:
        serializer = self.UsageFilterSerializer(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        query = serializer.validated_data
        key_id = None
        if "key" in query:
            key_id = api_key_of(user=request.user, key_id=query["key"]).pk  # not yours: 404
        records = usage_records_of(user=request.user, filters=UsageFilters(
            model=query.get("model", ""), api_key_id=key_id, status=query.get("status", ""),
            endpoint=query.get("endpoint", ""), since=query.get("since"),
            until=query.get("until")))
        if request.accepted_renderer.format == "csv":
            return usage_csv_response(header=CSV_COLUMNS, records=records, row=_csv_row,
                                      columns=CSV_SQL_ROW, filename="usage.csv")
        paginator = self.pagination_class(scope=f"usage:{request.user.pk}")
        page = paginator.paginate_queryset(records, request)
        return paginator.get_paginated_response(UsageRecordSerializer(page, many=True).data)


def _csv_row(r: UsageRecord) -> list[Any]:
    return [r.created_at.isoformat(), r.request_id, r.endpoint, spreadsheet_safe(r.model),
            r.api_key.prefix if r.api_key else "", r.prompt_tokens, r.completion_tokens,
            r.cached_tokens, r.cache_write_tokens, format_usd(r.cost_micros), r.cost_micros,
            r.status, r.source,
            "" if r.latency_ms is None else r.latency_ms,
            "" if r.ttft_ms is None else r.ttft_ms]


# ``_csv_row`` as SQL, for the COPY export on PostgreSQL (portal.csv_copy): cell for cell.
CSV_SQL_ROW = (UtcIso("created_at"), Text("request_id"), Text("endpoint"), SafeText("model"),
               Text("api_key__prefix"), "prompt_tokens", "completion_tokens", "cached_tokens",
               "cache_write_tokens", Usd("cost_micros"), "cost_micros", Text("status"),
               Text("source"), "latency_ms", "ttft_ms")


def _sums(request: Request, selector: Any) -> list[dict[str, Any]]:
    """``selector``'s rows over the ``days`` the query asks for (30 by default)."""
    serializer = DaysInputSerializer(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return [asdict(row) for row in selector(user=request.user,
                                            days=serializer.validated_data["days"])]


class UsageDailyApi(ApiView):
    @extend_schema(operation_id="usage_daily", summary="Your spend and tokens per UTC day",
                   description="One row per day, oldest first, days without use as zeros.",
                   parameters=[DaysInputSerializer],
                   responses={200: DaySerializer(many=True), **error_responses(400)})
    def get(self, request: Request) -> Response:
        return Response(DaySerializer(_sums(request, usage_daily), many=True).data)


class UsageByModelApi(ApiView):
    @extend_schema(operation_id="usage_by_model", summary="Your spend and tokens per model",
                   description="Over the last `days` UTC days, costliest first.",
                   parameters=[DaysInputSerializer],
                   responses={200: ModelSumsSerializer(many=True), **error_responses(400)})
    def get(self, request: Request) -> Response:
        return Response(ModelSumsSerializer(_sums(request, usage_by_model), many=True).data)
