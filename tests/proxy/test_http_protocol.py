"""The server's HTTP protocol writes a response's head with its body: one write per whole
answer where uvicorn's own protocol makes two, and a stream's head never waits for a part
that is not ready. Seen at the transport: every write the protocol makes, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from proxy.entry.http_protocol import HttpProtocol

GET = b"GET /x HTTP/1.1\r\nHost: example.org\r\n\r\n"
BODY = b'{"ok":true}'


class RecordingTransport(asyncio.Transport):
    """A connection's transport that keeps what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(
            name, default)

    def write(self, data: bytes) -> None:  # type: ignore[override]
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def whole_answer(scope: dict, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


async def slow_stream(scope: dict, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})
    await asyncio.sleep(0.05)  # the first event is not ready yet
    await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def connect(protocol_class: type[HttpToolsProtocol], app: Any
            ) -> tuple[HttpToolsProtocol, RecordingTransport]:
    """A connection of ``protocol_class`` serving ``app`` (in the running loop)."""
    config = Config(app=app, http=protocol_class, lifespan="off", log_level="warning")
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={},
                              _loop=asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def answered(protocol: HttpToolsProtocol) -> None:
    for _ in range(100):
        await asyncio.sleep(0.01)
        if protocol.cycle is not None and protocol.cycle.response_complete:
            return
    raise AssertionError("no answer")


async def serve(protocol_class: type[HttpToolsProtocol], app: Any, *requests: bytes
                ) -> tuple[RecordingTransport, list[int]]:
    """Feed ``requests`` one after the other to one connection; its transport, and how
    many writes it held after each answer."""
    protocol, transport = connect(protocol_class, app)
    counts = []
    for request in requests:
        protocol.data_received(request)
        await answered(protocol)
        counts.append(len(transport.writes))
    protocol.connection_lost(None)
    return transport, counts


def test_a_whole_answer_leaves_in_one_write():
    transport, _ = asyncio.run(serve(HttpProtocol, whole_answer, GET))
    assert len(transport.writes) == 1
    head, body = transport.writes[0].split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 11" in head.lower()
    assert body == BODY


def test_uvicorns_own_protocol_writes_the_head_and_the_body_apart():
    # What the protocol changes: the same answer in two writes.
    transport, _ = asyncio.run(serve(HttpToolsProtocol, whole_answer, GET))
    assert len(transport.writes) == 2
    assert transport.writes[1] == BODY


def test_answers_on_a_kept_connection_leave_in_one_write_each():
    transport, counts = asyncio.run(serve(HttpProtocol, whole_answer, GET, GET, GET))
    assert counts == [1, 2, 3]
    assert all(write.endswith(BODY) for write in transport.writes)


def test_a_streams_head_goes_at_once():
    # Not joined with the first event even when that is ready: the client reads the head
    # while the router renders the event (2.5 % sooner to the first token).
    async def scenario() -> tuple[list[bytes], RecordingTransport]:
        protocol, transport = connect(HttpProtocol, slow_stream)
        protocol.data_received(GET)
        await asyncio.sleep(0.03)  # the app is waiting for its first event
        early = list(transport.writes)
        await answered(protocol)
        protocol.connection_lost(None)
        return early, transport

    early, transport = asyncio.run(scenario())
    assert len(early) == 1
    assert early[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert early[0].endswith(b"\r\n\r\n")  # the head alone
    assert transport.writes[1].startswith(b"9\r\ndata: 1\n\n")


def test_a_streams_head_is_not_held_for_a_first_event_ready_beside_it():
    async def ready_stream(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    transport, _ = asyncio.run(serve(HttpProtocol, ready_stream, GET))
    assert transport.writes[0].endswith(b"\r\n\r\n")
    assert b"data: 1" not in transport.writes[0]


@pytest.mark.parametrize("protocol_class", [HttpProtocol, HttpToolsProtocol])
def test_an_interim_continue_goes_at_once_and_the_head_still_joins_its_body(protocol_class):
    request = (b"POST /x HTTP/1.1\r\nHost: example.org\r\nContent-Length: 2\r\n"
               b"Expect: 100-continue\r\n\r\n")

    async def scenario() -> RecordingTransport:
        protocol, transport = connect(protocol_class, whole_answer)
        protocol.data_received(request)
        await asyncio.sleep(0.02)  # the app asks for the body: 100 Continue goes out
        assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
        protocol.data_received(b"{}")
        await asyncio.sleep(0.02)
        protocol.connection_lost(None)
        return transport

    transport = asyncio.run(scenario())
    expected = 2 if protocol_class is HttpProtocol else 3
    assert len(transport.writes) == expected
    assert transport.writes[-1].endswith(BODY)


def test_a_closing_answer_is_written_whole_before_the_connection_closes():
    request = b"GET /x HTTP/1.1\r\nHost: example.org\r\nConnection: close\r\n\r\n"
    transport, _ = asyncio.run(serve(HttpProtocol, whole_answer, request))
    assert transport.closed
    assert len(transport.writes) == 1
    assert transport.writes[0].endswith(BODY)
