"""An organization's billing, for its billing members and owners: the balance, the ledger
(every credit and charge, with the balance after each, and each credit's receipt), adding
money (a voucher, or a card through Stripe Checkout), and links to auto top-up, the monthly
statement and the billing details its receipts are made out to.

A card payment is credited to the organization's wallet by Stripe's webhook, never on the
way back here (anyone could type that URL), and never to the payer's own wallet.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from billing.errors import BillingError
from billing.keyset import BY_ID
from billing.selectors import stripe_topups_enabled, topups_of
from billing.selectors.organization_usage import (
    organization_balance,
    organization_ledger_entries,
)
from billing.services.stripe_topups import topup_checkout_create
from organizations.roles import Action
from organizations.services import organization_voucher_redeem
from portal.forms import CheckoutForm, VoucherForm
from portal.keyset_pages import portal_page
from portal.templatetags.portal_tags import usd
from portal.views.organizations.access import OrgAccess, billing_wallet, org_page

PAGE_SIZE = 50


def _page(request: HttpRequest, access: OrgAccess, *, voucher_form: VoucherForm | None = None,
          checkout_form: CheckoutForm | None = None, status: int = 200) -> HttpResponse:
    wallet = billing_wallet(access)
    # By cursor on the wallet's (wallet, -id) index: a count of the organization's whole
    # ledger cost more with every request its members made (31 ms at 10M records).
    page, links = portal_page(request, organization_ledger_entries(
        organization=access.organization), size=PAGE_SIZE, order=BY_ID,
        scope=f"org-ledger:{access.organization.pk}:{access.user.pk}")
    return render(request, "portal/organizations/billing.html", {
        "access": access,
        "wallet": wallet,
        "balance": organization_balance(organization=access.organization),
        "voucher_form": voucher_form or VoucherForm(),
        "checkout_form": checkout_form or CheckoutForm(),
        "stripe_enabled": stripe_topups_enabled(),
        "card_topups": topups_of(wallet=wallet).select_related("user")[:20],
        "checkout_result": request.GET.get("checkout", ""),
        "page": page,
        "links": links,
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


@org_page(Action.BILLING, methods=("POST",))
def checkout(request: HttpRequest, access: OrgAccess) -> HttpResponse:
    """Pay by card into the organization's balance: off to Stripe's page, back to this
    organization's billing page."""
    form = CheckoutForm(request.POST)
    if form.is_valid():
        back = request.build_absolute_uri(
            reverse("portal:org_billing", args=[access.organization.pk]))
        try:
            url = topup_checkout_create(user=access.user, wallet=billing_wallet(access),
                                        amount_micros=form.cleaned_data["amount_usd"],
                                        success_url=f"{back}?checkout=success",
                                        cancel_url=f"{back}?checkout=cancelled")
        except BillingError as exc:
            form.add_error("amount_usd", str(exc))
        else:
            return redirect(url)
    return _page(request, access, checkout_form=form, status=400)
