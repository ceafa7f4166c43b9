"""Anthropic's Messages API, behind OpenAI's chat-completions wire format.

The request is translated in ``request``, the answer in ``response`` and the stream in
``stream``; this module makes the HTTP call. A client calling a model served by an
Anthropic worker sees exactly what an OpenAI-compatible worker would send.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from proxy.http_client import upstream_session
from proxy.providers.anthropic.request import messages_request
from proxy.providers.anthropic.response import chat_completion, error_from
from proxy.providers.anthropic.stream import AnthropicStream
from proxy.providers.base import UpstreamError, UpstreamTarget

# The API version the translation is written against; Anthropic requires it on every call.
ANTHROPIC_VERSION = "2023-06-01"


class AnthropicProvider:
    def __init__(self, target: UpstreamTarget) -> None:
        self.target = target

    def _url(self) -> str:
        base = self.target.base_url.rstrip("/")
        return f"{base}/messages"

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if self.target.api_key:
            headers["x-api-key"] = self.target.api_key
        return headers

    def _timeout(self, *, total: float | None) -> aiohttp.ClientTimeout:
        # sock_read bounds every wait for bytes: the first byte and each later chunk.
        return aiohttp.ClientTimeout(total=total, sock_connect=self.target.connect_timeout_s,
                                     sock_read=self.target.first_byte_timeout_s)

    async def _post(self, payload: dict[str, Any], *, total: float | None
                    ) -> aiohttp.ClientResponse:
        worker = self.target.worker_name
        try:
            response = await upstream_session().post(
                self._url(), data=orjson.dumps(payload), headers=self._headers(),
                timeout=self._timeout(total=total),
            )
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise UpstreamError(f"cannot reach {worker}: {exc.__class__.__name__}",
                                retryable=True) from None
        except TimeoutError:
            raise UpstreamError(f"{worker} did not answer in time", retryable=True) from None
        if response.status != 200:
            try:
                raw = await response.read()
            except (aiohttp.ClientError, TimeoutError):
                raw = b""
            finally:
                response.release()
            raise error_from(response.status, raw, worker=worker)
        return response

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        payload = messages_request(body, stream=False)
        response = await self._post(payload, total=self.target.total_timeout_s)
        worker = self.target.worker_name
        try:
            raw = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(f"{worker} broke off its answer: {exc.__class__.__name__}",
                                retryable=True) from None
        finally:
            response.release()
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"{worker} sent a body that is not JSON", retryable=True,
                                status=200) from None
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            raise UpstreamError(f"{worker} sent no message", retryable=True, status=200)
        return chat_completion(message, model=str(body.get("model") or ""))

    async def open_stream(self, body: dict[str, Any]) -> AnthropicStream:
        payload = messages_request(body, stream=True)
        # No total timeout on a stream: a long answer is fine while bytes keep coming.
        response = await self._post(payload, total=None)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return AnthropicStream(response, self.target, model=str(body.get("model") or ""),
                               include_usage=include_usage)


__all__ = ["ANTHROPIC_VERSION", "AnthropicProvider"]
