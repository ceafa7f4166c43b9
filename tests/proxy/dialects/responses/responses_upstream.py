"""An OpenAI-compatible upstream that speaks the Responses API, ``POST /v1/responses``, in
OpenAI's wire format: a ``response`` object, or its event stream (``event:``/``data:``
server-sent events from ``response.created`` to ``response.completed``, no ``[DONE]``).

What it writes: a reasoning item when ``reasoning`` is set (its summary), then either one
function call (asked with ``tools`` and no function output yet, as ``ToolUpstream`` does),
or a message: ``json_reply`` when ``text.format`` asks for JSON, ``reply`` otherwise, cut at
``max_output_tokens`` (``status: incomplete``) unless it is told to ``lie``. Its usage is
true: ``input_tokens`` are ``exact_prompt_tokens`` of the input (read as the router reads
it), ``output_tokens`` the ``o200k_base`` tokens it wrote plus ``hidden_reasoning_tokens``,
``input_tokens_details.cached_tokens`` as configured.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import web

from proxy.dialects.responses.items import input_messages
from proxy.ground.tokens import count_text_tokens, encode_text, exact_prompt_tokens, token_pieces
from tests.proxy.dialects.responses.tool_upstream import CALL_ARGUMENTS, CALL_ID, CALL_NAME
from tests.proxy.upstream import DEFAULT_REPLY, openai_error
from tests.threaded_server import RecordingServer

JSON_REPLY = '{"city": "Paris", "temperature": 21}'


@dataclass(frozen=True)
class ResponsesBehaviour:
    reply: str = DEFAULT_REPLY
    json_reply: str = JSON_REPLY
    reasoning: str = ""  # a reasoning summary, written before the answer
    hidden_reasoning_tokens: int = 0  # reasoning tokens counted but never shown
    cached_tokens: int = 0
    lie: bool = False  # write the whole reply whatever max_output_tokens says
    # Stream: after this many text deltas, a response.failed event ends it.
    fail_after_deltas: int | None = None
    status: int | None = None  # answer with this HTTP status and an OpenAI error
    chunk_delay: float = 0.0


@dataclass
class Answer:
    """What the server wrote for one request."""

    response: dict[str, Any]  # the final response object
    text: str  # the message's text (or the function call's arguments)
    prompt_tokens: int


def _usage(prompt: int, output: int, *, cached: int, reasoning: int) -> dict[str, Any]:
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": output, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + output}


def _wants_call(body: dict[str, Any]) -> bool:
    items = body.get("input")
    last = items[-1] if isinstance(items, list) and items else None
    return bool(body.get("tools")) and not (
        isinstance(last, dict) and last.get("type") == "function_call_output")


def _wants_json(body: dict[str, Any]) -> bool:
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    return (text.get("format") or {}).get("type") in ("json_schema", "json_object")


class ResponsesUpstream(RecordingServer):
    name = "Responses API test upstream"

    def __init__(self, **changes: Any) -> None:
        super().__init__()
        self.behaviour = ResponsesBehaviour(**changes)
        self.answers: list[Answer] = []

    @property
    def bodies(self) -> list[Any]:
        """The JSON body of every ``POST /v1/responses``, in order."""
        return [r.body for r in self.requests if r.method == "POST"
                and r.path == "/v1/responses"]

    @property
    def chat_bodies(self) -> list[Any]:
        return [r.body for r in self.requests if r.path == "/v1/chat/completions"]

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def _not_found(self, request: web.Request) -> web.Response:
        await self.record(request)
        return web.json_response(openai_error(404, f"Unknown request URL: {request.method} "
                                                   f"{request.path}.", code="unknown_url"),
                                 status=404)

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = (await self.record(request)).body
        behaviour = self.behaviour
        if behaviour.status is not None:
            return web.json_response(openai_error(behaviour.status), status=behaviour.status)
        if body.get("previous_response_id") or body.get("store") is not False:
            # This upstream keeps nothing: a test that sees this failed.
            return web.json_response(openai_error(400, "store: false only, no "
                                                       "previous_response_id"), status=400)
        system = ([{"role": "system", "content": body["instructions"]}]
                  if body.get("instructions") else [])
        prompt = exact_prompt_tokens([*system, *input_messages(body.get("input"))])
        response: dict[str, Any] = {
            "id": f"resp_up_{uuid.uuid4().hex}", "object": "response",
            "created_at": int(time.time()), "status": "completed", "background": False,
            "completed_at": None, "error": None, "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"), "model": body["model"],
            "output": [], "parallel_tool_calls": True, "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None}, "store": False,
            "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
            "tools": [], "top_p": 1.0, "truncation": "disabled", "metadata": {}}
        items: list[dict[str, Any]] = []
        written = 0
        if behaviour.reasoning:
            items.append({"id": f"rs_up_{uuid.uuid4().hex}", "type": "reasoning",
                          "summary": [{"type": "summary_text", "text": behaviour.reasoning}]})
            written += count_text_tokens(behaviour.reasoning)
        if _wants_call(body):
            text = CALL_ARGUMENTS
            items.append({"id": f"fc_up_{uuid.uuid4().hex}", "type": "function_call",
                          "call_id": CALL_ID, "name": CALL_NAME, "arguments": text,
                          "status": "completed"})
            written += count_text_tokens(CALL_NAME) + count_text_tokens(text)
            pieces = [text[:len(text) // 2], text[len(text) // 2:]]
        else:
            tokens = encode_text(behaviour.json_reply if _wants_json(body) else behaviour.reply)
            cap = body.get("max_output_tokens")
            if not behaviour.lie and isinstance(cap, int) and written + len(tokens) > cap:
                tokens = tokens[:max(cap - written, 0)]
                response["status"] = "incomplete"
                response["incomplete_details"] = {"reason": "max_output_tokens"}
            pieces = token_pieces(tokens)
            text = "".join(pieces)
            items.append({"id": f"msg_up_{uuid.uuid4().hex}", "type": "message",
                          "role": "assistant", "status": "completed",
                          "content": [{"type": "output_text", "text": text,
                                       "annotations": [], "logprobs": []}]})
            written += len(tokens)
        reasoning = behaviour.hidden_reasoning_tokens
        final = {**response, "output": items,
                 "usage": _usage(prompt, written + reasoning, cached=behaviour.cached_tokens,
                                 reasoning=reasoning + (count_text_tokens(behaviour.reasoning)
                                                        if behaviour.reasoning else 0))}
        if final["status"] == "completed":
            final["completed_at"] = int(time.time())
        self.answers.append(Answer(final, text, prompt))
        if not body.get("stream"):
            return web.json_response(final)
        return await self._stream(request, response, final, pieces)

    async def _stream(self, request: web.Request, start: dict[str, Any],
                      final: dict[str, Any], pieces: list[str]) -> web.StreamResponse:
        behaviour = self.behaviour
        answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        sequence = iter(range(10_000))

        def event(kind: str, **fields: Any) -> bytes:
            payload = {"type": kind, "sequence_number": next(sequence), **fields}
            return (b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload)
                    + b"\n\n")

        events = [event("response.created", response=start),
                  event("response.in_progress", response=start)]
        deltas = 0
        failed = False
        for index, item in enumerate(final["output"]):
            where = {"item_id": item["id"], "output_index": index}
            if item["type"] == "reasoning":
                summary = item["summary"][0]
                events += [
                    event("response.output_item.added", output_index=index,
                          item={**item, "summary": []}),
                    event("response.reasoning_summary_part.added", **where, summary_index=0,
                          part={"type": "summary_text", "text": ""}),
                    event("response.reasoning_summary_text.delta", **where, summary_index=0,
                          delta=summary["text"]),
                    event("response.reasoning_summary_text.done", **where, summary_index=0,
                          text=summary["text"]),
                    event("response.reasoning_summary_part.done", **where, summary_index=0,
                          part=summary),
                    event("response.output_item.done", output_index=index, item=item)]
            elif item["type"] == "function_call":
                events.append(event("response.output_item.added", output_index=index,
                                    item={**item, "arguments": "", "status": "in_progress"}))
                events += [event("response.function_call_arguments.delta", **where,
                                 delta=piece) for piece in pieces]
                events += [event("response.function_call_arguments.done", **where,
                                 arguments=item["arguments"]),
                           event("response.output_item.done", output_index=index, item=item)]
            else:
                part = item["content"][0]
                events += [
                    event("response.output_item.added", output_index=index,
                          item={**item, "content": [], "status": "in_progress"}),
                    event("response.content_part.added", **where, content_index=0,
                          part={**part, "text": ""})]
                for piece in pieces:
                    if deltas == behaviour.fail_after_deltas:
                        failed = True
                        break
                    deltas += 1
                    events.append(event("response.output_text.delta", **where,
                                        content_index=0, delta=piece, logprobs=[]))
                if failed:
                    events.append(event("response.failed", response={
                        **start, "status": "failed",
                        "error": {"code": "server_error", "message": "The model crashed."}}))
                    break
                events += [
                    event("response.output_text.done", **where, content_index=0,
                          text=part["text"], logprobs=[]),
                    event("response.content_part.done", **where, content_index=0, part=part),
                    event("response.output_item.done", output_index=index, item=item)]
        if not failed:
            kind = ("response.completed" if final["status"] == "completed"
                    else "response.incomplete")
            events.append(event(kind, response=final))
        with self.counting_disconnects():
            await answer.prepare(request)
            for sent, payload in enumerate(events):
                if sent and behaviour.chunk_delay:
                    await asyncio.sleep(behaviour.chunk_delay)
                await answer.write(payload)
            await answer.write_eof()
        return answer


@pytest.fixture
def responses_upstream() -> Iterator[ResponsesUpstream]:
    with ResponsesUpstream() as server:
        yield server
