"""Reading an upstream's Server-Sent Events: every adapter's streams (OpenAI's chunks,
Anthropic's events, a native dialect's) are one JSON object per ``data:`` line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from proxy.upstream.http_client import UpstreamResponse
from proxy.upstream.providers.base import UpstreamError

DONE = None  # what ``sse_events`` yields for OpenAI's ``data: [DONE]``, its last


async def sse_events(response: UpstreamResponse,
                     worker: str) -> AsyncIterator[dict[str, Any] | None]:
    """The JSON objects of ``response``'s ``data:`` lines, in order, then ``DONE`` if the
    stream says ``[DONE]``; it simply ends when the body does.

    Event names (repeated in the JSON's ``type`` by every dialect that names them),
    comments, keep-alives and the blank lines between events are skipped; a line that is
    not JSON is the upstream's fault, past the point where another worker could take over.
    """
    while True:
        # One event's data is one line in every dialect we read: readline is enough.
        line = await response.readline()
        if not line:
            return
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            yield DONE
            return
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"{worker} sent a malformed event", retryable=False) from None
        if isinstance(event, dict):
            yield event
