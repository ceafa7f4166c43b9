"""The admin site: Django's, with staff's second factor on every page.

``admin.site`` (and every ``@admin.register``) is an instance of ``RouterAdminSite`` through
``RouterAdminSiteConfig``, listed in INSTALLED_APPS in place of ``django.contrib.admin``.
The check sits in the site rather than on the login page: every admin URL (each
ModelAdmin's, their custom views, the index, the catch-all) goes through ``admin_view`` and
``has_permission``, so a session that passed only the password reaches none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import update_wrapper
from typing import Any

from django.conf import settings
from django.contrib.admin.apps import AdminConfig
from django.contrib.admin.sites import AdminSite
from django.core import checks
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, path, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect

from accounts.two_factor.policy import awaiting_second_factor, second_factor_passed

OTP_MIDDLEWARE = "django_otp.middleware.OTPMiddleware"

View = Callable[..., HttpResponse]


def redirect_to_login(next_url: str, login_url: str) -> HttpResponse:
    # Imported when called, as Django's own admin site does: this module is loaded with the
    # app registry (INSTALLED_APPS names its config), before auth's views can import models.
    from django.contrib.auth.views import redirect_to_login

    return redirect_to_login(next_url, login_url)


class RouterAdminSite(AdminSite):
    site_header = "Binom Router"
    site_title = "Binom Router admin"
    # The app list beside every list page took 220 of a 1280 px screen from the columns;
    # the dashboard (the index) and the breadcrumbs lead everywhere it did.
    enable_nav_sidebar = False

    def has_permission(self, request: HttpRequest) -> bool:
        return super().has_permission(request) and second_factor_passed(request.user)

    def admin_view(self, view: View, cacheable: bool = False) -> View:
        guarded = super().admin_view(view, cacheable)

        # Staff who gave the password but not yet a code go straight to the code's page
        # (Django would send them to the login form, which has nothing more to ask).
        def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if awaiting_second_factor(request.user):
                return redirect_to_login(request.get_full_path(),
                                         reverse("admin:two_factor", current_app=self.name))
            return guarded(request, *args, **kwargs)

        return update_wrapper(never_cache(inner), guarded)

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None
              ) -> HttpResponse:
        # The front page is the dashboard (templates/admin/index.html draws it above the
        # app list). Imported here: this module loads with the app registry, before models.
        from router_admin.dashboard.context import dashboard_context

        return super().index(request, {**dashboard_context(request), **(extra_context or {})})

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None
              ) -> HttpResponse:
        if request.method == "GET" and awaiting_second_factor(request.user):
            next_url = request.GET.get("next") or reverse("admin:index", current_app=self.name)
            return redirect_to_login(next_url, reverse("admin:two_factor",
                                                       current_app=self.name))
        return super().login(request, extra_context)

    def get_urls(self) -> list[URLPattern | URLResolver]:
        from accounts.two_factor import views

        # Not wrapped in admin_view: these are the pages a session without the second
        # factor must reach. Each checks for itself that a staff member is signed in.
        second_factor = [
            path("two-factor/", self._second_factor_view(views.verify), name="two_factor"),
            path("two-factor/enrol/", self._second_factor_view(views.enrol),
                 name="two_factor_enrol"),
            path("two-factor/sign-out/", self._second_factor_view(views.sign_out),
                 name="two_factor_sign_out"),
        ]
        # Before Django's own: its last pattern catches every URL left.
        return [*second_factor, *super().get_urls()]

    def _second_factor_view(self, view: View) -> View:
        def inner(request: HttpRequest) -> HttpResponse:
            request.current_app = self.name
            return view(request, site=self)

        return csrf_protect(never_cache(update_wrapper(inner, view)))


class RouterAdminSiteConfig(AdminConfig):
    default_site = "router_admin.admin_site.RouterAdminSite"

    def ready(self) -> None:
        super().ready()  # autodiscover: every app's admin module registers its models
        from django.contrib import admin

        from accounts.two_factor.admin import device_admins_register

        device_admins_register(admin.site)
        checks.register(otp_middleware_check, checks.Tags.security)


def otp_middleware_check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    # Without it no session is ever verified: staff would sign in, give a right code and be
    # sent back to give it again, for ever.
    if OTP_MIDDLEWARE in settings.MIDDLEWARE:
        return []
    return [checks.Error(f"{OTP_MIDDLEWARE} must be in MIDDLEWARE, after "
                         "AuthenticationMiddleware: the admin asks staff for a second factor.",
                         id="router_admin.E001")]
