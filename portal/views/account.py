"""Account settings: the low-balance alert (password changes are Django's own views)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from billing.errors import BillingError
from billing.selectors import balance_alert_of
from billing.services.alerts import balance_alert_set
from portal.forms import BalanceAlertForm


@login_required
@require_http_methods(["GET", "POST"])
def account_settings(request: HttpRequest) -> HttpResponse:
    alert = balance_alert_of(user=request.user)
    form = BalanceAlertForm(request.POST or None, initial=BalanceAlertForm.initial_for(alert))
    if request.method == "POST" and form.is_valid():
        try:
            alert = balance_alert_set(user=request.user,
                                      threshold_micros=form.cleaned_data["threshold_usd"],
                                      email=form.cleaned_data["email"],
                                      webhook_url=form.cleaned_data["webhook_url"])
        except BillingError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Low-balance alert saved." if alert is not None
                             else "Low-balance alert turned off.")
            return redirect("portal:settings")
    return render(request, "portal/settings.html", {"form": form, "alert": alert})
