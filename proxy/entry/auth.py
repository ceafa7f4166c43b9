"""Bearer-key authentication for the /v1 API, async and cached."""

from __future__ import annotations

from django.http import HttpRequest

from proxy.ground.errors import invalid_api_key, permission_denied
from proxy.selectors import Caller, caller_for_key


async def authenticate(request: HttpRequest) -> Caller:
    # From META, as request.headers would read it, without building HttpHeaders per request.
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, raw_key = header.partition(" ")
    raw_key = raw_key.strip()
    if not header:
        raise invalid_api_key("You didn't provide an API key. You need to provide your API key "
                              "in an Authorization header using Bearer auth (i.e. "
                              "Authorization: Bearer YOUR_KEY).")
    if scheme.lower() != "bearer" or not raw_key:
        raise invalid_api_key("Malformed Authorization header: expected 'Bearer YOUR_KEY'.")
    return await _admit(request, raw_key)


async def authenticate_api_key_header(request: HttpRequest) -> Caller:
    """Anthropic's way: the key in ``x-api-key``, or else as a Bearer token (what Anthropic's
    SDKs send with ``auth_token``). Only the Anthropic dialect's views call it, so the chat
    path reads no header more."""
    raw_key = request.META.get("HTTP_X_API_KEY", "").strip()
    if raw_key:
        return await _admit(request, raw_key)
    if not request.META.get("HTTP_AUTHORIZATION"):
        raise invalid_api_key("x-api-key header is required: send your API key in it, or as "
                              "Authorization: Bearer YOUR_KEY.")
    return await authenticate(request)


async def _admit(request: HttpRequest, raw_key: str) -> Caller:
    caller = await caller_for_key(raw_key)
    if caller is None:
        # Never echo the key back: not even its prefix tells an attacker anything useful.
        raise invalid_api_key("Incorrect API key provided. You can find your API keys in "
                              "the portal.")
    request.caller = caller  # type: ignore[attr-defined]  # for the access log
    address = request.META.get("REMOTE_ADDR") or ""
    if not caller.allows_address(address):
        raise permission_denied(f"This API key may not be used from {address or 'here'}.")
    return caller
