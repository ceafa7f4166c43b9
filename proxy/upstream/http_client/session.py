"""The keep-alive connections of one event loop, and the call itself (see the package's
docstring)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from functools import lru_cache

import aiohttp
from yarl import URL

from proxy.upstream.http_client import connection as wire
from proxy.upstream.http_client.connection import Connection, Origin
from proxy.upstream.http_client.response import UpstreamResponse

USER_AGENT = "binom-router"

_sessions: dict[asyncio.AbstractEventLoop, UpstreamSession] = {}
# A connection opened ahead of a call (``UpstreamSession.warm``) that takes longer than this
# is given up: the next call opens its own.
_OPEN_AHEAD_TIMEOUT = aiohttp.ClientTimeout(sock_connect=10.0)
_tls: list[ssl.SSLContext] = []


class UpstreamConnectError(aiohttp.ClientConnectionError):
    """No connection to the upstream could be opened (refused, unreachable, no such host,
    TLS refused): the name the operator reads in the log's ``cannot reach`` line."""


def _tls_context() -> ssl.SSLContext:
    if not _tls:
        _tls.append(ssl.create_default_context())
    return _tls[0]


@lru_cache(maxsize=512)
def _target(url: URL) -> tuple[Origin, bytes]:
    """An URL's origin (its pool) and the start of its requests, made once per URL."""
    if url.scheme not in ("http", "https") or not url.host:
        raise aiohttp.InvalidURL(url)
    port = url.port or (443 if url.scheme == "https" else 80)
    head = f"POST {url.raw_path_qs} HTTP/1.1\r\nHost: {url.host_port_subcomponent}\r\n"
    return (url.scheme, url.raw_host or url.host, port), head.encode()


# Sent unless the call names them itself (a worker's extra headers may set its own).
_DEFAULTS = {"user-agent": f"User-Agent: {USER_AGENT}\r\n",
             "accept-encoding": "Accept-Encoding: identity\r\n"}


def _header_lines(headers: Mapping[str, str]) -> bytes:
    lines = []
    defaults = dict(_DEFAULTS)
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise ValueError(f"An upstream header may not contain a line break: {name!r}")
        defaults.pop(name.lower(), None)
        lines.append(f"{name}: {value}\r\n")
    lines.extend(defaults.values())
    # UTF-8, as aiohttp sent them before: a worker's header may hold any text.
    return "".join(lines).encode()


