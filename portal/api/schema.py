"""What the OpenAPI schema at /api/schema/ covers, and the error responses it documents."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse

from portal.api.serializers import ErrorSerializer

_DESCRIPTIONS = {
    400: "Invalid input; `error.fields` names each bad field.",
    401: "No session and no valid management token (a /v1 API key is refused here).",
    403: "Not allowed (e.g. a management token on the token endpoints, or a missing CSRF "
         "token with a session).",
    404: "No such object among yours.",
    429: "Too many requests; see Retry-After.",
    502: "The payment provider failed; nothing was charged, try again.",
    503: "Card top-ups are not configured on this router.",
}


def only_self_service_api(endpoints: list[tuple], **kwargs: Any) -> list[tuple]:
    """drf-spectacular preprocessing hook: /v1 and the portal's pages are not this API."""
    return [endpoint for endpoint in endpoints
            if endpoint[0].startswith("/api/") and not endpoint[0].startswith("/api/schema")]


def error_responses(*statuses: int) -> dict[tuple[int, str], OpenApiResponse]:
    """The usual failures (401, 403, 429) plus ``statuses``, all in the one error format,
    always JSON (even where the success can be CSV)."""
    return {(status, "application/json"): OpenApiResponse(ErrorSerializer,
                                                          description=_DESCRIPTIONS[status])
            for status in sorted({401, 403, 429, *statuses})}
