"""The pages between the password and the admin: give a code, or enrol on first sign-in.

They live under /admin/ (``router_admin.admin_site``) but outside ``admin_view``, which
would send a session without the second factor back here; each checks that a staff member
signed in with the password."""

from __future__ import annotations

import math
from base64 import b32encode
from datetime import datetime
from typing import Any

import django_otp
import qrcode
import qrcode.image.svg
from django.conf import settings
from django.contrib.admin import AdminSite
from django.contrib.auth import REDIRECT_FIELD_NAME, logout
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django_otp.models import Device
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.two_factor.forms import CodeForm
from accounts.two_factor.policy import second_factor_passed
from accounts.two_factor.selectors import authenticator_of
from accounts.two_factor.services import (
    AlreadyEnrolled,
    authenticator_enrolment_confirm,
    authenticator_enrolment_start,
    second_factor_check,
)


def verify(request: HttpRequest, *, site: AdminSite) -> HttpResponse:
    """Ask a staff member with an authenticator for a code from it, or a recovery code."""
    early = _not_for_this_page(request, site)
    if early is not None:
        return early
    if authenticator_of(user=request.user) is None:
        return _to(request, site, "admin:two_factor_enrol")
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        check = second_factor_check(user=request.user, code=form.cleaned_data["code"])
        if check.device is not None:
            return _signed_in(request, site, check.device)
        form.add_error("code", _refusal(check.retry_at,
                                        "That code is not right, or was already used."))
    return _page(request, site, "admin/two_factor/verify.html", form=form,
                 title="Two-factor sign-in")


def enrol(request: HttpRequest, *, site: AdminSite) -> HttpResponse:
    """First sign-in of a staff member without an authenticator: show its secret, confirm
    one code from it, then show the recovery codes once."""
    early = _not_for_this_page(request, site)
    if early is not None:
        return early
    try:
        device = authenticator_enrolment_start(user=request.user)
        form = CodeForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            enrolment = authenticator_enrolment_confirm(user=request.user,
                                                        code=form.cleaned_data["code"])
            if enrolment.device is not None:
                _verified(request, enrolment.device)
                return _page(request, site, "admin/two_factor/recovery_codes.html",
                             title="Save your recovery codes",
                             recovery_codes=enrolment.recovery_codes,
                             next_url=_next_url(request, site))
            form.add_error("code", _refusal(
                enrolment.retry_at,
                "That code is not right: type the one the app shows now (and check that "
                "the phone's clock is right)."))
    except AlreadyEnrolled:
        # Enrolled meanwhile (another tab): a password alone may not enrol a second app.
        return _to(request, site, "admin:two_factor")
    return _page(request, site, "admin/two_factor/enrol.html", form=form,
                 title="Set up two-factor sign-in", secret=_secret_for_people(device),
                 qr_svg=_qr_svg(device.config_url))


def sign_out(request: HttpRequest, *, site: AdminSite) -> HttpResponse:
    # Django's admin logout is behind admin_view, out of reach before the second factor.
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    logout(request)
    return HttpResponseRedirect(reverse("admin:login", current_app=site.name))


def _refusal(retry_at: datetime | None, wrong_code: str) -> str:
    if retry_at is None:
        return wrong_code
    wait = max(1, math.ceil((retry_at - timezone.now()).total_seconds()))
    return f"Too many wrong codes: try again in {wait} second{'' if wait == 1 else 's'}."


def _not_for_this_page(request: HttpRequest, site: AdminSite) -> HttpResponse | None:
    user = request.user
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return redirect_to_login(_next_url(request, site),
                                 reverse("admin:login", current_app=site.name))
    if second_factor_passed(user):
        return HttpResponseRedirect(_next_url(request, site))
    return None


def _signed_in(request: HttpRequest, site: AdminSite, device: Device) -> HttpResponse:
    _verified(request, device)
    return HttpResponseRedirect(_next_url(request, site))


def _verified(request: HttpRequest, device: Device) -> None:
    # A new session key for the new privilege, as at a password login: a session id
    # planted or seen before this moment is worth nothing after it.
    request.session.cycle_key()
    django_otp.login(request, device)


def _next_url(request: HttpRequest, site: AdminSite) -> str:
    candidate = request.POST.get(REDIRECT_FIELD_NAME) or request.GET.get(REDIRECT_FIELD_NAME)
    if candidate and url_has_allowed_host_and_scheme(
            candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return candidate
    return reverse("admin:index", current_app=site.name)


def _to(request: HttpRequest, site: AdminSite, name: str) -> HttpResponse:
    return redirect_to_login(_next_url(request, site), reverse(name, current_app=site.name))


def _page(request: HttpRequest, site: AdminSite, template: str, **context: Any
          ) -> TemplateResponse:
    return TemplateResponse(request, template, {
        **site.each_context(request), **context,
        "next": _next_url(request, site), "issuer": settings.OTP_TOTP_ISSUER,
        "sign_out_url": reverse("admin:two_factor_sign_out", current_app=site.name),
    })


def _secret_for_people(device: TOTPDevice) -> str:
    """The secret as authenticator apps take it typed in: base32, in groups of four."""
    secret = b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))


def _qr_svg(config_url: str) -> str:
    # Drawn here as SVG paths (no image library, nothing fetched); put in the page itself,
    # so the secret is never in a URL or a cache. The markup is qrcode's, from our data.
    image = qrcode.make(config_url, image_factory=qrcode.image.svg.SvgPathImage,
                        box_size=10, border=2)
    return mark_safe(image.to_string(encoding="unicode"))  # noqa: S308
