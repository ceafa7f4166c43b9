"""Any OpenAI-compatible server: OpenAI itself, vLLM, llama.cpp, Ollama, LiteLLM, ..."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.upstream.http_client import UpstreamResponse
from proxy.upstream.providers.base import UpstreamError, UpstreamTarget
from proxy.upstream.providers.http import endpoint, post_json, read_json, retryable_status
from proxy.upstream.providers.sse import DONE, END, next_event


def _error_from(status: int, raw: bytes) -> UpstreamError:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not (isinstance(body, dict) and isinstance(body.get("error"), dict)):
        body = None
    message = (body or {}).get("error", {}).get("message") or raw[:200].decode("utf-8", "replace")
    return UpstreamError(f"upstream answered {status}: {message}",
                         retryable=retryable_status(status), status=status, body=body)


_JSON_ONLY = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"}))


def _headers(target: UpstreamTarget) -> CIMultiDictProxy[str]:
    # The worker's key and extra headers are decrypted for each call and kept nowhere else:
    # a process's memory holds them in plaintext only while a request to that worker is
    # being sent. A worker with neither shares one constant mapping.
    api_key = target.api_key
    if not api_key and not target.extra_headers_encrypted:
        return _JSON_ONLY
    # The extras first: the worker's checks refuse the names set below, and should an old
    # row hold one anyway, the router's own value wins.
    headers = CIMultiDict(target.extra_headers)
    headers["Content-Type"] = "application/json"
    if api_key:
        name, value = target.key_header(api_key)
        headers[name] = value
    return CIMultiDictProxy(headers)


class OpenAIProvider:
    def __init__(self, target: UpstreamTarget) -> None:
        self.target = target

    async def _post(self, body: dict[str, Any], *, total: float | None
                    ) -> UpstreamResponse:
        url = endpoint(self.target.base_url, "/chat/completions", self.target.api_version)
        return await post_json(self.target, url, body, _headers(self.target), total=total,
                               error_from=_error_from)

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._post(body, total=self.target.total_timeout_s)
        answer = await read_json(self.target, response)
        if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
            raise UpstreamError(f"{self.target.worker_name} sent no chat completion",
                                retryable=True, status=200)
        return answer

    async def open_stream(self, body: dict[str, Any]) -> OpenAIStream:
        # No total timeout on a stream: a long answer is fine while bytes keep coming.
        response = await self._post(body, total=None)
        return OpenAIStream(response, self.target)


class OpenAIStream:
    def __init__(self, response: UpstreamResponse, target: UpstreamTarget) -> None:
        self._response = response
        self._target = target

    def ready(self) -> bool:
        """Whether the next chunk can be read without waiting for the upstream: every data
        line of an OpenAI stream is a chunk (or ``[DONE]``, or an error), so a whole one
        buffered is one ready (``proxy.relay.completion`` sends what is ready together)."""
        return self._response.holds_data_line()

    async def aclose(self) -> None:
        # Closing (not releasing) drops the connection, which is how an upstream learns
        # that nobody is reading and stops generating; a stream read to its [DONE] was
        # finished already and keeps its connection.
        self._response.close()

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        worker = self._target.worker_name
        ended = False  # read to [DONE]: the connection may serve the next call
        try:
            # Events read one by one, not through a generator of generators: an inner one
            # left at its last ``yield`` when [DONE] returns from here was closed by the
            # event loop's finalizer hook, a task and a wake-up of the loop per stream.
            while (chunk := await next_event(self._response, worker)) is not END:
                if chunk is DONE:
                    ended = True
                    return
                chunk = cast(dict[str, Any], chunk)  # next_event never says PENDING
                if isinstance(chunk.get("error"), dict):
                    raise UpstreamError(f"{worker}: {chunk['error'].get('message')}",
                                        retryable=False, body=chunk)
                yield chunk
            # The body ended without [DONE]: the upstream went away mid-answer.
            raise UpstreamError(f"{worker} ended the stream early", retryable=False)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamError(f"{worker} broke off the stream: {exc.__class__.__name__}",
                                retryable=False) from None
        finally:
            if ended:
                self._response.finish()
            else:
                self._response.close()
