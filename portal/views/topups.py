"""Adding money: redeem a voucher, or pay by card through Stripe Checkout. The credit itself
is a ledger entry written by ``billing`` (a voucher at once; a card payment when Stripe's
webhook confirms it, never on the redirect back here, which anyone could forge)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from billing.errors import BillingError
from billing.selectors import stripe_topups_enabled, topups_of, wallet_balance
from billing.selectors.wallets import wallet_credits_of
from billing.services.stripe_topups import topup_checkout_create
from billing.services.vouchers import voucher_redeem
from portal.forms import CheckoutForm, VoucherForm
from portal.templatetags.portal_tags import usd


def _page(request: HttpRequest, *, voucher_form: VoucherForm | None = None,
          checkout_form: CheckoutForm | None = None, status: int = 200) -> HttpResponse:
    return render(request, "portal/topups.html", {
        "balance": wallet_balance(user=request.user),
        "voucher_form": voucher_form or VoucherForm(),
        "checkout_form": checkout_form or CheckoutForm(),
        "stripe_enabled": stripe_topups_enabled(),
        "card_topups": topups_of(user=request.user)[:20],
        "credits": wallet_credits_of(user=request.user, limit=50),
        "checkout_result": request.GET.get("checkout", ""),
    }, status=status)


@login_required
@require_GET
def topups(request: HttpRequest) -> HttpResponse:
    return _page(request)


@login_required
@require_POST
def voucher_redeem_view(request: HttpRequest) -> HttpResponse:
    form = VoucherForm(request.POST)
    if form.is_valid():
        try:
            entry = voucher_redeem(user=request.user, code=form.cleaned_data["code"])
        except BillingError as exc:
            form.add_error("code", str(exc))
        else:
            messages.success(request, f"Voucher redeemed: {usd(entry.amount_micros)} was "
                             "added to your balance.")
            return redirect("portal:topups")
    return _page(request, voucher_form=form, status=400)


@login_required
@require_POST
def checkout_create(request: HttpRequest) -> HttpResponse:
    form = CheckoutForm(request.POST)
    if form.is_valid():
        back = request.build_absolute_uri(reverse("portal:topups"))
        try:
            url = topup_checkout_create(user=request.user,
                                        amount_micros=form.cleaned_data["amount_usd"],
                                        success_url=f"{back}?checkout=success",
                                        cancel_url=f"{back}?checkout=cancelled")
        except BillingError as exc:
            form.add_error("amount_usd", str(exc))
        else:
            return redirect(url)
    return _page(request, checkout_form=form, status=400)
