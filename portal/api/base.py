"""What every /api view shares: who may call, how often, and the error format."""

from __future__ import annotations

from collections.abc import Callable

from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import NotFound
from rest_framework.parsers import JSONParser
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from portal.api.authentication import ManagementTokenAuthentication
from portal.api.errors import api_exception_handler
from portal.api.throttling import PerUserRateThrottle


class ApiView(APIView):
    # The token first: a request that carries a bad Authorization header is refused even
    # from a signed-in browser, rather than quietly run as the session's user. DRF's
    # session authentication checks CSRF, so another site cannot make a browser call /api.
    authentication_classes = [ManagementTokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]
    throttle_classes = [PerUserRateThrottle]
    renderer_classes = [JSONRenderer]
    parser_classes = [JSONParser]

    def get_exception_handler(self) -> Callable:
        return api_exception_handler


class SessionOnly(BasePermission):
    """Tokens are minted and revoked from a signed-in session only: a stolen token must not
    be able to make itself a successor that outlives its revocation."""

    message = ("Management tokens cannot create, list or revoke tokens; sign in to the "
               "portal to manage them.")

    def has_permission(self, request: Request, view: APIView) -> bool:
        return request.auth is None  # SessionAuthentication sets no auth object


class NotFoundApi(APIView):
    """Any other path under /api: a 404 in the API's format, not the site's HTML page."""

    authentication_classes: list = []
    permission_classes: list = []
    renderer_classes = [JSONRenderer]

    def get_exception_handler(self) -> Callable:
        return api_exception_handler

    def initial(self, request: Request, *args: object, **kwargs: object) -> None:
        super().initial(request, *args, **kwargs)
        raise NotFound(f"No such endpoint: {request.method} {request.path}. "
                       "The endpoints are listed at /api/docs/.")
