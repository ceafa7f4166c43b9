"""Management tokens for the self-service API (/api): create (the secret shown once),
list, revoke. Only here and from a signed-in session: a token cannot mint tokens."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from accounts.errors import AccountsError, ManagementTokenNotFound
from accounts.selectors import management_token_of, management_tokens_of
from accounts.services import management_token_create, management_token_revoke


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, required=False,
                           help_text="What uses it, e.g. “deploy script”.")


@never_cache  # the response to a creation carries the secret: no cache may keep it
@login_required
@require_http_methods(["GET", "POST"])
def tokens_page(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        try:
            created = management_token_create(user=request.user,
                                              name=form.cleaned_data["name"])
        except AccountsError as exc:
            form.add_error(None, str(exc))
        else:
            form = TokenForm()  # rendered, not redirected: the secret is in this page only
    return render(request, "portal/tokens.html", {
        "form": form, "created": created, "tokens": management_tokens_of(user=request.user)})


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    try:
        token = management_token_of(user=request.user, token_id=token_id)
    except ManagementTokenNotFound:
        raise Http404("No such token.") from None
    management_token_revoke(token=token)
    messages.success(request, f"Revoked the token {token.prefix}…. It stops working at once.")
    return redirect("portal:tokens")
