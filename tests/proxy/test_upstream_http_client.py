"""The router's HTTP client for its upstreams (``proxy.upstream.http_client``) against raw
servers that answer exactly as each test says: keep-alive reuse and its limits, every way a
body is delimited, compression, timeouts, an upstream that went away while its connection
lay idle, and a reader that stops reading."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from yarl import URL

from proxy.upstream import http_client
from proxy.upstream.http_client import close_upstream_sessions, upstream_session

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
TIMEOUT = aiohttp.ClientTimeout(total=5, sock_connect=2, sock_read=2)
JSON = {"Content-Type": "application/json"}


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request's head and body, or None when the client closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head + await reader.readexactly(length)


def answer(body: bytes, *extra: str, status: str = "200 OK") -> bytes:
    headers = "".join(f"{line}\r\n" for line in extra)
    return (f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n").encode() \
        + body


class Server:
    """A server on 127.0.0.1 whose every connection runs ``handler`` (with its number)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed_by_client = asyncio.Event()

    async def __aenter__(self) -> URL:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer, self.connections)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                if reader.at_eof():
                    self.closed_by_client.set()
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return URL(f"http://127.0.0.1:{port}/v1/chat/completions")

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await close_upstream_sessions()


def run(scenario: Callable[[], Awaitable[object]]) -> object:
    return asyncio.run(scenario())


async def post(url: URL, timeout: aiohttp.ClientTimeout = TIMEOUT) -> tuple[int, bytes]:
    response = await upstream_session().post(url, data=b'{"a": 1}', headers=JSON,
                                             timeout=timeout)
    try:
        return response.status, await response.read()
    finally:
        response.release()


def keep_answering(*extra: str) -> Handler:
    async def handler(reader, writer, number):
        while await read_request(reader) is not None:
            writer.write(answer(b'{"n": %d}' % number, *extra))
            await writer.drain()
    return handler


def test_a_connection_is_reused_and_the_request_is_sent_as_written():
    seen: list[bytes] = []

    async def handler(reader, writer, number):
        while (request := await read_request(reader)) is not None:
            seen.append(request)
            writer.write(answer(b"{}"))

    async def scenario() -> int:
        async with Server(handler) as url:
            for _ in range(3):
                assert await post(url) == (200, b"{}")
            return len(seen)

    server_connections = run(scenario)
    assert server_connections == 3
    request = seen[0]
    assert request.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nUser-Agent: binom-router\r\n" in request
    assert b"\r\nAccept-Encoding: identity\r\n" in request
    assert b"\r\nContent-Type: application/json\r\n" in request
    assert request.endswith(b'Content-Length: 8\r\n\r\n{"a": 1}')


def test_one_connection_serves_requests_one_after_the_other_and_close_is_honoured():
    async def scenario() -> tuple[list[int], list[int]]:
        async with Server(keep_answering()) as url:
            kept = [(await post(url))[1] for _ in range(3)]
        async with Server(keep_answering("Connection: close")) as url:
            closed = [(await post(url))[1] for _ in range(3)]
        return [int(body[6:-1]) for body in kept], [int(body[6:-1]) for body in closed]

    kept, closed = run(scenario)
    assert kept == [1, 1, 1]
    assert closed == [1, 2, 3]


def test_chunked_and_connection_delimited_bodies_are_read_whole():
    async def chunked(reader, writer, number):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")

    async def until_close(reader, writer, number):
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
        await writer.drain()

    async def scenario() -> list[tuple[int, bytes]]:
        found = []
        for handler in (chunked, until_close):
            async with Server(handler) as url:
                found.append(await post(url))
        return found

    assert run(scenario) == [(200, b"hello world"), (200, b"until the end")]


def test_a_gzipped_body_is_decompressed():
    async def handler(reader, writer, number):
        await read_request(reader)
        writer.write(answer(gzip.compress(b'{"ok": true}'), "Content-Encoding: gzip"))

    async def scenario():
        async with Server(handler) as url:
            return await post(url)

    assert run(scenario) == (200, b'{"ok": true}')


