"""Invitations: admins and owners invite by email, list the open ones and revoke them; the
invitee opens the link at /invitations/<token>/.

The link page is open to visitors who are signed out: it names the organization and the
role, and leads to sign-up (or sign-in) and back here to accept. Accepting is a POST by the
account the invitation was sent to; a link that is forged, expired, used, revoked, or for
another address says so and joins nobody (``organizations.services.invitation_accept``).
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from organizations.errors import InvitationInvalid, NotAllowed, OrganizationError
from organizations.roles import Action
from organizations.selectors import invitation_in, invitations_open_of
from organizations.services import (
    invitation_accept,
    invitation_create,
    invitation_of_token,
    invitation_revoke,
)
from portal.forms_organizations import InvitationForm
from portal.views.organizations.access import OrgAccess, org_page, remember
from portal.views.organizations.invitation_mail import invitation_email_send


@org_page(Action.MANAGE_MEMBERS, methods=("GET", "POST"))
def invitations(request: HttpRequest, access: OrgAccess) -> HttpResponse:
    form = InvitationForm(request.POST or None, actor_role=access.role)
    if request.method == "POST" and form.is_valid():
        try:
            invitation, token = invitation_create(
                organization=access.organization, actor=access.user,
                email=form.cleaned_data["email"], role=form.cleaned_data["role"])
        except NotAllowed:
            raise
        except OrganizationError as exc:
            form.add_error("email", str(exc))
        else:
            if invitation_email_send(request=request, invitation=invitation, token=token,
                                     inviter=access.user):
                messages.success(request, f"Invited {invitation.email} as "
                                 f"{invitation.get_role_display().lower()}: the link is in "
                                 "their mailbox.")
            else:
                messages.error(request, f"The invitation to {invitation.email} was made but "
                               "its email could not be sent. Revoke it and invite again once "
                               "the router's email works.")
            return redirect("portal:org_invitations", org_id=access.organization.pk)
    return render(request, "portal/organizations/invitations.html", {
        "access": access, "form": form,
        "invitations": invitations_open_of(organization=access.organization),
        "now": timezone.now(),
    }, status=400 if request.method == "POST" else 200)


@org_page(Action.MANAGE_MEMBERS, methods=("POST",))
def invitation_withdraw(request: HttpRequest, access: OrgAccess,
                        invitation_id: int) -> HttpResponse:
    invitation = invitation_in(organization=access.organization, invitation_id=invitation_id)
    if invitation is None:
        raise Http404("No such invitation.")
    invitation_revoke(invitation=invitation, actor=access.user)
    messages.success(request, f"Revoked the invitation to {invitation.email}; its link no "
                     "longer works.")
    return redirect("portal:org_invitations", org_id=access.organization.pk)


@never_cache  # the page is about one secret link: no cache may keep it
@require_http_methods(["GET"])
def invitation_page(request: HttpRequest, token: str) -> HttpResponse:
    try:
        invitation = invitation_of_token(token)
    except InvitationInvalid as exc:
        return _refused(request, str(exc))
    here = reverse("portal:invitation_accept", args=[token])
    user = request.user
    wrong_account = (user.is_authenticated
                     and user.email.lower() != invitation.email.lower())
    return render(request, "portal/organizations/accept.html", {
        "invitation": invitation, "organization": invitation.organization,
        "wrong_account": wrong_account,
        "signup_url": reverse("portal:signup") + "?" + urlencode(
            {"next": here, "email": invitation.email}),
        "login_url": reverse("portal:login") + "?" + urlencode({"next": here}),
    })


@never_cache
@login_required
@require_POST
def invitation_join(request: HttpRequest, token: str) -> HttpResponse:
    try:
        membership = invitation_accept(token=token, user=request.user)
    except InvitationInvalid as exc:
        return _refused(request, str(exc))
    remember(request, membership.organization_id)
    messages.success(request, f"Welcome to {membership.organization.name}: you joined as "
                     f"{membership.get_role_display().lower()}.")
    return redirect("portal:org_overview", org_id=membership.organization_id)


def accept(request: HttpRequest, token: str) -> HttpResponse:
    """One address for the link: GET shows it, POST accepts it."""
    if request.method == "POST":
        return invitation_join(request, token)
    return invitation_page(request, token)


def _refused(request: HttpRequest, message: str) -> HttpResponse:
    return render(request, "portal/organizations/accept_refused.html",
                  {"message": message}, status=400)
