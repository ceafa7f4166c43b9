"""One error format for /api: ``{"error": {"message", "type", "code"}}``, plus ``fields``
(each bad field's messages) on a 400 about the request body or query.

Domain errors are mapped here, so views call services and let them raise: another user's
key or token is a 404 exactly like an id that never existed.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from accounts.errors import AccountsError, ApiKeyNotFound, ManagementTokenNotFound
from billing.errors import (
    BillingError,
    PaymentProviderError,
    TopUpNotFound,
    TopUpsDisabled,
    VoucherInvalid,
)
from billing.money import MoneyError

logger = logging.getLogger(__name__)

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 405: "invalid_request_error", 406: "invalid_request_error",
          415: "invalid_request_error", 429: "rate_limit_error", 502: "api_error",
          503: "api_error"}


class DomainError(exceptions.APIException):
    """A refusal by a service, carried to the response with its own message and code."""

    def __init__(self, message: str, *, status_code: int, code: str) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = status_code


def _as_api_exception(exc: Exception) -> Exception:
    if isinstance(exc, ApiKeyNotFound | ManagementTokenNotFound | TopUpNotFound):
        return exceptions.NotFound(str(exc))
    if isinstance(exc, TopUpsDisabled):
        return DomainError(str(exc), status_code=503, code="topups_disabled")
    if isinstance(exc, PaymentProviderError):
        return DomainError(str(exc), status_code=502, code="payment_provider_error")
    if isinstance(exc, VoucherInvalid):
        return DomainError(str(exc), status_code=400, code="voucher_invalid")
    if isinstance(exc, AccountsError | BillingError | MoneyError):
        return DomainError(str(exc), status_code=400, code="invalid_request")
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied()
    return exc


def _flatten(detail: Any, path: str = "") -> list[str]:
    """``{"rpm": ["Ensure ..."], "allowed_ips": {1: ["..."]}}`` as readable lines."""
    if isinstance(detail, dict):
        lines = []
        for key, value in detail.items():
            if key == "non_field_errors":
                name = path
            elif isinstance(key, int):
                name = f"{path}[{key}]"
            else:
                name = f"{path}.{key}" if path else str(key)
            lines.extend(_flatten(value, name))
        return lines
    if isinstance(detail, list):
        return [line for item in detail for line in _flatten(item, path)]
    return [f"{path}: {detail}" if path else str(detail)]


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    exc = _as_api_exception(exc)
    response = drf_exception_handler(exc, context)  # also sets Retry-After, WWW-Authenticate
    if response is None:
        # A bug of ours: logged with its traceback, answered in the API's format, never
        # with the traceback itself.
        logger.error("Unhandled error in the self-service API", exc_info=exc)
        return Response({"error": {"message": "Internal error; it has been logged.",
                                   "type": "api_error", "code": "server_error"}}, status=500)
    assert isinstance(exc, exceptions.APIException)
    request = context.get("request")
    if request is not None and getattr(request, "accepted_renderer", None) is not None:
        # An error is JSON even when the client asked for CSV.
        request.accepted_renderer = JSONRenderer()
        request.accepted_media_type = JSONRenderer.media_type
    error: dict[str, Any] = {"message": " ".join(_flatten(exc.detail)) or "Error.",
                             "type": _TYPES.get(response.status_code, "api_error"),
                             "code": _code_of(exc)}
    if isinstance(exc, exceptions.ValidationError) and isinstance(exc.detail, dict):
        error["fields"] = exc.detail
    response.data = {"error": error}
    return response


def _code_of(exc: exceptions.APIException) -> str:
    if isinstance(exc, exceptions.ValidationError):
        return "invalid"
    codes = exc.get_codes()
    return codes if isinstance(codes, str) else exc.default_code
