"""The /v1 API's JSON answers: a body, or an error in OpenAI's shape with its headers."""

from __future__ import annotations

from typing import Any

import orjson
from django.http import HttpResponse

from proxy.ground.errors import ApiError

JSON = "application/json"


def json_response(body: dict[str, Any], *, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(body), status=status, content_type=JSON)


def error_response(error: ApiError) -> HttpResponse:
    response = HttpResponse(error.json_bytes(), status=error.status, content_type=JSON)
    for name, value in error.headers.items():
        response[name] = value
    return response
