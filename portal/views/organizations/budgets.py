"""Budgets per member: admins and owners set each member's lifetime and monthly caps in USD;
every member sees their own budget and spend (roles that see everyone's usage see every
member's)."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from billing.errors import BillingError
from billing.selectors.organization_usage import member_budgets_of
from organizations.roles import Action
from organizations.selectors import member_in, usage_scope
from organizations.services import member_budget_update
from portal.forms_organizations import MemberBudgetForm
from portal.views.organizations.access import OrgAccess, org_page


@org_page()
def budgets(request: HttpRequest, access: OrgAccess) -> HttpResponse:
    return render(request, "portal/organizations/budgets.html", {
        "access": access,
        "rows": member_budgets_of(organization=access.organization,
                                  member=usage_scope(role=access.role, user=access.user)),
    })


@org_page(Action.MANAGE_BUDGETS, methods=("GET", "POST"))
def budget_edit(request: HttpRequest, access: OrgAccess, user_id: int) -> HttpResponse:
    membership = member_in(organization=access.organization, user_id=user_id)
    if membership is None:
        raise Http404("No such member.")
    budget = member_budgets_of(organization=access.organization, member=membership.user)[0]
    form = MemberBudgetForm(request.POST or None, initial=MemberBudgetForm.initial_for(
        budget.lifetime_limit_micros, budget.monthly_limit_micros))
    if request.method == "POST" and form.is_valid():
        try:
            member_budget_update(
                organization=access.organization, actor=access.user, user=membership.user,
                lifetime_limit_micros=form.cleaned_data["lifetime_cap_usd"],
                monthly_limit_micros=form.cleaned_data["monthly_cap_usd"])
        except BillingError as exc:  # below what the member has already spent
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Saved the budget of {membership.user.email}. "
                             "Requests are held to it at once.")
            return redirect("portal:org_budgets", org_id=access.organization.pk)
    return render(request, "portal/organizations/budget_edit.html", {
        "access": access, "member": membership, "budget": budget, "form": form,
    }, status=400 if request.method == "POST" else 200)
