"""Embeddings: always spoken natively (there is nothing to translate an embedding into), to
the workers that list "embeddings" among their dialects.

``encoding_format`` is forwarded as the client sent it, and whatever the upstream returned
is converted to what the client asked for. Forwarding saves the most in the usual case:
the openai SDKs ask for base64 by default, a 1536-float vector is about 6 KB in base64 and
about 3 times that as JSON floats, which the router would otherwise parse and write again.
Converting covers the servers that ignore the field (some OpenAI-compatible ones only
answer floats).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.http import HttpResponse

from billing.models import UsageRecord
from proxy.dialects.base import NATIVE
from proxy.ground.errors import ApiError
from proxy.ground.responses import error_response
from proxy.ground.vectors import from_base64, to_base64
from proxy.upstream.providers.base import UpstreamError

if TYPE_CHECKING:
    from proxy.dialects.base import EventTranslator, StreamRender
    from proxy.relay.call import Call
    from proxy.upstream.providers.base import UpstreamTarget


def _vector(embedding: object, encoding: str, worker: str) -> list[float] | str:
    """``embedding`` as the client asked for it; raises when it is neither form."""
    try:
        if isinstance(embedding, str):
            return embedding if encoding == "base64" else from_base64(embedding)
        if isinstance(embedding, list):
            return to_base64(embedding) if encoding == "base64" else embedding
    except (ValueError, struct.error, TypeError):
        pass
    raise UpstreamError(f"{worker} sent an embedding that is neither floats nor base64",
                        retryable=True, status=200)


class EmbeddingsCodec:
    path = "/embeddings"

    def body(self, call: Call, target: UpstreamTarget) -> dict[str, Any]:
        return {**(call.chat.native or call.chat.body), "model": target.upstream_model}

    def headers(self, call: Call) -> Mapping[str, str]:
        return {}

    def answer(self, raw: Any, call: Call, target: UpstreamTarget) -> dict[str, Any]:
        data = raw.get("data") if isinstance(raw, dict) else None
        if not isinstance(data, list) or not all(
                isinstance(item, dict) and isinstance(item.get("embedding"), list | str)
                for item in data):
            raise UpstreamError(f"{target.worker_name} sent no embeddings", retryable=True,
                                status=200)
        encoding = (call.chat.native or {}).get("encoding_format") or "float"
        # Converted here rather than when rendering: a malformed vector is then the
        # upstream's failure (another worker may be tried), before anything is charged.
        vectors = [(item.get("index", i), _vector(item["embedding"], encoding,
                                                  target.worker_name))
                   for i, item in enumerate(data)]
        usage = raw.get("usage")
        prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        # OpenAI's embedding usage has no completion tokens: there is no output to charge.
        internal_usage = (None if prompt is None else
                          {"prompt_tokens": prompt, "completion_tokens": 0,
                           "total_tokens": prompt})
        return {"object": "chat.completion", "choices": [], "usage": internal_usage,
                NATIVE: vectors}

    def translator(self, call: Call, target: UpstreamTarget) -> EventTranslator:
        raise UpstreamError("embeddings are not streamed", retryable=False)


class EmbeddingsDialect:
    endpoint = UsageRecord.Endpoint.EMBEDDINGS
    path = "/v1/embeddings"
    codec = EmbeddingsCodec()

    def serves(self, target: UpstreamTarget) -> bool:
        return "embeddings" in target.dialects

    def native(self, target: UpstreamTarget) -> EmbeddingsCodec:
        return self.codec

    async def render(self, call: Call, answer: dict[str, Any]) -> dict[str, Any]:
        usage = answer["usage"]
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": index, "embedding": vector}
                     for index, vector in answer[NATIVE]],
            "model": answer["model"],
            # Exactly what was charged (input only), with the router's cost beside it.
            "usage": {"prompt_tokens": usage["prompt_tokens"],
                      "total_tokens": usage["prompt_tokens"], "cost": usage["cost"]},
        }

    def stream(self, call: Call) -> StreamRender:
        raise AssertionError("embeddings are refused with stream when parsed")

    def error_response(self, error: ApiError) -> HttpResponse:
        return error_response(error)


EMBEDDINGS = EmbeddingsDialect()
