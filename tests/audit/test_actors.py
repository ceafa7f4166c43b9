"""Who and from where: the staff member signed in, and the client's address as the ASGI
entry leaves it in REMOTE_ADDR (from X-Forwarded-For only behind a trusted proxy)."""

from __future__ import annotations

import io

from django.core.handlers.asgi import ASGIRequest
from django.test import RequestFactory

from audit.actors import Actor
from proxy.ground.forwarded import ForwardedHeaders


def _asgi_request(*, peer: str, forwarded_for: str, trusted: list[str], user) -> ASGIRequest:
    scope = {"type": "http", "method": "POST", "path": "/admin/", "query_string": b"",
             "scheme": "http", "server": ("testserver", 80), "client": (peer, 50000),
             "headers": [(b"x-forwarded-for", forwarded_for.encode())]}
    # What router_admin.asgi does to every request before the site sees it.
    ForwardedHeaders(trusted).apply(scope)
    request = ASGIRequest(scope, io.BytesIO())
    request.user = user
    return request


def test_a_staff_actor_is_the_signed_in_user_and_the_requests_address(staff):
    request = RequestFactory().post("/admin/", REMOTE_ADDR="198.51.100.4")
    request.user = staff
    assert Actor.of_request(request) == Actor(user=staff, label=staff.email, ip="198.51.100.4")


def test_behind_a_trusted_proxy_the_address_is_the_client_it_forwards(staff):
    request = _asgi_request(peer="10.0.0.2", forwarded_for="203.0.113.7",
                            trusted=["10.0.0.0/8"], user=staff)
    assert Actor.of_request(request).ip == "203.0.113.7"


def test_a_forwarded_address_from_an_untrusted_peer_is_not_believed(staff):
    request = _asgi_request(peer="192.0.2.50", forwarded_for="203.0.113.7",
                            trusted=["10.0.0.0/8"], user=staff)
    assert Actor.of_request(request).ip == "192.0.2.50"


def test_a_peer_that_is_no_ip_address_is_recorded_without_one(staff):
    request = RequestFactory().post("/admin/", REMOTE_ADDR="/run/router.sock")
    request.user = staff
    assert Actor.of_request(request).ip is None


def test_the_cli_actor_is_named_cli_and_has_no_user_or_address():
    assert Actor.cli() == Actor(user=None, label="cli", ip=None)
