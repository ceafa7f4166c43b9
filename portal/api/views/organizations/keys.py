"""An organization's API keys: members list, create and revoke their own; admins and owners
every key, and create service keys. The secret is in the creation's answer only."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import ApiKey
from billing.selectors.organization_usage import organization_key_spend
from organizations.roles import Action
from organizations.selectors import key_is_own, organization_keys_of
from organizations.services import organization_key_create, organization_key_revoke
from portal.api.fields import UsdField
from portal.api.pagination import ApiPagination
from portal.api.schema import error_responses
from portal.api.serializers import StrictInputSerializer
from portal.api.views.organizations.base import OrgApiView
from portal.views.organizations.access import OrgAccess, key_in_or_404, require


class OrgKeySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="The key's visible start; the secret is never "
                                   "shown again after creation.")
    status = serializers.ChoiceField(choices=["active", "expired", "revoked"])
    service = serializers.BooleanField(help_text="A service key: no member's budget applies.")
    owner_id = serializers.IntegerField(help_text="The member it belongs to (for a service "
                                        "key, the admin who made it).")
    owner_email = serializers.EmailField()
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    spent_micros = serializers.IntegerField(help_text="Spent by this key, ever.")
    spent_usd = UsdField(source="spent_micros")


class CreatedOrgKeySerializer(OrgKeySerializer):
    secret = serializers.CharField(help_text="The whole key, shown in this answer only.")


def _key_view(api_key: ApiKey, spent: dict[int, int]) -> dict[str, Any]:
    fields = ("id", "name", "prefix", "status", "service", "created_at", "last_used_at",
              "revoked_at")
    return {**{field: getattr(api_key, field) for field in fields},
            "owner_id": api_key.user_id, "owner_email": api_key.user.email,
            "spent_micros": spent.get(api_key.pk, 0)}


def _spent(access: OrgAccess) -> dict[int, int]:
    return organization_key_spend(organization=access.organization)


class OrgKeyListApi(OrgApiView):
    pagination_class = ApiPagination

    class OrgKeyInputSerializer(StrictInputSerializer):
        name = serializers.CharField(max_length=100, allow_blank=True, default="")
        service = serializers.BooleanField(default=False, help_text="A service key (admins "
                                           "and owners): no member's budget applies.")

    @extend_schema(operation_id="org_keys_list",
                   summary="The organization's keys you may see",
                   description="Every key for admins and owners; your own for other roles.",
                   responses={200: OrgKeySerializer(many=True), **error_responses(404)})
    def get(self, request: Request, org_id: int) -> Response:
        access = self.access(request, org_id)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(
            organization_keys_of(organization=access.organization, user=request.user,
                                 role=access.role), request, view=self)
        spent = _spent(access)
        return paginator.get_paginated_response(OrgKeySerializer(
            [_key_view(key, spent) for key in page or []], many=True).data)

    @extend_schema(operation_id="org_keys_create",
                   summary="Create a key spending the organization's balance",
                   description="Your own key (your budget applies), or, for admins and "
                   "owners, a service key. The answer carries the `secret`, once.",
                   request=OrgKeyInputSerializer,
                   responses={201: CreatedOrgKeySerializer, **error_responses(400, 404)})
    def post(self, request: Request, org_id: int) -> Response:
        access = self.access(request, org_id)
        serializer = self.OrgKeyInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        created = organization_key_create(organization=access.organization,
                                          actor=request.user, **serializer.validated_data)
        body = CreatedOrgKeySerializer({**_key_view(created.api_key, _spent(access)),
                                        "secret": created.secret}).data
        # no-store: the secret must not be kept by any cache on the way.
        return Response(body, status=status.HTTP_201_CREATED,
                        headers={"Cache-Control": "no-store"})


class OrgKeyDetailApi(OrgApiView):
    def _key(self, request: Request, org_id: int, key_id: int) -> tuple[OrgAccess, ApiKey]:
        access = self.access(request, org_id)
        api_key = key_in_or_404(access, key_id)
        if not key_is_own(api_key=api_key, user=request.user):
            require(access, Action.MANAGE_KEYS)
        return access, api_key

    @extend_schema(operation_id="org_keys_retrieve", summary="One of the organization's keys",
                   responses={200: OrgKeySerializer, **error_responses(404)})
    def get(self, request: Request, org_id: int, key_id: int) -> Response:
        access, api_key = self._key(request, org_id, key_id)
        return Response(OrgKeySerializer(_key_view(api_key, _spent(access))).data)

    @extend_schema(operation_id="org_keys_revoke", summary="Revoke a key",
                   description="Your own; admins and owners any. The key stays listed and "
                   "stops working within a few seconds.",
                   responses={200: OrgKeySerializer, **error_responses(404)})
    def delete(self, request: Request, org_id: int, key_id: int) -> Response:
        access, api_key = self._key(request, org_id, key_id)
        organization_key_revoke(organization=access.organization, actor=request.user,
                                api_key=api_key)
        api_key.refresh_from_db()
        return Response(OrgKeySerializer(_key_view(api_key, _spent(access))).data)
