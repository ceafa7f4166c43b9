"""A real Anthropic Messages API for tests: an aiohttp server on 127.0.0.1.

Like ``tests.proxy.upstream`` it runs in a background thread with its own event loop::

    with AnthropicServer(reply="Hi there.") as server:
        ...  # a Worker(kind="anthropic", base_url=server.base_url)
        assert server.requests[-1].headers["anthropic-version"] == "2023-06-01"
        assert server.bodies[-1]["system"] == "Be brief."

It answers ``POST /v1/messages`` in Anthropic's wire format: a ``message`` object, or with
``"stream": true`` the server-sent events ``message_start``, ``content_block_start``,
``ping``, ``content_block_delta`` (``text_delta``, one token each; ``input_json_delta`` for a
tool call), ``content_block_stop``, ``message_delta`` and ``message_stop``, each as
``event: <type>\\ndata: {...}\\n\\n``. It checks what the real API checks and a translation
could get wrong: ``x-api-key`` and ``anthropic-version`` headers, ``model`` and
``max_tokens``, roles that alternate, ``temperature`` within 0..1, and that every
``tool_result`` answers a ``tool_use`` of the assistant turn just before it.

Usage is true to what it produced: ``output_tokens`` are the ``o200k_base`` tokens of the
reply (cut at ``max_tokens``, or at a stop sequence) plus those of a tool call's input JSON;
the prompt is counted from the texts of the request (below what the router reserves for),
and split as Anthropic does into ``input_tokens``, ``cache_creation_input_tokens`` and
``cache_read_input_tokens`` as configured. Every message it answered (with its usage) is
kept in ``answers``, so a test can check the router's usage and charge against it.
``GET /v1/models`` lists ``MODELS`` the way Anthropic does (what the health probe calls).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

import orjson
from aiohttp import web

from tests.proxy.anthropic.messages_api import (
    API_VERSION,
    MODELS,
    Answer,
    AnthropicBehaviour,
    anthropic_error,
    plan_answer,
    request_problem,
    stream_events,
)
from tests.threaded_server import RecordingServer, drop_connection


class AnthropicServer(RecordingServer):
    """The server; a context manager that starts it in a thread and stops it on exit."""

    name = "Anthropic test server"

    def __init__(self, behaviour: AnthropicBehaviour | None = None, **changes: Any) -> None:
        super().__init__()
        self.behaviour = dataclasses.replace(behaviour or AnthropicBehaviour(), **changes)
        self._answers: list[Answer] = []

    # --- what tests read and change ---

    @property
    def bodies(self) -> list[Any]:
        """The JSON body of every ``POST /v1/messages`` received, in order."""
        return [r.body for r in self.requests if r.path == "/v1/messages"]

    @property
    def answers(self) -> list[Answer]:
        """Every message answered (streams included, even those cut off), in order."""
        with self._lock:
            return list(self._answers)

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/v1/models", self._models)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    # --- the handler ---

    @staticmethod
    def _error(status: int, error_type: str | None = None, message: str | None = None
               ) -> web.Response:
        return web.Response(body=orjson.dumps(anthropic_error(status, message, type_=error_type)),
                            status=status, content_type="application/json",
                            headers={"request-id": f"req_{uuid.uuid4().hex[:24]}"})

    def _refused_headers(self, request: web.Request, behaviour: AnthropicBehaviour
                         ) -> web.Response | None:
        if (behaviour.require_api_key is not None
                and request.headers.get("x-api-key") != behaviour.require_api_key):
            return self._error(401)
        if request.headers.get("anthropic-version") != API_VERSION:
            return self._error(400, message="anthropic-version: header is required")
        return None

    async def _not_found(self, request: web.Request) -> web.Response:
        await self.record(request)
        return self._error(404, message=f"Not found: {request.method} {request.path}")

    async def _models(self, request: web.Request) -> web.Response:
        """Anthropic's model list (what the workers' health probe calls)."""
        await self.record(request)
        refused = self._refused_headers(request, self.behaviour)
        if refused is not None:
            return refused
        data = [{"type": "model", "id": model, "display_name": model,
                 "created_at": "2024-10-22T00:00:00Z"} for model in MODELS]
        return web.Response(body=orjson.dumps({"data": data, "has_more": False,
                                               "first_id": MODELS[0],
                                               "last_id": MODELS[-1]}),
                            content_type="application/json")

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = (await self.record(request)).body
        behaviour = self.behaviour  # one consistent behaviour for the whole request
        if behaviour.first_byte_delay:
            await asyncio.sleep(behaviour.first_byte_delay)
        refused = self._refused_headers(request, behaviour)
        if refused is not None:
            return refused
        if behaviour.status is not None:
            return self._error(behaviour.status, behaviour.error_type, behaviour.error_message)
        problem = request_problem(body)
        if problem is not None:
            return self._error(400, *problem)
        if behaviour.die_after_events is not None and not body.get("stream"):
            drop_connection(request)
            return web.Response()  # never sent: the connection is gone
        answer = plan_answer(body, behaviour)
        with self._lock:
            self._answers.append(answer)
        headers = {"request-id": f"req_{uuid.uuid4().hex[:24]}"}
        if not body.get("stream"):
            return web.Response(body=orjson.dumps(answer.message), headers=headers,
                                content_type="application/json")
        response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        with self.counting_disconnects():
            await response.prepare(request)
            if behaviour.one_write:
                await response.write(b"".join(_sse(event) for event in stream_events(answer)))
                await response.write_eof()
                return response
            for sent, event in enumerate(stream_events(answer)):
                if sent == behaviour.die_after_events:
                    drop_connection(request)
                    return response
                if sent == behaviour.error_after_events:
                    await response.write(_sse(anthropic_error(529)))
                    await response.write_eof()
                    return response
                if sent and behaviour.chunk_delay:
                    await asyncio.sleep(behaviour.chunk_delay)
                await response.write(_sse(event))
            await response.write_eof()
        return response


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: ".encode() + orjson.dumps(event) + b"\n\n"
