"""A quiet process keeps its request path's connections warm (``proxy.entry.keep_warm``):
a connection to each upstream it called opened ahead of the next call, a PING on its Redis
connection and an empty statement on each idle PostgreSQL connection; nothing while requests
flow, nothing once it has been quiet for good, and the server's lifespan starts and ends it."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from typing import Any

import openai
import psycopg
import pytest

from billing.services.hot_path.connections import close_pool, conninfo, fetch, pool
from proxy.entry import keep_warm
from proxy.ground.shared_state import close_redis_clients, redis_client
from proxy.upstream import http_client
from proxy.upstream.http_client import upstream_session
from tests.live_router import LiveRouter, end_other_sessions, forget_shared_state
from tests.proxy.test_upstream_http_client import Server, keep_answering, post, run

PERIOD = 0.1  # seconds of quiet before a touch, in these tests


@pytest.fixture
def short_keepalive(monkeypatch):
    # Idle upstream connections are reused for 0.4 s instead of 4: the tests wait past it.
    monkeypatch.setattr(http_client.connection, "KEEPALIVE_SECONDS", 0.4)


def test_an_upstream_called_before_a_quiet_spell_gets_a_connection_opened_ahead(
        short_keepalive):
    server = Server(keep_answering())

    async def scenario() -> tuple[Any, ...]:
        async with server as url:
            first = await post(url)
            await asyncio.sleep(0.5)  # the connection it used is too old to be reused now
            await upstream_session().warm(within=300)
            opened_ahead = server.connections - 1
            second = await post(url)  # on the connection opened ahead: no new one
            return first, opened_ahead, second, server.connections

    first, opened_ahead, second, connections = run(scenario)
    assert first == (200, b'{"n": 1}')
    assert opened_ahead == 1
    assert second == (200, b'{"n": 2}')
    assert connections == 2


def test_a_connection_with_half_its_keepalive_left_is_not_replaced(short_keepalive):
    server = Server(keep_answering())

    async def scenario() -> list[tuple[float, int]]:
        async with server as url:
            await post(url)
            seen = []
            for _ in range(6):  # warmed every 0.1 s or more
                await upstream_session().warm(within=300)
                seen.append((time.monotonic(), server.connections))
                await asyncio.sleep(PERIOD)
            return seen

    seen = run(scenario)
    assert seen[0][1] == 1  # the call's own connection is fresh: nothing opened
    steps = [(at, count - before) for (_, before), (at, count) in itertools.pairwise(seen)]
    renewals = [at for at, opened in steps if opened]
    assert renewals  # renewed before it lapses (0.5 s and more of warming)
    # Never more than one per half keep-alive (0.2 s; a little less between the moments
    # seen here and the connections' own), however late a busy machine runs the passes.
    assert all(later - earlier > 0.15 for earlier, later in itertools.pairwise(renewals))
    assert all(opened <= 1 for _, opened in steps)


def test_an_upstream_not_called_within_the_window_is_left_alone(short_keepalive):
    server = Server(keep_answering())

    async def scenario() -> tuple[int, int]:
        async with server as url:
            await post(url)
            await asyncio.sleep(0.5)
            session = upstream_session()
            await session.warm(within=0.3)
            return server.connections, len(session.last_call)

    assert run(scenario) == (1, 0)  # no connection opened, the origin forgotten


def test_an_upstream_that_cannot_be_reached_is_left_to_the_next_call():
    async def scenario() -> tuple[int, set]:
        session = upstream_session()
        session.last_call[("http", "127.0.0.1", _closed_port())] = time.monotonic()
        await session.warm(within=300)  # refused: nothing raised, nothing kept
        return sum(map(len, session.idle.values())), session._warming

    assert run(scenario) == (0, set())


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_touch_once_only_while_quiet_and_not_quiet_for_good(monkeypatch, short_keepalive):
    server = Server(keep_answering())

    async def scenario() -> list[bool]:
        async with server as url:
            await post(url)
            busy = await keep_warm.touch_once(PERIOD)  # a call went upstream just now
            await asyncio.sleep(PERIOD * 1.5)
            quiet = await keep_warm.touch_once(PERIOD)
            monkeypatch.setattr(keep_warm, "QUIET_FOR_GOOD_SECONDS", PERIOD * 2)
            await asyncio.sleep(PERIOD)
            for_good = await keep_warm.touch_once(PERIOD)
            return [busy, quiet, for_good]

    assert run(scenario) == [False, True, False]


def test_touch_once_without_a_call_yet_has_nothing_to_keep_warm():
    async def scenario() -> bool:
        return await keep_warm.touch_once(PERIOD)

    assert run(scenario) is False


@pytest.mark.usefixtures("db", "short_keepalive")
def test_a_quiet_touch_pings_redis_and_checks_each_idle_postgresql_connection(redis_db):
    server = Server(keep_answering())

    async def scenario() -> tuple[str, list[tuple[str, str]]]:
        client = redis_client()
        assert client is not None
        try:
            async with server as url:
                await post(url)  # the process called an upstream
                own_id = await client.execute("CLIENT", "ID")
                # Two pooled connections, both idle after these statements, which stay
                # their backends' last until the touch.
                pids = [row[0] for row in await asyncio.gather(
                    fetch("SELECT pg_backend_pid(), pg_sleep(0.05)", {}),
                    fetch("SELECT pg_backend_pid(), pg_sleep(0.05)", {}))]
                connections = await pool()
                size = connections.get_stats()["pool_size"]
                await asyncio.sleep(PERIOD * 1.5)
                for _ in range(3):
                    assert await keep_warm.touch_once(PERIOD)
                last_command = redis_db.client_list(client_id=[own_id])[0]["cmd"]
                statements = await asyncio.to_thread(_last_statements, pids)
                return last_command, statements, size, connections.get_stats()["pool_size"]
        finally:
            await close_redis_clients()
            await close_pool()

    last_command, statements, size_before, size_after = run(scenario)
    assert last_command == "ping"
    assert statements == [("", "idle"), ("", "idle")]  # the check's empty statement
    # Touching is not using: the pool does not grow for it (psycopg_pool's own check made
    # it grow by one a pass, to its maximum).
    assert size_after == size_before  # 2 or 3: the pool may grow while both wait at first


def _last_statements(pids: list[int]) -> list[tuple[str, str]]:
    """Each backend's last statement and state, seen from a connection of its own."""
    with psycopg.connect(conninfo(), autocommit=True) as watcher:
        return [tuple(row) for row in watcher.execute(
            "SELECT query, state FROM pg_stat_activity WHERE pid = ANY(%s)", [pids])]


