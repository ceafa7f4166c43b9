"""uvicorn's HTTP/1.1 protocol (httptools), with a whole answer's head written with its body.

uvicorn writes a response's head (status line and headers) the moment the application
starts the response, and its body when the application sends it: two system calls for
every whole answer (strace of one request: ``write(head)`` then ``write(body)``), each
waking the client, where one carries both. Here the head of an answer of stated length
waits until the end of the loop's current turn: its body, sent in the same turn, goes out
with it in one write; should it not come, the head goes alone at the start of the next
turn, before any I/O is handled, so nothing waits for it.

A stream's head (chunked) is written at once, as uvicorn does: joined with its first event
it reached the client 2.5 % later (``bench/ab_routers.py``, time to first token,
interleaved), the client no longer reading the head while the router rendered the event.

``serve.py`` runs uvicorn with ``--http proxy.entry.http_protocol:HttpProtocol``; the
tests' live router does too. Under uvicorn's own ``httptools`` protocol (or granian) the
router works the same, one write more per answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

CONTINUE = b"HTTP/1.1 100 "  # the interim answer to ``Expect: 100-continue``: not a head
LENGTH = b"\r\ncontent-length: "  # in the head of an answer of stated length (uvicorn's case)


class HeadWithBody:
    """A response cycle's view of its connection's transport: the cycle's first write that
    is the head of an answer of stated length (an interim ``100 Continue`` and a stream's
    head pass) is held until the next write, which takes it along, or until the loop
    comes round."""

    __slots__ = ("_head", "_loop", "_transport", "_waiting")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None
        self._waiting = True  # for the head

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
            return
        if self._waiting and not data.startswith(CONTINUE):
            self._waiting = False  # this is the head
            if LENGTH in data:
                self._head = data
                self._loop.call_soon(self.release)
                return
        self._transport.write(data)

    def release(self) -> None:
        """Write the held head, if it is still held (the body did not come in its turn)."""
        head = self._head
        if head is not None:
            self._head = None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self.release()  # in order: what was written goes before the connection closes
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        # uvicorn drops its keep-alive timer only when the connection closed cleanly: after
        # a reset, the timer fired later and the protocol held it while it held the
        # protocol, a cycle only the collector freed (with the protocol's last cycle).
        timer = self.timeout_keep_alive_task
        if timer is not None:
            timer.cancel()
            self.timeout_keep_alive_task = None

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle is not before:  # a new request's (not an upgrade)
            # Its task has not run yet: it is started, or queued behind the one before.
            cycle.transport = HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]
