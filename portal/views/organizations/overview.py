"""Creating an organization, switching between accounts, and an organization's overview."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from billing.selectors.organization_usage import (
    member_budgets_of,
    organization_balance,
    organization_spend_month,
)
from organizations.errors import OrganizationError
from organizations.selectors import (
    members_count_of,
    membership_in,
    sees_all_usage,
    usage_scope,
)
from organizations.services import organization_create
from portal.forms_organizations import OrganizationForm, SwitchForm
from portal.views.organizations.access import OrgAccess, org_page, remember


@login_required
@require_http_methods(["GET", "POST"])
def organization_new(request: HttpRequest) -> HttpResponse:
    form = OrganizationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            organization = organization_create(name=form.cleaned_data["name"],
                                               owner=request.user)
        except OrganizationError as exc:
            form.add_error("name", str(exc))
        else:
            remember(request, organization.pk)
            messages.success(request, f"Created {organization.name}. You are its owner: "
                             "invite members, then redeem a voucher into its balance.")
            return redirect("portal:org_overview", org_id=organization.pk)
    return render(request, "portal/organizations/new.html", {"form": form})


@login_required
@require_POST
def organization_switch(request: HttpRequest) -> HttpResponse:
    """The navigation's switcher: the personal account, or one of the user's
    organizations (another's id is a 404, like one that does not exist)."""
    form = SwitchForm(request.POST)
    account = form.cleaned_data["account"] if form.is_valid() else ""
    if not account:
        remember(request, None)
        return redirect("portal:dashboard")
    if not account.isdigit() or membership_in(user=request.user,
                                              organization_id=int(account)) is None:
        raise Http404("No such organization.")
    remember(request, int(account))
    return redirect("portal:org_overview", org_id=int(account))


@org_page()
def organization_overview(request: HttpRequest, access: OrgAccess) -> HttpResponse:
    organization = access.organization
    scope = usage_scope(role=access.role, user=access.user)
    own_budget = member_budgets_of(organization=organization, member=access.user)
    return render(request, "portal/organizations/overview.html", {
        "access": access,
        "balance": organization_balance(organization=organization),
        "spend_month_micros": organization_spend_month(organization=organization,
                                                       member=scope),
        "spend_is_everyones": sees_all_usage(access.role),
        "members_count": members_count_of(organization=organization),
        "budget": own_budget[0] if own_budget else None,
    })
