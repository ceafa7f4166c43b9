"""The billing details receipts are made out to: the wallet's name and address."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from billing.errors import BillingError
from billing.selectors.receipts import receipt_entries_of, wallet_of_viewer
from billing.services.billing_profiles import wallet_billing_profile_set
from portal.forms import BillingDetailsForm


@login_required
@require_http_methods(["GET", "POST"])
def billing_details(request: HttpRequest) -> HttpResponse:
    wallet = wallet_of_viewer(user=request.user)
    if wallet is None:
        raise Http404("No wallet.")
    next_url = next_url_of(request)
    form = BillingDetailsForm(request.POST or None,
                              initial=BillingDetailsForm.initial_for(wallet))
    if request.method == "POST" and form.is_valid():
        try:
            wallet_billing_profile_set(wallet=wallet,
                                       billing_name=form.cleaned_data["billing_name"],
                                       billing_address=form.cleaned_data["billing_address"])
        except BillingError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Billing details saved; every receipt shows them.")
            return redirect(next_url or "portal:billing_details")
    latest = receipt_entries_of(user=request.user).values_list("pk", flat=True).first()
    return render(request, "portal/billing_details.html", {
        "form": form, "next": next_url, "latest_receipt_id": latest,
    }, status=400 if form.is_bound and form.errors else 200)


def next_url_of(request: HttpRequest) -> str:
    """Where to go once saved (the receipt the user came from): only a path on this site."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate.startswith("/") and url_has_allowed_host_and_scheme(
            candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return candidate
    return ""
