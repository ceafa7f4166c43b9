"""Errors in Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``.

The router's errors (``ApiError``, OpenAI-shaped) are mapped by their status; headers
(``Retry-After``, ``x-ratelimit-*``) are kept. Where the router says 503 (no worker free,
the database away), Anthropic's clients know 529 ``overloaded_error`` and retry it.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.http import HttpResponse

from proxy.ground.errors import ApiError

TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
OVERLOADED = 529


def status_of(error: ApiError) -> int:
    return OVERLOADED if error.status == 503 else error.status


def error_body(error: ApiError) -> dict[str, Any]:
    status = status_of(error)
    kind = TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def anthropic_error_response(error: ApiError) -> HttpResponse:
    response = HttpResponse(orjson.dumps(error_body(error)), status=status_of(error),
                            content_type="application/json")
    for name, value in error.headers.items():
        response[name] = value
    return response
