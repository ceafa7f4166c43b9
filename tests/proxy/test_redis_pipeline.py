"""The router's Redis client (``proxy.ground.redis_pipeline``) against real Redis servers:
one pipelined connection per process, replies matched to their commands whatever is
cancelled, a hung or vanished Redis found within the timeout (and every command waiting on
it failed at once), a loop stall not taken for a hung Redis, and the URL's database, user
and password honoured."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from proxy.ground import shared_state
from proxy.ground.redis_pipeline import CLIENT_NAME, PipelinedRedis
from proxy.limits import Limits, Scope, limits_admit
from tests.router_processes import free_port, wait_for_port

DOWN_WARNING = "Redis is not answering"


pytestmark = pytest.mark.usefixtures("redis_db")  # tests/proxy/conftest.py


def client_for(url: str, timeout: float = 1.0) -> PipelinedRedis:
    return PipelinedRedis(url, timeout=timeout, connect_timeout=timeout)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers: a hung Redis."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    listener.close()
    for connection in accepted:
        connection.close()


def router_connections(server: redis.Redis) -> set[str]:
    """The ids of the router connections this process has open in Redis."""
    return {client["id"] for client in server.client_list()
            if client["name"] == f"{CLIENT_NAME}:{os.getpid()}"}


def test_two_thousand_admissions_at_once_share_one_connection_and_admit_exactly_the_limit(
        redis_db, settings, caplog):
    caplog.set_level(logging.WARNING, logger="proxy.ground.shared_state")
    scopes = [Scope("key:1", Limits(rpm=1000))]

    earlier = router_connections(redis_db)  # other tests' clients, in this process

    async def burst() -> tuple[list, int]:
        try:
            admissions = await asyncio.gather(*(
                limits_admit(scopes=scopes, request_id=f"r{i}", tokens=1)
                for i in range(2000)))
            return admissions, len(router_connections(redis_db) - earlier)
        finally:
            await shared_state.close_redis_clients()

    admissions, connections = asyncio.run(burst())
    assert sum(admission.allowed for admission in admissions) == 1000
    assert all(admission.shared for admission in admissions)  # none counted per process
    assert connections == 1
    assert DOWN_WARNING not in caplog.text
    window = f"{settings.ROUTER_REDIS_PREFIX}limits:key:1:window"
    assert redis_db.zcard(window) == 1000


def test_each_reply_reaches_its_own_command_whatever_is_cancelled(settings):
    rng = random.Random(5)

    async def scenario() -> tuple[int, int, bool]:
        client = client_for(settings.REDIS_URL)

        async def echo(i: int) -> None:
            # A script that takes a little while, so that cancellations land while owed.
            assert await client.eval("return ARGV[1]", 0, f"v{i}") == f"v{i}".encode()

        tasks = [asyncio.ensure_future(echo(i)) for i in range(600)]
        for task in tasks:
            if rng.random() < 0.5:
                asyncio.get_running_loop().call_later(rng.random() * 0.02, task.cancel)
        await asyncio.wait(tasks, timeout=10)
        assert all(task.done() for task in tasks)
        for task in tasks:
            if not task.cancelled():
                task.result()  # its own value, or the assertion in echo fails
        still_works = await client.execute("ECHO", "after") == b"after"
        await client.aclose()
        return sum(task.cancelled() for task in tasks), len(tasks), still_works

    cancelled, total, still_works = asyncio.run(scenario())
    assert 0 < cancelled < total
    assert still_works


def test_error_replies_raise_redis_errors_and_leave_the_connection_usable(settings):
    async def scenario() -> None:
        client = client_for(settings.REDIS_URL)
        await client.execute("SET", "text", "x")
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
            await client.execute("HGET", "text", "field")
        with pytest.raises(redis.exceptions.NoScriptError):
            await client.evalsha("0" * 40, 0)
        script = shared_state.RedisScript("return 'ran'")
        await client.execute("SCRIPT", "FLUSH")
        assert await script.run(client, [], []) == b"ran"  # sent in full once
        assert await client.evalsha(script.sha, 0) == b"ran"  # now known by its digest
        replies = await client.execute_many([("SET", "a", 1), ("INCR", "a"), ("GET", "a")])
        assert replies == [b"OK", 2, b"2"]
        await client.aclose()

    asyncio.run(scenario())


def test_a_hung_redis_fails_every_waiting_command_at_once_within_the_timeout(silent_server):
    async def scenario() -> tuple[list[BaseException], float]:
        client = client_for(silent_server, timeout=0.3)
        started = time.monotonic()
        results = await asyncio.gather(*(client.execute("PING") for _ in range(100)),
                                       return_exceptions=True)
        await client.aclose()
        return list(results), time.monotonic() - started

    results, took = asyncio.run(scenario())
    assert all(isinstance(result, redis.exceptions.TimeoutError) for result in results)
    assert 0.3 <= took < 0.8  # one timeout for all, not one after the other


def test_a_hung_redis_makes_the_process_count_its_own_limits_and_warn(
        silent_server, settings, monkeypatch, caplog):
    monkeypatch.setattr(shared_state, "REDIS_TIMEOUT_SECONDS", 0.3)
    settings.REDIS_URL = silent_server

    async def scenario() -> tuple[bool, float]:
        started = time.monotonic()
        try:
            admission = await limits_admit(scopes=[Scope("key:1", Limits(rpm=5))],
                                           request_id="r", tokens=1)
            return admission.shared, time.monotonic() - started
        finally:
            await shared_state.close_redis_clients()

    shared, waited = asyncio.run(scenario())
    assert not shared
    assert 0.3 <= waited < 1.0
    assert DOWN_WARNING in caplog.text


def test_nobody_listening_fails_at_once():
    url = f"redis://127.0.0.1:{free_port()}/0"

    async def three_failures() -> list[float]:
        client = client_for(url)
        took = []
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(redis.exceptions.ConnectionError):
                await client.execute("PING")
            took.append(time.monotonic() - started)
        await client.aclose()
        return took

    assert max(asyncio.run(three_failures())) < 0.5


def test_a_connection_closed_by_redis_is_replaced_by_the_next_command(redis_db, settings):
    earlier = router_connections(redis_db)

    async def scenario() -> list[bytes]:
        client = client_for(settings.REDIS_URL)
        assert await client.ping()
        (connection,) = router_connections(redis_db) - earlier
        redis_db.client_kill_filter(_id=connection)
        await asyncio.sleep(0.1)  # the loop reads the close
        replies = [await client.execute("ECHO", "again")]
        await client.aclose()
        return replies

    assert asyncio.run(scenario()) == [b"again"]


def test_a_stalled_event_loop_is_not_taken_for_a_hung_redis(settings):
    async def scenario() -> bytes:
        client = client_for(settings.REDIS_URL, timeout=0.3)
        assert await client.ping()  # connected
        command = asyncio.ensure_future(client.execute("ECHO", "late"))
        await asyncio.sleep(0)  # written; Redis answers at once
        time.sleep(0.6)  # the loop is held past the timeout before it reads the answer
        try:
            return await command
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == b"late"


def test_a_command_cancelled_while_the_connection_opens_leaves_it_to_the_others(settings):
    async def scenario() -> list[object]:
        client = client_for(settings.REDIS_URL)
        first = asyncio.ensure_future(client.execute("ECHO", "1"))
        second = asyncio.ensure_future(client.execute("ECHO", "2"))
        await asyncio.sleep(0)
        first.cancel()
        results = await asyncio.gather(first, second, return_exceptions=True)
        await client.aclose()
        return [type(results[0]), results[1]]

    assert asyncio.run(scenario()) == [asyncio.CancelledError, b"2"]


@pytest.fixture
def password_redis() -> Iterator[int]:
    """A Redis server of this test's own, with a password and a user."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--requirepass", "s3cret",
                                "--user", "router", "on", ">r0uter", "~*", "&*", "+@all"],
                               stdout=subprocess.DEVNULL)
    wait_for_port(port, process)
    yield port
    process.kill()
    process.wait(5)


def test_the_urls_password_user_and_database_are_used(password_redis):
    port = password_redis
    direct = redis.Redis(port=port, password="s3cret", db=3)

    async def scenario() -> list[object]:
        found: list[object] = []
        for url in (f"redis://:s3cret@127.0.0.1:{port}/3",
                    f"redis://router:r0uter@127.0.0.1:{port}/3"):
            client = client_for(url)
            await client.execute("SET", "where", url)
            found.append(direct.get("where") == url.encode())
            await client.aclose()
        client = client_for(f"redis://:wrong@127.0.0.1:{port}/3")
        try:
            await client.ping()
        except redis.exceptions.RedisError as error:
            found.append(type(error))
        await client.aclose()
        return found

    assert asyncio.run(scenario()) == [True, True, redis.exceptions.AuthenticationError]
    direct.close()
