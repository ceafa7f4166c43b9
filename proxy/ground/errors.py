"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson


@dataclass
class ApiError(Exception):
    status: int
    message: str
    type: str
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Which limit refused a 402 ("balance", or the key cap's period): for the usage list.
    reason: str = ""

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def json_bytes(self) -> bytes:
        return orjson.dumps(self.body())


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", code=code, param=param)


def invalid_host(host: str) -> ApiError:
    return ApiError(400, f"The Host header {host[:100]!r} does not name this server.",
                    "invalid_request_error", code="invalid_host")


def invalid_api_key(message: str = "Incorrect API key provided.") -> ApiError:
    return ApiError(401, message, "invalid_request_error", code="invalid_api_key")


def insufficient_quota(message: str) -> ApiError:
    return ApiError(402, message, "insufficient_quota", code="insufficient_quota")


def permission_denied(message: str) -> ApiError:
    return ApiError(403, message, "permission_denied", code="permission_denied")


def model_not_found(model: str) -> ApiError:
    return ApiError(404, f"The model `{model}` does not exist or you do not have access to it.",
                    "invalid_request_error", code="model_not_found", param="model")


def route_not_found(method: str, path: str) -> ApiError:
    return ApiError(404, f"Invalid URL ({method} {path})", "invalid_request_error",
                    code="unknown_url")


def method_not_allowed(method: str, path: str) -> ApiError:
    return ApiError(405, f"Method {method} is not allowed on {path}.", "invalid_request_error",
                    code="method_not_allowed")


def request_too_large(limit: int) -> ApiError:
    return ApiError(413, f"The request body is larger than the limit of {limit} bytes.",
                    "invalid_request_error", code="request_too_large")


def server_error(request_id: str) -> ApiError:
    return ApiError(500, f"The server had an error while processing your request. Quote request "
                    f"id {request_id} if you contact us.", "server_error", code="server_error")


def upstream_error(message: str) -> ApiError:
    return ApiError(502, message, "upstream_error", code="upstream_error")


def no_available_workers(model: str) -> ApiError:
    return ApiError(503, f"No available workers to handle the request for model `{model}`.",
                    "no_available_workers", code="no_available_workers")


# Seconds a client is asked to wait before it tries again when the database is unavailable:
# the router serves again within about a second of the database's return.
SERVICE_UNAVAILABLE_RETRY_AFTER_S = 1


def service_unavailable() -> ApiError:
    return ApiError(503, "The service is temporarily unavailable: its database cannot be "
                    "reached. Nothing was charged for this request; please try again in a "
                    "moment.", "service_unavailable", code="service_unavailable",
                    headers={"Retry-After": str(SERVICE_UNAVAILABLE_RETRY_AFTER_S)})
