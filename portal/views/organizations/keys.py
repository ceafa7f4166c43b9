"""An organization's API keys: members see and revoke their own; admins and owners every
key, and create service keys. A new key's secret is shown once, as on the personal keys
page."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache

from accounts.models import ApiKey
from billing.selectors.organization_usage import organization_key_spend
from organizations.roles import Action
from organizations.selectors import key_is_own, organization_keys_of
from organizations.services import organization_key_create, organization_key_revoke
from portal.forms_organizations import OrganizationKeyForm
from portal.views.dashboard import api_base_url
from portal.views.organizations.access import OrgAccess, forbidden, key_in_or_404, org_page


def _may_revoke(access: OrgAccess, api_key: ApiKey) -> bool:
    return key_is_own(api_key=api_key, user=access.user) or access.may(Action.MANAGE_KEYS)


@never_cache  # the response to a creation carries the secret: no cache may keep it
@org_page(methods=("GET", "POST"))
def keys(request: HttpRequest, access: OrgAccess) -> HttpResponse:
    form = OrganizationKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        created = organization_key_create(organization=access.organization,
                                          actor=access.user, name=form.cleaned_data["name"],
                                          service=form.cleaned_data["service"])
        # Rendered, not redirected: the secret lives only in this response.
        return render(request, "portal/organizations/key_created.html", {
            "access": access, "api_key": created.api_key, "secret": created.secret,
            "base_url": api_base_url(request)})
    spent = organization_key_spend(organization=access.organization)
    listed = organization_keys_of(organization=access.organization, user=access.user,
                                  role=access.role)
    return render(request, "portal/organizations/keys.html", {
        "access": access, "form": form,
        "rows": [(key, spent.get(key.pk, 0), _may_revoke(access, key)) for key in listed],
    }, status=400 if request.method == "POST" else 200)


@org_page(methods=("GET", "POST"))
def key_revoke(request: HttpRequest, access: OrgAccess, key_id: int) -> HttpResponse:
    api_key = key_in_or_404(access, key_id)
    if not _may_revoke(access, api_key):
        return forbidden(request, access, "Only admins and owners manage other members' "
                         "keys and service keys.")
    if request.method == "POST":
        organization_key_revoke(organization=access.organization, actor=access.user,
                                api_key=api_key)
        messages.success(request, f"Revoked the key {api_key.prefix}…. Requests with it are "
                         "refused within a few seconds.")
        return redirect("portal:org_keys", org_id=access.organization.pk)
    return render(request, "portal/organizations/key_revoke.html",
                  {"access": access, "api_key": api_key})
