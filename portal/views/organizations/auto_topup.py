"""An organization's auto top-up, for its owners and billing members: the personal pages'
views (``portal.views.auto_topup``) acting on the organization's wallet, under its billing
pages. The card saved here is the organization's (its wallet's own Stripe customer); when a
charge fails, its owners and billing members are told (``wallet_contacts``)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from organizations.roles import Action
from portal.views.auto_topup import (
    AutoTopUpPlace,
    auto_topup_card_back,
    auto_topup_card_start,
    auto_topup_pay_and_keep,
    auto_topup_settings,
)
from portal.views.organizations.access import OrgAccess, billing_wallet, org_page


def _place(access: OrgAccess) -> AutoTopUpPlace:
    org_id = access.organization.pk
    return AutoTopUpPlace(
        wallet=billing_wallet(access),
        page=reverse("portal:org_auto_topup", args=[org_id]),
        card=reverse("portal:org_auto_topup_card", args=[org_id]),
        card_done=reverse("portal:org_auto_topup_card_done", args=[org_id]),
        pay_and_save=reverse("portal:org_auto_topup_pay_and_save", args=[org_id]),
        back=reverse("portal:org_billing", args=[org_id]),
        template="portal/organizations/auto_topup.html", context={"access": access})


@org_page(Action.BILLING, methods=("GET", "POST"))
def auto_topup(request: HttpRequest, access: OrgAccess) -> HttpResponse:
    return auto_topup_settings(request, _place(access))


@org_page(Action.BILLING, methods=("POST",))
def auto_topup_card(request: HttpRequest, access: OrgAccess) -> HttpResponse:
    return auto_topup_card_start(request, _place(access))


@org_page(Action.BILLING)
def auto_topup_card_done(request: HttpRequest, access: OrgAccess) -> HttpResponse:
    return auto_topup_card_back(request, _place(access))


@org_page(Action.BILLING, methods=("POST",))
def auto_topup_pay_and_save(request: HttpRequest, access: OrgAccess) -> HttpResponse:
    return auto_topup_pay_and_keep(request, _place(access))
