"""The ASGI handler of /v1 and the health checks: Django's request, URLconf and views, with
none of the per-request machinery the API has no use for.

Django's ASGIHandler is built for sites whose views and middleware are mostly sync. Per
request it opens a ThreadSensitiveContext, sends request_started and request_finished
through ``sync_to_async``, logs 4xx answers and closes the response in threads, runs the
site's MIDDLEWARE through ``sync_to_async``, resolves the path through every pattern of the
site, and runs the response in a second task beside a third that waits for a disconnect.
The API's views are async, use no session and never touch the ORM on the event loop's
thread, and its answer is a handful of headers and one body (or an SSE stream): this
handler builds the same ``ASGIRequest``, resolves through the same URLconf (remembering the
few exact routes), calls the same views through ``ROUTER_API_MIDDLEWARE``, and sends the
response itself. Its own cost per request is a few tens of microseconds.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Coroutine
from contextlib import aclosing
from typing import Any

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpResponseBadRequest, HttpResponseBase
from django.urls import Resolver404, ResolverMatch, get_resolver, set_script_prefix
from django.utils.module_loading import import_string

from proxy.entry.middleware import GetResponse, dialect_error_response, new_request_id
from proxy.ground.access_log import access_log
from proxy.ground.api_request import ApiRequest
from proxy.ground.errors import invalid_host, request_too_large, route_not_found
from proxy.ground.hosts import host_allowed, host_of
from proxy.ground.metrics import refusal_observed
from proxy.ground.responses import LastPart, error_response, header_pairs
from router_admin.settings_cache import setting

logger = logging.getLogger("django.request")

# Served by this handler beside /v1. A load balancer's health check often names the
# instance by its address, not by a name in ALLOWED_HOSTS, and these answers build no URL
# from the Host header: they are exempt from the check.
HEALTH_PATHS = frozenset(("/healthz", "/readyz"))

# Django's SecurityMiddleware does not run here; this is its one header that still matters
# for an API whose bodies are JSON and SSE.
NOSNIFF = (b"X-Content-Type-Options", b"nosniff")

Headers = list[tuple[bytes, bytes]]


class _Disconnect:
    """Cancels the request's task when its client goes away, the way ``asyncio.timeout``
    cancels on expiry: the view and a stream's relay see ``CancelledError``, stop the
    upstream and settle what was produced (see ``proxy.relay.completion``), and the handler swallows
    only the cancellation it caused.

    granian's ``receive()`` returns a future: watched as it is. uvicorn's is a coroutine,
    which this drives itself, step by step, as a task would (its first step here and now,
    the next when the future it waits on is done): a task of its own per request cost its
    creation, a turn of the loop to start and another to cancel it (``bench/calls.py``).
    """

    __slots__ = ("_armed", "_cancelling", "_coro", "_task", "fired")

    def __init__(self, receive: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._cancelling = task.cancelling()
        self._armed = True
        self.fired = False
        self._coro: Coroutine[Any, Any, Any] | None = None
        waiting = receive()
        if isinstance(waiting, asyncio.Future):
            waiting.add_done_callback(self._received)
        else:
            self._coro = waiting
            self._step()

    def _step(self, _: object = None) -> None:
        coro = self._coro
        if coro is None:
            return  # disarmed meanwhile
        try:
            awaited = coro.send(None)
        except StopIteration as done:
            self._coro = None
            self._message(done.value)
            return
        except (Exception, asyncio.CancelledError):
            # The server's receive failed (or what it waited on was cancelled): it has
            # nothing to say about the client, and the request carries on (as it did when a
            # task's failure was read and dropped).
            self._coro = None
            logger.debug("watching for a disconnect failed", exc_info=True)
            return
        if awaited is None:  # a bare yield (sleep(0)): step again on the next turn
            asyncio.get_running_loop().call_soon(self._step)
        else:
            # As a task does: the future is marked as awaited by its yield, and another
            # coroutine awaiting it after this one would be refused as if it had not awaited.
            awaited._asyncio_future_blocking = False
            awaited.add_done_callback(self._step)

    def _received(self, waiter: asyncio.Future[Any]) -> None:
        if not waiter.cancelled() and waiter.exception() is None:
            self._message(waiter.result())

    def _message(self, message: Any) -> None:
        # Nothing but a disconnect may follow a complete body in ASGI.
        if self._armed and message.get("type") == "http.disconnect":
            self.fired = True
            self._task.cancel()

    def disarm(self) -> None:
        """The answer is complete: a disconnect from now on has nothing left to stop."""
        self._armed = False
        coro, self._coro = self._coro, None
        if coro is not None:
            coro.close()  # uvicorn's receive stops waiting (its event forgets the waiter)

    def caused(self) -> bool:
        """Whether the ``CancelledError`` being handled is this watcher's alone."""
        return self.fired and self._task.uncancel() <= self._cancelling


