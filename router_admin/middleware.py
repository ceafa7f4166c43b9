"""Content-Security-Policy for every page of the site: the portal, the admin and the API
docs. The /v1 API answers JSON under its own handler (``proxy.entry.asgi``) and sends none.

Our own middleware rather than django-csp: the policy is one fixed header, with no nonces
or per-view exceptions (no page of ours has inline code), so a package would bring
settings and decorators this project does not need. Django 6.0 ships the same feature
(``SECURE_CSP``); on moving to it, this module and ``ROUTER_CSP`` go."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.deprecation import MiddlewareMixin

HEADER = "Content-Security-Policy"


def csp_header_value(policy: dict[str, list[str]]) -> str:
    """``{"default-src": ["'self'"], "object-src": ["'none'"]}`` ->
    ``default-src 'self'; object-src 'none'``."""
    return "; ".join(" ".join([directive, *sources]) for directive, sources in policy.items())


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Puts ``settings.ROUTER_CSP`` on every response that has no policy of its own."""

    def process_response(self, request: HttpRequest,
                         response: HttpResponseBase) -> HttpResponseBase:
        if HEADER in response:
            return response
        # With DEBUG on (never in production) errors are Django's debug pages, which style
        # and script themselves inline: under the policy the traceback page would lose its
        # layout and toggles just when a developer needs it. Every other page keeps the
        # policy in development too, so a violation shows up before it ships.
        if settings.DEBUG and response.status_code >= 400:
            return response
        policy = settings.ROUTER_CSP
        if policy:
            response[HEADER] = csp_header_value(policy)
        return response
