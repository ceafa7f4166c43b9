"""The local OpenAI-compatible upstream, also answering ``POST /v1/embeddings`` and
``POST /v1/completions`` in OpenAI's wire format.

Embeddings: the mock worker's deterministic vectors (``unit_vector``), in the
``encoding_format`` asked for (unless ``floats_only``, as servers that ignore the field do),
usage counted with o200k (its own count, which the router charges as it is). Completions:
``behaviour.reply`` cut at ``max_tokens``, ``n`` choices per prompt (index = prompt * n +
choice), ``best_of`` generated and billed per prompt; streamed one token per chunk, a
last chunk per choice with its ``finish_reason``, the usage chunk when asked, ``[DONE]``.
The failure settings of ``UpstreamBehaviour`` apply (``status``, ``die_after_chunks``,
delays).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from proxy.ground.tokens import count_text_tokens, encode_text, token_pieces
from proxy.ground.vectors import to_base64
from proxy.upstream.providers.mock import unit_vector
from tests.proxy.upstream import UpstreamBehaviour, UpstreamServer, _sse, openai_error
from tests.threaded_server import drop_connection

# Fake per-token logprobs, so a test can see the upstream's own ones reach the client.
LOGPROB = -0.25


@dataclass(frozen=True)
class LegacyBehaviour(UpstreamBehaviour):
    floats_only: bool = False  # answer floats even when asked for base64


def _inputs(value: Any) -> list[str | list[int]]:
    if isinstance(value, str):
        return [value]
    if value and all(isinstance(v, int) for v in value):
        return [value]
    return list(value)


def _tokens(item: str | list[int]) -> int:
    return count_text_tokens(item) if isinstance(item, str) else len(item)


class LegacyUpstream(UpstreamServer):
    name = "test legacy upstream"

    def __init__(self, **changes: Any) -> None:
        super().__init__(LegacyBehaviour(), **changes)

    def bodies_at(self, path: str) -> list[Any]:
        return [r.body for r in self.requests if r.method == "POST" and r.path == path]

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        # Before the catch-all 404 of the chat server's routes.
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def _failure(self, request: web.Request) -> tuple[Any, web.Response | None]:
        recorded = await self.record(request)
        behaviour = self.behaviour
        if behaviour.first_byte_delay:
            await asyncio.sleep(behaviour.first_byte_delay)
        if behaviour.status is not None:
            return recorded.body, self._json(behaviour.error_body
                                             or openai_error(behaviour.status),
                                             behaviour.status, behaviour.error_headers)
        return recorded.body, None

    async def _embeddings(self, request: web.Request) -> web.Response:
        body, failed = await self._failure(request)
        if failed is not None:
            return failed
        behaviour = self.behaviour
        inputs = _inputs(body["input"])
        base64 = body.get("encoding_format") == "base64" and not behaviour.floats_only
        data = []
        for index, item in enumerate(inputs):
            vector = unit_vector(item, body.get("dimensions") or 1536)
            data.append({"object": "embedding", "index": index,
                         "embedding": to_base64(vector) if base64 else vector})
        prompt = sum(_tokens(item) for item in inputs)
        answer: dict[str, Any] = {"object": "list", "data": data, "model": body["model"]}
        if behaviour.report_usage:
            answer["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt}
        return self._json(answer)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self._failure(request)
        if failed is not None:
            return failed
        behaviour = self.behaviour
        if behaviour.die_after_chunks is not None and not body.get("stream"):
            drop_connection(request)
            return web.Response()
        prompts = _inputs(body["prompt"])
        n, best_of = body.get("n") or 1, body.get("best_of") or body.get("n") or 1
        reply = behaviour.reply(body) if callable(behaviour.reply) else behaviour.reply
        tokens = encode_text(reply)
        finish = "stop"
        if 0 <= body["max_tokens"] < len(tokens):
            tokens, finish = tokens[:body["max_tokens"]], "length"
        pieces = token_pieces(tokens)
        logprobs = body.get("logprobs") is not None
        prompt_tokens = sum(_tokens(p) for p in prompts) + _tokens(body.get("suffix") or "")
        usage = {"prompt_tokens": prompt_tokens,
                 "completion_tokens": len(tokens) * best_of * len(prompts),
                 "total_tokens": prompt_tokens + len(tokens) * best_of * len(prompts)}
        base = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                "created": int(time.time()), "model": str(body["model"])}
        count = n * len(prompts)

        def choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
            marks = None
            if logprobs and text:
                said = pieces if finish_reason else [text]  # a whole answer, or one chunk
                marks = {"tokens": said, "token_logprobs": [LOGPROB] * len(said),
                         "top_logprobs": [{t: LOGPROB} for t in said],
                         "text_offset": [0] * len(said)}
            return {"text": text, "index": index, "logprobs": marks,
                    "finish_reason": finish_reason}

        if not body.get("stream"):
            answer = {**base, "choices": [choice(i, "".join(pieces), finish)
                                          for i in range(count)]}
            if behaviour.report_usage:
                answer["usage"] = usage
            return self._json(answer)
        events = [{**base, "choices": [choice(i, piece, None)]}
                  for piece in pieces for i in range(count)]
        events += [{**base, "choices": [choice(i, "", finish)]} for i in range(count)]
        if behaviour.report_usage and (body.get("stream_options") or {}).get("include_usage"):
            events.append({**base, "choices": [], "usage": usage})
        return await self._send(request, events)

    async def _send(self, request: web.Request, events: list[dict[str, Any]]
                    ) -> web.StreamResponse:
        behaviour = self.behaviour
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        with self.counting_disconnects():
            await response.prepare(request)
            for sent, event in enumerate(events):
                if sent == behaviour.die_after_chunks:
                    drop_connection(request)
                    return response
                if sent and behaviour.chunk_delay:
                    await asyncio.sleep(behaviour.chunk_delay)
                await response.write(_sse(event))
            with self._lock:
                self.completed_streams += 1
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        return response


@pytest.fixture
def legacy_upstream() -> Iterator[LegacyUpstream]:
    with LegacyUpstream() as server:
        yield server


