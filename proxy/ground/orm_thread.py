"""ORM work from the event loop, in a worker thread that recycles its own connection.

Django recycles a connection that broke (or outlived ``CONN_MAX_AGE``) at the start and the
end of each request it handles; the router's ``/v1`` handler sends no such signals, and its
worker threads keep their connections from one call to the next. Without this, a connection
the server dropped (a PostgreSQL restart, a failover) stayed broken in that thread, failing
every later call made there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from asgiref.sync import sync_to_async
from django.db import connection

T = TypeVar("T")


def recycled(work: Callable[[], T]) -> T:
    """``work()``, then this thread's connection closed if it broke or is too old (no query
    is sent for the check unless the work had a database error)."""
    try:
        return work()
    finally:
        connection.close_if_unusable_or_obsolete()


async def in_orm_thread(work: Callable[[], T]) -> T:
    """``work()`` (ORM calls) in Django's one thread for them, its connection recycled."""
    return await sync_to_async(recycled, thread_sensitive=True)(work)
