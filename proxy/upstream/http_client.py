"""The router's HTTP/1.1 client for its upstreams: one per event loop, keep-alive connections
per origin, responses parsed by httptools (llhttp, the parser of Node.js and of uvicorn).

Why not aiohttp's client, which this replaced on the request path: the router makes one
kind of call (a POST of JSON, answered by JSON or by Server-Sent Events), and aiohttp's
general machinery (request and response objects of many layers, header multidicts, auto
headers, timer contexts, payload writers) cost about 145 us of CPU per call at concurrency
64 where this costs about 30 (``bench/proxy_bench.py``; issue 19). aiohttp still serves the
probes and the tests' servers, and its exception classes are raised here, so that callers
catch ``aiohttp.ClientError`` and ``TimeoutError`` as before.

What a call honours: the connect timeout; the read timeout (``sock_read``), which bounds
every wait for bytes, the first and each later one; the total timeout, from the call to the
end of the body; ``Connection: close`` and HTTP/1.0; chunked and length-delimited bodies, or
one read to the end of the connection; gzip or deflate bodies (asked for ``identity``, as
compressing makes an upstream buffer what should stream). A connection goes back to its pool
only after a complete response (``release``); ``close`` drops it, which is how an upstream
learns that nobody reads its stream any more. A reused connection that the upstream had
closed while idle (no byte of an answer came back) is replaced and the call made once more:
the upstream never saw it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections import deque
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, cast

import aiohttp
import httptools
from multidict import CIMultiDict
from yarl import URL

# Idle connections older than this are closed rather than reused: servers close theirs after
# a few seconds (uvicorn 5 s, nginx 75 s, aiohttp's own client gave up at 15 s), and a POST
# sent on a connection being closed is lost.
KEEPALIVE_SECONDS = 4.0
# A stream's bytes that nobody has read yet, past which the socket is not read (TCP then
# slows the upstream down) until the reader catches up.
READ_AHEAD_BYTES = 256 * 1024
USER_AGENT = "binom-router"

Origin = tuple[str, str, int]  # scheme, host, port

_sessions: dict[asyncio.AbstractEventLoop, UpstreamSession] = {}
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
    head = (f"POST {url.raw_path_qs} HTTP/1.1\r\nHost: {url.host_port_subcomponent}\r\n"
            f"User-Agent: {USER_AGENT}\r\nAccept-Encoding: identity\r\n").encode()
    return (url.scheme, url.raw_host or url.host, port), head


def _header_lines(headers: Mapping[str, str]) -> bytes:
    lines = []
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise ValueError(f"An upstream header may not contain a line break: {name!r}")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


class _Connection(asyncio.Protocol):
    """One connection to an upstream, carrying one response at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: Origin) -> None:
        self.loop = loop
        self.origin = origin  # its pool
        self.transport: asyncio.Transport | None = None
        self.response: UpstreamResponse | None = None
        self.lost = False
        self.idle_since = 0.0
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:
            self.close()  # bytes nobody asked for: the connection cannot be trusted
            return
        response.fed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.response is not None:
            self.response.ended_by_peer(exc)

    def usable(self, now: float) -> bool:
        return (not self.lost and self.transport is not None
                and not self.transport.is_closing() and now - self.idle_since < KEEPALIVE_SECONDS)

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()


class _Content:
    """The body as it arrives, by lines (Server-Sent Events): what the providers read of
    aiohttp's ``response.content``."""

    def __init__(self, response: UpstreamResponse) -> None:
        self._response = response

    async def readline(self) -> bytes:
        return await self._response.readline()


