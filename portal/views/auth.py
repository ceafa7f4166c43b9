"""Sign-up and the password-reset request. Sign-in, sign-out and the rest of a reset are
Django's own views (see portal.urls), with the portal's templates and a throttled sign-in
form."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.debug import sensitive_post_parameters

from accounts.errors import AccountsError, UserAlreadyExists
from accounts.services import user_create
from portal.forms import ResetRequestForm, SignUpForm
from portal.throttle import SIGN_UPS_PER_ADDRESS, client_address


@sensitive_post_parameters("password1", "password2")
def signup(request: HttpRequest) -> HttpResponse:
    # Where to go once signed up: an invitation link sends people here and wants them back.
    next_url = request.POST.get("next") or request.GET.get("next", "")
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        next_url = ""
    if request.user.is_authenticated:
        return redirect(next_url or "portal:dashboard")
    form = SignUpForm(request.POST or None,
                      initial={"email": request.GET.get("email", "")[:254]})
    if request.method == "POST" and form.is_valid():
        if not SIGN_UPS_PER_ADDRESS.take(client_address(request)):
            form.add_error(None, "Too many accounts were made from this address. Wait an "
                           "hour and try again.")
            return render(request, "portal/signup.html", {"form": form}, status=429)
        try:
            user = user_create(email=form.cleaned_data["email"],
                               password=form.cleaned_data["password1"])
        except UserAlreadyExists:
            form.add_error("email", "An account with this email already exists. Sign in, or "
                           "reset its password.")
        except AccountsError as exc:
            form.add_error("email", str(exc))
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect(next_url or "portal:dashboard")
    return render(request, "portal/signup.html", {"form": form, "next": next_url})


class PasswordResetView(auth_views.PasswordResetView):
    """Django's view, with a form that limits how many reset emails go out."""

    form_class = ResetRequestForm

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "request": self.request}
