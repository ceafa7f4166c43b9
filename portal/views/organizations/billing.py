"""An organization's billing, for its billing members and owners: the balance, the ledger
(every credit and charge, with the balance after each), and redeeming a voucher into the
organization's wallet.

Card top-ups, auto top-up and receipts for organizations are built elsewhere (issue 18,
points 5 and 6); the page keeps a marked place for them (``billing.html``)."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from billing.errors import BillingError
from billing.selectors.organization_usage import (
    organization_balance,
    organization_ledger_entries,
)
from organizations.roles import Action
from organizations.services import organization_voucher_redeem
from portal.forms import VoucherForm
from portal.templatetags.portal_tags import usd
from portal.views.organizations.access import OrgAccess, org_page

PAGE_SIZE = 50


def _page(request: HttpRequest, access: OrgAccess, voucher_form: VoucherForm | None = None,
          status: int = 200) -> HttpResponse:
    entries = organization_ledger_entries(organization=access.organization)
    return render(request, "portal/organizations/billing.html", {
        "access": access,
        "balance": organization_balance(organization=access.organization),
        "voucher_form": voucher_form or VoucherForm(),
        "page": Paginator(entries, PAGE_SIZE).get_page(request.GET.get("page")),
    }, status=status)


@org_page(Action.BILLING)
def billing(request: HttpRequest, access: OrgAccess) -> HttpResponse:
    return _page(request, access)


@org_page(Action.BILLING, methods=("POST",))
def voucher(request: HttpRequest, access: OrgAccess) -> HttpResponse:
    form = VoucherForm(request.POST)
    if form.is_valid():
        try:
            entry = organization_voucher_redeem(organization=access.organization,
                                                actor=access.user,
                                                code=form.cleaned_data["code"])
        except BillingError as exc:
            form.add_error("code", str(exc))
        else:
            messages.success(request, f"Voucher redeemed: {usd(entry.amount_micros)} was "
                             f"added to {access.organization.name}'s balance.")
            return redirect("portal:org_billing", org_id=access.organization.pk)
    return _page(request, access, voucher_form=form, status=400)
