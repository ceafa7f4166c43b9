"""The page a user lands on: what they have, what they spent, how to call the API."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from billing.selectors import (
    balance_alert_of,
    prices_current,
    usage_spend_summary,
    wallet_balance,
)

FALLBACK_MODEL = "gpt-4o-mini"


def api_base_url(request: HttpRequest) -> str:
    """The /v1 base URL as the browser reached this site, for copy-paste snippets."""
    return request.build_absolute_uri("/v1")


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    models = sorted(price.model for price in prices_current())
    return render(request, "portal/dashboard.html", {
        "balance": wallet_balance(user=request.user),
        "spend": usage_spend_summary(user=request.user),
        "alert": balance_alert_of(user=request.user),
        "base_url": api_base_url(request),
        "example_model": models[0] if models else FALLBACK_MODEL,
        "models": models,
    })
