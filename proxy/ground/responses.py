"""The /v1 API's answers: a JSON body, an error in OpenAI's shape with its headers, and the
mark of a stream's last part."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from django.http import HttpResponse
from django.http.response import HttpResponseBase

from proxy.ground.errors import ApiError

JSON = "application/json"


class LastPart(bytes):
    """The last part of a streamed body: the server ends the body with it, in the same
    write (``proxy.entry.asgi.send_response``), however long its source still takes to
    finish (a stream's settlement and its slot's release, a Redis round trip or more).

    Ended after that wait, in a write of its own, the body's end reached the client a
    round trip to Redis or more after the stream's last event: a client that reads a body
    to its end (the async Python SDK, httpx, curl, a proxy in front of the router) waited
    that long before it could use its connection again."""

    __slots__ = ()


def json_response(body: dict[str, Any], *, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(body), status=status, content_type=JSON)


def set_own_headers(response: HttpResponseBase, headers: Mapping[str, str]) -> None:
    """Set headers the router wrote itself (ASCII names; numbers, ids and durations as
    values: no line break, nothing outside ASCII) straight into the response's header
    store. ``response[name] = value`` checks and converts both the name and the value on
    every call, and a completion carries eight such headers: ``bench/calls.py`` counted 18
    conversions per request. tests/proxy/test_own_headers.py holds Django to the store's
    shape."""
    store = response.headers._store  # type: ignore[attr-defined]
    for name, value in headers.items():
        store[name.lower()] = (name, value)


def header_pairs(response: HttpResponseBase) -> list[tuple[bytes, bytes]]:
    """The response's headers as the ASGI server takes them, read from the store without
    the mapping's per-key lookups."""
    return [(name.encode("ascii"), value.encode("latin-1"))
            for name, value in response.headers._store.values()]  # type: ignore[attr-defined]


def error_response(error: ApiError) -> HttpResponse:
    response = HttpResponse(error.json_bytes(), status=error.status, content_type=JSON)
    for name, value in error.headers.items():
        response[name] = value
    return response