class _Routes:
    """Django's URL resolution, remembered for the exact routes (no captured arguments):
    ``/v1/chat/completions`` would otherwise be matched against every pattern of the site
    before ``v1/`` on every request. Paths with arguments (a model's name, an unknown
    route) are resolved each time, so a client cannot grow this."""

    def __init__(self) -> None:
        self._exact: dict[str, tuple[ResolverMatch, bool]] = {}

    def resolve(self, path: str) -> tuple[ResolverMatch, bool]:
        """The match and whether its view is a coroutine function; raises Resolver404."""
        known = self._exact.get(path)
        if known is not None:
            return known
        match = get_resolver(settings.ROOT_URLCONF).resolve(path)
        found = (match, iscoroutinefunction(match.func))
        if not match.args and not match.kwargs:
            self._exact[path] = found
        return found

    def clear(self) -> None:
        self._exact.clear()


_routes = _Routes()


@receiver(setting_changed)
def _forget_routes(*, setting: str, **kwargs: Any) -> None:
    if setting == "ROOT_URLCONF":
        _routes.clear()


def response_headers(response: HttpResponseBase) -> Headers:
    headers = header_pairs(response)
    if not response.has_header("X-Content-Type-Options"):
        headers.append(NOSNIFF)
    if response.cookies:
        for cookie in response.cookies.values():
            headers.append((b"Set-Cookie", cookie.output(header="").encode("ascii").strip()))
    return headers


NO_BODY_STATUSES = frozenset({204, 304})  # answers that must not state a length (RFC 9110)


