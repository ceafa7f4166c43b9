"""Anthropic's Messages API, behind OpenAI's chat-completions wire format.

The request is translated in ``request``, the answer in ``response`` and the stream in
``stream``; this module makes the HTTP call. A client calling a model served by an
Anthropic worker sees exactly what an OpenAI-compatible worker would send.
"""

from __future__ import annotations

from typing import Any

from proxy.upstream.http_client import UpstreamResponse
from proxy.upstream.providers.anthropic.request import messages_request
from proxy.upstream.providers.anthropic.response import chat_completion, error_from
from proxy.upstream.providers.anthropic.stream import AnthropicStream
from proxy.upstream.providers.base import UpstreamError, UpstreamTarget
from proxy.upstream.providers.http import endpoint, post_json, read_json

# The API version the translation is written against; Anthropic requires it on every call.
ANTHROPIC_VERSION = "2023-06-01"


def anthropic_headers(target: UpstreamTarget) -> dict[str, str]:
    """The headers of a call to ``target``, its key among them."""
    # Decrypted once per call, kept nowhere (see the OpenAI provider). The extras first,
    # so the router's own headers win over any that an old row might still hold.
    headers = {**target.extra_headers, "Content-Type": "application/json",
               "anthropic-version": ANTHROPIC_VERSION}
    api_key = target.api_key
    if api_key:
        name, value = target.key_header(api_key)
        headers[name] = value
    return headers


class AnthropicProvider:
    def __init__(self, target: UpstreamTarget) -> None:
        self.target = target

    def _url(self) -> str:
        return str(endpoint(self.target.base_url, "/messages", self.target.api_version))

    def _headers(self) -> dict[str, str]:
        return anthropic_headers(self.target)

    async def _post(self, payload: dict[str, Any], *, total: float | None
                    ) -> UpstreamResponse:
        worker = self.target.worker_name
        return await post_json(
            self.target, self._url(), payload, self._headers(), total=total,
            error_from=lambda status, raw: error_from(status, raw, worker=worker))

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        payload = messages_request(body, stream=False)
        response = await self._post(payload, total=self.target.total_timeout_s)
        message = await read_json(self.target, response)
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            raise UpstreamError(f"{self.target.worker_name} sent no message", retryable=True,
                                status=200)
        return chat_completion(message, model=str(body.get("model") or ""))

    async def open_stream(self, body: dict[str, Any]) -> AnthropicStream:
        payload = messages_request(body, stream=True)
        # No total timeout on a stream: a long answer is fine while bytes keep coming.
        response = await self._post(payload, total=None)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return AnthropicStream(response, self.target, model=str(body.get("model") or ""),
                               include_usage=include_usage)


__all__ = ["ANTHROPIC_VERSION", "AnthropicProvider"]