def test_a_stream_is_read_line_by_line_and_closing_it_drops_the_connection():
    async def handler(reader, writer, number):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        for piece in (b"data: 1\n\nda", b"ta: 2\n", b"\ndata: [DONE]\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.01)
        await reader.read()  # until the client goes

    async def scenario() -> tuple[list[bytes], bool]:
        server = Server(handler)
        async with server as url:
            response = await upstream_session().post(url, data=b"{}", headers=JSON,
                                                     timeout=TIMEOUT)
            assert response.headers["content-type"] == "text/event-stream"
            lines = [await response.readline() for _ in range(6)]
            response.close()
            await asyncio.wait_for(server.closed_by_client.wait(), 2)
            return lines, server.closed_by_client.is_set()

    lines, closed = run(scenario)
    assert lines == [b"data: 1\n", b"\n", b"data: 2\n", b"\n", b"data: [DONE]\n", b"\n"]
    assert closed


def sse_in_turns(pieces: tuple[bytes, ...]) -> tuple[Handler, list[asyncio.Event]]:
    """A handler answering an event stream piece by piece, each piece once its turn is set;
    the last turn (one more than the pieces) ends the body."""
    turns = [asyncio.Event() for _ in range(len(pieces) + 1)]

    async def handler(reader, writer, number):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        for turn, piece in zip(turns, pieces, strict=False):
            await turn.wait()
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        await turns[-1].wait()
        writer.write(b"0\r\n\r\n")
        await reader.read()

    return handler, turns


async def buffered(response: http_client.UpstreamResponse, total: int) -> None:
    """Until ``total`` bytes of the body are buffered (not yet read)."""
    while response.buffered < total:
        await asyncio.sleep(0.005)


def test_a_whole_data_line_buffered_is_told_from_a_partial_one():
    # What the relay asks before it holds events back to send them together
    # (proxy.relay.completion): the next event can be read without waiting.
    pieces = (b"data: 1\n\n", b"event: x\n\nda", b"ta: 2\n\n")

    async def scenario() -> list[bool]:
        handler, turns = sse_in_turns(pieces)

        async with Server(handler) as url:
            response = await upstream_session().post(url, data=b"{}", headers=JSON,
                                                     timeout=TIMEOUT)
            seen = [response.holds_data_line()]  # nothing buffered yet
            turns[0].set()
            await buffered(response, len(pieces[0]))
            seen.append(response.holds_data_line())  # "data: 1" whole
            assert await response.readline() == b"data: 1\n"
            seen.append(response.holds_data_line())  # a blank line only
            turns[1].set()
            await buffered(response, 1 + len(pieces[1]))
            seen.append(response.holds_data_line())  # an event line, then "da"
            turns[2].set()
            await buffered(response, 1 + len(pieces[1]) + len(pieces[2]))
            seen.append(response.holds_data_line())  # "data: 2" whole after them
            turns[3].set()
            while not response.complete:
                await asyncio.sleep(0.005)
            assert [await response.readline() for _ in range(5)] == [
                b"\n", b"event: x\n", b"\n", b"data: 2\n", b"\n"]
            seen.append(response.holds_data_line())  # the body ended: nothing to wait for
            response.close()
            return seen

    assert run(scenario) == [False, True, False, False, True, True]


def stream_then(terminator_after: float | None) -> Handler:
    """Streams answered on one connection, one after the other: the events up to
    ``[DONE]``, then the chunked body's last chunk after ``terminator_after`` seconds (never,
    with None)."""
    async def handler(reader, writer, number):
        while await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            piece = b'data: {"n": %d}\n\ndata: [DONE]\n\n' % number
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            if terminator_after is None:
                await reader.read()  # until the client goes
                return
            await asyncio.sleep(terminator_after)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    return handler


async def read_stream(url: URL) -> list[bytes]:
    """One stream read to its [DONE], then finished as the providers finish it."""
    response = await upstream_session().post(url, data=b"{}", headers=JSON, timeout=TIMEOUT)
    lines = []
    while (line := await response.readline()) != b"data: [DONE]\n":
        lines.append(line)
    response.finish()
    response.close()  # what the relay's wrap-up does after every stream: nothing now
    return lines


@pytest.mark.parametrize("terminator_after", [0.0, 0.2])
def test_streams_read_to_their_end_share_one_connection(terminator_after):
    async def scenario() -> tuple[list[list[bytes]], int]:
        server = Server(stream_then(terminator_after))
        async with server as url:
            streams = []
            for _ in range(3):
                streams.append(await read_stream(url))
                # The last chunk, when it comes late, is awaited by the connection, not by
                # the reader: the next call waits for it to be back.
                await asyncio.sleep(terminator_after + 0.1)
            return streams, server.connections

    streams, connections = run(scenario)
    assert streams == [[b'data: {"n": 1}\n', b"\n"]] * 3
    assert connections == 1


def test_a_stream_whose_body_never_ends_after_done_is_dropped_after_the_grace(monkeypatch):
    monkeypatch.setattr(http_client.response, "FINISH_GRACE_SECONDS", 0.2)

    async def scenario() -> tuple[list[list[bytes]], int, bool]:
        server = Server(stream_then(None))
        async with server as url:
            first = await read_stream(url)
            await asyncio.wait_for(server.closed_by_client.wait(), 2)
            second = await read_stream(url)
            return [first, second], server.connections, server.closed_by_client.is_set()

    streams, connections, closed = run(scenario)
    assert streams == [[b'data: {"n": 1}\n', b"\n"], [b'data: {"n": 2}\n', b"\n"]]
    assert connections == 2
    assert closed


def test_closing_a_finished_stream_leaves_the_next_call_on_its_connection_alone():
    async def body_later(reader, writer, number):
        while await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)  # the second call is waiting for its body meanwhile
            writer.write(b'{"n": %d}' % number)

    async def scenario() -> tuple[int, bytes, int]:
        server = Server(body_later)
        async with server as url:
            first = await upstream_session().post(url, data=b"{}", headers=JSON,
                                                  timeout=TIMEOUT)
            await first.read()
            first.finish()  # complete: given back at once
            second = await upstream_session().post(url, data=b"{}", headers=JSON,
                                                   timeout=TIMEOUT)
            first.close()  # late, from the first call's wrap-up
            body = await second.read()
            second.release()
            return second.status, body, server.connections

    assert run(scenario) == (200, b'{"n": 1}', 1)


