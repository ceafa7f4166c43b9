"""ALLOWED_HOSTS for the lean /v1 handler, which skips the site's request handling (where
Django checks the Host header when a view asks for it).

Django's own rules decide (exact names, ``.example.com`` for a domain and its subdomains,
``*``, and the localhost names when DEBUG is on with an empty list), but only the first
time a Host value is seen: each value that passes is remembered, so a request costs one set
lookup.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http.request import split_domain_port, validate_host

# A wildcard pattern lets a client invent endless valid names; stop remembering past this.
MAX_REMEMBERED = 1024
_DEBUG_HOSTS = [".localhost", "127.0.0.1", "[::1]"]  # what Django allows with DEBUG on

_accepted: set[bytes] = set()


def host_of(scope: dict[str, Any]) -> bytes:
    """The Host header of an ASGI request; without one, the server's name (as Django does)."""
    for name, value in scope["headers"]:
        if name == b"host":
            return bytes(value)
    server = scope.get("server")
    return server[0].encode("latin-1") if server else b""


def host_allowed(host: bytes) -> bool:
    if host in _accepted:
        return True
    patterns = settings.ALLOWED_HOSTS
    if settings.DEBUG and not patterns:
        patterns = _DEBUG_HOSTS
    domain, _ = split_domain_port(host.decode("latin-1"))
    if not (domain and validate_host(domain, patterns)):
        return False
    if len(_accepted) < MAX_REMEMBERED:
        _accepted.add(host)
    return True


@receiver(setting_changed)
def _forget_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting in ("ALLOWED_HOSTS", "DEBUG"):
        _accepted.clear()
