"""Calling an upstream in a client's own dialect (``proxy.dialects.base.NativeCodec``).

The codec says where the body goes and how the answer reads back into the path's internal
form; this module makes the HTTP call with the worker's own headers, timeouts and error
handling (those of its kind's adapter), and reads a stream's ``data:`` lines. The built-in
mock answers the dialects it lists (embeddings) itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from proxy.upstream.http_client import UpstreamResponse
from proxy.upstream.providers import openai
from proxy.upstream.providers.anthropic import anthropic_headers
from proxy.upstream.providers.anthropic.response import error_from as anthropic_error_from
from proxy.upstream.providers.base import UpstreamError, UpstreamTarget
from proxy.upstream.providers.http import ErrorFrom, endpoint, post_json, read_json
from proxy.upstream.providers.sse import TranslatedStream

if TYPE_CHECKING:
    from proxy.dialects.base import EventTranslator, NativeCodec
    from proxy.relay.call import Call


def _kind_parts(target: UpstreamTarget) -> tuple[Mapping[str, str], ErrorFrom]:
    """The headers (key included) and error reading of the worker's kind."""
    if target.kind == "anthropic":
        worker = target.worker_name
        return (anthropic_headers(target),
                lambda status, raw: anthropic_error_from(status, raw, worker=worker))
    return openai._headers(target), openai._error_from


async def _post(call: Call, target: UpstreamTarget, codec: NativeCodec,
                payload: dict[str, Any], *, total: float | None) -> UpstreamResponse:
    headers, error_from = _kind_parts(target)
    forwarded = codec.headers(call)
    if forwarded:
        headers = {**headers, **forwarded}
    url = endpoint(target.base_url, codec.path)
    if target.api_version:
        url = url.update_query({"api-version": target.api_version})
    return await post_json(target, url, payload, headers, total=total, error_from=error_from)


async def complete(call: Call, target: UpstreamTarget, codec: NativeCodec) -> dict[str, Any]:
    """The whole native answer, as an internal answer (the native one inside)."""
    payload = codec.body(call, target)
    if target.kind == "mock":
        from proxy.upstream.providers.mock import MockProvider

        return codec.answer(await MockProvider(target).native(codec.path, payload), call,
                            target)
    response = await _post(call, target, codec, payload, total=target.total_timeout_s)
    return codec.answer(await read_json(target, response), call, target)


async def open_stream(call: Call, target: UpstreamTarget, codec: NativeCodec) -> NativeStream:
    """A native stream, open once the upstream accepted it (failures before the first
    byte raise here, while failover is still possible)."""
    if target.kind == "mock":
        raise UpstreamError(f"{target.worker_name} streams no {codec.path}", retryable=False)
    response = await _post(call, target, codec, codec.body(call, target), total=None)
    return NativeStream(response, target, codec.translator(call, target))


class NativeStream(TranslatedStream):
    """An upstream's SSE in its own dialect, as internal chunks (each carrying the native
    events it came from)."""

    def __init__(self, response: UpstreamResponse, target: UpstreamTarget,
                 translator: EventTranslator) -> None:
        super().__init__(response, target.worker_name)
        self._translator = translator

    def translate(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        return self._translator.feed(event)

    @property
    def finished(self) -> bool:
        return self._translator.done
