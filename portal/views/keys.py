"""API keys: list, create (the secret is shown once), edit policies and spend caps, revoke.

Every key is looked up through its owner (``accounts.selectors.api_key_of``): another
user's key id is a 404, exactly like an id that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from accounts.errors import AccountsError, ApiKeyNotFound
from accounts.models import ApiKey, User
from accounts.selectors import api_key_of, api_keys_of
from accounts.services import api_key_create, api_key_revoke, api_key_update
from billing.errors import BillingError
from billing.selectors import api_key_spend_of
from billing.services import key_budget_set
from portal.forms import ApiKeyForm
from portal.views.dashboard import api_base_url


@dataclass(frozen=True)
class KeyRow:
    api_key: ApiKey
    spent_micros: int
    status: str  # "active", "expired" or "revoked"
    lifetime_cap_micros: int | None
    monthly_cap_micros: int | None


def _status(api_key: ApiKey) -> str:
    if api_key.revoked_at is not None:
        return "revoked"
    if api_key.expires_at is not None and api_key.expires_at <= timezone.now():
        return "expired"
    return "active"


def owned_key_or_404(user: User, key_id: int) -> ApiKey:
    try:
        return api_key_of(user=user, key_id=key_id)
    except ApiKeyNotFound:
        raise Http404("No such API key.") from None


def _caps_of(api_key: ApiKey | None) -> dict[str, int | None]:
    budget = getattr(api_key, "budget", None) if api_key is not None else None
    return {"lifetime_limit_micros": budget and budget.lifetime_limit_micros,
            "monthly_limit_micros": budget and budget.monthly_limit_micros}


@never_cache  # the response to a creation carries the secret: no cache may keep it
@login_required
@require_http_methods(["GET", "POST"])
def keys_list(request: HttpRequest) -> HttpResponse:
    form = ApiKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            # One form, one outcome: a refused spend cap must not leave a key behind.
            with transaction.atomic():
                created = api_key_create(user=request.user, **form.key_policies())
                if any(form.spend_caps().values()):
                    key_budget_set(api_key=created.api_key, **form.spend_caps())
        except (AccountsError, BillingError) as exc:
            form.add_error(None, str(exc))
        else:
            # Rendered, not redirected: the secret lives only in this response, never in
            # the session, a cookie or a URL.
            return render(request, "portal/keys/created.html", {
                "api_key": created.api_key, "secret": created.secret,
                "base_url": api_base_url(request)})
    spent = api_key_spend_of(user=request.user)
    rows = []
    for key in api_keys_of(user=request.user):
        caps = _caps_of(key)
        rows.append(KeyRow(api_key=key, spent_micros=spent.get(key.pk, 0), status=_status(key),
                           lifetime_cap_micros=caps["lifetime_limit_micros"],
                           monthly_cap_micros=caps["monthly_limit_micros"]))
    return render(request, "portal/keys/list.html", {
        "rows": rows, "form": form, "show_form": request.method == "POST"})


@login_required
@require_http_methods(["GET", "POST"])
def key_edit(request: HttpRequest, key_id: int) -> HttpResponse:
    api_key = owned_key_or_404(request.user, key_id)
    form = ApiKeyForm(request.POST or None, initial=ApiKeyForm.initial_for(api_key))
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                # A key without caps keeps no budget row: the request path skips it then.
                if form.spend_caps() != _caps_of(api_key):
                    key_budget_set(api_key=api_key, **form.spend_caps())
                api_key_update(api_key=api_key, **form.key_policies())
        except (AccountsError, BillingError) as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Saved the key {api_key.prefix}…. Routers apply the "
                             "change within a few seconds.")
            return redirect("portal:keys")
    return render(request, "portal/keys/edit.html", {
        "api_key": api_key, "budget": getattr(api_key, "budget", None), "form": form,
        "status": _status(api_key),
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
    return render(request, "portal/keys/revoke.html", {"api_key": api_key,
                                                       "status": _status(api_key)})
