"""Middleware of the /v1 stack. Async-only on purpose: a sync middleware would cost a
thread hop per request (see ``proxy.entry.asgi``)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable

from asgiref.sync import markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from billing.errors import DatabaseUnavailable
from proxy.dialects.messages.errors import anthropic_error_response
from proxy.ground.access_log import access_log
from proxy.ground.errors import ApiError, server_error, service_unavailable
from proxy.ground.metrics import refusal_observed
from proxy.ground.responses import error_response, set_own_headers

logger = logging.getLogger("proxy.requests")

GetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]

# The paths whose answered (200) requests are logged by their Call once they are charged.
CHARGED_PATHS = frozenset({"/v1/chat/completions", "/v1/responses", "/v1/messages",
                           "/v1/embeddings", "/v1/completions"})
# Routes whose clients read errors in another shape than OpenAI's.
ANTHROPIC_PREFIX = "/v1/messages"


def dialect_error_response(path: str, error: ApiError) -> HttpResponseBase:
    """An error raised outside a view (our bug, the database, the body's size) in the
    shape the route's clients read."""
    if path.startswith(ANTHROPIC_PREFIX):
        return anthropic_error_response(error)
    return error_response(error)


def new_request_id() -> str:
    # 128 random bits, as a UUID4's hex (less its 6 fixed bits): uuid.uuid4() took 3.7 us a
    # request, most of it building the UUID object around the same os.urandom(16).
    return "req_" + os.urandom(16).hex()


class RequestIdMiddleware:
    """Gives every request an id, puts it on every response, and turns our own bugs into
    OpenAI-shaped 500s that name the id and never carry a traceback; a database that cannot
    be reached into 503s with Retry-After (the one place that maps it)."""

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
        except asyncio.CancelledError:
            # The client went away: still one line for the request, unless the completion
            # it started logged itself when it resolved its hold.
            if not getattr(request, "logged_by_call", False):
                _log(request, request_id, started, status=None, outcome="cancelled")
            raise
        except DatabaseUnavailable as error:
            # Not a bug of ours: no traceback, and the client may try again.
            logger.warning("request %s: the database is unavailable: %s", request_id, error)
            response = dialect_error_response(request.path, service_unavailable())
        except Exception:
            logger.exception("request %s failed", request_id)
            response = dialect_error_response(request.path, server_error(request_id))
        set_own_headers(response, {"x-request-id": request_id})
        # A completion that was answered logs itself when it settles, with its tokens and
        # cost (a stream, after this returns); everything else is logged here.
        answered = response.status_code == 200 and request.path in CHARGED_PATHS
        if not answered and not getattr(request, "logged_by_call", False):
            _log(request, request_id, started, status=response.status_code)
            refusal_observed(status=response.status_code)
        return response


def _log(request: HttpRequest, request_id: str, started: float, *, status: int | None,
         outcome: str | None = None) -> None:
    caller = getattr(request, "caller", None)
    access_log(request_id=request_id, method=request.method, path=request.path,
               status=status, outcome=outcome,
               user_id=caller.user_id if caller else None,
               key_prefix=caller.key_prefix if caller else None,
               latency_ms=int((time.monotonic() - started) * 1000))
