"""A small in-process cache with a time to live, for the lookups on the request path."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError, connection

from billing.errors import DatabaseUnavailable

K = TypeVar("K")
V = TypeVar("V")

_all_caches: list[TTLCache] = []


def _read_in_thread(load: Callable[[], V]) -> V:
    try:
        return load()
    except (OperationalError, InterfaceError) as error:
        # PostgreSQL cannot be reached (or dropped the connection): the request is answered
        # 503, to be tried again, not 500.
        raise DatabaseUnavailable(str(error)) from error
    finally:
        # Worker threads never see Django's request signals, so they recycle their own
        # connection when it broke or outlived CONN_MAX_AGE (no query is sent for this).
        connection.close_if_unusable_or_obsolete()


class TTLCache(Generic[K, V]):
    """Entries live ``ttl()`` seconds (read at each store, so settings overrides apply);
    the least recently stored go first past ``maxsize``.

    ``load`` is a synchronous database read, run in a worker thread on a miss. Concurrent
    misses of one key share one load: when an entry expires under load, every request in
    flight would otherwise query the database for the same row at the same moment.
    """

    def __init__(self, *, ttl: Callable[[], float], maxsize: int = 10_000) -> None:
        self.ttl = ttl
        self.maxsize = maxsize
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._loading: dict[K, asyncio.Future[V]] = {}
        _all_caches.append(self)

    async def get_or_load(self, key: K, load: Callable[[], V]) -> V:
        hit = self._data.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        pending = self._loading.get(key)
        if pending is not None and pending.get_loop() is asyncio.get_running_loop():
            return await asyncio.shield(pending)
        future = asyncio.ensure_future(
            sync_to_async(_read_in_thread, thread_sensitive=False)(load))
        self._loading[key] = future
        try:
            value = await asyncio.shield(future)
        finally:
            if self._loading.get(key) is future:
                del self._loading[key]
        self._data[key] = (time.monotonic() + self.ttl(), value)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        self._data.clear()


def clear_all_caches() -> None:
    """Forget every cached lookup (tests, and after staff change workers or prices)."""
    for cache in _all_caches:
        cache.clear()
