"""The Redis connections of a router process: a burst of requests waits for a free
connection instead of failing over to per-process limits, and waits only so long."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import Iterator

import pytest
import redis

from proxy.ground import shared_state
from proxy.ground.shared_state import CancellableRedis, WaitingPool
from proxy.limits import Limits, Scope, limits_admit, reset_local_limits

DOWN_WARNING = "Redis is not answering"


@pytest.fixture(autouse=True)
def redis_db(settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    client.flushdb()
    shared_state.reset_for_tests()
    reset_local_limits()
    yield client
    client.flushdb()
    client.close()
    shared_state.reset_for_tests()
    reset_local_limits()


def one_key(**limits: int) -> list[Scope]:
    return [Scope("key:1", Limits(**limits))]


def test_the_client_waits_for_a_connection_from_a_pool_sized_by_the_setting(settings):
    settings.ROUTER_REDIS_MAX_CONNECTIONS = 7

    async def pool_of_a_new_client() -> tuple[type, WaitingPool]:
        client = shared_state.redis_client()
        assert client is not None
        try:
            return type(client), client.connection_pool
        finally:
            await shared_state.close_redis_clients()

    client_class, pool = asyncio.run(pool_of_a_new_client())
    # The client that raises a cancellation lost under wait_for (see CancellableRedis).
    assert client_class is CancellableRedis
    assert isinstance(pool, WaitingPool)
    assert pool.max_connections == 7
    assert pool.wait_seconds == shared_state.POOL_WAIT_SECONDS


def test_two_thousand_admissions_at_once_on_one_limit_admit_exactly_the_limit_in_redis(
        redis_db, settings, caplog):
    caplog.set_level(logging.WARNING, logger="proxy.ground.shared_state")
    scopes = one_key(rpm=1000)

    async def burst() -> tuple[list, float]:
        started = time.perf_counter()
        try:
            admissions = await asyncio.gather(*(
                limits_admit(scopes=scopes, request_id=f"r{i}", tokens=1)
                for i in range(2000)))
            return admissions, time.perf_counter() - started
        finally:
            await shared_state.close_redis_clients()

    shared_state.reset_for_tests()
    admissions, seconds = asyncio.run(burst())
    print(f"2,000 admissions at once: {seconds:.2f} s")
    assert sum(admission.allowed for admission in admissions) == 1000
    assert all(admission.shared for admission in admissions)  # none counted per process
    assert DOWN_WARNING not in caplog.text
    window = f"{settings.ROUTER_REDIS_PREFIX}limits:key:1:window"
    assert redis_db.zcard(window) == 1000


def test_a_command_waits_for_a_busy_connection_only_so_long_then_counts_locally(
        settings, monkeypatch, caplog):
    settings.ROUTER_REDIS_MAX_CONNECTIONS = 1
    monkeypatch.setattr(shared_state, "POOL_WAIT_SECONDS", 0.3)

    async def while_the_only_connection_is_taken() -> tuple[bool, float]:
        client = shared_state.redis_client()
        assert client is not None
        taken = await client.connection_pool.get_connection()
        started = time.monotonic()
        try:
            admission = await limits_admit(scopes=one_key(rpm=5), request_id="r", tokens=1)
            return admission.shared, time.monotonic() - started
        finally:
            await client.connection_pool.release(taken)
            await shared_state.close_redis_clients()

    shared, waited = asyncio.run(while_the_only_connection_is_taken())
    assert not shared
    assert 0.3 <= waited < 1.0
    assert DOWN_WARNING in caplog.text


def test_commands_waiting_for_a_connection_give_up_once_another_found_redis_down(settings):
    settings.ROUTER_REDIS_MAX_CONNECTIONS = 1

    async def scenario() -> tuple[type, float]:
        client = shared_state.redis_client()
        assert client is not None
        taken = await client.connection_pool.get_connection()
        waiting = asyncio.ensure_future(client.ping())
        await asyncio.sleep(0.05)
        assert not waiting.done()  # queued for the one connection
        # The command holding the connection found Redis not answering.
        shared_state.redis_failed(redis.exceptions.TimeoutError("Timeout reading"))
        started = time.monotonic()
        await client.connection_pool.release(taken)
        try:
            await waiting
        except redis.exceptions.ConnectionError as error:
            return type(error), time.monotonic() - started
        finally:
            await shared_state.close_redis_clients()
        return type(None), 0.0

    error, after = asyncio.run(scenario())
    assert error is redis.exceptions.ConnectionError
    assert after < 0.1  # not its own socket timeout against a Redis found down


def test_a_connection_that_cannot_connect_gives_its_turn_back(settings):
    settings.ROUTER_REDIS_MAX_CONNECTIONS = 1
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        settings.REDIS_URL = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"  # nobody there

    async def three_failures() -> list[str]:
        client = shared_state.redis_client()
        assert client is not None
        errors = []
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(redis.exceptions.ConnectionError) as error:
                await client.ping()
            assert time.monotonic() - started < 0.5  # refused, not queued for a lost turn
            errors.append(str(error.value))
        await shared_state.close_redis_clients()
        return errors

    assert not any("No connection available" in error for error in asyncio.run(three_failures()))


def test_a_request_cancelled_while_waiting_for_a_connection_is_cancelled_and_takes_none(
        settings):
    settings.ROUTER_REDIS_MAX_CONNECTIONS = 1

    async def scenario() -> tuple[bool, int]:
        client = shared_state.redis_client()
        assert client is not None
        pool = client.connection_pool
        taken = await pool.get_connection()
        waiting = asyncio.ensure_future(client.ping())
        await asyncio.sleep(0.05)
        waiting.cancel()
        await asyncio.wait([waiting], timeout=1)
        await pool.release(taken)
        try:
            assert await client.ping()  # the one connection is free again
            return waiting.cancelled(), len(pool._in_use_connections)
        finally:
            await shared_state.close_redis_clients()

    assert asyncio.run(scenario()) == (True, 0)


def test_every_turn_comes_back_after_commands_cancelled_at_random_points(settings):
    settings.ROUTER_REDIS_MAX_CONNECTIONS = 3
    rng = random.Random(5)

    async def scenario() -> int:
        client = shared_state.redis_client()
        assert client is not None
        pool = client.connection_pool
        tasks = [asyncio.ensure_future(client.eval("return 0", 0)) for _ in range(300)]
        for task in tasks:
            if rng.random() < 0.5:
                asyncio.get_running_loop().call_later(rng.random() * 0.02, task.cancel)
        await asyncio.wait(tasks, timeout=10)
        assert all(task.done() for task in tasks)
        # Exactly three turns: three connections at once, and a fourth must wait.
        pool.wait_seconds = 0.1
        held = [await pool.get_connection() for _ in range(3)]
        with pytest.raises(redis.exceptions.ConnectionError, match="No connection available"):
            await pool.get_connection()
        for connection in held:
            await pool.release(connection)
        cancelled = sum(task.cancelled() for task in tasks)
        await shared_state.close_redis_clients()
        return cancelled

    assert 0 < asyncio.run(scenario()) < 300
