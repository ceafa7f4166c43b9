"""Members and roles: the list, changing a role, removing a member, leaving, transferring
ownership and deleting the organization. Each button is shown only to roles that may use
it; the services decide (and the page answers 403 when they refuse a role)."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from organizations.errors import NotAllowed, OrganizationError
from organizations.models import Membership
from organizations.roles import Action
from organizations.selectors import member_in, members_of
from organizations.services import (
    membership_remove,
    membership_role_set,
    organization_delete,
    ownership_transfer,
)
from portal.forms_organizations import DeleteForm, RoleForm, TransferForm
from portal.views.organizations.access import OrgAccess, forbidden, org_page, remember


def _member_or_404(access: OrgAccess, user_id: int) -> Membership:
    membership = member_in(organization=access.organization, user_id=user_id)
    if membership is None:
        raise Http404("No such member.")
    return membership


def _back(access: OrgAccess) -> HttpResponse:
    return redirect("portal:org_members", org_id=access.organization.pk)


@org_page()
def members(request: HttpRequest, access: OrgAccess) -> HttpResponse:
    listed = members_of(organization=access.organization)
    return render(request, "portal/organizations/members.html", {
        "access": access,
        "rows": [(m, RoleForm(initial={"role": m.role}, actor_role=access.role,
                              member_email=m.user.email, prefix=f"m{m.user_id}"))
                 for m in listed],
        "transfer_form": TransferForm(members=listed, actor_id=access.user.pk),
    })


@org_page(Action.MANAGE_MEMBERS, methods=("POST",))
def member_role(request: HttpRequest, access: OrgAccess, user_id: int) -> HttpResponse:
    membership = _member_or_404(access, user_id)
    form = RoleForm(request.POST, actor_role=access.role, prefix=f"m{user_id}")
    if not form.is_valid():
        messages.error(request, "Choose a role you may give.")
        return _back(access)
    try:
        membership_role_set(organization=access.organization, actor=access.user,
                            user=membership.user, role=form.cleaned_data["role"])
    except NotAllowed:
        raise
    except OrganizationError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{membership.user.email} is now "
                         f"{form.cleaned_data['role']}.")
    return _back(access)


@org_page(methods=("POST",))
def member_remove(request: HttpRequest, access: OrgAccess, user_id: int) -> HttpResponse:
    membership = _member_or_404(access, user_id)
    if membership.user_id == access.user.pk:
        return _leave(request, access)
    if not access.may(Action.MANAGE_MEMBERS):
        return forbidden(request, access)
    try:
        membership_remove(organization=access.organization, actor=access.user,
                          user=membership.user)
    except NotAllowed:
        raise
    except OrganizationError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Removed {membership.user.email}; their keys in "
                         f"{access.organization.name} are revoked.")
    return _back(access)


@org_page(methods=("POST",))
def leave(request: HttpRequest, access: OrgAccess) -> HttpResponse:
    return _leave(request, access)


def _leave(request: HttpRequest, access: OrgAccess) -> HttpResponse:
    try:
        membership_remove(organization=access.organization, actor=access.user,
                          user=access.user)
    except NotAllowed:
        raise
    except OrganizationError as exc:  # the last owner: the message says what to do
        messages.error(request, str(exc))
        return _back(access)
    remember(request, None)
    messages.success(request, f"You left {access.organization.name}; your keys in it are "
                     "revoked.")
    return redirect("portal:dashboard")


@org_page(Action.OWN, methods=("POST",))
def transfer(request: HttpRequest, access: OrgAccess) -> HttpResponse:
    form = TransferForm(request.POST, members=members_of(organization=access.organization),
                        actor_id=access.user.pk)
    if not form.is_valid():
        messages.error(request, "Choose a member to make the owner.")
        return _back(access)
    target = _member_or_404(access, form.cleaned_data["user"])
    try:
        ownership_transfer(organization=access.organization, actor=access.user,
                           to=target.user)
    except NotAllowed:
        raise
    except OrganizationError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{target.user.email} is now an owner; you are an admin.")
    return _back(access)


@org_page(Action.OWN, methods=("GET", "POST"))
def delete(request: HttpRequest, access: OrgAccess) -> HttpResponse:
    form = DeleteForm(request.POST or None, name=access.organization.name)
    if request.method == "POST" and form.is_valid():
        organization_delete(organization=access.organization, actor=access.user)
        remember(request, None)
        messages.success(request, f"Deleted {access.organization.name}. Its keys are "
                         "revoked; its ledger is kept for the books.")
        return redirect("portal:dashboard")
    return render(request, "portal/organizations/delete.html",
                  {"access": access, "form": form},
                  status=400 if request.method == "POST" else 200)
