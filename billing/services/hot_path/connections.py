"""The request path's connections: one async psycopg pool per event loop, autocommit, its
few statements prepared from their first use and run through ``wire``.

A statement waits at most ``ROUTER_DB_WAIT_MS`` for a connection; when PostgreSQL cannot be
reached, or no connection frees up in time, it raises ``DatabaseUnavailable`` (the API
answers 503) instead of waiting for the database to return.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import psycopg
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from billing.errors import DatabaseUnavailable
from billing.services.hot_path import wire
from billing.services.hot_path.statements import DURABLE_SQL, PARAMETER_TYPES
from billing.session_settings import SESSION_SQL

T = TypeVar("T")

# How long the pool tries to replace a connection it lost before it gives up on it.
# psycopg_pool's default is 5 minutes, with pauses that double from 1 s: after an outage of
# 8 s its next try came 6 s after PostgreSQL was back, and requests waited for it. Given up
# on, a connection is opened again the moment a request needs one; so the pauses stay at
# about 1 s and the pool serves again within a second of PostgreSQL's return.
RECONNECT_GIVE_UP_S = 2.0

_pools: dict[asyncio.AbstractEventLoop, AsyncConnectionPool] = {}


_engine: list[bool] = []  # read once: asked several times a request (see _forget_engine)


def on_postgresql() -> bool:
    if not _engine:
        _engine.append(settings.DATABASES["default"]["ENGINE"]
                       == "django.db.backends.postgresql")
    return _engine[0]


@receiver(setting_changed)
def _forget_engine(*, setting: str, **kwargs: Any) -> None:
    if setting == "DATABASES":
        _engine.clear()


def conninfo() -> str:
    """libpq connection string of the default database, from Django's settings."""
    db = settings.DATABASES["default"]
    parts = {"dbname": db["NAME"], "user": db.get("USER"), "password": db.get("PASSWORD"),
             "host": db.get("HOST"), "port": db.get("PORT")}
    parts.update({k: v for k, v in (db.get("OPTIONS") or {}).items() if isinstance(v, str)})
    return " ".join(f"{k}='{_quote(str(v))}'" for k, v in parts.items() if v)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


async def pool() -> AsyncConnectionPool:
    # One pool per event loop: an async pool belongs to the loop that opened it, and the
    # ASGI server runs one loop per process.
    loop = asyncio.get_running_loop()
    found = _pools.get(loop)
    if found is None:
        found = AsyncConnectionPool(
            conninfo(), min_size=1, max_size=settings.ROUTER_DB_POOL_SIZE, open=False,
            # These few statements run on every request: ``wire`` prepares each on its
            # first use per connection, and writes its strings in UTF-8.
            kwargs={"autocommit": True, "client_encoding": "UTF8"}, name="billing-hot-path",
            configure=_session,
            timeout=settings.ROUTER_DB_WAIT_MS / 1000, reconnect_timeout=RECONNECT_GIVE_UP_S,
        )
        _pools[loop] = found
        await found.open()
    return found


async def _session(conn: psycopg.AsyncConnection[Any]) -> None:
    """A new connection's session: commits that wait for the disk and transactions that
    read committed, whatever the server's defaults (``billing.session_settings``)."""
    await conn.execute(SESSION_SQL)


async def check_pool() -> None:
    """Run an empty statement on each idle connection of this event loop's pool, if it has
    one, as psycopg_pool's check does (a connection that fails it is replaced). Done while
    the process is quiet (``proxy.entry.keep_warm``): the next request's reservation then
    finds its connection's backend awake and the connection known to work.

    Not ``pool.check()``: it takes every idle connection out at once and asks the pool to
    grow meanwhile, so each pass added a connection until the pool reached its maximum,
    and requests that needed two connections spread over ten backends, each colder (8 %
    more added latency at concurrency 1 in ``bench/ab_routers.py``). Here one connection
    at a time, in the order requests take them, and only while one is idle."""
    found = _pools.get(asyncio.get_running_loop())
    if found is None:
        return
    for _ in range(found.get_stats()["pool_available"]):
        if not found.get_stats()["pool_available"]:
            return  # requests took the rest: they are awake
        try:
            async with found.connection() as conn:
                await conn.execute("", prepare=False)  # one round trip, nothing to prepare
        except (psycopg.OperationalError, PoolTimeout):
            continue  # a broken connection goes back closed, and the pool replaces it


async def close_pool() -> None:
    loop = asyncio.get_running_loop()
    # Commits still on their way hold their connections: they finish first.
    while mine := [task for task in _committing if task.get_loop() is loop]:
        await asyncio.gather(*mine, return_exceptions=True)
    found = _pools.pop(loop, None)
    if found is not None:
        await found.close()


async def fetch(sql: str, params: dict[str, object], *, rows: bool = False) -> Any:
    """The first row (``rows``: all rows) of one statement, as its own transaction; raises
    DatabaseUnavailable when the database cannot be reached."""
    return await _twice(lambda connections: _fetch(connections, sql, params, rows))


