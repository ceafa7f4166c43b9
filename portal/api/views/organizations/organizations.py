"""Organizations: the caller's list, creating one, one organization's summary, deleting it
and transferring its ownership."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from billing.selectors.organization_usage import organization_balance
from organizations.models import Role
from organizations.roles import ALLOWED, Action
from organizations.selectors import member_in, members_count_of, memberships_of
from organizations.services import organization_create, organization_delete, ownership_transfer
from portal.api.fields import UsdField
from portal.api.pagination import ApiPagination
from portal.api.schema import error_responses
from portal.api.serializers import StrictInputSerializer
from portal.api.views.organizations.base import OrgApiView
from portal.views.organizations.access import OrgAccess


class OrganizationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    created_at = serializers.DateTimeField()
    role = serializers.ChoiceField(choices=Role.choices, help_text="Your role in it.")
    permissions = serializers.ListField(
        child=serializers.ChoiceField(choices=[action.value for action in Action]),
        help_text="What your role may do: view, manage_members, manage_keys, "
        "manage_budgets, view_all_usage, billing, own.")


class OrganizationDetailSerializer(OrganizationSerializer):
    members_count = serializers.IntegerField()
    available_micros = serializers.IntegerField(help_text="The organization's balance, "
                                                "less what requests in flight hold.")
    available_usd = UsdField(source="available_micros")


def organization_view(organization: Any, role: str) -> dict[str, Any]:
    return {"id": organization.pk, "name": organization.name,
            "created_at": organization.created_at, "role": role,
            "permissions": sorted(ALLOWED.get(role, frozenset()))}


def _detail(access: OrgAccess) -> dict[str, Any]:
    organization = access.organization
    return {**organization_view(organization, access.role),
            "members_count": members_count_of(organization=organization),
            "available_micros": organization_balance(
                organization=organization).available_micros}


class OrgListApi(OrgApiView):
    pagination_class = ApiPagination

    class OrganizationInputSerializer(StrictInputSerializer):
        name = serializers.CharField(max_length=150)

    @extend_schema(operation_id="orgs_list", summary="Your organizations and your role in each",
                   responses={200: OrganizationSerializer(many=True), **error_responses()})
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(memberships_of(user=request.user), request,
                                           view=self)
        rows = [organization_view(m.organization, m.role) for m in page or []]
        return paginator.get_paginated_response(OrganizationSerializer(rows, many=True).data)

    @extend_schema(operation_id="orgs_create", summary="Create an organization",
                   description="You become its owner; its balance starts at zero.",
                   request=OrganizationInputSerializer,
                   responses={201: OrganizationDetailSerializer, **error_responses(400)})
    def post(self, request: Request) -> Response:
        serializer = self.OrganizationInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        organization = organization_create(name=serializer.validated_data["name"],
                                           owner=request.user)
        access = self.access(request, organization.pk)
        return Response(OrganizationDetailSerializer(_detail(access)).data,
                        status=status.HTTP_201_CREATED)


class OrgDetailApi(OrgApiView):
    @extend_schema(operation_id="orgs_retrieve", summary="One of your organizations",
                   responses={200: OrganizationDetailSerializer, **error_responses(404)})
    def get(self, request: Request, org_id: int) -> Response:
        return Response(OrganizationDetailSerializer(_detail(self.access(request, org_id))).data)

    @extend_schema(operation_id="orgs_delete", summary="Delete an organization (owners)",
                   description="Every key is revoked and every member removed; the ledger "
                   "is kept for the books.",
                   responses={204: None, **error_responses(404)})
    def delete(self, request: Request, org_id: int) -> Response:
        access = self.access(request, org_id, Action.OWN)
        organization_delete(organization=access.organization, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class OrgTransferApi(OrgApiView):
    class TransferInputSerializer(StrictInputSerializer):
        user_id = serializers.IntegerField(help_text="The member who becomes an owner.")

    @extend_schema(operation_id="orgs_transfer", summary="Transfer ownership (owners)",
                   description="The member becomes an owner and you an admin.",
                   request=TransferInputSerializer,
                   responses={200: OrganizationDetailSerializer,
                              **error_responses(400, 404)})
    def post(self, request: Request, org_id: int) -> Response:
        access = self.access(request, org_id, Action.OWN)
        serializer = self.TransferInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        target = member_in(organization=access.organization,
                           user_id=serializer.validated_data["user_id"])
        if target is None:
            raise serializers.ValidationError({"user_id": ["Not a member of this "
                                                            "organization."]})
        ownership_transfer(organization=access.organization, actor=request.user,
                           to=target.user)
        return Response(OrganizationDetailSerializer(
            _detail(self.access(request, org_id))).data)
