"""Reading an upstream's Server-Sent Events: every adapter's streams (OpenAI's chunks,
Anthropic's events, a native dialect's) are one JSON object per ``data:`` line."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from proxy.upstream.http_client import UpstreamResponse
from proxy.upstream.providers.base import UpstreamError

DONE = None  # what ``next_event`` returns for OpenAI's ``data: [DONE]``, its last
END = "end"  # what ``next_event`` returns once the body has ended
PENDING = "pending"  # what ``buffered_event`` returns when no whole event is buffered

Event = dict[str, Any] | None | str  # an event, DONE, END or PENDING
Chunk = dict[str, Any]


def buffered_event(response: UpstreamResponse, worker: str) -> Event:
    """The next event if it can be read without waiting for the upstream: its JSON object,
    ``DONE`` or ``END``; ``PENDING`` if its line has not arrived whole (the lines skipped
    on the way are gone, as they would be anyway)."""
    while True:
        # One event's data is one line in every dialect we read: a line at a time is enough.
        line = response.buffered_line()
        if line is None:
            return PENDING
        if not line:
            return END
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return DONE
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"{worker} sent a malformed event", retryable=False) from None
        if isinstance(event, dict):
            return event


async def next_event(response: UpstreamResponse, worker: str) -> Event:
    """The next event, ``DONE`` or ``END``, waiting for the upstream when it must."""
    while True:
        event = buffered_event(response, worker)
        if event is not PENDING:
            return event
        await response.more()


class TranslatedStream:
    """An upstream's events turned into chunks by a translator (``translate``), read ahead
    from what is buffered: an event may make no chunk (Anthropic's ``ping``), so whether a
    chunk is ready without waiting (``ready``, which the relay asks to send the chunks
    ready together) is known only by translating the events buffered.

    A stream read to its own end (``finished``, or ``[DONE]`` where that ends it) keeps its
    connection for the next call; any other end drops it, which is how an upstream learns
    that nobody is reading and stops generating.
    """

    # Whether OpenAI's ``data: [DONE]`` ends the stream as it should (else: early).
    done_ends = True

    def __init__(self, response: UpstreamResponse, worker: str) -> None:
        self._response = response
        self._worker = worker
        self._ahead: deque[Chunk] = deque()  # translated, not yet taken
        # None while the stream goes on; True once it ended as it should; else the error
        # that ends it, raised once the chunks before it are taken.
        self._end: bool | UpstreamError | None = None

    def translate(self, event: dict[str, Any]) -> list[Chunk]:
        """The chunks ``event`` makes (none, one or more); raises the stream's error."""
        raise NotImplementedError

    @property
    def finished(self) -> bool:
        """The stream's own last event was translated."""
        raise NotImplementedError

    def ready(self) -> bool:
        try:
            while not self._ahead and self._end is None:
                event = buffered_event(self._response, self._worker)
                if event is PENDING:
                    return False
                self._take(event)
        except UpstreamError as error:  # a malformed event: raised in its turn
            self._keep(error)
        return True

    async def aclose(self) -> None:
        self._response.close()

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        ended = False  # read to its own end: the connection may serve the next call
        try:
            while True:
                while self._ahead:
                    yield self._ahead.popleft()
                if self._end is True:
                    ended = True
                    return
                if self._end is not None:
                    raise self._ended_by()
                self._take(await next_event(self._response, self._worker))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamError(f"{self._worker} broke off the stream: "
                                f"{exc.__class__.__name__}", retryable=False) from None
        finally:
            if ended:
                self._response.finish()
            else:
                self._response.close()

    def _take(self, event: Event) -> None:
        if event is DONE and self.done_ends:
            self._end = True
        elif event is DONE or event is END:
            self._end = UpstreamError(f"{self._worker} ended the stream early",
                                      retryable=False)
        else:
            assert isinstance(event, dict)
            try:
                self._ahead.extend(self.translate(event))
            except UpstreamError as error:
                self._keep(error)
                return
            if self.finished:
                self._end = True

    def _keep(self, error: UpstreamError) -> None:
        # Without the frames it was raised in, which hold this stream (a cycle for the
        # garbage collector), nor the error it was raised from (a JSON error, suppressed,
        # with frames of its own); it gets a traceback of its own when it is raised.
        error.__context__ = error.__cause__ = None
        self._end = error.with_traceback(None)

    def _ended_by(self) -> UpstreamError:
        """The error kept for its turn, let go of (raised from a local of ``__aiter__``,
        the error's traceback would hold the frame that holds the error)."""
        error, self._end = self._end, None
        assert isinstance(error, UpstreamError)
        return error
