"""API keys: list and create, read, change policies and spend caps, revoke.

Every key is looked up through its owner (``accounts.selectors.api_key_of``), so another
user's key id is a 404 like an id that never existed. The secret is in the creation's
answer only; nothing stores it.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.errors import AccountsError
from accounts.models import ApiKey, User
from accounts.policies import clean_allowed_ips, clean_allowed_models
from accounts.selectors import api_key_of, api_keys_of
from accounts.services import api_key_revoke
from billing.selectors import SpendCaps, api_key_spend_of, key_spend_caps
from billing.services.key_settings import api_key_configure, api_key_create_with_caps
from portal.api.base import ApiView
from portal.api.fields import UsdAmountField, UsdField
from portal.api.pagination import ApiPagination
from portal.api.schema import error_responses
from portal.api.serializers import StrictInputSerializer

_LIMIT = {"min_value": 1, "max_value": 2_147_483_647, "allow_null": True}


class KeyInputSerializer(StrictInputSerializer):
    """What a key's owner may set; everything else (owner, prefix, digest, revocation,
    spend so far) is not a field here and is refused."""

    name = serializers.CharField(max_length=100, allow_blank=True, default="")
    expires_at = serializers.DateTimeField(allow_null=True, default=None,
                                           help_text="When the key stops working; null: never.")
    rpm = serializers.IntegerField(**_LIMIT, default=None, help_text="Requests per minute.")
    tpm = serializers.IntegerField(**_LIMIT, default=None, help_text="Tokens per minute.")
    max_concurrency = serializers.IntegerField(**_LIMIT, default=None,
                                               help_text="Requests in flight at once.")
    allowed_models = serializers.ListField(child=serializers.CharField(max_length=200),
                                           max_length=1000, default=list,
                                           help_text="Models the key may call; empty: all.")
    allowed_ips = serializers.ListField(child=serializers.CharField(max_length=64),
                                        max_length=1000, default=list,
                                        help_text="Client networks in CIDR form; empty: any.")
    lifetime_cap_usd = UsdAmountField(source="lifetime_limit_micros", allow_null=True,
                                      default=None, help_text="Most the key may ever spend.")
    monthly_cap_usd = UsdAmountField(source="monthly_limit_micros", allow_null=True,
                                     default=None, help_text="Most it may spend per UTC month.")

    def validate_expires_at(self, value: Any) -> Any:
        # An expiry already past may be kept as it is (PATCH of other fields), not set anew.
        if value is not None and value <= timezone.now() and value != self.context.get(
                "current_expires_at"):
            raise serializers.ValidationError("An API key cannot expire in the past.")
        return value

    def validate_allowed_models(self, value: list[str]) -> list[str]:
        return _policy(clean_allowed_models, value)

    def validate_allowed_ips(self, value: list[str]) -> list[str]:
        return _policy(clean_allowed_ips, value)


def _policy(clean: Any, value: list[str]) -> list[str]:
    try:
        return clean(value)
    except AccountsError as error:
        raise serializers.ValidationError(str(error)) from None


class KeyOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="The key's visible start; the secret is never "
                                   "shown again after creation.")
    status = serializers.ChoiceField(choices=["active", "expired", "revoked"])
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    rpm = serializers.IntegerField(allow_null=True)
    tpm = serializers.IntegerField(allow_null=True)
    max_concurrency = serializers.IntegerField(allow_null=True)
    allowed_models = serializers.ListField(child=serializers.CharField())
    allowed_ips = serializers.ListField(child=serializers.CharField())
    lifetime_cap_micros = serializers.IntegerField(allow_null=True)
    lifetime_cap_usd = UsdField(source="lifetime_cap_micros", allow_null=True)
    monthly_cap_micros = serializers.IntegerField(allow_null=True)
    monthly_cap_usd = UsdField(source="monthly_cap_micros", allow_null=True)
    spent_micros = serializers.IntegerField(help_text="Spent by this key, ever.")
    spent_usd = UsdField(source="spent_micros")


class CreatedKeyOutputSerializer(KeyOutputSerializer):
    secret = serializers.CharField(help_text="The whole key, shown in this answer only.")


def _key_view(api_key: ApiKey, spent_micros: int) -> dict[str, Any]:
    caps = key_spend_caps(api_key=api_key)
    fields = ("id", "name", "prefix", "created_at", "last_used_at", "expires_at",
              "revoked_at", "rpm", "tpm", "max_concurrency", "allowed_models", "allowed_ips",
              "status")
    return {**{field: getattr(api_key, field) for field in fields},
            "lifetime_cap_micros": caps.lifetime_limit_micros,
            "monthly_cap_micros": caps.monthly_limit_micros, "spent_micros": spent_micros}


def _one_key_view(user: User, key_id: int) -> dict[str, Any]:
    api_key = api_key_of(user=user, key_id=key_id)  # fresh, with its budget
    return _key_view(api_key, api_key_spend_of(user=user).get(api_key.pk, 0))


_POLICIES = ("name", "expires_at", "rpm", "tpm", "max_concurrency", "allowed_models",
             "allowed_ips")


class KeyListApi(ApiView):
    pagination_class = ApiPagination

    @extend_schema(operation_id="keys_list", summary="Your API keys, newest first",
                   responses={200: KeyOutputSerializer(many=True), **error_responses(404)})
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(api_keys_of(user=request.user), request, view=self)
        spent = api_key_spend_of(user=request.user)
        rows = [_key_view(key, spent.get(key.pk, 0)) for key in page or []]
        return paginator.get_paginated_response(KeyOutputSerializer(rows, many=True).data)

    @extend_schema(operation_id="keys_create", summary="Create an API key",
                   description="The answer carries the key's `secret`, once: store it now.",
                   request=KeyInputSerializer,
                   responses={201: CreatedKeyOutputSerializer, **error_responses(400)})
    def post(self, request: Request) -> Response:
        serializer = KeyInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        # One request, one outcome: a refused spend cap leaves no key behind.
        created = api_key_create_with_caps(
            user=request.user, caps=SpendCaps(data["lifetime_limit_micros"],
                                              data["monthly_limit_micros"]),
            **{field: data[field] for field in _POLICIES})
        body = {**_one_key_view(request.user, created.api_key.pk), "secret": created.secret}
        # no-store: the secret must not be kept by any cache on the way.
        return Response(CreatedKeyOutputSerializer(body).data, status=status.HTTP_201_CREATED,
                        headers={"Cache-Control": "no-store"})


class KeyDetailApi(ApiView):
    @extend_schema(operation_id="keys_retrieve", summary="One of your API keys",
                   responses={200: KeyOutputSerializer, **error_responses(404)})
    def get(self, request: Request, key_id: int) -> Response:
        return Response(KeyOutputSerializer(_one_key_view(request.user, key_id)).data)

    @extend_schema(operation_id="keys_partial_update",
                   summary="Change a key's name, policies or spend caps",
                   description="Only the fields sent change; null clears a limit or a cap. "
                   "A revoked key cannot be changed.",
                   request=KeyInputSerializer(partial=True),
                   responses={200: KeyOutputSerializer, **error_responses(400, 404)})
    def patch(self, request: Request, key_id: int) -> Response:
        api_key = api_key_of(user=request.user, key_id=key_id)
        serializer = KeyInputSerializer(data=request.data, partial=True,
                                        context={"current_expires_at": api_key.expires_at})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        current = key_spend_caps(api_key=api_key)
        caps = SpendCaps(data.get("lifetime_limit_micros", current.lifetime_limit_micros),
                         data.get("monthly_limit_micros", current.monthly_limit_micros))
        api_key_configure(api_key=api_key, caps=caps,
                          **{field: data.get(field, getattr(api_key, field))
                             for field in _POLICIES})
        return Response(KeyOutputSerializer(_one_key_view(request.user, key_id)).data)

    @extend_schema(operation_id="keys_revoke", summary="Revoke a key",
                   description="The key stays listed (its usage refers to it) and stops "
                   "working within a few seconds. Revoking twice is harmless.",
                   responses={200: KeyOutputSerializer, **error_responses(404)})
    def delete(self, request: Request, key_id: int) -> Response:
        api_key = api_key_of(user=request.user, key_id=key_id)
        api_key_revoke(prefix=api_key.prefix)
        return Response(KeyOutputSerializer(_one_key_view(request.user, key_id)).data)