class UpstreamSession:
    """The keep-alive connections of one event loop, per origin."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.idle: dict[Origin, list[Connection]] = {}
        self.sweep: asyncio.TimerHandle | None = None
        self.closed = False
        self.last_call: dict[Origin, float] = {}  # when each origin was last called
        self._warming: set[Origin] = set()

    async def post(self, url: URL, *, data: bytes, headers: Mapping[str, str],
                   timeout: aiohttp.ClientTimeout) -> UpstreamResponse:
        origin, head = _target(url)
        request = b"".join((head, _header_lines(headers),
                            b"Content-Length: %d\r\n\r\n" % len(data), data))
        deadline = None if timeout.total is None else self.loop.time() + timeout.total
        connection = self._reusable(origin)
        if connection is not None:
            response = self._send(connection, request, timeout, deadline)
            try:
                await response.head()
                return response
            except aiohttp.ServerDisconnectedError:
                if response.received_any:
                    raise
                # Closed by the upstream while it lay idle: the request never reached it.
        connection = await self._connect(origin, timeout, deadline)
        response = self._send(connection, request, timeout, deadline)
        await response.head()
        return response

    def _send(self, connection: Connection, request: bytes, timeout: aiohttp.ClientTimeout,
              deadline: float | None) -> UpstreamResponse:
        response = UpstreamResponse(connection, read_timeout=timeout.sock_read,
                                    deadline=deadline)
        connection.response = response
        assert connection.transport is not None
        connection.transport.write(request)
        return response

    def _reusable(self, origin: Origin) -> Connection | None:
        idle = self.idle.get(origin)
        now = self.last_call[origin] = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.usable(now):
                return connection
            connection.close()
        return None

    async def _connect(self, origin: Origin, timeout: aiohttp.ClientTimeout,
                       deadline: float | None) -> Connection:
        scheme, host, port = origin
        limit = timeout.sock_connect
        if deadline is not None:
            left = deadline - self.loop.time()
            limit = left if limit is None else min(limit, left)
        try:
            async with asyncio.timeout(limit):
                _, connection = await self.loop.create_connection(
                    lambda: Connection(self, origin), host, port,
                    ssl=_tls_context() if scheme == "https" else None)
        except TimeoutError:
            raise aiohttp.ConnectionTimeoutError(
                f"Connection timeout to host {host}:{port}") from None
        except ssl.SSLError as error:
            raise UpstreamConnectError(f"TLS with {host}:{port} failed: {error}") from error
        except OSError as error:
            raise UpstreamConnectError(f"Cannot connect to host {host}:{port}: {error}") \
                from error
        return connection

    async def warm(self, within: float) -> None:
        """Open a connection ahead of the next call to each origin called in the last
        ``within`` seconds that has none with half its keep-alive left: after a quiet spell
        longer than ``KEEPALIVE_SECONDS`` the next call would otherwise wait for a new
        connection (a TCP handshake here, and TLS's too over the internet: tens of
        milliseconds). Called about once a second while the process is quiet
        (``proxy.entry.keep_warm``); a connection it cannot open is left to the next call,
        which reports the failure as it always did."""
        now = time.monotonic()
        for origin in [o for o, at in self.last_call.items() if now - at >= within]:
            del self.last_call[origin]
        due = [origin for origin in self.last_call
               if origin not in self._warming and not self._fresh(origin, now)]
        await asyncio.gather(*(self._open_ahead(origin) for origin in due),
                             return_exceptions=True)

    def _fresh(self, origin: Origin, now: float) -> bool:
        return any(connection.usable(now + wire.KEEPALIVE_SECONDS / 2)
                   for connection in self.idle.get(origin, ()))

    async def _open_ahead(self, origin: Origin) -> None:
        self._warming.add(origin)
        try:
            connection = await self._connect(origin, _OPEN_AHEAD_TIMEOUT, None)
        finally:
            self._warming.discard(origin)
        self.give_back(connection)

    def give_back(self, connection: Connection) -> None:
        if self.closed:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        self.idle.setdefault(connection.origin, []).append(connection)
        if self.sweep is None:
            self.sweep = self.loop.call_later(wire.KEEPALIVE_SECONDS, self._close_stale)

    def _close_stale(self) -> None:
        """Close what lay unused too long: after a burst of streams, thousands of
        connections would otherwise stay open (and listed) until traffic came back."""
        self.sweep = None
        now = time.monotonic()
        for origin, idle in list(self.idle.items()):
            fresh = []
            for connection in idle:
                if connection.usable(now):
                    fresh.append(connection)
                else:
                    connection.close()
            if fresh:
                self.idle[origin] = fresh
            else:
                del self.idle[origin]
        if self.idle:
            self.sweep = self.loop.call_later(wire.KEEPALIVE_SECONDS, self._close_stale)

    async def close(self) -> None:
        self.closed = True
        if self.sweep is not None:
            self.sweep.cancel()
            self.sweep = None
        for connections in self.idle.values():
            for connection in connections:
                connection.close()
        self.idle.clear()


def _session_of(loop: asyncio.AbstractEventLoop) -> UpstreamSession:
    session = _sessions.get(loop)
    if session is None or session.closed:
        session = _sessions[loop] = UpstreamSession(loop)
    return session


def existing_upstream_session() -> UpstreamSession | None:
    """This event loop's client, if it made a call (None: there is nothing to keep warm)."""
    session = _sessions.get(asyncio.get_running_loop())
    return None if session is None or session.closed else session


def upstream_session() -> UpstreamSession:
    """This event loop's client (tests run servers on loops of their own; in production
    there is one loop per process, so one client)."""
    return _session_of(asyncio.get_running_loop())


async def close_upstream_sessions() -> None:
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None:
        await session.close()