def test_a_served_router_kept_warm_by_its_lifespan_touches_all_three_while_quiet(
        settings, openai_worker, make_key, redis_db, short_keepalive):
    # A router of its own, started and stopped by uvicorn with the keeper on (the tests'
    # shared router runs without it: tests/conftest.py).
    settings.ROUTER_KEEP_WARM_MS = int(PERIOD * 1000)
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "127.0.0.1"]
    forget_shared_state()
    router = LiveRouter().start()
    loop = router._loop

    def in_router(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(10)

    try:
        assert not in_router(_keeper_of_this_loop()).done()
        _, secret = make_key()
        client = openai.OpenAI(base_url=router.base_url, api_key=secret, max_retries=0,
                               timeout=20)
        reply = client.chat.completions.create(model="test-model", max_tokens=5,
                                               messages=[{"role": "user", "content": "Hi"}])
        assert reply.choices[0].message.content
        router.drain()  # its charge and the slot's release written: nothing more to send
        own_id = in_router(_redis_client_id())
        pid = in_router(fetch("SELECT pg_backend_pid()", {}))[0]
        quiet_from = time.monotonic()
        time.sleep(0.6)  # quiet: past the upstream connection's keep-alive (0.4 s)
        given_back = in_router(_idle_connections_given_back())
        assert redis_db.client_list(client_id=[own_id])[0]["cmd"] == "ping"
        assert _last_statements([pid]) == [("", "idle")]
        assert max(given_back) > quiet_from  # one opened ahead while quiet: no call made it
    finally:
        router.stop()
        end_other_sessions()
    assert loop not in keep_warm._keepers  # its shutdown ended the keeper


async def _keeper_of_this_loop() -> asyncio.Task[None]:
    return keep_warm._keepers[asyncio.get_running_loop()]


async def _redis_client_id() -> int:
    client = redis_client()
    assert client is not None
    return await client.execute("CLIENT", "ID")


async def _idle_connections_given_back() -> list[float]:
    """When each idle upstream connection was last given back (monotonic)."""
    return [connection.idle_since
            for connections in upstream_session().idle.values() for connection in connections]