class UpstreamResponse:
    """An upstream's answer: its status and headers once they came, then its body."""

    def __init__(self, connection: _Connection, *, read_timeout: float | None,
                 deadline: float | None) -> None:
        self.connection = connection
        self.loop = connection.loop
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self._header_list: list[tuple[bytes, bytes]] = []
        self._headers: CIMultiDict[str] | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.received_any = False
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.read_timeout = read_timeout
        self.deadline = deadline
        self.last_bytes = self.loop.time()
        self.timer: asyncio.TimerHandle | None = None
        self.decoder: Any = None
        self.content = _Content(self)

    # -- what the parser reports (httptools calls these)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_list.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        # Asked now: once the message is complete, the parser has moved on to the next one.
        self.keep_alive = self.parser.should_keep_alive()
        for name, value in self._header_list:
            if name.lower() == b"content-encoding":
                coding = value.strip().lower()
                if coding in (b"gzip", b"x-gzip"):
                    self.decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
                elif coding == b"deflate":
                    self.decoder = zlib.decompressobj()
                elif coding not in (b"", b"identity"):
                    self.fail(aiohttp.ClientPayloadError(f"Unsupported content encoding {value!r}"))
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.decoder is not None:
            try:
                body = self.decoder.decompress(body)
            except zlib.error as error:
                self.fail(aiohttp.ClientPayloadError(f"Cannot decompress the body: {error}"))
                return
        if body:
            self.chunks.append(body)
            self.buffered += len(body)
            if self.buffered > READ_AHEAD_BYTES and not self.connection.paused:
                self.connection.paused = True
                if self.connection.transport is not None:
                    self.connection.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.decoder is not None:
            rest = self.decoder.flush()
            if rest:
                self.chunks.append(rest)
                self.buffered += len(rest)
        self.complete = True
        self._stop_timer()
        self._wake()

    # -- what the connection reports

    def fed(self, data: bytes) -> None:
        self.received_any = True
        self.last_bytes = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self.fail(aiohttp.ClientPayloadError(f"The upstream sent what is not HTTP: {error}"))

    def ended_by_peer(self, exc: Exception | None) -> None:
        if self.complete:
            return
        if self.headers_done and not self._length_known():
            # A body without a length or chunks ends with the connection (HTTP/1.0 style).
            self.on_message_complete()
            return
        if self.headers_done:
            self.fail(aiohttp.ClientPayloadError("Response payload is not completed"))
        else:
            self.fail(aiohttp.ServerDisconnectedError(exc or "Server disconnected"))

    def _length_known(self) -> bool:
        names = {name.lower() for name, _ in self._header_list}
        return b"content-length" in names or b"transfer-encoding" in names

    # -- reading, for the caller

    @property
    def headers(self) -> CIMultiDict[str]:
        if self._headers is None:
            self._headers = CIMultiDict((name.decode("latin-1"), value.decode("latin-1"))
                                        for name, value in self._header_list)
        return self._headers

    async def read(self) -> bytes:
        while not self.complete:
            await self._wait()
        body = b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        return body

    async def readline(self) -> bytes:
        while True:
            if self.chunks:
                first = self.chunks[0]
                end = first.find(b"\n")
                if end >= 0:
                    return self._take(end + 1)
                if len(self.chunks) > 1:
                    self.chunks.appendleft(b"".join([self.chunks.popleft(), self.chunks.popleft()]))
                    continue
            if self.complete:
                return self._take(len(self.chunks[0])) if self.chunks else b""
            await self._wait()

    def _take(self, size: int) -> bytes:
        first = self.chunks.popleft()
        if size < len(first):
            self.chunks.appendleft(first[size:])
            first = first[:size]
        self.buffered -= len(first)
        if self.connection.paused and self.buffered < READ_AHEAD_BYTES // 2:
            self.connection.paused = False
            if self.connection.transport is not None and not self.connection.lost:
                self.connection.transport.resume_reading()
        return first

    async def _wait(self) -> None:
        if self.error is not None:
            raise self.error
        waiter = self.waiter = self.loop.create_future()
        self._arm_timer()
        try:
            await waiter
        except asyncio.CancelledError:
            # The caller gave up in the middle of a response: its connection is unusable.
            self.close()
            raise
        finally:
            self.waiter = None
        if self.error is not None:
            raise self.error

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def fail(self, error: BaseException) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self.connection.close()
        self._stop_timer()
        self._wake()

    # -- timeouts: one timer, moved on lazily (as rarely as the deadlines allow)

    def _due(self) -> float | None:
        due = None if self.read_timeout is None else self.last_bytes + self.read_timeout
        if self.deadline is not None and (due is None or self.deadline < due):
            due = self.deadline
        return due

    def _arm_timer(self) -> None:
        if self.timer is None and not self.complete:
            due = self._due()
            if due is not None:
                self.timer = self.loop.call_at(due, self._check_time)

    def _check_time(self) -> None:
        self.timer = None
        if self.complete or self.error is not None:
            return
        now = self.loop.time()
        if self.deadline is not None and now >= self.deadline:
            self.fail(TimeoutError("The upstream's answer took longer than its total timeout"))
        elif (self.read_timeout is not None and self.waiter is not None
              and now >= self.last_bytes + self.read_timeout):
            self.fail(aiohttp.SocketTimeoutError("Timeout on reading data from socket"))
        elif self.waiter is not None:
            self._arm_timer()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # -- the end

    def release(self) -> None:
        """Done with the response: a complete one gives its connection back for reuse."""
        self._stop_timer()
        connection = self.connection
        if connection.response is not self:
            return
        connection.response = None
        if (self.complete and self.error is None and not connection.lost
                and not connection.paused and self.keep_alive):
            _session_of(self.loop).give_back(connection)
        else:
            connection.close()

    def close(self) -> None:
        """Drop the connection, whatever is left of the response."""
        self._stop_timer()
        if self.connection.response is self:
            self.connection.response = None
        self.connection.close()


