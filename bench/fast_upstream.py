"""A minimal, very cheap OpenAI-compatible (and Anthropic Messages) upstream for benchmarks.

    python bench/fast_upstream.py --port 9100 [--chunk-delay-ms 0] [--answer-seconds 0]

A raw asyncio HTTP/1.1 server (on uvloop when it is installed), so that the upstream costs
as little CPU as possible and a benchmark measures the router, not this server. It answers

* ``POST /v1/chat/completions``: a fixed ``chat.completion`` with ``usage``, or, with
  ``"stream": true``, server-sent events: a role chunk, four content chunks, a finish chunk,
  the usage chunk (empty ``choices``) when ``stream_options.include_usage`` is set, then
  ``data: [DONE]``. Completion tokens are one per content chunk, cut at ``max_tokens``.
* ``POST /v1/messages``: Anthropic's Messages API, natively: a fixed ``message`` with
  ``usage`` (``input_tokens``, ``output_tokens``), or, with ``"stream": true``, Anthropic's
  events (``event: X`` and ``data: {...}`` each): ``message_start``, ``content_block_start``,
  one ``content_block_delta`` per piece, ``content_block_stop``, ``message_delta`` (stop
  reason and output tokens), ``message_stop``. Tokens are counted and cut as for chat.
* ``GET /v1/models``: one model, for readiness checks.

With ``--answer-seconds S`` every answer takes S seconds, like a slow model: a stream sends
its role chunk and first content chunk at once, then the rest S seconds after the request
came; a JSON answer comes whole after S seconds (``bench/capacity.py``).

Connections are kept alive (HTTP/1.1 default; ``Connection: close`` is honoured). Request
bodies must carry ``Content-Length`` (aiohttp, httpx and the openai SDK all send it).
Clients are assumed not to pipeline; the parser nonetheless keeps any extra bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import time
from typing import Any, cast

import orjson

PROMPT_TOKENS = 9  # what OpenAI counts for [{"role": "user", "content": "Say hi"}]
PIECES = ("Hi", "!", " How can I", " help?")
MAX_HEAD_BYTES = 64 * 1024
CREATED = int(time.time())

_ids = itertools.count(1)


def _response(status: str, body: bytes, *, content_type: bytes = b"application/json",
              close: bool = False) -> bytes:
    return (b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + content_type
            + b"\r\nContent-Length: " + str(len(body)).encode()
            + (b"\r\nConnection: close" if close else b"") + b"\r\n\r\n" + body)


def _error(status: str, message: str, *, close: bool = False) -> bytes:
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error",
                                   "param": None, "code": None}})
    return _response(status, body, close=close)


def _completion_tokens(request: dict[str, Any]) -> int:
    limit = request.get("max_completion_tokens", request.get("max_tokens"))
    if isinstance(limit, int) and 0 <= limit < len(PIECES):
        return limit
    return len(PIECES)


def _usage(completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": completion_tokens,
            "total_tokens": PROMPT_TOKENS + completion_tokens}


def completion_body(request: dict[str, Any]) -> bytes:
    tokens = _completion_tokens(request)
    return orjson.dumps({
        "id": f"chatcmpl-bench{next(_ids)}", "object": "chat.completion", "created": CREATED,
        "model": request.get("model", ""), "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "logprobs": None,
                     "finish_reason": "stop" if tokens == len(PIECES) else "length",
                     "message": {"role": "assistant", "content": "".join(PIECES[:tokens]),
                                 "refusal": None}}],
        "usage": _usage(tokens),
    })


def stream_events(request: dict[str, Any]) -> list[bytes]:
    """The SSE events of one streamed answer, each ``data: ...\\n\\n``."""
    tokens = _completion_tokens(request)
    base = {"id": f"chatcmpl-bench{next(_ids)}", "object": "chat.completion.chunk",
            "created": CREATED, "model": request.get("model", ""),
            "system_fingerprint": "fp_bench"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
    chunks += [chunk({"content": piece}) for piece in PIECES[:tokens]]
    chunks.append(chunk({}, "stop" if tokens == len(PIECES) else "length"))
    options = request.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        chunks.append({**base, "choices": [], "usage": _usage(tokens)})
    return [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]


def _anthropic_error(status: str, message: str, *, close: bool = False) -> bytes:
    body = orjson.dumps({"type": "error", "error": {"type": "invalid_request_error",
                                                     "message": message}})
    return _response(status, body, close=close)


def _stop_reason(tokens: int) -> str:
    return "end_turn" if tokens == len(PIECES) else "max_tokens"


def message_body(request: dict[str, Any]) -> bytes:
    """Anthropic's answer: one ``message`` with its text and usage."""
    tokens = _completion_tokens(request)
    return orjson.dumps({
        "id": f"msg_bench{next(_ids)}", "type": "message", "role": "assistant",
        "model": request.get("model", ""),
        "content": [{"type": "text", "text": "".join(PIECES[:tokens])}],
        "stop_reason": _stop_reason(tokens), "stop_sequence": None,
        "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": tokens},
    })


