"""ASGI entry point: /v1 and the health checks go to the lean API handler, everything else
to the full site."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from django.conf import settings
from django.core.asgi import get_asgi_application
from granian.utils.proxies import wrap_asgi_with_proxy_headers

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


async def _route(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and (scope["path"] == "/v1" or scope["path"].startswith("/v1/")
                                    or scope["path"] in HEALTH_PATHS):
        await api_application(scope, receive, send)
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)
    else:
        await site_application(scope, receive, send)


# Behind a load balancer, the client's address (API keys' IP allow-lists, who may read
# /metrics) and scheme come from X-Forwarded-For and X-Forwarded-Proto, believed only from
# the proxies in FORWARDED_ALLOW_IPS: the variable uvicorn reads for the same purpose;
# granian, the server of `make serve`, reads none.
_proxied = (wrap_asgi_with_proxy_headers(_route, settings.FORWARDED_ALLOW_IPS)
            if settings.FORWARDED_ALLOW_IPS else _route)


# A coroutine function, not the wrapper itself: servers tell ASGI 3 from ASGI 2 by that.
async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await _proxied(scope, receive, send)
