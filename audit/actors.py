"""Who made a change and from where. Services take it as ``actor=``: a staff member in the
admin, or the ``router`` command. A change made by no actor (a user's own, the system's) is
not a staff action and is not audited."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.http import HttpRequest

    from accounts.models import User

CLI_LABEL = "cli"


@dataclass(frozen=True)
class Actor:
    user: User | None  # None: the ``router`` management command
    label: str  # the staff member's email at the time, or "cli"
    ip: str | None = None

    @classmethod
    def of_request(cls, request: HttpRequest) -> Actor:
        """The staff member behind an admin request, and the client's address.

        REMOTE_ADDR is already the client's address behind a load balancer: the ASGI entry
        (router_admin.asgi, with proxy.ground.forwarded) rewrites it from X-Forwarded-For, but only
        for peers in FORWARDED_ALLOW_IPS. Reading the header here instead would let any
        client write any address into the trail.
        """
        user = request.user
        return cls(user=user, label=user.get_username(),
                   ip=_address(request.META.get("REMOTE_ADDR")))

    @classmethod
    def cli(cls) -> Actor:
        return cls(user=None, label=CLI_LABEL)


def _address(value: str | None) -> str | None:
    # A unix socket's path or an empty value is no address; the column stores only IPs.
    try:
        return str(ip_address((value or "").strip()))
    except ValueError:
        return None
