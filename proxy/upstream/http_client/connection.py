"""One keep-alive connection to an upstream (see the package's docstring)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from proxy.upstream.http_client.response import UpstreamResponse
    from proxy.upstream.http_client.session import UpstreamSession

# Idle connections older than this are closed rather than reused: servers close theirs after
# a few seconds (uvicorn 5 s, nginx 75 s, aiohttp's own client gave up at 15 s), and a POST
# sent on a connection being closed is lost.
KEEPALIVE_SECONDS = 4.0
# A stream's bytes that nobody has read yet, past which the socket is not read (TCP then
# slows the upstream down) until the reader catches up.
READ_AHEAD_BYTES = 256 * 1024

Origin = tuple[str, str, int]  # scheme, host, port


class Connection(asyncio.Protocol):
    """One connection to an upstream, carrying one response at a time."""

    def __init__(self, session: UpstreamSession, origin: Origin) -> None:
        self.session = session  # where it goes back to, once its response is complete
        self.loop = session.loop
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
