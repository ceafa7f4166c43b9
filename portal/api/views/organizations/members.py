"""Members: the list (every member sees it), changing a role and removing a member (admins
and owners), and leaving (``DELETE`` of your own membership, any role)."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from organizations.models import Membership, Role
from organizations.roles import Action
from organizations.selectors import member_in, members_of
from organizations.services import membership_remove, membership_role_set
from portal.api.schema import error_responses
from portal.api.serializers import StrictInputSerializer
from portal.api.views.organizations.base import OrgApiView
from portal.views.organizations.access import OrgAccess, require


class MemberSerializer(serializers.Serializer):
    user_id = serializers.IntegerField()
    email = serializers.EmailField(source="user.email")
    role = serializers.ChoiceField(choices=Role.choices)
    joined_at = serializers.DateTimeField(source="created_at")


def _member_or_404(access: OrgAccess, user_id: int) -> Membership:
    membership = member_in(organization=access.organization, user_id=user_id)
    if membership is None:
        raise Http404("No such member.")
    return membership


class MemberListApi(OrgApiView):
    @extend_schema(operation_id="org_members_list",
                   summary="The organization's members, owners first",
                   responses={200: MemberSerializer(many=True), **error_responses(404)})
    def get(self, request: Request, org_id: int) -> Response:
        access = self.access(request, org_id)
        return Response(MemberSerializer(members_of(organization=access.organization),
                                         many=True).data)


class MemberDetailApi(OrgApiView):
    class RoleInputSerializer(StrictInputSerializer):
        role = serializers.ChoiceField(choices=Role.choices)

    @extend_schema(operation_id="org_members_partial_update",
                   summary="Change a member's role (admins and owners)",
                   description="Making or unmaking an owner is an owner's; the last owner "
                   "stays one (400 `last_owner`).",
                   request=RoleInputSerializer,
                   responses={200: MemberSerializer, **error_responses(400, 404)})
    def patch(self, request: Request, org_id: int, user_id: int) -> Response:
        access = self.access(request, org_id, Action.MANAGE_MEMBERS)
        membership = _member_or_404(access, user_id)
        serializer = self.RoleInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        updated = membership_role_set(organization=access.organization, actor=request.user,
                                      user=membership.user,
                                      role=serializer.validated_data["role"])
        return Response(MemberSerializer(updated).data)

    @extend_schema(operation_id="org_members_remove",
                   summary="Remove a member (admins and owners), or leave (your own id)",
                   description="Their keys in the organization are revoked. The last owner "
                   "cannot go (400 `last_owner`).",
                   responses={204: None, **error_responses(400, 404)})
    def delete(self, request: Request, org_id: int, user_id: int) -> Response:
        access = self.access(request, org_id)
        membership = _member_or_404(access, user_id)
        if membership.user_id != request.user.pk:
            require(access, Action.MANAGE_MEMBERS)
        membership_remove(organization=access.organization, actor=request.user,
                          user=membership.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
