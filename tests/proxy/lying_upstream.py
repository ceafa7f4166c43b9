"""An OpenAI-compatible test upstream that lies, one switch per lie.

The router must enforce the output cap it charges for and check an upstream's ``usage``
before it believes it. ``LyingUpstream`` is the real HTTP server (``POST
/v1/chat/completions`` as JSON or SSE, ``GET /v1/models`` for health probes) those tests talk
to; what it does wrong is a ``Lies`` value, set per server or changed between requests with
``configure(**changes)``::

    with LyingUpstream(usage="over", extra_tokens=5) as upstream:
        ...  # point a worker at upstream.base_url, call the router
        sent = upstream.sent[-1]
        assert sent.completion_tokens == sent.cap + 5
        assert sent.usage["completion_tokens"] == 10 * sent.completion_tokens

The switches (fields of ``Lies``):

* ``reply``, ``reasoning``, ``tool_call_args``: what each choice produces, in that order
  (reasoning first, then the text, then one ``lookup`` tool call with those arguments).
  All three count as output tokens and are cut together at the cap.
* ``reads_cap``: which of ``max_tokens``/``max_completion_tokens`` it obeys (``"either"``:
  the smaller, as OpenAI; ``"none"``: no cap at all); ``extra_tokens``: how far it runs past
  that cap, topping the reply up from ``FILLER`` when it is too short to.
* ``usage``: the lie told in ``usage`` (``"honest"`` tells the truth: the
  ``exact_prompt_tokens`` of the messages and the ``o200k_base`` tokens sent, summed over
  choices); ``usage_placement``: which stream chunk carries it, after the shapes OpenAI,
  LiteLLM and llama.cpp send. Streams report usage even when the request did not ask for
  it, so tests see the router ask for it and strip it.
* ``extra_choice``, ``n_in_one_chunk``: one choice more than ``n``; every choice in each
  chunk instead of OpenAI's one choice per chunk (choices interleave token by token).
* ``chunk_delay``, ``die_after_chunks``: a slow stream; a connection dropped mid-stream.

``sent`` records, per request, what actually went out on the wire (read back from the
chunks written, so a stream cut short records only its start): see ``Sent``. Token counts
use ``proxy.ground.tokens``, the tokenizer the router counts with. The lies and the output they
lead to live in ``tests/proxy/lying/lies.py``, the wire format in ``lying/wire.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web

from proxy.ground.tokens import exact_prompt_tokens
from tests.proxy.lying.lies import DEFAULT_REPLY, FILLER, TOOL_NAME, Lies, plan_output
from tests.proxy.lying.wire import (
    Sent,
    SentChoice,
    build_answer,
    build_chunks,
    lied_usage,
    place_usage,
    read_back,
)
from tests.proxy.upstream import DEFAULT_MODELS, SYSTEM_FINGERPRINT, _sse, openai_error
from tests.threaded_server import RecordingServer, drop_connection

__all__ = ["DEFAULT_REPLY", "FILLER", "TOOL_NAME", "Lies", "LyingUpstream", "Sent",
           "SentChoice", "lying_upstream"]


@dataclass
class _Exchange:
    body: dict[str, Any]
    cap: int | None
    wire: list[dict[str, Any]] = field(default_factory=list)  # the answer, or chunks sent

    def sent(self) -> Sent:
        choices, usage = read_back(self.wire)
        return Sent(body=self.body, stream=bool(self.body.get("stream")), cap=self.cap,
                    choices=choices, usage=usage)


class LyingUpstream(RecordingServer):
    """The server; a context manager that starts it in a thread and stops it on exit."""

    name = "lying upstream"
    behaviour: Lies

    def __init__(self, lies: Lies | None = None, **changes: Any) -> None:
        super().__init__()
        self.behaviour = dataclasses.replace(lies or Lies(), **changes)
        self._exchanges: list[_Exchange] = []

    @property
    def lies(self) -> Lies:
        return self.behaviour

    @property
    def sent(self) -> list[Sent]:
        """What went out for each chat request, in order (a stream's so far, while live)."""
        with self._lock:
            exchanges = [dataclasses.replace(e, wire=list(e.wire)) for e in self._exchanges]
        return [exchange.sent() for exchange in exchanges]

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        return app

    def _wrote(self, exchange: _Exchange, obj: dict[str, Any]) -> None:
        with self._lock:
            exchange.wire.append(obj)

    async def _models(self, request: web.Request) -> web.Response:
        # The router's health probes list models before it sends traffic.
        await self.record(request)
        return _json({"object": "list", "data": [
            {"id": model, "object": "model", "created": 1700000000, "owned_by": "test"}
            for model in DEFAULT_MODELS]})

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = (await self.record(request)).body
        lies = self.behaviour  # one consistent set of lies for the whole request
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _json(openai_error(400, "'model' and 'messages' are required.",
                                      param="messages"), status=400)
        exchange = _Exchange(body=body, cap=lies.cap(body))
        with self._lock:
            self._exchanges.append(exchange)
        if lies.die_after_chunks is not None and not body.get("stream"):
            drop_connection(request)
            return web.Response()  # never sent: the connection is gone
        output = plan_output(lies, exchange.cap)
        asked = body.get("n") if isinstance(body.get("n"), int) and body["n"] > 0 else 1
        indexes = range(asked + lies.extra_choice)
        prompt = exact_prompt_tokens(body["messages"])

        def usage_of(objects: list[dict[str, Any]]) -> dict[str, Any] | None:
            return lied_usage(lies, prompt, objects)

        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()),
                "model": str(body.get("model", "")), "system_fingerprint": SYSTEM_FINGERPRINT}
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        if body.get("stream"):
            chunks = build_chunks(lies, output, indexes, head, call_id)
            events = place_usage(lies, chunks, head, usage_of)
            return await self._stream(request, exchange, events, lies)
        answer = build_answer(output, indexes, head, call_id)
        usage = usage_of([answer])
        if usage is not None:
            answer["usage"] = usage
        self._wrote(exchange, answer)
        return _json(answer)

    async def _stream(self, request: web.Request, exchange: _Exchange,
                      events: list[dict[str, Any]], lies: Lies) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"})
        with self.counting_disconnects():
            await response.prepare(request)
            for index, event in enumerate(events[:lies.die_after_chunks]):
                if index and lies.chunk_delay:
                    await asyncio.sleep(lies.chunk_delay)
                await response.write(_sse(event))
                self._wrote(exchange, event)
            if lies.die_after_chunks is not None:
                # Mid-stream, or after the last chunk when it asked for more: no [DONE].
                drop_connection(request)
                return response
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        return response


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status,
                        content_type="application/json")


@pytest.fixture
def lying_upstream() -> Iterator[LyingUpstream]:
    """A running ``LyingUpstream``, honest until configured (``configure(usage="over")``)."""
    with LyingUpstream() as server:
        yield server
