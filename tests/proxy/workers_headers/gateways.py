"""Upstreams that want more than a key, as aiohttp servers on 127.0.0.1.

``PortkeyUpstream`` behaves like Portkey's gateway: it answers 400 to any call without
``x-portkey-provider`` (or with one it does not know), and 401 when ``x-portkey-api-key``
is not its key, quoting the value it got in both cases, as gateways do. ``AzureUpstream``
behaves like Azure OpenAI: the key in an ``api-key`` header, never ``Authorization``, and
``?api-version=`` on every call.
Both answer like ``tests.proxy.upstream.UpstreamServer`` once a call passes their checks.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.proxy.upstream import UpstreamServer, openai_error

PORTKEY_API_KEY = "pk-PORTKEY-PLAINTEXT-a1b2c3d4e5"
PORTKEY_PROVIDER = "openai"
AZURE_KEY = "az-AZURE-PLAINTEXT-0f9e8d7c6b"
AZURE_API_VERSION = "2024-10-21"


class GatewayUpstream(UpstreamServer):
    """An OpenAI-compatible upstream that refuses calls its ``refusal`` finds fault with.
    ``queries`` holds the query string of every call, in order."""

    def __init__(self, **changes: Any) -> None:
        super().__init__(**changes)
        self.queries: list[dict[str, str]] = []

    def refusal(self, request: web.Request) -> web.Response | None:  # pragma: no cover
        raise NotImplementedError

    async def _checked(self, request: web.Request) -> web.Response | None:
        with self._lock:
            self.queries.append(dict(request.query))
        refused = self.refusal(request)
        if refused is not None:
            await self.record(request)
        return refused

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._checked(request) or await super()._chat_completions(request)

    async def _models(self, request: web.Request) -> web.Response:
        return await self._checked(request) or await super()._models(request)


class PortkeyUpstream(GatewayUpstream):
    name = "portkey-like upstream"

    def refusal(self, request: web.Request) -> web.Response | None:
        provider = request.headers.get("x-portkey-provider")
        if provider is None:
            return self._json(openai_error(
                400, "Either x-portkey-config or x-portkey-provider header is required"), 400)
        if provider != PORTKEY_PROVIDER:
            return self._json(openai_error(400, f"Unknown provider: {provider}"), 400)
        given = request.headers.get("x-portkey-api-key", "")
        if given != PORTKEY_API_KEY:
            return self._json(openai_error(401, f"Invalid API key: {given}"), 401)
        return None


class AzureUpstream(GatewayUpstream):
    name = "azure-like upstream"

    def refusal(self, request: web.Request) -> web.Response | None:
        if "Authorization" in request.headers or request.headers.get("api-key") != AZURE_KEY:
            return self._json(openai_error(
                401, "Access denied due to invalid subscription key."), 401)
        if request.query.get("api-version") != AZURE_API_VERSION:
            return self._json(openai_error(404, "Resource not found"), 404)
        return None
