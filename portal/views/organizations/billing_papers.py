"""An organization's paperwork, for its owners and billing members: the receipt of each
credit (page and PDF), the billing details those receipts are made out to, and the monthly
statement (page and CSV).

The personal pages' drawing is reused (``portal.views.receipts``, ``portal/_statement.html``)
with the organization's links; which receipts and which wallet come from billing's one
access rule (``billing_wallet``), so another organization's receipt is a 404 here even to
someone who may see both.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from billing.errors import BillingError
from billing.selectors.receipts import receipt_entries_of
from billing.selectors.statements import statement, statement_entries, statement_months
from billing.services.billing_profiles import wallet_billing_profile_set
from organizations.roles import Action
from portal.forms import BillingDetailsForm
from portal.statement_csv import statement_csv_response
from portal.views.billing_details import next_url_of
from portal.views.organizations.access import OrgAccess, billing_wallet, org_page
from portal.views.receipts import (
    ReceiptLinks,
    receipt_or_404,
    receipt_page_response,
    receipt_pdf_response,
)
from portal.views.statements import month_from_query


@org_page(Action.BILLING)
def receipt(request: HttpRequest, access: OrgAccess, entry_id: int) -> HttpResponse:
    org_id = access.organization.pk
    found = receipt_or_404(request, entry_id, wallet=billing_wallet(access))
    return receipt_page_response(request, found, ReceiptLinks(
        back=reverse("portal:org_billing", args=[org_id]),
        back_label=f"{access.organization.name} billing",
        pdf=reverse("portal:org_receipt_pdf", args=[org_id, entry_id]),
        billing_details=reverse("portal:org_billing_details", args=[org_id])))


@org_page(Action.BILLING)
def receipt_pdf(request: HttpRequest, access: OrgAccess, entry_id: int) -> HttpResponse:
    return receipt_pdf_response(receipt_or_404(request, entry_id,
                                               wallet=billing_wallet(access)))


@org_page(Action.BILLING, methods=("GET", "POST"))
def billing_details(request: HttpRequest, access: OrgAccess) -> HttpResponse:
    """The name and address on every receipt of the organization's credits; without a name,
    receipts name the organization."""
    wallet = billing_wallet(access)
    next_url = next_url_of(request)
    form = BillingDetailsForm(request.POST or None,
                              initial=BillingDetailsForm.initial_for(wallet))
    form.fields["billing_name"].help_text = (
        f"A company or a person. Empty: the organization's name, {access.organization.name}.")
    if request.method == "POST" and form.is_valid():
        try:
            wallet_billing_profile_set(wallet=wallet,
                                       billing_name=form.cleaned_data["billing_name"],
                                       billing_address=form.cleaned_data["billing_address"])
        except BillingError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Billing details of {access.organization.name} saved; "
                             "every receipt of its credits shows them.")
            return redirect(next_url or reverse("portal:org_billing",
                                                args=[access.organization.pk]))
    latest = receipt_entries_of(user=access.user, wallet=wallet).values_list(
        "pk", flat=True).first()
    return render(request, "portal/organizations/billing_details.html", {
        "access": access, "form": form, "next": next_url, "latest_receipt_id": latest,
    }, status=400 if form.is_bound and form.errors else 200)


@org_page(Action.BILLING)
def statement_page(request: HttpRequest, access: OrgAccess) -> HttpResponse:
    wallet = billing_wallet(access)
    month = month_from_query(request)
    csv_url = reverse("portal:org_statement_csv", args=[access.organization.pk])
    return render(request, "portal/organizations/statement.html", {
        "access": access,
        "statement": statement(wallet=wallet, month=month),
        "months": list(statement_months(wallet=wallet)),
        "page_url": reverse("portal:org_statement", args=[access.organization.pk]),
        "csv_url": f"{csv_url}?month={month:%Y-%m}",
        "heading_shown": True,
    })


@org_page(Action.BILLING)
def statement_csv(request: HttpRequest, access: OrgAccess) -> StreamingHttpResponse:
    wallet = billing_wallet(access)
    month = month_from_query(request)
    return statement_csv_response(statement=statement(wallet=wallet, month=month),
                                  entries=statement_entries(wallet=wallet, month=month))
