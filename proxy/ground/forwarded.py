"""X-Forwarded-For and X-Forwarded-Proto, believed only from the proxies an operator names.

Its own module (not in ``router_admin.asgi``): importing that builds the whole site, which
tests must not do before their settings are in place.
"""

from __future__ import annotations

from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Any


class ForwardedHeaders:
    """The client's address (API keys' IP allow-lists, who may read /metrics) and scheme
    from X-Forwarded-For and X-Forwarded-Proto, believed only from the proxies in
    FORWARDED_ALLOW_IPS: the variable uvicorn reads for the same purpose (granian reads
    none), so the router applies the same rules under either server. The rules are
    granian's own (``wrap_asgi_with_proxy_headers``); whether a peer is trusted is
    remembered, as the few proxies in front of an instance each send many requests."""

    MAX_REMEMBERED = 1024

    def __init__(self, trusted: list[str]) -> None:
        names = [name.strip() for item in trusted for name in item.split(",") if name.strip()]
        self._any = "*" in names
        self._addresses: set[IPv4Address | IPv6Address] = set()
        self._networks: list[IPv4Network | IPv6Network] = []
        self._literals: set[str] = set()
        for name in names:
            try:
                if "/" in name:
                    self._networks.append(ip_network(name))
                else:
                    self._addresses.add(ip_address(name))
            except ValueError:
                self._literals.add(name)  # e.g. a unix socket's path
        self._verdicts: dict[str, bool] = {}

    def trusts(self, host: str | None) -> bool:
        if self._any:
            return True
        if not host:
            return False
        verdict = self._verdicts.get(host)
        if verdict is None:
            try:
                address = ip_address(host)
            except ValueError:
                verdict = host in self._literals
            else:
                verdict = (address in self._addresses
                           or any(address in network for network in self._networks))
            if len(self._verdicts) < self.MAX_REMEMBERED:
                self._verdicts[host] = verdict
        return verdict

    def apply(self, scope: dict[str, Any]) -> None:
        client = scope.get("client")
        if not self.trusts(client[0] if client else None):
            return
        proto = None
        forwarded_for: list[str] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-proto" and not proto:
                proto = value.decode("latin-1").strip() or None
            elif name == b"x-forwarded-for" and (forwarded := value.decode("latin-1").strip()):
                forwarded_for.append(forwarded)
        if not forwarded_for:
            return
        hosts = [host.strip() for host in ", ".join(forwarded_for).split(",")]
        # The nearest address that is not one of our proxies is the client.
        client_host = hosts[0] if self._any else next(
            (host for host in reversed(hosts) if not self.trusts(host)), hosts[0])
        if client_host:
            scope["client"] = (client_host, 0)
            if proto in ("http", "https", "ws", "wss"):
                scope["scheme"] = (proto.replace("http", "ws") if scope["type"] == "websocket"
                                   else proto)