def test_a_large_stream_read_slowly_arrives_whole():
    line = b"data: " + b"x" * 1000 + b"\n"

    async def handler(reader, writer, number):
        await read_request(reader)
        writer.write(answer(line * 2000))
        await writer.drain()

    async def scenario() -> int:
        async with Server(handler) as url:
            response = await upstream_session().post(url, data=b"{}", headers=JSON,
                                                     timeout=TIMEOUT)
            count = 0
            while got := await response.readline():
                assert got == line
                count += 1
                if count % 200 == 0:
                    await asyncio.sleep(0.01)  # the socket is paused meanwhile
            response.release()
            return count

    assert run(scenario) == 2000


def test_a_connection_the_upstream_closed_while_idle_is_replaced_without_losing_the_call():
    async def handler(reader, writer, number):
        await read_request(reader)
        writer.write(answer(b'{"n": %d}' % number))
        await writer.drain()
        if number == 1:
            # Keep-alive announced, then closed as the next request arrives: the first
            # connection's second request never reaches the application.
            await reader.read(1)

    async def scenario() -> list[tuple[int, bytes]]:
        async with Server(handler) as url:
            return [await post(url), await post(url)]

    assert run(scenario) == [(200, b'{"n": 1}'), (200, b'{"n": 2}')]


def test_an_upstream_that_hangs_up_on_a_new_connection_is_a_disconnect_not_a_retry():
    async def handler(reader, writer, number):
        await read_request(reader)  # and closes without answering

    async def scenario() -> tuple[type, int]:
        server = Server(handler)
        async with server as url:
            with pytest.raises(aiohttp.ServerDisconnectedError) as error:
                await post(url)
            return type(error.value), server.connections

    assert run(scenario) == (aiohttp.ServerDisconnectedError, 1)