class UpstreamSession:
    """The keep-alive connections of one event loop, per origin."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.idle: dict[Origin, list[_Connection]] = {}
        self.sweep: asyncio.TimerHandle | None = None
        self.closed = False

    async def post(self, url: URL, *, data: bytes, headers: Mapping[str, str],
                   timeout: aiohttp.ClientTimeout) -> UpstreamResponse:
        origin, head = _target(url)
        request = b"".join((head, _header_lines(headers),
                            b"Content-Length: %d\r\n\r\n" % len(data), data))
        deadline = None if timeout.total is None else self.loop.time() + timeout.total
        connection = self._reusable(origin)
        if connection is not None:
            response = await self._send(connection, request, timeout, deadline)
            try:
                await self._head(response)
                return response
            except (aiohttp.ServerDisconnectedError, ConnectionError):
                if response.received_any:
                    raise
                # Closed by the upstream while it lay idle: the request never reached it.
        connection = await self._connect(origin, timeout, deadline)
        response = await self._send(connection, request, timeout, deadline)
        await self._head(response)
        return response

    async def _head(self, response: UpstreamResponse) -> None:
        while not response.headers_done:
            await response._wait()

    async def _send(self, connection: _Connection, request: bytes,
                    timeout: aiohttp.ClientTimeout, deadline: float | None
                    ) -> UpstreamResponse:
        response = UpstreamResponse(connection, read_timeout=timeout.sock_read,
                                    deadline=deadline)
        connection.response = response
        assert connection.transport is not None
        connection.transport.write(request)
        return response

    def _reusable(self, origin: Origin) -> _Connection | None:
        idle = self.idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.usable(now):
                return connection
            connection.close()
        return None

    async def _connect(self, origin: Origin, timeout: aiohttp.ClientTimeout,
                       deadline: float | None) -> _Connection:
        scheme, host, port = origin
        limit = timeout.sock_connect
        if deadline is not None:
            left = deadline - self.loop.time()
            limit = left if limit is None else min(limit, left)
        try:
            async with asyncio.timeout(limit):
                _, connection = await self.loop.create_connection(
                    lambda: _Connection(self.loop, origin), host, port,
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

    def give_back(self, connection: _Connection) -> None:
        if self.closed:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        self.idle.setdefault(connection.origin, []).append(connection)
        if self.sweep is None:
            self.sweep = self.loop.call_later(KEEPALIVE_SECONDS, self._close_stale)

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
            self.sweep = self.loop.call_later(KEEPALIVE_SECONDS, self._close_stale)

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


def upstream_session() -> UpstreamSession:
    """This event loop's client (tests run servers on loops of their own; in production
    there is one loop per process, so one client)."""
    return _session_of(asyncio.get_running_loop())


async def close_upstream_sessions() -> None:
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None:
        await session.close()
