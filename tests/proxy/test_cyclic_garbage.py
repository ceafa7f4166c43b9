"""What a request leaves for Python's cycle collector: nothing of the router's.

Objects caught in a reference cycle are not freed when the request lets go of them, only
when the collector's youngest generation is collected. Under load every request left about
24 (an upstream response and its parser, which held the response's methods; the closure
relaying each Redis script's reply, which held itself): every few seconds a collection freed
some 200,000 of them in one pass and stopped the process for 0.1 s, which stretched the tail
of every request in flight (README, Performance). These tests run with the collector off and
then ask it what it found among the objects of the router's own code.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
import types
from collections.abc import Iterator
from contextlib import contextmanager

import openai
import pytest
import uvicorn
from django.conf import settings

from accounts.models import ApiKey
from proxy.entry.http_protocol import HttpProtocol
from proxy.ground.redis_pipeline import PipelinedRedis
from proxy.ground.shared_state import RedisScript
from proxy.upstream.http_client import upstream_session
from tests.live_router import LiveRouter, router_code, wait_for_charges
from tests.proxy.test_upstream_http_client import (
    JSON,
    TIMEOUT,
    Server,
    keep_answering,
    post,
    read_request,
    read_stream,
    stream_then,
)

ROUTER_PACKAGES = ("proxy.", "billing.", "accounts.", "organizations.", "router_admin.",
                   "httptools.")
MESSAGES = [{"role": "user", "content": "Hello there"}]


def _router_object(obj: object) -> str | None:
    """What ``obj`` is, if the router's code made it (a function, a method, a coroutine or a
    frame of its own, or an instance of one of its classes); None for anything else (the
    test's own clients, the event loop)."""
    kind = type(obj)
    if kind.__module__.startswith(ROUTER_PACKAGES):
        return kind.__qualname__
    if isinstance(obj, types.FunctionType):
        return obj.__qualname__ if (obj.__module__ or "").startswith(ROUTER_PACKAGES) else None
    if isinstance(obj, types.MethodType):
        return _router_object(obj.__self__)
    code = getattr(obj, "cr_code", None) or getattr(obj, "f_code", None)
    if code is not None and router_code(code.co_filename):
        return code.co_qualname
    return None


@contextmanager
def cycle_collector_findings() -> Iterator[list[str]]:
    """The router's objects that only the cycle collector could free, of those made inside
    the block (by name). The collector is off meanwhile, for every thread."""
    gc.collect()
    gc.disable()
    found: list[str] = []
    try:
        yield found
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found.extend(name for obj in gc.garbage if (name := _router_object(obj)))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@contextmanager
def router_findings(router: LiveRouter) -> Iterator[list[str]]:
    """``cycle_collector_findings`` of calls to the live router: counted once their charges
    are written (not by ``router.drain()``, which also stops the hold keeper: once per
    process, and a cycle of its own), the router drained after."""
    with cycle_collector_findings() as found:
        yield found
        wait_for_charges()
    router.drain()


def production_key(make_key, *, rpm: int = 1000) -> str:
    """A funded key with an RPM and a TPM limit, production's shape: the key's limits and
    the worker's slot are asked of Redis."""
    _, secret = make_key()
    ApiKey.objects.filter(prefix=secret[:18]).update(rpm=rpm, tpm=1_000_000)
    return secret


@pytest.fixture
def chat_client(openai_worker, make_key, client_for, router, redis_db) -> openai.OpenAI:
    """The openai SDK with a production key, after a first request: it fills the lookups'
    caches, which stay."""
    client = client_for(production_key(make_key))
    client.chat.completions.create(model="test-model", messages=MESSAGES, max_tokens=5)
    router.drain()
    return client


def test_the_census_sees_a_cycle_the_router_would_leave():
    # The check itself: a closure that refers to itself, as the script relay's did.
    class Relay:
        __module__ = "proxy.example"

    def make() -> None:
        relay = Relay()
        relay.me = relay  # type: ignore[attr-defined]

    with cycle_collector_findings() as found:
        make()
    assert found == ["test_the_census_sees_a_cycle_the_router_would_leave.<locals>.Relay"]


def test_upstream_answers_read_whole_leave_nothing_for_the_cycle_collector():
    async def scenario() -> None:
        async with Server(keep_answering()) as url:
            for _ in range(3):
                assert (await post(url))[0] == 200

    with cycle_collector_findings() as found:
        asyncio.run(scenario())
    assert found == []


def test_streams_finished_or_closed_leave_nothing_for_the_cycle_collector():
    async def endless(reader, writer, number):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n")
        await writer.drain()
        await reader.read()  # until the client goes

    async def scenario() -> None:
        async with Server(stream_then(0.0)) as url:
            for _ in range(2):
                await read_stream(url)  # read to [DONE], then finished
                await asyncio.sleep(0.05)  # the body's last chunk comes back after it
        async with Server(endless) as url:
            response = await upstream_session().post(url, data=b"{}", headers=JSON,
                                                     timeout=TIMEOUT)
            await response.readline()
            response.close()  # a client that hangs up in the middle

    with cycle_collector_findings() as found:
        asyncio.run(scenario())
    assert found == []


@pytest.mark.usefixtures("redis_db")
def test_script_replies_leave_nothing_for_the_cycle_collector(redis_db):
    script = RedisScript("return tonumber(ARGV[1]) + 1")

    async def scenario() -> list[int]:
        client = PipelinedRedis(settings.REDIS_URL, timeout=2, connect_timeout=2)
        try:
            await client.execute("PING")  # connected: send() writes without waiting
            redis_db.script_flush()
            # The first goes by digest, is refused (Redis does not know the script yet) and
            # is sent again in full; the second goes by digest.
            replies = []
            for value in (1, 2):
                sent = script.send(client, [], [value])
                assert sent is not None
                replies.append(await sent)
            return replies
        finally:
            await client.aclose()

    with cycle_collector_findings() as found:
        replies = asyncio.run(scenario())
    assert replies == [2, 3]
    assert found == []


def test_billed_answers_and_streams_leave_nothing_of_the_routers_for_the_cycle_collector(
    chat_client, router
):
    client = chat_client
    with router_findings(router) as found:
        for _ in range(3):
            client.chat.completions.create(model="test-model", messages=MESSAGES,
                                           max_tokens=5)
            for _chunk in client.chat.completions.create(
                    model="test-model", messages=MESSAGES, max_tokens=5, stream=True):
                pass
    assert found == []


@pytest.mark.usefixtures("redis_db")
def test_refusals_leave_nothing_of_the_routers_for_the_cycle_collector(
    openai_worker, make_key, client_for, router
):
    # What a client hammering the router with a bad key, past its limits or without money
    # is answered: each must not leave work for the collector either.
    _, broke = make_key(credit_micros=0)
    client, poor, stranger = (client_for(production_key(make_key, rpm=2)), client_for(broke),
                              client_for("sk-not-a-key-at-all"))
    client.chat.completions.create(model="test-model", messages=MESSAGES, max_tokens=5)
    router.drain()

    calls = [
        (stranger, {"model": "test-model", "max_tokens": 5}, openai.AuthenticationError),
        (poor, {"model": "test-model", "max_tokens": 5}, openai.APIStatusError),
        (poor, {"model": "test-model"}, openai.APIStatusError),  # no cap: planned from room
        (client, {"model": "no-such-model", "max_tokens": 5}, openai.NotFoundError),
        (client, {"model": "test-model", "max_tokens": -1}, openai.BadRequestError),
        (client, {"model": "test-model", "max_tokens": 5}, openai.RateLimitError),
    ]
    client.chat.completions.create(model="test-model", messages=MESSAGES, max_tokens=5)
    with router_findings(router) as found:
        for _ in range(3):
            for caller, options, refusal in calls:
                with pytest.raises(refusal):
                    caller.chat.completions.create(messages=MESSAGES, **options)
    assert found == []


def test_failed_upstreams_leave_nothing_of_the_routers_for_the_cycle_collector(
    chat_client, upstream, router
):
    client = chat_client
    with router_findings(router) as found:
        for _ in range(2):
            upstream.configure(status=503)  # the upstream's fault: 502, nothing charged
            with pytest.raises(openai.APIStatusError):
                client.chat.completions.create(model="test-model", messages=MESSAGES,
                                               max_tokens=5)
            upstream.configure(status=400)  # the client's mistake, as the upstream saw it
            with pytest.raises(openai.BadRequestError):
                client.chat.completions.create(model="test-model", messages=MESSAGES,
                                               max_tokens=5)
            upstream.configure(status=None, die_after_chunks=2)  # a stream cut short
            with pytest.raises(openai.APIError):
                for _chunk in client.chat.completions.create(
                        model="test-model", messages=MESSAGES, max_tokens=50, stream=True):
                    pass
            upstream.configure(die_after_chunks=None)
    assert found == []


def test_streams_the_client_hangs_up_on_leave_nothing_of_the_routers_for_the_cycle_collector(
    chat_client, upstream, router
):
    client = chat_client
    upstream.configure(chunk_delay=0.05)  # the client goes while chunks are still coming

    with router_findings(router) as found:
        for _ in range(3):
            stream = client.chat.completions.create(model="test-model", messages=MESSAGES,
                                                    max_tokens=50, stream=True)
            next(iter(stream))
            stream.close()
    assert found == []


def test_a_connection_the_client_resets_leaves_nothing_for_the_cycle_collector():
    # uvicorn keeps its keep-alive timer after a reset; once the timer fired, it and the
    # protocol held each other (proxy.entry.http_protocol drops it).
    async def answer(scope, receive, send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    async def scenario() -> None:
        config = uvicorn.Config(answer, http=HttpProtocol, lifespan="off",
                                log_level="warning", timeout_keep_alive=0.2)
        server = uvicorn.Server(config)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection(*sock.getsockname())
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        assert (await reader.readuntil(b"{}")).startswith(b"HTTP/1.1 200")
        writer.get_extra_info("socket").setsockopt(  # a reset, not a clean close
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        await asyncio.sleep(0.5)  # past the keep-alive timeout: the timer fired
        server.should_exit = True
        await serving

    with cycle_collector_findings() as found:
        asyncio.run(scenario())
    assert found == []
