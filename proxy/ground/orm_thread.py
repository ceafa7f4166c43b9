"""ORM work from the event loop, in a worker thread that replaces its own broken connection.

Django recycles a connection that broke (or outlived ``CONN_MAX_AGE``) at the start and the
end of each request it handles; the router's ``/v1`` handler sends no such signals, and its
worker threads keep their connections from one call to the next. Without this, a connection
the server dropped (a PostgreSQL restart, a failover) stayed broken in that thread, failing
every later call made there.

No query is added to a call that works: Django's own recycling would check the connection
(``SELECT 1``) before the next call, a round trip on every lookup. Instead a call that finds
its connection broken is made once more on a new one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError, connection

T = TypeVar("T")


def recycled(work: Callable[[], T]) -> T:
    """``work()`` on this thread's connection; if that connection was dropped, ``work()``
    again on a new one (once: a database that is down still fails). The connection is
    closed after the call once it outlived ``CONN_MAX_AGE``."""
    try:
        return work()
    except (OperationalError, InterfaceError) as error:
        dropped = _connection_lost(error) or not _usable()
        if connection.in_atomic_block or not dropped:
            raise  # the statement failed, not the connection (or it cannot be replaced)
        # Handled here: let go of its frames and of psycopg's error behind it. Django
        # raises it from a frame that holds it, a cycle with every frame of the call (one
        # for the garbage collector per dropped connection).
        error.__traceback__ = error.__cause__ = error.__context__ = None
        connection.close()
        return work()
    finally:
        if connection.close_at is not None and time.monotonic() >= connection.close_at:
            connection.close()


def _usable() -> bool:
    return connection.connection is not None and connection.is_usable()


def _connection_lost(error: Exception) -> bool:
    """Whether PostgreSQL said the connection is gone (SQLSTATE class 08, or 57P: the
    server shut the session down). Work in a transaction that met it is rolled back by
    Django, which leaves the connection looking usable: the error says it was not."""
    state = getattr(error.__cause__, "sqlstate", None) or ""
    return state.startswith(("08", "57P"))


async def in_orm_thread(work: Callable[[], T]) -> T:
    """``work()`` (ORM calls) in Django's one thread for them, on a working connection."""
    return await sync_to_async(recycled, thread_sensitive=True)(work)
