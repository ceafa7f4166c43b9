"""An organization's usage: its requests (filtered, paginated, or as CSV) and sums per day,
member, key and model. Members read only their own requests; admins, billing members and
owners read everyone's and may narrow to one member (``member``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import renderers, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from billing.models import UsageRecord
from billing.selectors import UsageFilters
from billing.selectors.organization_usage import (
    organization_usage_by_key,
    organization_usage_by_member,
    organization_usage_by_model,
    organization_usage_daily,
    organization_usage_records,
)
from portal.api.pagination import KeysetApiPagination
from portal.api.schema import error_responses
from portal.api.views.organizations.base import OrgApiView
from portal.api.views.usage import (
    CsvRenderer,
    DaySerializer,
    ModelSumsSerializer,
    UsageRecordSerializer,
    UsageSumsSerializer,
)
from portal.csv_export import csv_lines, usage_csv_response
from portal.views.organizations.access import key_in_or_404, usage_member
from portal.views.organizations.usage import CSV_HEADER, CSV_SQL_ROW, csv_row


class OrgCsvRenderer(CsvRenderer):
    def render(self, data: Any, accepted_media_type: str | None = None,
               renderer_context: dict | None = None) -> bytes:
        # Only reached for data the view did not stream (errors are JSON): rows as dicts.
        rows = [[row.get(column, "") for column in CSV_HEADER] for row in data or []]
        return "".join(csv_lines(CSV_HEADER, rows)).encode()


class OrgUsageRecordSerializer(UsageRecordSerializer):
    member_id = serializers.IntegerField(source="user_id", help_text="The member whose key "
                                         "made the request (for a service key, its creator).")
    member_email = serializers.EmailField(source="user.email")


class MemberSumsSerializer(UsageSumsSerializer):
    user_id = serializers.IntegerField(allow_null=True, help_text="null: the service keys' "
                                       "requests, which count against no member.")
    email = serializers.EmailField(allow_null=True)


class KeySumsSerializer(UsageSumsSerializer):
    key_id = serializers.IntegerField(source="api_key_id", allow_null=True)
    prefix = serializers.CharField()
    name = serializers.CharField()
    service = serializers.BooleanField()
    owner_email = serializers.EmailField()


class SumsInputSerializer(serializers.Serializer):
    days = serializers.IntegerField(min_value=1, max_value=366, default=30,
                                    help_text="How many UTC days back, today included.")
    member = serializers.IntegerField(required=False, help_text="One member's user id "
                                      "(roles that see everyone's usage).")


class UsageFilterSerializer(serializers.Serializer):
    model = serializers.CharField(required=False, max_length=200)
    key = serializers.IntegerField(required=False, help_text="An id of one of the "
                                   "organization's keys.")
    member = serializers.IntegerField(required=False, help_text="A member's user id.")
    status = serializers.ChoiceField(required=False, choices=UsageRecord.Status.choices)
    endpoint = serializers.ChoiceField(required=False, choices=UsageRecord.Endpoint.choices)
    since = serializers.DateTimeField(required=False, help_text="From (inclusive), ISO 8601.")
    until = serializers.DateTimeField(required=False, help_text="Before (exclusive).")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "since" in attrs and "until" in attrs and attrs["since"] >= attrs["until"]:
            raise serializers.ValidationError({"until": ["Must be after since."]})
        return attrs


class OrgUsageListApi(OrgApiView):
    pagination_class = KeysetApiPagination
    renderer_classes = [renderers.JSONRenderer, OrgCsvRenderer]

    @extend_schema(
        operation_id="org_usage_list", summary="The organization's requests, newest first",
        description="Yours only, unless your role sees every member's usage. Pages by "
        "cursor, as `/api/usage`. `?format=csv` (or `Accept: text/csv`) downloads every "
        "matching request as CSV.",
        parameters=[UsageFilterSerializer],
        responses={(200, "application/json"): OrgUsageRecordSerializer(many=True),
                   (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="Columns: "
                                                      + ", ".join(CSV_HEADER)),
                   **error_responses(400, 404)})
    def get(self, request: Request, org_id: int) -> Response | StreamingHttpResponse:
        access = self.access(request, org_id)
        serializer = UsageFilterSerializer(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        query = serializer.validated_data
        if "key" in query:
            key_in_or_404(access, query["key"])  # another organization's key: 404
        records = organization_usage_records(
            organization=access.organization, member=usage_member(access, query.get("member")),
            filters=UsageFilters(model=query.get("model", ""), api_key_id=query.get("key"),
                                 status=query.get("status", ""),
                                 endpoint=query.get("endpoint", ""),
                                 since=query.get("since"), until=query.get("until")))
        if request.accepted_renderer.format == "csv":
            return usage_csv_response(header=CSV_HEADER, records=records, row=csv_row,
                                      columns=CSV_SQL_ROW, filename=f"usage-org{org_id}.csv")
        paginator = self.pagination_class(scope=f"org-usage:{org_id}:{request.user.pk}")
        page = paginator.paginate_queryset(records, request)
        return paginator.get_paginated_response(
            OrgUsageRecordSerializer(page, many=True).data)


def _sums(view: OrgApiView, request: Request, org_id: int,
          selector: Callable[..., list[Any]]) -> list[dict[str, Any]]:
    access = view.access(request, org_id)
    serializer = SumsInputSerializer(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    query = serializer.validated_data
    rows = selector(organization=access.organization,
                    member=usage_member(access, query.get("member")), days=query["days"])
    return [asdict(row) for row in rows]


class OrgUsageDailyApi(OrgApiView):
    @extend_schema(operation_id="org_usage_daily", summary="Spend and tokens per UTC day",
                   description="Oldest first, days without use as zeros.",
                   parameters=[SumsInputSerializer],
                   responses={200: DaySerializer(many=True), **error_responses(400, 404)})
    def get(self, request: Request, org_id: int) -> Response:
        rows = _sums(self, request, org_id, organization_usage_daily)
        return Response(DaySerializer(rows, many=True).data)


class OrgUsageByMemberApi(OrgApiView):
    @extend_schema(operation_id="org_usage_by_member", summary="Spend and tokens per member",
                   description="Costliest first; yours only for the member role.",
                   parameters=[SumsInputSerializer],
                   responses={200: MemberSumsSerializer(many=True),
                              **error_responses(400, 404)})
    def get(self, request: Request, org_id: int) -> Response:
        rows = _sums(self, request, org_id, organization_usage_by_member)
        return Response(MemberSumsSerializer(rows, many=True).data)


class OrgUsageByKeyApi(OrgApiView):
    @extend_schema(operation_id="org_usage_by_key", summary="Spend and tokens per key",
                   description="Costliest first.", parameters=[SumsInputSerializer],
                   responses={200: KeySumsSerializer(many=True), **error_responses(400, 404)})
    def get(self, request: Request, org_id: int) -> Response:
        rows = _sums(self, request, org_id, organization_usage_by_key)
        return Response(KeySumsSerializer(rows, many=True).data)


class OrgUsageByModelApi(OrgApiView):
    @extend_schema(operation_id="org_usage_by_model", summary="Spend and tokens per model",
                   description="Costliest first.", parameters=[SumsInputSerializer],
                   responses={200: ModelSumsSerializer(many=True),
                              **error_responses(400, 404)})
    def get(self, request: Request, org_id: int) -> Response:
        rows = _sums(self, request, org_id, organization_usage_by_model)
        return Response(ModelSumsSerializer(rows, many=True).data)

