"""Auto top-up: its state, its settings, and saving the card it charges (on Stripe's pages:
a setup-only Checkout, or a card top-up that keeps the card). The charges themselves start
off the request path (``billing.services.auto_topup``), never from these views.

The same pages serve a person's own wallet (here, under /topups/auto/) and an organization's
(``portal.views.organizations.auto_topup``, for its owners and billing members): each view
below is written once, against an ``AutoTopUpPlace`` that says which wallet and which URLs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

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


@dataclass(frozen=True)
class AutoTopUpPlace:
    """The wallet an auto top-up page acts on, and where its forms and links go."""

    wallet: Wallet
    page: str  # the auto top-up page itself
    card: str  # POST: save a card without paying
    card_done: str  # back from Stripe's setup page
    pay_and_save: str  # POST: a card top-up that keeps the card
    back: str  # the page it belongs to (Top up, or the organization's Billing)
    template: str = "portal/auto_topup.html"
    context: dict[str, Any] = field(default_factory=dict)


def wallet_of(request: HttpRequest) -> Wallet:
    """The wallet the personal pages act on: the signed-in person's own (an
    organization's is chosen by ``wallet_of_viewer``, in the organization's views)."""
    return wallet_get_or_create(user=request.user)


def _personal(request: HttpRequest) -> AutoTopUpPlace:
    return AutoTopUpPlace(
        wallet=wallet_of(request), page=reverse("portal:auto_topup"),
        card=reverse("portal:auto_topup_card"), card_done=reverse("portal:auto_topup_card_done"),
        pay_and_save=reverse("portal:auto_topup_pay_and_save"), back=reverse("portal:topups"))


def _page(request: HttpRequest, place: AutoTopUpPlace, *, form: AutoTopUpForm | None = None,
          topup_form: CheckoutForm | None = None, status: int = 200) -> HttpResponse:
    state = auto_topup_state_of(wallet=place.wallet)
    return render(request, place.template, {
        **place.context,
        "place": place,
        "state": state,
        "form": form or AutoTopUpForm(initial=AutoTopUpForm.initial_for(state)),
        "topup_form": topup_form or CheckoutForm(),
        "charges": auto_topup_charges_of(wallet=place.wallet, limit=10),
        "checkout_result": request.GET.get("checkout", ""),
    }, status=status)


def auto_topup_settings(request: HttpRequest, place: AutoTopUpPlace) -> HttpResponse:
    if request.method == "GET":
        return _page(request, place)
    form = AutoTopUpForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            auto_topup_configure(wallet=place.wallet, enabled=data["enabled"],
                                 threshold_micros=data["threshold_usd"],
                                 amount_micros=data["amount_usd"],
                                 monthly_ceiling_micros=data["monthly_ceiling_usd"])
        except BillingError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Auto top-up is on." if data["enabled"]
                             else "Auto top-up settings saved; it is off.")
            return redirect(place.page)
    return _page(request, place, form=form, status=400)


def auto_topup_card_start(request: HttpRequest, place: AutoTopUpPlace) -> HttpResponse:
    """Save a card without paying: Stripe Checkout in setup mode."""
    done = request.build_absolute_uri(place.card_done)
    try:
        url = auto_topup_card_checkout_create(
            wallet=place.wallet, success_url=f"{done}?session_id={{CHECKOUT_SESSION_ID}}",
            cancel_url=request.build_absolute_uri(place.page))
    except BillingError as exc:
        messages.error(request, str(exc))
        return redirect(place.page)
    return redirect(url)


def auto_topup_card_back(request: HttpRequest, place: AutoTopUpPlace) -> HttpResponse:
    """Back from Stripe's setup page. The card is read from Stripe, not from this URL, and
    saved only if Stripe's session was made for this very wallet."""
    session_id = request.GET.get("session_id", "")
    saved = False
    if _SESSION_ID.fullmatch(session_id):
        try:
            saved = auto_topup_card_checkout_complete(wallet=place.wallet,
                                                      session_id=session_id)
        except BillingError as exc:
            messages.error(request, str(exc))
            return redirect(place.page)
    if saved:
        messages.success(request, "Card saved. Turn auto top-up on below to use it.")
    else:
        messages.info(request, "The card is saved as soon as the payment provider confirms "
                      "it, usually within a minute.")
    return redirect(place.page)


def auto_topup_pay_and_keep(request: HttpRequest, place: AutoTopUpPlace) -> HttpResponse:
    """A card top-up now, into the place's wallet, whose card Stripe keeps for auto
    top-up (the payer's opt-in)."""
    form = CheckoutForm(request.POST)
    if form.is_valid():
        back = request.build_absolute_uri(place.page)
        try:
            url = topup_checkout_create(user=request.user, wallet=place.wallet,
                                        amount_micros=form.cleaned_data["amount_usd"],
                                        success_url=f"{back}?checkout=success",
                                        cancel_url=f"{back}?checkout=cancelled",
                                        save_card=True)
        except BillingError as exc:
            form.add_error("amount_usd", str(exc))
        else:
            return redirect(url)
    return _page(request, place, topup_form=form, status=400)


@login_required
@require_http_methods(["GET", "POST"])
def auto_topup_page(request: HttpRequest) -> HttpResponse:
    return auto_topup_settings(request, _personal(request))


@login_required
@require_POST
def auto_topup_card(request: HttpRequest) -> HttpResponse:
    return auto_topup_card_start(request, _personal(request))


@login_required
@require_GET
def auto_topup_card_done(request: HttpRequest) -> HttpResponse:
    return auto_topup_card_back(request, _personal(request))


@login_required
@require_POST
def auto_topup_pay_and_save(request: HttpRequest) -> HttpResponse:
    return auto_topup_pay_and_keep(request, _personal(request))
