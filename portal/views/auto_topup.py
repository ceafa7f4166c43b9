"""Auto top-up: its state, its settings, and saving the card it charges (on Stripe's pages:
a setup-only Checkout, or a card top-up that keeps the card). The charges themselves start
off the request path (``billing.services.auto_topup``), never from these views."""

from __future__ import annotations

import re

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from billing.errors import BillingError
from billing.models import Wallet
from billing.selectors import auto_topup_charges_of, auto_topup_state_of
from billing.services.auto_topup import (
    auto_topup_card_checkout_complete,
    auto_topup_card_checkout_create,
    auto_topup_configure,
)
from billing.services.stripe_topups import topup_checkout_create
from billing.services.wallets import wallet_get_or_create
from portal.auto_topup_forms import AutoTopUpForm
from portal.forms import CheckoutForm

# What Stripe puts in the return URL; anything else is not looked up.
_SESSION_ID = re.compile(r"cs_[A-Za-z0-9_]{1,250}")


def wallet_of(request: HttpRequest) -> Wallet:
    """The wallet these pages act on: the signed-in person's own. The one place to change
    when a page can act for an organization's wallet."""
    return wallet_get_or_create(user=request.user)


def _page(request: HttpRequest, wallet: Wallet, *, form: AutoTopUpForm | None = None,
          topup_form: CheckoutForm | None = None, status: int = 200) -> HttpResponse:
    state = auto_topup_state_of(wallet=wallet)
    return render(request, "portal/auto_topup.html", {
        "state": state,
        "form": form or AutoTopUpForm(initial=AutoTopUpForm.initial_for(state)),
        "topup_form": topup_form or CheckoutForm(),
        "charges": auto_topup_charges_of(wallet=wallet, limit=10),
        "checkout_result": request.GET.get("checkout", ""),
    }, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def auto_topup_page(request: HttpRequest) -> HttpResponse:
    wallet = wallet_of(request)
    if request.method == "GET":
        return _page(request, wallet)
    form = AutoTopUpForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            auto_topup_configure(wallet=wallet, enabled=data["enabled"],
                                 threshold_micros=data["threshold_usd"],
                                 amount_micros=data["amount_usd"],
                                 monthly_ceiling_micros=data["monthly_ceiling_usd"])
        except BillingError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Auto top-up is on." if data["enabled"]
                             else "Auto top-up settings saved; it is off.")
            return redirect("portal:auto_topup")
    return _page(request, wallet, form=form, status=400)


@login_required
@require_POST
def auto_topup_card(request: HttpRequest) -> HttpResponse:
    """Save a card without paying: Stripe Checkout in setup mode."""
    done = request.build_absolute_uri(reverse("portal:auto_topup_card_done"))
    page = request.build_absolute_uri(reverse("portal:auto_topup"))
    try:
        url = auto_topup_card_checkout_create(
            wallet=wallet_of(request), success_url=f"{done}?session_id={{CHECKOUT_SESSION_ID}}",
            cancel_url=page)
    except BillingError as exc:
        messages.error(request, str(exc))
        return redirect("portal:auto_topup")
    return redirect(url)


@login_required
@require_GET
def auto_topup_card_done(request: HttpRequest) -> HttpResponse:
    """Back from Stripe's setup page. The card is read from Stripe, not from this URL."""
    session_id = request.GET.get("session_id", "")
    saved = False
    if _SESSION_ID.fullmatch(session_id):
        try:
            saved = auto_topup_card_checkout_complete(wallet=wallet_of(request),
                                                      session_id=session_id)
        except BillingError as exc:
            messages.error(request, str(exc))
            return redirect("portal:auto_topup")
    if saved:
        messages.success(request, "Card saved. Turn auto top-up on below to use it.")
    else:
        messages.info(request, "The card is saved as soon as the payment provider confirms "
                      "it, usually within a minute.")
    return redirect("portal:auto_topup")


@login_required
@require_POST
def auto_topup_pay_and_save(request: HttpRequest) -> HttpResponse:
    """A card top-up now whose card Stripe keeps for auto top-up (the payer's opt-in)."""
    wallet = wallet_of(request)
    form = CheckoutForm(request.POST)
    if form.is_valid():
        back = request.build_absolute_uri(reverse("portal:auto_topup"))
        try:
            url = topup_checkout_create(user=request.user,
                                        amount_micros=form.cleaned_data["amount_usd"],
                                        success_url=f"{back}?checkout=success",
                                        cancel_url=f"{back}?checkout=cancelled",
                                        save_card=True)
        except BillingError as exc:
            form.add_error("amount_usd", str(exc))
        else:
            return redirect(url)
    return _page(request, wallet, topup_form=form, status=400)