def message_events(request: dict[str, Any]) -> list[bytes]:
    """The SSE events of one streamed Anthropic answer, each ``event: X\ndata: ...\n\n``."""
    tokens = _completion_tokens(request)
    events: list[tuple[bytes, dict[str, Any]]] = [
        (b"message_start", {"type": "message_start", "message": {
            "id": f"msg_bench{next(_ids)}", "type": "message", "role": "assistant",
            "model": request.get("model", ""), "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": {"input_tokens": PROMPT_TOKENS,
                                             "output_tokens": 1}}}),
        (b"content_block_start", {"type": "content_block_start", "index": 0,
                                  "content_block": {"type": "text", "text": ""}}),
    ]
    events += [(b"content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "text_delta", "text": piece}})
               for piece in PIECES[:tokens]]
    events += [
        (b"content_block_stop", {"type": "content_block_stop", "index": 0}),
        (b"message_delta", {"type": "message_delta",
                            "delta": {"stop_reason": _stop_reason(tokens),
                                      "stop_sequence": None},
                            "usage": {"output_tokens": tokens}}),
        (b"message_stop", {"type": "message_stop"}),
    ]
    return [b"event: " + name + b"\ndata: " + orjson.dumps(e) + b"\n\n" for name, e in events]


def _http_chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
               b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
MODELS = _response("200 OK", orjson.dumps({"object": "list", "data": [
    {"id": "upstream-model", "object": "model", "created": CREATED, "owned_by": "bench"}]}))


class UpstreamProtocol(asyncio.Protocol):
    """One connection: parse requests off the buffer, answer each as soon as it is whole."""

    chunk_delay = 0.0  # seconds between stream events; set from --chunk-delay-ms
    answer_seconds = 0.0  # how long every answer takes; set from --answer-seconds

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    self._send(_error("431 Request Header Fields Too Large", "head too large",
                                      close=True), close=True)
                return
            lines = bytes(self.buffer[:head_end]).split(b"\r\n")
            method, _, rest = lines[0].partition(b" ")
            path = rest.partition(b" ")[0]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            close = headers.get(b"connection", b"").lower() == b"close"
            if b"transfer-encoding" in headers:
                self._send(_error("411 Length Required", "send Content-Length", close=True),
                           close=True)
                return
            try:
                length = int(headers.get(b"content-length", b"0"))
            except ValueError:
                self._send(_error("400 Bad Request", "bad Content-Length", close=True),
                           close=True)
                return
            total = head_end + 4 + length
            if len(self.buffer) < total:
                return  # the rest of the body is still on its way
            body = bytes(self.buffer[head_end + 4:total])
            del self.buffer[:total]
            self._handle(method, path, body, close)

    def _send(self, data: bytes, *, close: bool = False) -> None:
        if self.transport is not None:
            self.transport.write(data)
            if close:
                self.transport.close()

    def _handle(self, method: bytes, path: bytes, body: bytes, close: bool) -> None:
        path = path.partition(b"?")[0]
        if path == b"/v1/models" and method == b"GET":
            self._send(MODELS, close=close)
            return
        if path == b"/v1/chat/completions":
            anthropic = False
        elif path == b"/v1/messages":
            anthropic = True
        else:
            self._send(_error("404 Not Found", "unknown route", close=close), close=close)
            return
        error = _anthropic_error if anthropic else _error
        if method != b"POST":
            self._send(error("405 Method Not Allowed", "use POST", close=close), close=close)
            return
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            request = None
        if not isinstance(request, dict):
            self._send(error("400 Bad Request", "body is not a JSON object", close=close),
                       close=close)
            return
        if not request.get("stream"):
            answer = _response("200 OK", message_body(request) if anthropic
                               else completion_body(request), close=close)
            if self.answer_seconds > 0:
                asyncio.get_running_loop().call_later(
                    self.answer_seconds, functools.partial(self._send, answer, close=close))
            else:
                self._send(answer, close=close)
            return
        events = [_http_chunk(e) for e in (message_events(request) if anthropic
                                           else stream_events(request))] + [b"0\r\n\r\n"]
        if self.answer_seconds > 0:
            # The role chunk and the first content now (Anthropic: message_start,
            # content_block_start and the first delta), the rest when the time is up.
            first = 3 if anthropic else 2
            self._send(STREAM_HEAD + b"".join(events[:first]))
            asyncio.get_running_loop().call_later(
                self.answer_seconds, functools.partial(self._send, b"".join(events[first:]),
                                                       close=close))
        elif self.chunk_delay <= 0:
            # One write: the cheapest possible stream; the router still sees separate events.
            self._send(STREAM_HEAD + b"".join(events), close=close)
        else:
            asyncio.get_running_loop().create_task(self._trickle(events, close))

    async def _trickle(self, events: list[bytes], close: bool) -> None:
        self._send(STREAM_HEAD + events[0])
        for event in events[1:]:
            await asyncio.sleep(self.chunk_delay)
            self._send(event)
        if close and self.transport is not None:
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, host, port, backlog=1024,
                                      reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0,
                        help="pause between stream events (default 0: one write)")
    parser.add_argument("--answer-seconds", type=float, default=0.0,
                        help="every answer takes this long; a stream sends its first content "
                             "at once (default 0)")
    args = parser.parse_args()
    UpstreamProtocol.chunk_delay = args.chunk_delay_ms / 1000
    UpstreamProtocol.answer_seconds = args.answer_seconds
    try:
        import uvloop
    except ImportError:
        uvloop = None
    try:
        if uvloop is not None:
            uvloop.run(serve(args.host, args.port))
        else:
            asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
