"""What a dialect gives the one path: how its answers, streams and errors look to its
client, and (optionally) how to speak it natively to an upstream that understands it.

Every dialect parses its request into the path's one internal request, a ``ChatRequest``
(OpenAI's chat-completions form, which every provider adapter speaks), keeping the client's
own body in ``ChatRequest.native``. The path (``proxy.relay``) plans, reserves, limits,
routes, fails over, meters, checks usage and settles the same way for every dialect; the
dialect only renders. Where a worker lists the dialect among its native ones and the
dialect has a ``NativeCodec`` for that kind of worker, the client's body goes upstream as
it is (only the model, the cap and the stream flag set by the router), and the upstream's
answer is read back into the internal form for metering and usage checks, with its own
native form kept for rendering.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from django.http import HttpResponse

from proxy.ground.errors import ApiError

if TYPE_CHECKING:
    from proxy.relay.call import Call
    from proxy.upstream.providers.base import UpstreamTarget

# Where a native codec keeps the upstream's own answer (or a chunk's own events) inside
# the internal answer, for the dialect to render; never sent to a client as such.
NATIVE = "_native"


class StreamRender(Protocol):
    """One stream's events for its client, from the path's internal chunks."""

    def opening(self) -> list[bytes]:
        """What goes out before the first chunk (e.g. Responses' ``response.created``)."""
        ...

    def chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        """A chunk with choices, already metered (cut at the cap where it had to be)."""
        ...

    def aside(self, chunk: dict[str, Any]) -> list[bytes]:
        """A chunk with neither choices nor usage (a content-filter note, say)."""
        ...

    async def closing(self, call: Call, usage: dict[str, Any], charged: int,
                      last: dict[str, Any]) -> list[bytes]:
        """What ends a stream that was settled: its usage (exactly what was charged) and
        the dialect's terminator. ``last``: the last internal chunk seen."""
        ...

    def failure(self, error: ApiError) -> list[bytes]:
        """The event that tells the client its stream failed midway."""
        ...


class EventTranslator(Protocol):
    """Turns an upstream's native stream events into internal chunks, each carrying the
    native events it came from under ``NATIVE``."""

    done: bool  # the stream's own end was seen

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]: ...


class NativeCodec(Protocol):
    """A dialect spoken natively to one kind of upstream."""

    path: str  # under the worker's base URL, e.g. "/messages"

    def body(self, call: Call, target: UpstreamTarget) -> dict[str, Any]:
        """The client's body for this upstream: model, cap and stream flag set by the router."""
        ...

    def headers(self, call: Call) -> Mapping[str, str]:
        """Headers of the client's to forward (e.g. ``anthropic-beta``)."""
        ...

    def answer(self, raw: Any, call: Call, target: UpstreamTarget) -> dict[str, Any]:
        """The upstream's whole answer as an internal ``chat.completion`` (the raw answer
        under ``NATIVE``); raises ``UpstreamError`` when it is not one."""
        ...

    def translator(self, call: Call, target: UpstreamTarget) -> EventTranslator: ...


class Dialect(Protocol):
    endpoint: str  # UsageRecord.Endpoint: recorded with the usage, shown in the portal
    path: str  # the client's path, for the access log

    def serves(self, target: UpstreamTarget) -> bool:
        """Whether this worker can take the dialect's requests at all (natively or
        translated)."""
        ...

    def native(self, target: UpstreamTarget) -> NativeCodec | None:
        """The codec to speak this dialect to ``target`` natively, or None to translate."""
        ...

    async def render(self, call: Call, answer: dict[str, Any]) -> dict[str, Any]:
        """The client's body from an internal answer whose ``model`` and ``usage`` are
        already the ones to show."""
        ...

    def stream(self, call: Call) -> StreamRender: ...

    def error_response(self, error: ApiError) -> HttpResponse: ...