async def send_response(response: HttpResponseBase, send: Any,
                        disconnect: _Disconnect | None = None) -> None:
    """Send a Django response as ASGI messages: the body in one message (the server frames
    it), or a stream part by part as the view yields them, unbuffered."""
    start = {"type": "http.response.start", "status": response.status_code,
             "headers": response_headers(response)}
    if not response.streaming:
        if disconnect is not None:
            disconnect.disarm()
        content = response.content  # type: ignore[attr-defined]
        if response.status_code not in NO_BODY_STATUSES and not response.has_header(
                "Content-Length"):
            # Said, so the server sends the body as it is, not in chunks the client must
            # take apart (uvicorn chunks a body of no stated length).
            start["headers"].append((b"Content-Length", b"%d" % len(content)))
        await send(start)
        await send({"type": "http.response.body", "body": content})
        return
    # The relay's events (proxy.relay.completion.EventStream) are closed whatever happens,
    # even before the first part was read: where a stream nobody read resolves its hold. An
    # async stream's parts come straight from its iterator; a sync one is mapped by
    # Django's own __aiter__ (in a thread, as Django does).
    parts = getattr(response, "events", None) or (
        response.streaming_content if response.is_async  # type: ignore[attr-defined]
        else aiter(response))
    ended = False
    async with aclosing(parts) as content:
        await send(start)
        async for part in content:
            if ended:
                # Nothing may follow the body's end; a source that marks its last part
                # yields none (tests/proxy/test_stream_ends.py).
                logger.error("a stream yielded a part after its last: dropped")
                continue
            if type(part) is LastPart:
                # The body ends with it; the source's own end (its wrap-up) still runs.
                ended = True
                if disconnect is not None:
                    disconnect.disarm()
                await send({"type": "http.response.body", "body": part, "more_body": False})
                continue
            await send({"type": "http.response.body", "body": part, "more_body": True})
    if ended:
        return
    if disconnect is not None:
        disconnect.disarm()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class ApiASGIHandler:
    request_class = ApiRequest

    def __init__(self) -> None:
        # The view is not wrapped: its exceptions reach RequestIdMiddleware, which logs them
        # with the request id and answers in OpenAI's format instead of Django's 500 page.
        handler: GetResponse = self._view_response
        for path in reversed(settings.ROUTER_API_MIDDLEWARE):
            handler = import_string(path)(handler)
        self._middleware_chain = handler

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"The API handler serves HTTP only, not {scope['type']}.")
        if scope["path"] not in HEALTH_PATHS:
            host = host_of(scope)
            if not host_allowed(host):
                await self.refuse_host(scope, host, send)
                return
        try:
            body = await self.read_body(receive)
        except RequestDataTooBig:
            response = dialect_error_response(
                scope["path"], request_too_large(settings.DATA_UPLOAD_MAX_MEMORY_SIZE))
            response["x-request-id"] = new_request_id()
            await send_response(response, send)
            return
        if body is None:
            return  # the client left before its body arrived
        # Django's get_script_prefix(scope), without reading the setting through Django's
        # lazy settings on every request.
        prefix = setting("FORCE_SCRIPT_NAME") or scope.get("root_path", "")
        if prefix:
            set_script_prefix(prefix)  # "/" otherwise, as Django set it up
        try:
            request = self.request_class(scope, io.BytesIO(body), script_name=prefix)
        except UnicodeDecodeError:
            logger.warning("Bad Request (UnicodeDecodeError)", exc_info=True,
                           extra={"status_code": 400})
            await send_response(HttpResponseBadRequest(), send)
            return
        await self.respond(request, receive, send)

    async def read_body(self, receive: Any) -> bytes | None:
        """The body in memory, refusing it as soon as it passes the configured limit; None
        when the client disconnected first.

        Django spools any body to a temporary file before the view can refuse it; the API
        only takes JSON under ``DATA_UPLOAD_MAX_MEMORY_SIZE``, so it stops reading there.
        """
        limit = setting("DATA_UPLOAD_MAX_MEMORY_SIZE")
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body = message.get("body", b"")
        if len(body) > limit:
            raise RequestDataTooBig()
        if not message.get("more_body", False):
            return body  # the usual case: the whole body in one message
        parts = bytearray(body)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            parts += message.get("body", b"")
            if len(parts) > limit:
                raise RequestDataTooBig()
            if not message.get("more_body", False):
                return bytes(parts)

    async def respond(self, request: ApiRequest, receive: Any, send: Any) -> None:
        # A client that disconnects cancels its request: a stream's relay then stops the
        # upstream and settles what was produced (see proxy.relay.completion).
        disconnect = _Disconnect(receive)
        try:
            # Not logged on django.request as Django's handler would ("Unauthorized: /v1/...")
            # when it is 4xx or 5xx: the access log already has one line for every request,
            # with its status, and a second line per refusal made 401s and 402s twice as loud.
            response = await self._middleware_chain(request)
            await send_response(response, send, disconnect)
        except asyncio.CancelledError:
            if not disconnect.caused():
                raise
        finally:
            disconnect.disarm()

    async def _view_response(self, request: ApiRequest) -> HttpResponseBase:
        try:
            match, is_async = _routes.resolve(request.path_info)
        except Resolver404:
            return error_response(route_not_found(request.method or "", request.path))
        request.resolver_match = match
        view = match.func if is_async else sync_to_async(match.func, thread_sensitive=True)
        return await view(request, *match.args, **match.kwargs)

    async def refuse_host(self, scope: dict[str, Any], host: bytes, send: Any) -> None:
        """What Django answers to a Host outside ALLOWED_HOSTS (400), in OpenAI's format;
        before the body is read, so a misdirected request costs next to nothing."""
        request_id = new_request_id()
        response = error_response(invalid_host(host.decode("latin-1")))
        response["x-request-id"] = request_id
        access_log(request_id=request_id, method=scope["method"], path=scope["path"],
                   status=response.status_code, latency_ms=0)
        refusal_observed(status=response.status_code)
        await send_response(response, send)
