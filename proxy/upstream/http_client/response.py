"""An upstream's answer as it arrives: status and headers, then the body whole or by lines
(see the package's docstring)."""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from typing import Any

import aiohttp
import httptools
from multidict import CIMultiDict

from proxy.upstream.http_client.connection import READ_AHEAD_BYTES, Connection

# How long a stream read to its end (``[DONE]``) may wait for the message's own end (the
# chunked body's last, empty chunk) before its connection is dropped instead of reused.
# Servers send it with the last event or just after it; one that does not is not waited for
# by anyone: the answer went on without it.
FINISH_GRACE_SECONDS = 2.0


# How far ``holds_data_line`` looks for a whole data line.
_LOOK_AHEAD_BYTES = 64 * 1024


class UpstreamResponse:
    """An upstream's answer: its status and headers once they came, then its body."""

    def __init__(self, connection: Connection, *, read_timeout: float | None,
                 deadline: float | None) -> None:
        self.connection = connection
        self.loop = connection.loop
        # The parser holds this response's methods, and this response holds the parser: a
        # cycle, which ``_detach`` breaks once the connection is done with the response.
        # Left to the cycle collector, the responses of a few thousand requests were freed
        # in one pass that stopped the process for 0.1 s (see README, Performance).
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.status = 0
        self._header_list: list[tuple[bytes, bytes]] = []
        self._headers: CIMultiDict[str] | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.received_any = False
        self.headers_done = False
        self.complete = False
        self.finished = False  # read to its end: released once the message is complete
        self.keep_alive = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.read_timeout = read_timeout
        self.deadline = deadline
        self.last_bytes = self.loop.time()
        self.timer: asyncio.TimerHandle | None = None
        self.decoder: Any = None

    # -- what the parser reports (httptools calls these)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_list.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        if parser is None:  # pragma: no cover - only the parser calls this, while it is fed
            return
        self.status = parser.get_status_code()
        # Asked now: once the message is complete, the parser has moved on to the next one.
        self.keep_alive = parser.should_keep_alive()
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
        if self.finished:
            self.release()

    # -- what the connection reports

    def fed(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:  # pragma: no cover - a detached response is fed nothing
            return
        self.received_any = True
        self.last_bytes = self.loop.time()
        try:
            parser.feed_data(data)
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

    async def head(self) -> None:
        """Wait for the status and the headers."""
        while not self.headers_done:
            await self._wait()

    async def read(self) -> bytes:
        while not self.complete:
            await self._wait()
        body = b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        return body

    async def readline(self) -> bytes:
        while True:
            line = self.buffered_line()
            if line is not None:
                return line
            await self._wait()

    def buffered_line(self) -> bytes | None:
        """The next line (its line break included) if it is buffered whole, the rest of the
        body once it has ended (``b""`` at its end); None if reading it would wait."""
        chunks = self.chunks
        while chunks:
            first = chunks[0]
            end = first.find(b"\n")
            if end >= 0:
                return self._take(end + 1)
            if len(chunks) == 1:
                break
            chunks.appendleft(b"".join([chunks.popleft(), chunks.popleft()]))
        if self.complete:
            return self._take(len(chunks[0])) if chunks else b""
        return None

    async def more(self) -> None:
        """Wait for more of the body (or its end); raises what broke it off."""
        await self._wait()

    def holds_data_line(self) -> bool:
        """Whether a whole Server-Sent Events ``data:`` line is buffered (or the body has
        ended, or failed): reading the next event would not wait for the network."""
        if self.complete or self.error is not None:
            return True
        chunks = self.chunks
        if not chunks:
            return False
        # The buffer starts at a line's start (readline takes whole lines): a data line
        # starts there or after a line break, and is whole once a line break follows it.
        # Read by read until that is settled, and not past _LOOK_AHEAD_BYTES: asked once per
        # chunk relayed, a join of everything buffered would copy a long burst over and
        # over. Unsure is safe: the events then go out as they come.
        buffered = b""
        for chunk in chunks:
            buffered = chunk if not buffered else buffered + chunk
            at = 0 if buffered.startswith(b"data:") else buffered.find(b"\ndata:")
            if at >= 0 and buffered.find(b"\n", at + 1) >= 0:
                return True
            if len(buffered) > _LOOK_AHEAD_BYTES:
                return False
        return False

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
        self._detach()
        if (self.complete and self.error is None and not connection.lost
                and not connection.paused and self.keep_alive):
            connection.session.give_back(connection)
        else:
            connection.close()

    def finish(self) -> None:
        """The reader saw the answer's end (a stream's ``[DONE]`` or last event): the
        connection goes back for reuse as soon as the message is complete, which is usually
        already, or is dropped if that takes longer than ``FINISH_GRACE_SECONDS``. A new
        connection per stream cost a TCP (and, to a real upstream, a TLS) handshake before
        every stream's request could leave."""
        if self.complete or self.error is not None or self.connection.response is not self:
            self.release()
            return
        self.finished = True
        self._stop_timer()
        self.timer = self.loop.call_later(FINISH_GRACE_SECONDS, self._drop)

    def _drop(self) -> None:
        self.timer = None
        if self.connection.response is self:
            self._detach()
            self.connection.close()

    def close(self) -> None:
        """Drop the connection, whatever is left of the response; nothing once it was
        released or finished (the connection may already carry another request)."""
        if self.finished or self.connection.response is not self:
            return
        self._stop_timer()
        self._detach()
        self.connection.close()

    def _detach(self) -> None:
        """Off its connection: nothing more is fed to the parser, which is let go, and this
        response is freed as soon as its reader lets go of it."""
        self.connection.response = None
        self.parser = None
