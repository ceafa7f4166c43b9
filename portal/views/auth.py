"""Sign-up. Sign-in, sign-out and password resets are Django's own views (see portal.urls),
with the portal's templates and a throttled sign-in form."""

from __future__ import annotations

from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters

from accounts.errors import AccountsError, UserAlreadyExists
from accounts.services import user_create
from portal.forms import SignUpForm


@sensitive_post_parameters("password1", "password2")
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("portal:dashboard")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
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
            return redirect("portal:dashboard")
    return render(request, "portal/signup.html", {"form": form})
