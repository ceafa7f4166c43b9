"""Who is calling /api: a signed-in session (the portal's own pages, the docs page) or a
management token in ``Authorization: Bearer br-mgmt-...``.

A /v1 API key is refused here on purpose: keys live in applications and CI secrets, and
one leaking must not let anyone create more keys, read the usage or redeem vouchers.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from accounts.keys import KEY_PREFIX
from accounts.models import ManagementToken, User
from accounts.selectors import management_token_authenticate
from accounts.services import management_token_touch
from accounts.tokens import TOKEN_PREFIX


class ManagementTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, ManagementToken] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None  # perhaps a session; the permission check decides
        scheme, _, raw_token = header.partition(" ")
        raw_token = raw_token.strip()
        if scheme.lower() != self.keyword.lower() or not raw_token:
            raise exceptions.AuthenticationFailed(
                f"Malformed Authorization header: expected 'Bearer {TOKEN_PREFIX}...'.")
        if raw_token.startswith(KEY_PREFIX):
            raise exceptions.AuthenticationFailed(
                "API keys work only on /v1. The self-service API takes a management token "
                f"({TOKEN_PREFIX}...), created in the portal.")
        token = management_token_authenticate(raw_token=raw_token)
        if token is None:
            # One message for unknown and revoked: it tells a prober nothing.
            raise exceptions.AuthenticationFailed("Invalid or revoked management token.")
        management_token_touch(token=token)
        return token.owner, token

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 with WWW-Authenticate, not 403, when credentials are missing.
        return self.keyword


class ManagementTokenScheme(OpenApiAuthenticationExtension):
    """Describes the token as an HTTP bearer scheme in the OpenAPI schema."""

    target_class = ManagementTokenAuthentication
    name = "managementToken"

    def get_security_definition(self, auto_schema: object) -> dict[str, str]:
        scheme = build_bearer_security_scheme_object(
            header_name="Authorization", token_prefix="Bearer", bearer_format="br-mgmt-...")
        return {**scheme, "description": "A management token created in the portal "
                "(Tokens page, or POST /api/tokens from a signed-in session)."}
