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