async def _twice(attempt: Callable[[AsyncConnectionPool], Awaitable[T]]) -> T:
    """``attempt`` on this loop's pool, once more on a live connection if its connection
    had died; raises DatabaseUnavailable when the database cannot be reached."""
    connections = await pool()
    try:
        return await attempt(connections)
    except PoolTimeout as error:
        # No connection in ROUTER_DB_WAIT_MS: a second wait would only double the client's.
        raise DatabaseUnavailable(str(error)) from error
    except psycopg.OperationalError:
        # A pooled connection that died (PostgreSQL restarted, an admin ended it): the pool
        # drops it, checks the idle ones (they likely died with it) and the statement runs
        # once more on a live connection. Every statement here is safe to repeat: a
        # repeated reserve hits its own hold's primary key (its caller treats that as
        # done), and a repeated resolve finds its holds no longer pending.
        await connections.check()
    try:
        return await attempt(connections)
    except psycopg.OperationalError as error:
        raise DatabaseUnavailable(str(error)) from error


# The statements run here, by their SQL: built on first use (see wire.Statement).
_statements: dict[str, wire.Statement] = {}


def _statement(sql: str) -> wire.Statement:
    found = _statements.get(sql)
    if found is None:
        found = _statements[sql] = wire.Statement(sql, PARAMETER_TYPES)
    return found


async def _run(connections: AsyncConnectionPool, sql: str, params: dict[str, object],
               read: Callable[[Any, Any], T]) -> T:
    """``read(connection, result)`` of ``sql`` run on a connection of the pool."""
    statement = _statement(sql)
    # getconn/putconn, not connection(): its context commits (nothing, in autocommit)
    # through the connection's lock and keeps usage statistics, a tenth of a statement.
    conn = await connections.getconn()
    try:
        return read(conn, await wire.run(conn, statement, params))
    finally:
        await connections.putconn(conn)


async def _fetch(connections: AsyncConnectionPool, sql: str, params: dict[str, object],
                 rows: bool) -> Any:
    return _first_or_all(await _run(connections, sql, params, wire.rows), rows)


def _first_or_all(found: list[tuple[Any, ...]], rows: bool) -> Any:
    if rows:
        return found
    return found[0] if found else None


async def fetch_before_commit(sql: str, params: dict[str, object], *, rows: bool = False,
                              then_durable: bool = False) -> tuple[Any, asyncio.Future[None]]:
    """``fetch``, answered as soon as the statement has run, before its commit is done; and
    its commit, a future done once the statement committed and its commit reached the
    disk, which fails with DatabaseUnavailable when the commit did not happen or may not
    have (its connection was lost). ``then_durable``: the statement commits without waiting
    for the disk, and ``DURABLE_SQL``, sent behind it in the same round trip, is what the
    future waits for. Until its commit, no other transaction sees what the statement
    wrote."""
    return await _twice(lambda connections: _fetch_before_commit(connections, sql, params,
                                                                 rows, then_durable))


# Commits on their way (fetch_before_commit), each holding its connection until it is done.
_committing: set[asyncio.Task[None]] = set()


async def _fetch_before_commit(connections: AsyncConnectionPool, sql: str,
                               params: dict[str, object], rows: bool, then_durable: bool
                               ) -> tuple[Any, asyncio.Future[None]]:
    statement = _statement(sql)
    then = _statement(DURABLE_SQL) if then_durable else None
    conn = await connections.getconn()
    try:
        result = await wire.run_before_commit(conn, statement, params, then)
    except BaseException:
        await connections.putconn(conn)  # closed if the pipeline was left half-way
        raise
    # From here the connection is the commit's, which gives it back when it is done.
    commit = asyncio.ensure_future(_committed(connections, conn))
    _committing.add(commit)
    commit.add_done_callback(_commit_done)
    return _first_or_all(wire.rows(conn, result), rows), commit


async def _committed(connections: AsyncConnectionPool, conn: Any) -> None:
    try:
        await wire.committed(conn)
    except psycopg.Error as error:
        # Refused at its commit (a deferred constraint), or its connection lost on the way:
        # either way nobody may count on what the statement wrote.
        raise DatabaseUnavailable(f"the commit failed: {error}") from error
    finally:
        await connections.putconn(conn)


def _commit_done(task: asyncio.Task[None]) -> None:
    _committing.discard(task)
    if not task.cancelled():
        task.exception()  # its failure is read by whoever waits for it, if anyone does


async def execute(sql: str, params: dict[str, object]) -> int:
    """Run one statement; the number of rows it changed. Raises DatabaseUnavailable as
    ``fetch`` does (without its second try: nothing on the request path waits for this)."""
    connections = await pool()
    try:
        return await _run(connections, sql, params, lambda _, result: wire.changed(result))
    except psycopg.OperationalError as error:
        raise DatabaseUnavailable(str(error)) from error


# Pauses between tries of work that must be done once the database is back (a charge, the
# release of a hold), the last one repeated, and for how long in all: past that, the
# sweeper resolves the hold when it expires. A pause of at most 2 s writes the work within
# about 2 s of PostgreSQL's return.
RETRY_DELAYS_S = (0.25, 0.5, 1.0, 2.0)
RETRY_WINDOW_S = 60.0


def backoff(delays: tuple[float, ...], window_s: float) -> Iterator[float]:
    """Pauses (positive) between tries of work that found the database unavailable:
    ``delays`` in turn, then the last one again, until they would pass ``window_s``."""
    waited = 0.0
    for pause in itertools.chain(delays, itertools.repeat(delays[-1])):
        waited += pause
        if waited > window_s:
            return
        yield pause
