"""Middleware of the /v1 stack. Async-only on purpose: a sync middleware would cost a
thread hop per request (see ``proxy.asgi``)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from asgiref.sync import markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from proxy.access_log import access_log
from proxy.errors import server_error
from proxy.metrics import refusal_observed
from proxy.relay import error_response

logger = logging.getLogger("proxy.requests")

GetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


class RequestIdMiddleware:
    """Gives every request an id, puts it on every response, and turns our own bugs into
    OpenAI-shaped 500s that name the id and never carry a traceback."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request_id = new_request_id()
        request.request_id = request_id  # type: ignore[attr-defined]
        started = time.monotonic()
        try:
            response = await self.get_response(request)
        except Exception:
            logger.exception("request %s failed", request_id)
            response = error_response(server_error(request_id))
        response["x-request-id"] = request_id
        if response.status_code != 200 or request.path != "/v1/chat/completions":
            # A completion that was answered logs itself when it settles, with its tokens
            # and cost; everything else (refusals, errors, other routes) is logged here.
            caller = getattr(request, "caller", None)
            access_log(request_id=request_id, method=request.method, path=request.path,
                       status=response.status_code,
                       user_id=caller.user_id if caller else None,
                       key_prefix=caller.key_prefix if caller else None,
                       latency_ms=int((time.monotonic() - started) * 1000))
            refusal_observed(status=response.status_code)
        return response
