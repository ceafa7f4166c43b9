"""ASGI entry point: /v1 and the health checks go to the lean API handler, everything else
to the full site."""

from __future__ import annotations

import asyncio
import logging
import os
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Any

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "router_admin.settings")

site_application = get_asgi_application()  # sets Django up before the API handler loads

from billing.services.hot_path import close_pools  # noqa: E402
from proxy.asgi import HEALTH_PATHS, ApiASGIHandler  # noqa: E402
from proxy.charging import wait_for_settlements  # noqa: E402
from proxy.http_client import close_upstream_sessions  # noqa: E402
from proxy.metrics import process_exiting  # noqa: E402
from proxy.shared_state import close_redis_clients  # noqa: E402
from proxy.tokens import preload  # noqa: E402

api_application = ApiASGIHandler()
logger = logging.getLogger(__name__)


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            # Load the tokenizer's vocabularies now, not in the first request's event loop.
            await asyncio.to_thread(preload)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            # The server has drained its requests; let their settlements reach the database
            # before the process goes, so no hold waits for the sweeper.
            await wait_for_settlements()
            await close_upstream_sessions()
            await close_pools()
            await close_redis_clients()
            process_exiting()
            await send({"type": "lifespan.shutdown.complete"})
            return


class ForwardedHeaders:
    """The client's address (API keys' IP allow-lists, who may read /metrics) and scheme
    from X-Forwarded-For and X-Forwarded-Proto, believed only from the proxies in
    FORWARDED_ALLOW_IPS: the variable uvicorn reads for the same purpose; granian, the
    server of `make serve`, reads none. The rules are granian's own
    (``wrap_asgi_with_proxy_headers``); whether a peer is trusted is remembered, as the
    few proxies in front of an instance each send many requests."""

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


_forwarded = ForwardedHeaders(settings.FORWARDED_ALLOW_IPS) if settings.FORWARDED_ALLOW_IPS \
    else None


# A coroutine function, not a wrapper: servers tell ASGI 3 from ASGI 2 by that. One function
# for every request, as each layer of wrappers costs a coroutine per request.
async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "lifespan":
        await _lifespan(receive, send)
        return
    if _forwarded is not None:
        _forwarded.apply(scope)
    path = scope["path"]
    if kind == "http" and (path.startswith("/v1/") or path == "/v1" or path in HEALTH_PATHS):
        await api_application(scope, receive, send)
    else:
        await site_application(scope, receive, send)
