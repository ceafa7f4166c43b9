"""The request path's connections: one async psycopg pool per event loop, autocommit, its
few statements prepared from their first use."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from django.conf import settings
from psycopg_pool import AsyncConnectionPool

_pools: dict[asyncio.AbstractEventLoop, AsyncConnectionPool] = {}


def on_postgresql() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


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
            # Prepared from the first use: these few statements run on every request.
            kwargs={"autocommit": True, "prepare_threshold": 0}, name="billing-hot-path",
        )
        _pools[loop] = found
        await found.open()
    return found


async def close_pool() -> None:
    found = _pools.pop(asyncio.get_running_loop(), None)
    if found is not None:
        await found.close()


async def fetch(sql: str, params: dict[str, object], *, rows: bool = False) -> Any:
    """The first row (``rows``: all rows) of one statement, as its own transaction."""
    connections = await pool()
    try:
        return await _fetch(connections, sql, params, rows)
    except psycopg.OperationalError:
        # A pooled connection that died (PostgreSQL restarted, an admin ended it): the pool
        # drops it, checks the idle ones (they likely died with it) and the statement runs
        # once more on a live connection. Every statement here is safe to repeat: a
        # repeated reserve hits its own hold's primary key (its caller treats that as
        # done), and a repeated resolve finds its holds no longer pending.
        await connections.check()
        return await _fetch(connections, sql, params, rows)


async def _fetch(connections: AsyncConnectionPool, sql: str, params: dict[str, object],
                 rows: bool) -> Any:
    async with connections.connection() as conn:
        cursor = await conn.execute(sql, params)
        return await (cursor.fetchall() if rows else cursor.fetchone())


async def execute(sql: str, params: dict[str, object]) -> int:
    """Run one statement; the number of rows it changed."""
    connections = await pool()
    async with connections.connection() as conn:
        cursor = await conn.execute(sql, params)
        return cursor.rowcount