def test_a_body_cut_short_is_a_payload_error():
    async def handler(reader, writer, number):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial")
        await writer.drain()

    async def scenario() -> None:
        async with Server(handler) as url:
            with pytest.raises(aiohttp.ClientPayloadError):
                await post(url)

    run(scenario)


@pytest.mark.parametrize(("timeout", "error"), [
    (aiohttp.ClientTimeout(total=None, sock_connect=1, sock_read=0.2),
     aiohttp.SocketTimeoutError),
    (aiohttp.ClientTimeout(total=0.3, sock_connect=1, sock_read=5), TimeoutError),
])
def test_a_silent_upstream_times_out_after_the_read_or_the_total_timeout(timeout, error):
    async def handler(reader, writer, number):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{")
        await writer.drain()
        await asyncio.sleep(3)

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        async with Server(handler) as url:
            started = loop.time()
            with pytest.raises(error):
                await post(url, timeout)
            return loop.time() - started

    took = run(scenario)
    assert took < 1.5


def test_bytes_that_keep_coming_reset_the_read_timeout():
    async def handler(reader, writer, number):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
        for _ in range(6):
            await asyncio.sleep(0.1)
            writer.write(b"x")
            await writer.drain()

    async def scenario():
        async with Server(handler) as url:
            return await post(url, aiohttp.ClientTimeout(total=None, sock_connect=1,
                                                         sock_read=0.25))

    assert run(scenario) == (200, b"xxxxxx")


def test_a_caller_cancelled_mid_answer_leaves_no_connection_for_reuse():
    async def handler(reader, writer, number):
        while await read_request(reader) is not None:
            if number == 1:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{")
                await writer.drain()
            else:
                writer.write(answer(b'{"n": %d}' % number))

    async def scenario() -> tuple[int, bytes]:
        async with Server(handler) as url:
            task = asyncio.ensure_future(post(url))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return await post(url)

    assert run(scenario) == (200, b'{"n": 2}')


def test_nobody_listening_and_a_line_break_in_a_header_are_refused():
    async def scenario() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        url = URL(f"http://127.0.0.1:{port}/v1/chat/completions")
        with pytest.raises(http_client.UpstreamConnectError):
            await post(url)
        with pytest.raises(ValueError, match="line break"):
            await upstream_session().post(url, data=b"{}", timeout=TIMEOUT,
                                          headers={"X-Evil": "a\r\nHost: elsewhere"})
        await close_upstream_sessions()

    run(scenario)


def test_connections_left_unused_after_a_burst_are_closed(monkeypatch):
    monkeypatch.setattr(http_client.connection, "KEEPALIVE_SECONDS", 0.2)
    open_connections: set[int] = set()

    async def handler(reader, writer, number):
        open_connections.add(number)
        try:
            await read_request(reader)
            await asyncio.sleep(0.05)  # all twenty in flight together
            writer.write(answer(b"{}"))
            await writer.drain()
            await reader.read()  # until the client closes it
        finally:
            open_connections.discard(number)

    async def scenario() -> tuple[int, int, int]:
        async with Server(handler) as url:
            await asyncio.gather(*(post(url) for _ in range(20)))
            idle_after_burst = sum(map(len, upstream_session().idle.values()))
            open_after_burst = len(open_connections)
            await asyncio.sleep(0.6)
            return idle_after_burst, open_after_burst, len(open_connections)

    assert run(scenario) == (20, 20, 0)


def test_a_header_the_call_names_replaces_the_default_one():
    seen: list[bytes] = []

    async def handler(reader, writer, number):
        seen.append(await read_request(reader))
        writer.write(answer(b"{}"))

    async def scenario() -> None:
        async with Server(handler) as url:
            response = await upstream_session().post(
                url, data=b"{}", timeout=TIMEOUT,
                headers={"user-agent": "staff-chosen/1.0", "X-Team": "café €"})
            await response.read()
            response.release()

    run(scenario)
    assert seen[0].count(b"ser-agent") == 1
    assert b"\r\nuser-agent: staff-chosen/1.0\r\n" in seen[0]
    assert "X-Team: café €".encode() in seen[0]
    assert b"\r\nAccept-Encoding: identity\r\n" in seen[0]
