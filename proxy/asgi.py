"""A Django ASGI handler for /v1: its own async-only middleware, and no thread hops.

Django's ASGIHandler is built for sites whose views and middleware are mostly sync. Per
request it opens a ThreadSensitiveContext (a thread started and joined for each request),
sends request_started and request_finished through ``sync_to_async``, and closes the
response in a thread; the site's MIDDLEWARE (sessions, CSRF, messages, ...) runs through
``sync_to_async`` on one shared thread. Together they serialise every API request through
threads it has no use for: the API's views are async, use no session, and never touch the
ORM on the event loop's thread (the signals exist to recycle that thread's connections).
This handler keeps Django's request parsing, URL resolution, view calling and response
sending, and drops the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestAborted, RequestDataTooBig
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.urls import set_script_prefix
from django.utils.module_loading import import_string

from proxy.access_log import access_log
from proxy.errors import invalid_host, request_too_large
from proxy.hosts import host_allowed, host_of
from proxy.metrics import refusal_observed
from proxy.middleware import new_request_id
from proxy.relay import error_response

# Served by this handler beside /v1. A load balancer's health check often names the
# instance by its address, not by a name in ALLOWED_HOSTS, and these answers build no URL
# from the Host header: they are exempt from the check.
HEALTH_PATHS = frozenset(("/healthz", "/readyz"))


class ApiASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        # The view is not wrapped: its exceptions reach RequestIdMiddleware, which logs them
        # with the request id and answers in OpenAI's format instead of Django's 500 page.
        handler = self._get_response_async
        for path in reversed(settings.ROUTER_API_MIDDLEWARE):
            handler = convert_exception_to_response(import_string(path)(handler))
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = handler

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"The API handler serves HTTP only, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def read_body(self, receive: Any) -> io.BytesIO:
        """The body in memory, refusing it as soon as it passes the configured limit.

        Django spools any body to a temporary file before the view can refuse it; the API
        only takes JSON under ``DATA_UPLOAD_MAX_MEMORY_SIZE``, so it stops reading there.
        """
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestAborted()
            body += message.get("body", b"")
            if len(body) > limit:
                raise RequestDataTooBig()
            if not message.get("more_body", False):
                return io.BytesIO(bytes(body))

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] not in HEALTH_PATHS:
            host = host_of(scope)
            if not host_allowed(host):
                await self.refuse_host(scope, host, send)
                return
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        except RequestDataTooBig:
            response = error_response(request_too_large(settings.DATA_UPLOAD_MAX_MEMORY_SIZE))
            response["x-request-id"] = new_request_id()
            await self.send_response(response, send)
            return
        try:
            set_script_prefix(get_script_prefix(scope))
            request, refusal = self.create_request(scope, body_file)
            if request is None:
                await self.send_response(refusal, send)
                return

            async def respond() -> None:
                response = await self.run_get_response(request)
                with contextlib.suppress(asyncio.CancelledError):
                    # Cancelled: the client went away while the response was being sent.
                    await self.send_response(response, send)

            # A client that disconnects cancels its request: a stream's relay then stops
            # the upstream and settles what was produced (see proxy.relay).
            tasks = [asyncio.create_task(self.listen_for_disconnect(receive)),
                     asyncio.create_task(respond())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    if not task.done():
                        task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, RequestAborted):
                        await task
        finally:
            body_file.close()

    async def send_response(self, response: Any, send: Any) -> None:
        # Django's SecurityMiddleware does not run here; this is its one header that still
        # matters for an API whose bodies are JSON and SSE.
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        await super().send_response(response, send)

    async def refuse_host(self, scope: dict[str, Any], host: bytes, send: Any) -> None:
        """What Django answers to a Host outside ALLOWED_HOSTS (400), in OpenAI's format;
        before the body is read, so a misdirected request costs next to nothing."""
        request_id = new_request_id()
        response = error_response(invalid_host(host.decode("latin-1")))
        response["x-request-id"] = request_id
        access_log(request_id=request_id, method=scope["method"], path=scope["path"],
                   status=response.status_code, latency_ms=0)
        refusal_observed(status=response.status_code)
        await self.send_response(response, send)
