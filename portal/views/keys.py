"""API keys: list, create (the secret is shown once), edit policies and spend caps, revoke.

Every key is looked up through its owner (``accounts.selectors.api_key_of``): another
user's key id is a 404, exactly like an id that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from accounts.errors import AccountsError, ApiKeyNotFound
from accounts.models import ApiKey, User
from accounts.selectors import api_key_of, api_keys_of
from accounts.services import api_key_revoke
from billing.errors import BillingError
from billing.selectors import SpendCaps, api_key_spend_of, key_spend_caps
from billing.services.key_settings import api_key_configure, api_key_create_with_caps
from portal.forms import ApiKeyForm
from portal.views.dashboard import api_base_url


@dataclass(frozen=True)
class KeyRow:
    api_key: ApiKey
    spent_micros: int
    caps: SpendCaps


def owned_key_or_404(user: User, key_id: int) -> ApiKey:
    try:
        return api_key_of(user=user, key_id=key_id)
    except ApiKeyNotFound:
        raise Http404("No such API key.") from None


@never_cache  # the response to a creation carries the secret: no cache may keep it
@login_required
@require_http_methods(["GET", "POST"])
def keys_list(request: HttpRequest) -> HttpResponse:
    form = ApiKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            # One form, one outcome: a refused spend cap leaves no key behind.
            created = api_key_create_with_caps(user=request.user, caps=form.spend_caps(),
                                               **form.key_policies())
        except (AccountsError, BillingError) as exc:
            form.add_error(None, str(exc))
        else:
            # Rendered, not redirected: the secret lives only in this response, never in
            # the session, a cookie or a URL.
            return render(request, "portal/keys/created.html", {
                "api_key": created.api_key, "secret": created.secret,
                "base_url": api_base_url(request)})
    spent = api_key_spend_of(user=request.user)
    rows = [KeyRow(api_key=key, spent_micros=spent.get(key.pk, 0),
                   caps=key_spend_caps(api_key=key))
            for key in api_keys_of(user=request.user)]
    return render(request, "portal/keys/list.html", {
        "rows": rows, "form": form, "show_form": request.method == "POST"})


@login_required
@require_http_methods(["GET", "POST"])
def key_edit(request: HttpRequest, key_id: int) -> HttpResponse:
    api_key = owned_key_or_404(request.user, key_id)
    form = ApiKeyForm(request.POST or None, initial=ApiKeyForm.initial_for(api_key))
    if request.method == "POST" and form.is_valid():
        try:
            api_key_configure(api_key=api_key, caps=form.spend_caps(), **form.key_policies())
        except (AccountsError, BillingError) as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Saved the key {api_key.prefix}…. Routers apply the "
                             "change within a few seconds.")
            return redirect("portal:keys")
    return render(request, "portal/keys/edit.html", {
        "api_key": api_key, "budget": getattr(api_key, "budget", None), "form": form,
        "spent_micros": api_key_spend_of(user=request.user).get(api_key.pk, 0)})


@login_required
@require_http_methods(["GET", "POST"])
def key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    api_key = owned_key_or_404(request.user, key_id)
    if request.method == "POST":
        api_key_revoke(prefix=api_key.prefix)
        messages.success(request, f"Revoked the key {api_key.prefix}…. Requests with it are "
                         "refused within a few seconds.")
        return redirect("portal:keys")
    return render(request, "portal/keys/revoke.html", {"api_key": api_key})
