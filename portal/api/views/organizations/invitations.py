"""Invitations (admins and owners): the open ones, inviting by email (the link goes by
email only, never in the answer), and revoking."""

from __future__ import annotations

from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from organizations.models import Invitation, Role
from organizations.roles import Action
from organizations.selectors import invitation_in, invitations_open_of
from organizations.services import invitation_create, invitation_revoke
from portal.api.schema import error_responses
from portal.api.serializers import StrictInputSerializer
from portal.api.views.organizations.base import OrgApiView
from portal.views.organizations.invitation_mail import invitation_email_send


class InvitationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=Role.choices)
    invited_by = serializers.EmailField(source="invited_by.email", allow_null=True,
                                        default=None)
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    expired = serializers.SerializerMethodField()

    def get_expired(self, invitation: Invitation) -> bool:
        return invitation.expires_at <= timezone.now()


class CreatedInvitationSerializer(InvitationSerializer):
    email_sent = serializers.SerializerMethodField(
        help_text="false: the router could not send the email; revoke and invite again "
        "once it can.")

    def get_email_sent(self, invitation: Invitation) -> bool:
        return bool(self.context.get("email_sent"))


class InvitationListApi(OrgApiView):
    class InvitationInputSerializer(StrictInputSerializer):
        email = serializers.EmailField(max_length=254)
        role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER,
                                       help_text="Only an owner may invite an owner.")

    @extend_schema(operation_id="org_invitations_list",
                   summary="Open invitations (admins and owners)",
                   responses={200: InvitationSerializer(many=True), **error_responses(404)})
    def get(self, request: Request, org_id: int) -> Response:
        access = self.access(request, org_id, Action.MANAGE_MEMBERS)
        return Response(InvitationSerializer(
            invitations_open_of(organization=access.organization), many=True).data)

    @extend_schema(operation_id="org_invitations_create",
                   summary="Invite by email (admins and owners)",
                   description="Emails a signed link, single-use, valid "
                   "ROUTER_INVITATION_DAYS days, for that address only.",
                   request=InvitationInputSerializer,
                   responses={201: CreatedInvitationSerializer, **error_responses(400, 404)})
    def post(self, request: Request, org_id: int) -> Response:
        access = self.access(request, org_id, Action.MANAGE_MEMBERS)
        serializer = self.InvitationInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        invitation, token = invitation_create(organization=access.organization,
                                              actor=request.user, **serializer.validated_data)
        sent = invitation_email_send(request=request, invitation=invitation, token=token,
                                     inviter=request.user)
        return Response(CreatedInvitationSerializer(invitation,
                                                    context={"email_sent": sent}).data,
                        status=status.HTTP_201_CREATED)


class InvitationDetailApi(OrgApiView):
    @extend_schema(operation_id="org_invitations_revoke",
                   summary="Revoke an invitation (admins and owners)",
                   description="Its link stops working; revoking twice is harmless.",
                   responses={204: None, **error_responses(404)})
    def delete(self, request: Request, org_id: int, invitation_id: int) -> Response:
        access = self.access(request, org_id, Action.MANAGE_MEMBERS)
        invitation = invitation_in(organization=access.organization,
                                   invitation_id=invitation_id)
        if invitation is None:
            raise Http404("No such invitation.")
        invitation_revoke(invitation=invitation, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
