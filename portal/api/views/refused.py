"""Refused requests: what was refused for money (402) or a limit (429), never charged."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.selectors import api_key_of
from billing.models import RefusedRequests, UsageRecord
from billing.selectors import UsageFilters, refused_requests_of
from portal.api.base import ApiView
from portal.api.pagination import ApiPagination
from portal.api.schema import error_responses


class RefusedGroupSerializer(serializers.Serializer):
    minute = serializers.DateTimeField(help_text="The minute (UTC) they were refused in.")
    endpoint = serializers.ChoiceField(choices=UsageRecord.Endpoint.choices)
    model = serializers.CharField()
    key_id = serializers.IntegerField(source="api_key_id")
    key_prefix = serializers.CharField(source="api_key.prefix")
    key_name = serializers.CharField(source="api_key.name")
    status = serializers.IntegerField(help_text="402 (money) or 429 (a rate limit).")
    reason = serializers.ChoiceField(choices=RefusedRequests.Reason.choices)
    count = serializers.IntegerField(help_text="How many requests of this group were refused.")
    message = serializers.CharField(help_text="The last refusal's error message.")
    last_request_id = serializers.CharField()


class RefusedListApi(ApiView):
    pagination_class = ApiPagination

    class FilterSerializer(serializers.Serializer):
        model = serializers.CharField(required=False, max_length=200)
        key = serializers.IntegerField(required=False, help_text="An id of one of your keys.")
        endpoint = serializers.ChoiceField(required=False,
                                           choices=UsageRecord.Endpoint.choices)
        since = serializers.DateTimeField(required=False, help_text="From (inclusive).")
        until = serializers.DateTimeField(required=False, help_text="Before (exclusive).")

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if "since" in attrs and "until" in attrs and attrs["since"] >= attrs["until"]:
                raise serializers.ValidationError({"until": ["Must be after since."]})
            return attrs

    @extend_schema(
        operation_id="usage_refused", summary="Your refused requests, newest first",
        description="Requests refused before any charge, for money (402) or a rate limit "
        "(429), counted per key, minute, model, endpoint and reason. Counts are written "
        "every few seconds, so the latest refusals show after a short delay.",
        parameters=[FilterSerializer],
        responses={200: RefusedGroupSerializer(many=True), **error_responses(400, 404)})
    def get(self, request: Request) -> Response:
        serializer = self.FilterSerializer(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        query = serializer.validated_data
        key_id = None
        if "key" in query:
            key_id = api_key_of(user=request.user, key_id=query["key"]).pk  # not yours: 404
        groups = refused_requests_of(user=request.user, filters=UsageFilters(
            model=query.get("model", ""), api_key_id=key_id,
            endpoint=query.get("endpoint", ""), since=query.get("since"),
            until=query.get("until")))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(groups, request, view=self)
        return paginator.get_paginated_response(RefusedGroupSerializer(page, many=True).data)
