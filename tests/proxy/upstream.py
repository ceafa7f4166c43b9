"""A real OpenAI-compatible upstream for tests: an aiohttp server on 127.0.0.1.

It runs in a background thread with its own event loop, so synchronous tests, the openai
SDK, and an app served by another loop or thread can all call it over real HTTP::

    with UpstreamServer(reply="Hi there.", chunk_delay=0.01) as upstream:
        client = openai.OpenAI(base_url=upstream.base_url, api_key="x", max_retries=0)
        ...
        assert upstream.bodies[-1]["stream_options"] == {"include_usage": True}

or as the ``upstream`` pytest fixture below (a conftest can re-export it with
``from tests.proxy.upstream import upstream  # noqa: F401``).

It answers ``POST /v1/chat/completions`` in OpenAI's exact wire format: a ``chat.completion``
object, or ``chat.completion.chunk`` objects as ``data: {...}\\n\\n`` server-sent events ending
with ``data: [DONE]\\n\\n``, one token per chunk, with the final usage chunk (empty
``choices``) when ``stream_options.include_usage`` is set. Usage is true: completion tokens
are the ``o200k_base`` tokens it produced (cut at ``max_completion_tokens``/``max_tokens``
with ``finish_reason: "length"``), prompt tokens are ``proxy.ground.tokens.exact_prompt_tokens``
of the messages, which ``estimate_prompt_tokens`` always bounds. ``GET /v1/models`` lists
``models``. Failures are configured per server (``status``, ``die_after_chunks``, delays),
and can be changed between requests with ``configure(...)``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web

from proxy.ground.tokens import encode_text, exact_prompt_tokens, token_pieces
from tests.threaded_server import RecordingServer, drop_connection

DEFAULT_REPLY = ("This is a deterministic reply from the local test upstream. It has a "
                 "handful of plain words, so its tokens are easy to count.")
DEFAULT_MODELS = ("gpt-4o-mini", "test-model")
SYSTEM_FINGERPRINT = "fp_local_test"

# What OpenAI answers for each status, used unless ``error_body`` is given.
_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("invalid_request_error", "The request was invalid.", None),
    401: ("invalid_request_error", "Incorrect API key provided.", "invalid_api_key"),
    403: ("invalid_request_error", "You are not allowed to use this model.", None),
    404: ("invalid_request_error", "The model does not exist or you do not have access to it.",
          "model_not_found"),
    429: ("requests", "Rate limit reached for requests.", "rate_limit_exceeded"),
    500: ("server_error", "The server had an error while processing your request. Sorry about "
          "that!", None),
    502: ("server_error", "Bad gateway.", None),
    503: ("server_error", "The engine is currently overloaded, please try again later.", None),
}


def openai_error(status: int, message: str | None = None, *, type_: str | None = None,
                 code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """An OpenAI error body (``ErrorResponse``) for ``status``."""
    default_type, default_message, default_code = _ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error",
                 f"HTTP {status}", None))
    return {"error": {"message": message or default_message, "type": type_ or default_type,
                      "param": param, "code": code or default_code}}


@dataclass(frozen=True)
class UpstreamBehaviour:
    """How the server answers; every field can be set per server or changed between calls."""

    # The reply text, or a function of the request body that returns it.
    reply: str | Callable[[dict[str, Any]], str] = DEFAULT_REPLY
    # Answer every chat request with this HTTP status and an OpenAI error body.
    status: int | None = None
    error_body: dict[str, Any] | None = None  # instead of the default body for ``status``
    error_headers: dict[str, str] = field(default_factory=dict)  # e.g. {"Retry-After": "1"}
    answer_headers: dict[str, str] = field(default_factory=dict)  # on whole answers
    # Seconds before the status line (both modes), and between stream chunks.
    first_byte_delay: float = 0.0
    chunk_delay: float = 0.0
    # Stream: every event and [DONE] in one write, as an upstream whose chunks piled up
    # in the socket before the reader came back.
    one_write: bool = False
    # Stream: send this many chunks (the first is the role chunk), then close the
    # connection abruptly (no [DONE], no end of the chunked body). Not streamed: close the
    # connection without any response.
    die_after_chunks: int | None = None
    # Stream: after this many chunks send ``data: {"error": ...}`` and end the stream.
    error_after_chunks: int | None = None
    # Refuse (401) requests whose ``Authorization`` is not ``Bearer <require_api_key>``.
    require_api_key: str | None = None
    # The model named in answers; by default the one the request named.
    response_model: str | None = None
    # False: never report usage (some OpenAI-compatible servers don't), even when asked.
    report_usage: bool = True
    cached_tokens: int = 0  # reported as usage.prompt_tokens_details.cached_tokens
    models: tuple[str, ...] = DEFAULT_MODELS


@dataclass(frozen=True)
class Completion:
    """What the server generates for one request."""

    pieces: list[str]  # one per token (a character split over tokens stays whole)
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def plan_completion(body: dict[str, Any], reply: str | Callable[[dict[str, Any]], str]
                    ) -> Completion:
    """The reply for ``body``, cut at its token limit; what the server sends (per choice)."""
    text = reply(body) if callable(reply) else reply
    tokens = encode_text(text)
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    finish = "stop"
    if isinstance(limit, int) and 0 <= limit < len(tokens):
        tokens, finish = tokens[:limit], "length"
    messages = body.get("messages")
    return Completion(pieces=token_pieces(tokens), finish_reason=finish,
                      prompt_tokens=exact_prompt_tokens(messages if isinstance(messages, list)
                                                        else []),
                      completion_tokens=len(tokens))


class UpstreamServer(RecordingServer):
    """The server; a context manager that starts it in a thread and stops it on exit."""

    name = "test upstream"

    def __init__(self, behaviour: UpstreamBehaviour | None = None, **changes: Any) -> None:
        super().__init__()
        self.behaviour = dataclasses.replace(behaviour or UpstreamBehaviour(), **changes)
        self.completed_streams = 0

    # --- what tests read and change ---

    @property
    def bodies(self) -> list[Any]:
        """The JSON body of every ``POST /v1/chat/completions`` received, in order."""
        return [r.body for r in self.requests
                if r.method == "POST" and r.path == "/v1/chat/completions"]

    def reset(self) -> None:
        """Forget the recorded requests and counters."""
        with self._lock:
            self._requests.clear()
            self.client_disconnects = 0
            self.completed_streams = 0

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    # --- handlers ---

    @staticmethod
    def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None
              ) -> web.Response:
        return web.Response(body=orjson.dumps(body), status=status, headers=headers,
                            content_type="application/json")

    def _unauthorized(self, request: web.Request, behaviour: UpstreamBehaviour) -> bool:
        if behaviour.require_api_key is None:
            return False
        return request.headers.get("Authorization") != f"Bearer {behaviour.require_api_key}"

    async def _not_found(self, request: web.Request) -> web.Response:
        await self.record(request)
        return self._json(openai_error(404, f"Unknown request URL: {request.method} "
                                            f"{request.path}.", code="unknown_url"), 404)

    async def _models(self, request: web.Request) -> web.Response:
        await self.record(request)
        behaviour = self.behaviour
        if self._unauthorized(request, behaviour):
            return self._json(openai_error(401), 401)
        return self._json({"object": "list", "data": [
            {"id": model, "object": "model", "created": 1700000000, "owned_by": "test"}
            for model in behaviour.models]})

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        recorded = await self.record(request)
        behaviour = self.behaviour  # one consistent behaviour for the whole request
        body = recorded.body
        if behaviour.first_byte_delay:
            await asyncio.sleep(behaviour.first_byte_delay)
        if self._unauthorized(request, behaviour):
            return self._json(openai_error(401), 401)
        if behaviour.status is not None:
            return self._json(behaviour.error_body or openai_error(behaviour.status),
                              behaviour.status, behaviour.error_headers)
        if not isinstance(body, dict):
            return self._json(openai_error(400, "We could not parse the JSON body of your "
                                                "request."), 400)
        if not isinstance(body.get("messages"), list) or not body.get("model"):
            return self._json(openai_error(400, "'model' and 'messages' are required.",
                                           param="messages"), 400)
        if behaviour.die_after_chunks is not None and not body.get("stream"):
            drop_connection(request)
            return web.Response()  # never sent: the connection is gone
        completion = plan_completion(body, behaviour.reply)
        n = body.get("n") if isinstance(body.get("n"), int) and body["n"] > 0 else 1
        model = behaviour.response_model or str(body["model"])
        if body.get("stream"):
            return await self._stream(request, body, behaviour, completion, n, model)
        message = {"role": "assistant", "content": completion.text, "refusal": None,
                   "annotations": []}
        answer: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": i, "message": message, "logprobs": None,
                         "finish_reason": completion.finish_reason} for i in range(n)],
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        if behaviour.report_usage:
            answer["usage"] = _usage(completion, n, behaviour.cached_tokens)
        return self._json(answer, headers={"x-request-id": f"req_{uuid.uuid4().hex}",
                                           **behaviour.answer_headers})

    async def _stream(self, request: web.Request, body: dict[str, Any],
                      behaviour: UpstreamBehaviour, completion: Completion, n: int,
                      model: str) -> web.StreamResponse:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        include_usage = include_usage and behaviour.report_usage
        base: dict[str, Any] = {"id": f"chatcmpl-{uuid.uuid4().hex}",
                                "object": "chat.completion.chunk", "created": int(time.time()),
                                "model": model, "service_tier": "default",
                                "system_fingerprint": SYSTEM_FINGERPRINT}

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
            # With include_usage, OpenAI sends "usage": null on every chunk but the last.
            return {**base, "choices": choices, **({"usage": None} if include_usage else {}),
                    **extra}

        def choice(index: int, delta: dict[str, Any], finish: str | None = None
                   ) -> dict[str, Any]:
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}

        events: list[dict[str, Any]] = []
        events += [chunk([choice(i, {"role": "assistant", "content": "", "refusal": None})])
                   for i in range(n)]
        events += [chunk([choice(i, {"content": piece})])
                   for piece in completion.pieces for i in range(n)]
        events += [chunk([choice(i, {}, completion.finish_reason)]) for i in range(n)]
        if include_usage:
            events.append(chunk([], usage=_usage(completion, n, behaviour.cached_tokens)))

        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
            "x-request-id": f"req_{uuid.uuid4().hex}"})
        with self.counting_disconnects():
            await response.prepare(request)
            if behaviour.one_write:
                with self._lock:
                    self.completed_streams += 1
                await response.write(b"".join(map(_sse, events)) + b"data: [DONE]\n\n")
                await response.write_eof()
                return response
            for sent, event in enumerate(events):
                if sent == behaviour.die_after_chunks:
                    drop_connection(request)
                    return response
                if sent == behaviour.error_after_chunks:
                    await response.write(_sse(openai_error(500)))
                    await response.write_eof()
                    return response
                if sent and behaviour.chunk_delay:
                    await asyncio.sleep(behaviour.chunk_delay)
                await response.write(_sse(event))
            if behaviour.die_after_chunks is not None and behaviour.die_after_chunks >= len(
                    events):
                drop_connection(request)  # everything sent but [DONE]
                return response
            # Counted before [DONE] goes out, so a client that has read [DONE] sees the count.
            with self._lock:
                self.completed_streams += 1
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        return response


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


def _usage(completion: Completion, n: int, cached_tokens: int) -> dict[str, Any]:
    completion_tokens = completion.completion_tokens * n
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": completion.prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    """A running ``UpstreamServer`` with the default behaviour (``configure`` to change)."""
    with UpstreamServer() as server:
        yield server
